"""Per-step validation sets: held out by the builder (after the eval set, before train), disjoint from
train and from every eval set, seeded, counted in the manifest and `ticlip data info`; a build with
``validation_size`` 0 is the build of the builder before validation sets existed, byte for byte."""

import hashlib
import json
import os
import tarfile

import pytest

from test_build import build, image_rows, samples, write_csv
from ticlip.data.build import BuildConfig, BuildError, build_stream, build_stream_from, count_check, format_info
from ticlip.data.stream import StreamError, TimeStream
from ticlip.data.table import read_table


@pytest.fixture
def table(tmp_path):
    """60 rows with distinct images, captions and uids over 2015-2016 (30 per step)."""
    return write_csv(tmp_path / "t.csv", image_rows(tmp_path, 60, ["2015", "2016"]),
                     ("uid", "image", "caption", "timestamp"))


def members(stream, shards):
    """[(uid, caption, sha256 of the image bytes)] of the given shards."""
    out = []
    for rel in shards:
        with tarfile.open(stream.resolve(rel)) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name in sorted(files):
            key, ext = name.split(".", 1)
            if ext in ("jpg", "png"):
                meta = json.loads(files[f"{key}.json"])
                out.append((meta["uid"], files[f"{key}.txt"].decode(), hashlib.sha256(files[name]).hexdigest()))
    return out


def test_validation_sets_are_held_out_disjoint_and_counted(table, tmp_path):
    s = build(table, tmp_path / "out", eval_size=6, validation_size=100, validation_ratio=1, shard_size=4)
    for st in s.steps:
        assert st.validation is not None and st.validation.count == 6  # min(100, round(1 x 6), (30 - 6) // 2)
        assert st.validation.shards and all("validation" in os.path.basename(p) for p in st.validation.shards)
        assert not any("validation" in p for p in st.train.shards + st.eval["retrieval"].shards)
        train, ev = members(s, st.train.shards), members(s, st.eval["retrieval"].shards)
        val = members(s, st.validation.shards)
        assert len(val) == 6 and len(ev) == 6 and len(train) == 30 - 12
        for i in range(3):  # by uid, by caption and by image hash
            assert not {v[i] for v in val} & ({t[i] for t in train} | {e[i] for e in ev})
        sizes = json.load(open(tmp_path / "out" / "steps" / str(st.index) / "sizes.json"))
        assert sum(n for name, n in sizes.items() if name.startswith("validation")) == 6
    # no validation pair is in any other step's eval set either
    all_eval = {m[0] for st in s.steps for m in members(s, st.eval["retrieval"].shards)}
    assert not all_eval & {m[0] for st in s.steps for m in members(s, st.validation.shards)}

    # the manifest counts it, per step, and the counts add up with it
    loaded = TimeStream.load(tmp_path / "out")
    assert [c["validation"] for c in loaded.provenance["counts"]["steps"]] == [6, 6]
    assert [st.validation.count for st in loaded.steps] == [6, 6] and loaded.has_validation
    ok, line = count_check(loaded)
    assert ok and "+ validation 12" in line
    info = format_info(loaded)
    head = info.splitlines()[2].split()
    assert head[head.index("validation") - 1] == "eval:retrieval" and "OK" in info

    # the accessor returns the same kind of object as eval_set
    vs = loaded.validation_set("2015")
    assert vs.task == "validation" and vs.step == "2015" and len(vs) == 6 and len(vs.images) == 6
    assert sorted(vs.captions) == sorted(m[1] for m in members(s, s.steps[0].validation.shards))
    assert {m["uid"] for m in vs.meta} == {m[0] for m in members(s, s.steps[0].validation.shards)}


def test_validation_leaves_eval_alone_and_is_seeded(table, tmp_path):
    """The eval sets are those of a build without validation; the validation rows come out of train,
    in an order fixed by the seed."""
    off = build(table, tmp_path / "off", eval_size=6)
    on = build(table, tmp_path / "on", eval_size=6, validation_size=1000)
    again = build(table, tmp_path / "again", eval_size=6, validation_size=1000)
    other = build(table, tmp_path / "other", eval_size=6, validation_size=1000, seed=1)
    assert samples(off, "retrieval") == samples(on, "retrieval")
    val = [m for st in on.steps for m in members(on, st.validation.shards)]
    assert len(val) == 2 * 3  # the default ratio 0.5 of 6 eval pairs per step
    assert {m[1] for m in val} | {c for _, c, *_ in samples(on)} == {c for _, c, *_ in samples(off)}
    assert val == [m for st in again.steps for m in members(again, st.validation.shards)]
    assert val != [m for st in other.steps for m in members(other, st.validation.shards)]


