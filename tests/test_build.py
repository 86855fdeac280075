"""The stream builder on small generated tables: formats, steps, de-duplication, filters, skips,
eval sampling, shards and provenance. Helpers here are shared with test_build_*.py."""

import csv
import io
import json
import os
import random
import tarfile

import pytest
from PIL import Image

from ticlip.data.build import BuildConfig, BuildError, build_stream, count_check, format_info
from ticlip.data.build.config import CLIP_SCORE_FIELDS
from ticlip.data.records import Record
from ticlip.data.stream import TimeStream
from ticlip.data.table import read_table
from ticlip.schema import ConfigError

from test_table import http_dir  # noqa: F401  (a fixture: a local HTTP server)


# ------------------------------------------------------------------------------------ helpers
def colour(i: int):
    return (i % 256, (i // 256) % 256, (i * 7) % 256)


def make_image(path, i=0, size=(12, 10), fmt=None):
    Image.new("RGB", size, colour(i)).save(path, format=fmt)
    return str(path)


def write_csv(path, rows, cols=("image", "caption", "timestamp")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, list(cols), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return str(path)


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return str(path)


def build(table_or_records, out, **config):
    config.setdefault("eval_size", 0)
    config.setdefault("validation_size", 0)  # validation sets are tested in test_build_validation.py
    records = read_table(table_or_records) if isinstance(table_or_records, (str, os.PathLike)) \
        else table_or_records
    return build_stream(records, str(out), BuildConfig(**config), name="test", source="test",
                        progress=False)


def samples(stream: TimeStream, split="train"):
    """[(step label, caption, meta, image size, extension)] of every pair in ``split``."""
    out = []
    for st in stream.steps:
        shards = st.train.shards if split == "train" else st.eval.get(split, None)
        shards = shards if split == "train" else (shards.shards if shards else [])
        for path in shards:
            with tarfile.open(stream.resolve(path)) as tar:
                members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
            for name in sorted(members):
                key, ext = name.split(".", 1)
                if ext in ("jpg", "png"):
                    image = Image.open(io.BytesIO(members[name]))
                    meta = json.loads(members[f"{key}.json"])
                    out.append((st.label, members[f"{key}.txt"].decode(), meta, image.size, ext))
    return out


def captions(stream, split="train"):
    return sorted(s[1] for s in samples(stream, split))


def image_rows(tmp_path, n, timestamps, size=(12, 10)):
    """n rows with distinct images and captions "photo number i"; timestamps cycle."""
    d = tmp_path / "img"
    d.mkdir(exist_ok=True)
    return [{"image": make_image(d / f"{i}.png", i, size), "caption": f"photo number {i}",
             "timestamp": timestamps[i % len(timestamps)], "uid": f"u{i}"} for i in range(n)]


# -------------------------------------------------------------------------------- timestamps
def test_each_timestamp_format_lands_in_its_period(tmp_path):
    stamps = ["2014-05-01", "2015-05-01T10:00:00", 1458000000, 2017, "2018", "1530000000", "2019-02",
              "2020-06-30T23:59:59Z"]
    rows = image_rows(tmp_path, len(stamps), stamps)
    s = build(write_jsonl(tmp_path / "t.jsonl", rows), tmp_path / "out")
    assert s.labels == ["2014", "2015", "2016", "2017", "2018", "2019", "2020"]
    by_caption = {c: (label, meta) for label, c, meta, _, _ in samples(s)}
    assert by_caption["photo number 2"][0] == "2016"  # unix seconds int
    assert by_caption["photo number 5"][0] == "2018"  # unix seconds as a string (2018-06-26)
    assert by_caption["photo number 1"][1]["timestamp"] == "2015-05-01T10:00:00"
    assert by_caption["photo number 3"][1]["timestamp"] == "2017-01-01"
    assert [st.train.count for st in s.steps] == [1, 1, 1, 1, 2, 1, 1]


def test_month_granularity_with_aggregation(tmp_path):
    stamps = ["2020-11-03", "2021-01-15", "2021-02-01", "2021-02-28T12:00:00", "2021-03-31"]
    rows = image_rows(tmp_path, 10, stamps)
    s = build(write_csv(tmp_path / "t.csv", rows), tmp_path / "out", granularity="month",
              aggregate_until="2021-01")
    assert s.granularity == "month"
    assert s.labels == ["≤2021-01", "2021-02", "2021-03"]
    assert [st.train.count for st in s.steps] == [4, 4, 2]
    assert (s.steps[0].start, s.steps[0].end) == ("2020-11-01", "2021-01-31")
    assert s.steps[0].periods == ["2020-11", "2021-01"]


def test_year_aggregation(tmp_path):
    rows = image_rows(tmp_path, 12, ["2011", "2013", "2014", "2015"])
    s = build(write_csv(tmp_path / "t.csv", rows), tmp_path / "out", aggregate_until="2014")
    assert s.labels == ["≤2014", "2015"]
    assert [st.train.count for st in s.steps] == [9, 3]


def test_step_ends_ranges_and_dropped_rows(tmp_path):
    rows = image_rows(tmp_path, 14, ["2012", "2014", "2015", "2017", "2018", "2021", "2024"])
    s = build(write_csv(tmp_path / "t.csv", rows), tmp_path / "out", step_ends=["2014", "2015", "2016", "2018", "2023"])
    assert s.labels == ["≤2014", "2015", "2017–2018", "2019–2023"]  # 2016 has no data
    assert [st.train.count for st in s.steps] == [4, 2, 4, 2]
    c = s.provenance["counts"]
    assert c["dropped_out_of_range"] == 2
    assert any("2016" in w for w in s.provenance["warnings"])
    assert count_check(s)[0]


# ---------------------------------------------------------------------------- de-duplication
def test_dedup_by_uid_keeps_first_in_time(tmp_path):
    d = tmp_path / "img"
    d.mkdir()
    rows = [
        {"uid": "x", "image": make_image(d / "a.png", 1), "caption": "the later copy", "timestamp": "2018"},
        {"uid": "x", "image": make_image(d / "b.png", 2), "caption": "the first copy", "timestamp": "2016-05"},
        {"uid": "y", "image": make_image(d / "c.png", 3), "caption": "the later copy", "timestamp": "2018"},
    ]
    table = write_csv(tmp_path / "t.csv", rows, ("uid", "image", "caption", "timestamp"))
    s = build(table, tmp_path / "out")
    assert captions(s) == ["the first copy", "the later copy"]
    assert s.provenance["counts"]["duplicates"] == 1
    kept = {m["uid"]: label for label, _, m, _, _ in samples(s)}
    assert kept == {"x": "2016", "y": "2018"}


def test_dedup_by_normalised_caption_and_image_hash(tmp_path):
    d = tmp_path / "img"
    d.mkdir()
    same1 = make_image(d / "same1.png", 5)
    same2 = d / "same2.png"
    same2.write_bytes(open(same1, "rb").read())  # same bytes, another path
    other = make_image(d / "other.png", 6)
    rows = [
        {"image": same1, "caption": "A  Red   square", "timestamp": "2017"},
        {"image": str(same2), "caption": "a red square", "timestamp": "2016"},  # earlier: wins
        {"image": same1, "caption": "a blue square", "timestamp": "2016"},  # other caption: kept
        {"image": other, "caption": "a red square", "timestamp": "2018"},  # other image: kept
    ]
    table = write_csv(tmp_path / "t.csv", rows)
    s = build(table, tmp_path / "out")
    assert s.provenance["counts"]["duplicates"] == 1
    got = sorted((label, c) for label, c, _, _, _ in samples(s))
    assert got == [("2016", "a blue square"), ("2016", "a red square"), ("2018", "a red square")]

    s2 = build(table, tmp_path / "nodedup", dedup=False)
    assert s2.provenance["counts"]["duplicates"] == 0
    keys = [m["uid"] for _, _, m, _, _ in samples(s2)]
    assert len(keys) == 4 and len(set(keys)) == 4


# ---------------------------------------------------------------------------- filters, skips
def test_each_filter_counted(tmp_path):
    d = tmp_path / "img"
    d.mkdir()
    ok = make_image(d / "ok.png", 1, (20, 16))
    rows = [
        {"image": ok, "caption": "oneword", "timestamp": "2016"},  # caption_words
        {"image": ok, "caption": "a b", "timestamp": "2016"},  # caption_chars (2 words, 3 chars)
        {"image": ok, "caption": "日本語の 説明文です", "timestamp": "2016"},  # language
        {"image": make_image(d / "small.png", 2, (6, 6)), "caption": "too small image", "timestamp": "2016"},
        {"image": make_image(d / "wide.png", 3, (40, 10)), "caption": "very wide image", "timestamp": "2016"},
        {"image": make_image(d / "fine.png", 4, (30, 10)), "caption": "wide but fine", "timestamp": "2016"},
        {"image": ok, "caption": "a good pair", "timestamp": "2016"},
    ]
    s = build(write_csv(tmp_path / "t.csv", rows), tmp_path / "out", min_image_side=8, language="ascii-english")
    assert s.provenance["counts"]["filtered"] == {
        "aspect_ratio": 1, "caption_chars": 1, "caption_words": 1, "image_side": 1, "language": 1,
    }
    assert captions(s) == ["a good pair", "wide but fine"]
    # each filter can be relaxed
    s = build(write_csv(tmp_path / "t.csv", rows), tmp_path / "out2", min_caption_words=1, min_caption_chars=1,
              max_aspect_ratio=None)
    assert s.provenance["counts"]["filtered"] == {}
    assert s.steps[0].train.count == 7


def test_bad_rows_are_skipped_by_reason(tmp_path):
    d = tmp_path / "img"
    d.mkdir()
    good = make_image(d / "good.jpg", 1, (64, 48))
    (d / "garbage.jpg").write_bytes(b"this is not an image at all")
    full = open(good, "rb").read()
    (d / "truncated.jpg").write_bytes(full[: len(full) // 2])
    rows = [
        {"image": good, "caption": "a good pair", "timestamp": "2016"},
        {"image": str(d / "missing.jpg"), "caption": "missing image file", "timestamp": "2016"},
        {"image": "", "caption": "no image at all", "timestamp": "2016"},
        {"image": str(d / "garbage.jpg"), "caption": "garbage image bytes", "timestamp": "2016"},
        {"image": str(d / "truncated.jpg"), "caption": "truncated jpeg file", "timestamp": "2016"},
        {"image": good, "caption": "bad time stamp", "timestamp": "last tuesday"},
        {"image": good, "caption": "", "timestamp": "2016"},
    ]
    s = build(write_csv(tmp_path / "t.csv", rows), tmp_path / "out")
    assert s.provenance["counts"]["skipped"] == {
        "bad_timestamp": 1, "corrupt_image": 2, "missing_caption": 1, "missing_image": 2,
    }
    assert captions(s) == ["a good pair"]
    assert count_check(s)[0]


def test_eval_is_filled_past_corrupt_candidates(tmp_path):
    d = tmp_path / "img"
    d.mkdir()
    rows = []
    for i in range(40):
        p = d / f"{i}.png"
        if i % 3 == 0:
            p.write_bytes(b"broken")
        else:
            make_image(p, i)
        rows.append({"image": str(p), "caption": f"photo number {i}", "timestamp": "2016"})
    s = build(write_csv(tmp_path / "t.csv", rows), tmp_path / "out", eval_size=10)
    assert s.steps[0].eval["retrieval"].count == 10
    assert s.steps[0].train.count == 40 - 14 - 10
    assert s.provenance["counts"]["skipped"] == {"corrupt_image": 14}
    assert count_check(s)[0]


# --------------------------------------------------------------------------- image sources
def test_parquet_bytes_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    blobs = []
    for i in range(6):
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), colour(i)).save(buf, format="JPEG")
        blobs.append(buf.getvalue())
    blobs[5] = b"\xff\xd8 not really"  # corrupt
    pq.write_table(pa.table({"image": blobs, "caption": [f"jpeg number {i}" for i in range(6)],
                             "timestamp": [2015, 2015, 2016, 2016, 2016, 2016]}), tmp_path / "t.parquet")
    s = build(str(tmp_path / "t.parquet"), tmp_path / "out", max_image_side=20)
    assert [st.train.count for st in s.steps] == [2, 3]
    assert s.provenance["counts"]["skipped"] == {"corrupt_image": 1}
    assert {size for *_, size, ext in samples(s)} == {(20, 15)}


def test_url_images_file_and_http_with_cache(tmp_path, http_dir):
    base, www, log = http_dir
    rows = []
    for i in range(4):
        make_image(www / f"{i}.png", i)
        rows.append({"image": f"{base}/{i}.png", "caption": f"served image {i}", "timestamp": "2016"})
    rows.append({"image": f"{base}/gone.png", "caption": "served but gone", "timestamp": "2016"})
    rows.append({"image": (tmp_path / "local.png").as_uri(), "caption": "a file url", "timestamp": "2017"})
    make_image(tmp_path / "local.png", 9)
    cache = tmp_path / "cache"
    s = build(write_csv(tmp_path / "t.csv", rows), tmp_path / "out", image_cache_dir=str(cache))
    assert captions(s) == ["a file url"] + [f"served image {i}" for i in range(4)]
    assert s.provenance["counts"]["skipped"] == {"missing_image": 1}
    assert len(os.listdir(cache)) == 4
    fetched = len(log)
    # with uids (no hashing in the first pass) the images are fetched by the writers, from the cache
    for i, r in enumerate(rows):
        r["uid"] = f"u{i}"
    table = write_csv(tmp_path / "u.csv", rows, ("uid", "image", "caption", "timestamp"))
    s = build(table, tmp_path / "out2", image_cache_dir=str(cache))
    assert s.provenance["counts"]["skipped"] == {"missing_image": 1}
    assert len(log) == fetched + 1  # only the missing one was asked again


def test_in_memory_images_from_a_source(tmp_path):
    def records():
        for i in range(6):
            img = Image.new("RGBA", (90, 60), colour(i) + (128,))
            yield Record(caption=f"emoji number {i}", timestamp=2015 + i % 2, image=img, extra={"group": "g"})
        yield Record(caption="emoji number 0", timestamp=2017, image=Image.new("RGBA", (90, 60), colour(0) + (128,)))
        yield Record(caption="raw bytes image", timestamp=2016, image=b"")  # empty bytes: missing
        yield Record(caption="palette image here", timestamp=2016, image=Image.new("P", (10, 10)))

    s = build(records(), tmp_path / "out", max_image_side=30)
    got = samples(s)
    assert len(got) == 7 and s.provenance["counts"]["duplicates"] == 1
    assert s.provenance["counts"]["skipped"] == {"missing_image": 1}
    rgba = [g for g in got if g[1].startswith("emoji")]
    assert all(size == (30, 20) and ext == "png" and meta["group"] == "g" for _, _, meta, size, ext in rgba)
    assert not os.path.exists(tmp_path / "out" / ".build" / "spool.bin")


# ----------------------------------------------------------------------------- eval sampling
def test_eval_sets_seeded_disjoint_and_sized(tmp_path):
    rows = image_rows(tmp_path, 100, ["2015", "2016"])
    table = write_csv(tmp_path / "t.csv", rows, ("uid", "image", "caption", "timestamp"))
    a = build(table, tmp_path / "a", eval_size=10, seed=1)
    b = build(table, tmp_path / "b", eval_size=10, seed=1)
    c = build(table, tmp_path / "c", eval_size=10, seed=2)
    ev = captions(a, "retrieval")
    assert len(ev) == 20 and [st.eval["retrieval"].count for st in a.steps] == [10, 10]
    assert not set(ev) & set(captions(a))  # held out: never in train
    assert len(set(ev) | set(captions(a))) == 100
    assert captions(b, "retrieval") == ev
    assert captions(c, "retrieval") != ev
    f = build(table, tmp_path / "f", eval_size=1000, eval_fraction=0.1)
    assert [st.eval["retrieval"].count for st in f.steps] == [5, 5]
    g = build(table, tmp_path / "g", eval_size=1000)  # small steps: capped at half, with a warning
    assert [st.eval["retrieval"].count for st in g.steps] == [25, 25]
    assert any("capped" in w for w in g.provenance["warnings"])
    assert g.eval_set("2016").captions and len(g.eval_set("2016")) == 25


# ------------------------------------------------------------------------- shards, manifest
def test_shards_sizes_resize_and_provenance(tmp_path):
    rows = image_rows(tmp_path, 30, ["2015", "2016"], size=(100, 50))
    table = write_csv(tmp_path / "t.csv", rows, ("uid", "image", "caption", "timestamp"))
    s = build(table, tmp_path / "out", eval_size=4, shard_size=6, max_image_side=32)
    for st in s.steps:
        assert st.train.count == 11 and len(st.train.shards) == 2
        step_dir = os.path.join(s.root, "steps", str(st.index))
        sizes = json.load(open(os.path.join(step_dir, "sizes.json")))
        for rel in st.train.shards + st.eval["retrieval"].shards:
            with tarfile.open(s.resolve(rel)) as tar:
                n = len([m for m in tar.getmembers() if m.name.endswith(".txt")])
            assert sizes[os.path.basename(rel)] == n <= 6
        assert sum(sizes.values()) == 15
    assert {size for *_, size, _ in samples(s)} == {(32, 16)}
    assert all(ext == "jpg" for *_, ext in samples(s))
    assert s.steps[0].train.shards[0] == "steps/0/train-000000.tar"
    assert s.steps[0].eval["retrieval"].shards == ["steps/0/eval-retrieval-000000.tar"]

    loaded = TimeStream.load(tmp_path / "out")
    assert loaded.to_dict() == s.to_dict()
    p = loaded.provenance
    assert p["source"] == "test" and p["seed"] == 0 and p["config"]["shard_size"] == 6
    assert BuildConfig.from_dict(p["config"]) == BuildConfig(eval_size=4, shard_size=6, max_image_side=32)
    assert "pillow" in p["library_versions"] and "webdataset" in p["library_versions"]
    c = p["counts"]
    assert c["input_rows"] == 30 and c["steps"] == [{"label": "2015", "train": 11, "eval": {"retrieval": 4}},
                                                     {"label": "2016", "train": 11, "eval": {"retrieval": 4}}]
    ok, line = count_check(loaded)
    assert ok and "== input 30" in line
    info = format_info(loaded)
    assert "2015" in info and "OK" in info and "input rows:   30" in info


def test_config_yaml_round_trip_and_validation(tmp_path):
    cfg = BuildConfig(granularity="month", step_ends=["2014-06", "2015"], eval_fraction=0.2, language="ascii-english")
    path = tmp_path / "b.yaml"
    cfg.to_yaml(str(path))
    assert BuildConfig.from_yaml(str(path)) == cfg
    assert cfg.replace(seed=3).seed == 3
    for bad, message in [
        ({"granularity": "week"}, "granularity: Input should be 'year' or 'month'"),
        ({"eval_fraction": 1.5}, "eval_fraction: must be in [0, 1) (got 1.5)"),
        ({"shard_size": 0}, "shard_size: Input should be greater than or equal to 1"),
        ({"step_ends": ["2015", "2014"]}, "step_ends: step ends must increase"),
        ({"step_ends": []}, "step_ends: is empty"),
        ({"aggregate_until": "2014-06"}, "aggregate_until: period '2014-06' does not fit granularity 'year'"),
        ({"language": "klingon"}, "language: unknown language filter 'klingon'; known: ascii-english"),
        ({"colour": 1}, "unknown key 'colour'; known keys: aggregate_until, clip_score_checkpoint"),
        ({"max_aspect_ratio": 0.5}, "max_aspect_ratio: must be >= 1"),
        ({"eval_size": True}, "eval_size: Input should be a valid integer"),
        ({"dedup": "yes"}, "dedup: Input should be a valid boolean"),
    ]:
        with pytest.raises(ConfigError) as e:
            BuildConfig.load(bad, source="b.yaml")
        assert str(e.value).startswith("b.yaml: ") and message in str(e.value) and "\n" not in str(e.value)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        BuildConfig.from_yaml(str(path))


def test_config_reads_yaml_values_as_before():
    """Years written as numbers become text, comma lists become lists, numbers keep their type."""
    cfg = BuildConfig.load({"aggregate_until": 2014, "step_ends": "2015, 2016", "max_aspect_ratio": 3,
                            "eval_fraction": "0.25", "eval_size": "1e3"})
    assert cfg.aggregate_until == "2014" and cfg.step_ends == ["2015", "2016"]
    assert cfg.eval_fraction == 0.25 and cfg.eval_size == 1000
    assert cfg.max_aspect_ratio == 3 and type(cfg.max_aspect_ratio) is int  # kept as written: the hash sees it
    before = ["granularity", "aggregate_until", "step_ends", "eval_size", "eval_fraction",
              "seed", "min_caption_words", "min_caption_chars", "min_image_side",
              "max_aspect_ratio", "language", "max_image_side", "shard_size", "dedup",
              "image_cache_dir", "validation_size", "validation_ratio"]
    assert list(cfg.to_dict()) == before + list(CLIP_SCORE_FIELDS) + ["eval_uids"]
    # without CLIP-score filtering or eval uid lists, the manifest's config and the hash hold the fields they
    # held before those options
    assert list(cfg.record_dict()) == before
    assert "image_cache_dir" not in cfg.output_dict()
    # without validation sets, the manifest's config and the hash hold exactly the fields they held before
    off = cfg.replace(validation_size=0)
    assert list(off.record_dict()) == before[:-2] and "validation_ratio" not in off.output_dict()


def test_config_hash_is_pinned():
    """Compatibility pin: existing streams store this hash in .build/state.json and refuse to resume
    when it changes. The values were computed once with the builder before it became a package
    (BuildConfig as a dataclass), which had no validation sets: the same settings with
    ``validation_size`` 0 must keep giving them. The default build (with validation sets) is a new
    layout with its own hashes, pinned from here on."""
    from ticlip.data.build import config_hash
    from ticlip.data.sources import get_source

    table = {"table": "/data/t.csv", "image_col": "image", "caption_col": "caption",
             "timestamp_col": "timestamp", "uid_col": None}
    off = {"validation_size": 0}
    assert config_hash(BuildConfig(**off), "table", table) == "72e27e7711f32056"
    emoji = get_source("emoji").default_build
    # the emoji source's defaults before its eval sets became 100 pairs per step
    emoji_before = {**emoji, "eval_size": 1000, "eval_fraction": 1 / 7}
    assert config_hash(BuildConfig(**emoji_before, **off), "emoji", {}) == "7aec1bac4183c7f0"
    custom = BuildConfig(granularity="month", aggregate_until="2014-06", step_ends=["2015-01", "2016-12"],
                         eval_size=7, eval_fraction=0.25, seed=3, min_caption_words=1, min_caption_chars=2,
                         min_image_side=10, max_aspect_ratio=None, language="ascii-english", max_image_side=64,
                         shard_size=50, dedup=False, image_cache_dir="/x", validation_size=0)
    assert config_hash(custom, "synthetic", {"num_pairs": 200, "seed": 1}) == "68dcff00e35c6350"
    as_written = BuildConfig.load({"max_aspect_ratio": 3, "eval_fraction": 0, "aggregate_until": 2014, **off})
    assert config_hash(as_written, "emoji", {}) == "7288ac3c2ac8821e"
    assert config_hash(custom.replace(image_cache_dir="/elsewhere"), "synthetic",
                       {"num_pairs": 200, "seed": 1}) == "68dcff00e35c6350"  # does not shape the output
    # with validation sets (the default): new hashes, and the validation settings are part of them
    assert config_hash(BuildConfig(), "table", table) == "fc349bc6886e3e71"
    assert config_hash(BuildConfig(**emoji_before), "emoji", {}) == "f46f97b2d9f4e298"
    assert config_hash(BuildConfig(validation_ratio=1), "table", table) != "fc349bc6886e3e71"


def test_no_rows_left_is_a_clear_error(tmp_path):
    rows = [{"image": "nope.png", "caption": "a b c d", "timestamp": "2016"}]
    with pytest.raises(BuildError, match="no pairs left"):
        build(write_csv(tmp_path / "t.csv", rows), tmp_path / "out")
    assert not os.path.exists(tmp_path / "out" / "stream.json")


# ------------------------------------------------------------------------------ at scale
@pytest.mark.slow
def test_10k_rows_with_missing_images_and_bad_timestamps(tmp_path):
    """The issue's acceptance case: 3% missing images, 2% unparseable timestamps, exact counts."""
    rng = random.Random(0)
    d = tmp_path / "img"
    d.mkdir()
    images = [make_image(d / f"{i}.jpg", i, (8, 8)) for i in range(200)]
    n = 10_000
    idx = list(range(n))
    rng.shuffle(idx)
    missing, bad_time = set(idx[:300]), set(idx[300:500])
    rows = []
    for i in range(n):
        year = 2014 + i % 6
        ts = f"{year}-{1 + i % 12:02d}-{1 + i % 28:02d}"
        if i in bad_time:
            ts = rng.choice(["", "n/a", "2016-13-45", "sometime"])
        image = str(d / f"missing-{i}.jpg") if i in missing else images[i % len(images)]
        rows.append({"uid": f"r{i}", "image": image, "caption": f"caption of row {i}", "timestamp": ts})
    table = write_csv(tmp_path / "t.csv", rows, ("uid", "image", "caption", "timestamp"))
    s = build_stream(read_table(table), str(tmp_path / "out"),
                     BuildConfig(eval_size=100, shard_size=500, max_image_side=8),
                     name="big", source="table", progress=False, workers=2)
    c = s.provenance["counts"]
    assert c["input_rows"] == n
    assert c["skipped"] == {"missing_image": 300, "bad_timestamp": 200}
    assert c["filtered"] == {} and c["duplicates"] == 0
    assert sum(st.train.count + st.eval["retrieval"].count + s.validation_count(st.index) for st in s.steps) == 9_500
    assert len(s.steps) == 6 and all(st.eval["retrieval"].count == 100 for st in s.steps)
    assert count_check(s)[0]