def test_validation_count_rule():
    from ticlip.data.build.plan import validation_count

    cfg = BuildConfig()  # validation_size 1000, ratio 0.5
    assert validation_count(1000, 100, cfg) == 50
    assert validation_count(10000, 4000, cfg) == 1000  # capped by validation_size
    assert validation_count(30, 20, cfg) == 5  # at most half of what eval leaves for training
    assert validation_count(1000, 100, cfg.replace(validation_size=0)) == 0
    assert validation_count(1000, 100, cfg.replace(validation_ratio=2)) == 200
    with pytest.raises(Exception, match="validation_ratio"):
        BuildConfig(validation_ratio=0)


# Digests of a small synthetic build with validation_size 0, made by the builder before validation sets
# existed (the code of commit 0d251d3) and by this one: `full` covers every byte written under OUT (but
# the manifest's library_versions), `content` the same without the encoded images, which depend on
# the image library's version (the full pin was made with Pillow 13.0.0).
PIN_PILLOW, PIN_FULL, PIN_CONTENT = "13.0.0", "e22375194c281f86", "bb109ebdff1d57d1"


def digests(out) -> tuple[str, str]:
    full, content = hashlib.sha256(), hashlib.sha256()
    for d, dirs, names in sorted(os.walk(out)):
        dirs.sort()
        for n in sorted(names):
            p = os.path.join(d, n)
            rel = os.path.relpath(p, out)
            data = open(p, "rb").read()
            if n == "stream.json":
                m = json.loads(data)
                m["provenance"].pop("library_versions")
                data = json.dumps(m, sort_keys=True).encode()
            full.update(rel.encode() + b"\0" + data)
            content.update(rel.encode() + b"\0")
            if n.endswith(".tar"):
                with tarfile.open(p) as tar:
                    for mem in tar.getmembers():
                        if not mem.name.endswith((".jpg", ".png")):
                            content.update(mem.name.encode() + tar.extractfile(mem).read())
            else:
                content.update(data)
    return full.hexdigest()[:16], content.hexdigest()[:16]


def test_validation_size_zero_builds_what_the_old_builder_built(tmp_path):
    import PIL

    out = tmp_path / "out"
    s = build_stream_from("synthetic", out, build={"eval_size": 4, "shard_size": 8, "max_image_side": 16,
                                                   "validation_size": 0},
                          options={"num_pairs": 90, "end_year": 2016}, progress=False)
    assert not s.has_validation and all(st.validation is None for st in s.steps)
    assert not any("validation" in n for _, _, names in os.walk(out) for n in names)
    full, content = digests(out)
    assert content == PIN_CONTENT
    if PIL.__version__ == PIN_PILLOW:
        assert full == PIN_FULL


def test_a_stream_without_validation_sets_loads(table, tmp_path):
    s = build(table, tmp_path / "old", eval_size=6)  # validation_size 0: the old layout
    manifest = json.load(open(tmp_path / "old" / "stream.json"))
    assert "validation" not in manifest["steps"][0] and "validation_size" not in manifest["provenance"]["config"]
    loaded = TimeStream.load(tmp_path / "old")
    assert not loaded.has_validation and loaded.validation_count(0) == 0
    assert "validation" not in format_info(loaded) and count_check(loaded)[0]
    with pytest.raises(StreamError, match="no validation set.*--validation-size"):
        loaded.validation_set(0)
    assert len(s.eval_set(0)) == 6


def test_an_interrupted_build_without_validation_is_refused_clearly(table, tmp_path):
    """A build started without validation sets (e.g. by the old builder) resumes with
    validation_size 0; under the new default it is refused, saying how to finish it."""
    cfg = dict(eval_size=6, shard_size=4, max_image_side=16)
    out = tmp_path / "out"

    def run(**extra):
        return build_stream(read_table(table), str(out), BuildConfig(**cfg, **extra), name="r", source="table",
                            source_params={"table": "t.csv"}, progress=False)

    first = run(validation_size=0)
    os.remove(out / "stream.json")  # as if killed before the manifest
    with pytest.raises(BuildError, match="without validation sets.*--validation-size 0"):
        run()
    assert run(validation_size=0).to_dict() == first.to_dict()
