"""Resharding existing webdataset shards by a uid → timestamp table (ticlip.data.build.reshard)."""

from __future__ import annotations

import json
import os
import sys
import tarfile

import pytest

from reshard_helpers import tiny_png, write_input_shard, write_table
from ticlip.cli import main
from ticlip.data.build import count_check, verify_stream
from ticlip.data.build.config import BuildError
from ticlip.data.build.engines import DaskEngine, LocalEngine
from ticlip.data.build.reshard import check_reshard_request, reshard_stream
from ticlip.data.stream import TimeStream
from ticlip.errors import TiclipError

SMALL = {"eval_size": 3, "validation_size": 2, "shard_size": 4}


def _corpus(root, shards=3, per_shard=12, years=(2014, 2015, 2016)):
    """``shards`` input shards of ``per_shard`` samples; uid u<s>_<k> in the .json, years round robin."""
    rows, inputs = [], {}
    for s in range(shards):
        samples = []
        for k in range(per_shard):
            uid = f"u{s}_{k}"
            sample = {"key": f"{s:05d}{k:04d}", "image": tiny_png(s * 31 + k), "caption": f"photo {s} of thing {k}",
                      "meta": {"uid": uid, "url": f"http://x/{uid}.png"}}
            samples.append(sample)
            inputs[uid] = sample
            rows.append((uid, years[(s + k) % len(years)]))
        write_input_shard(str(root / "in" / f"{s:05d}.tar"), samples)
    table = write_table(str(root / "ts.csv"), rows)
    return str(root / "in" / ("{00000..%05d}.tar" % (shards - 1))), table, inputs


def _members(path):
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]


def _tree(root):
    """Every file of a built stream (not .build): relative path → bytes."""
    out = {}
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x != ".build"]
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


def test_samples_are_copied_byte_for_byte_into_a_stream(tmp_path):
    spec, table, inputs = _corpus(tmp_path)
    stream = reshard_stream(check_reshard_request(spec, table, SMALL), tmp_path / "out", progress=False)
    assert stream.labels == ["2014", "2015", "2016"]
    seen = {}
    for st in stream.steps:
        for _, shard_set in st.shard_sets():
            for rel in shard_set.shards:
                for name, data in _members(os.path.join(stream.root, rel)):
                    key, ext = name.split(".", 1)
                    seen.setdefault(key, {})[ext] = data
    assert set(seen) == set(inputs)  # the uid is the key
    for uid, sample in inputs.items():
        assert seen[uid]["png"] == sample["image"]
        assert seen[uid]["txt"] == sample["caption"].encode()
        assert seen[uid]["json"] == json.dumps(sample["meta"]).encode()  # not rewritten
    ok, line = count_check(stream)
    assert ok, line
    assert [st.eval["retrieval"].count for st in stream.steps] == [3, 3, 3]
    assert [stream.validation_count(st) for st in stream.steps] == [2, 2, 2]
    assert sum(st.train.count for st in stream.steps) == 36 - 9 - 6
    assert verify_stream(TimeStream.load(stream.root)).ok
    es = stream.eval_set(0)
    assert len(es) == 3 and all(inputs[m["uid"]]["caption"] == c for m, c in zip(es.meta, es.captions))
    assert stream.provenance["source"] == "reshard" and stream.provenance["counts"]["input_rows"] == 36


def test_every_sample_is_counted_under_its_reason(tmp_path):
    img = tiny_png()
    good = [{"key": f"k{i}", "image": img, "caption": f"a good caption {i}", "meta": {"uid": f"g{i}"}} for i in range(8)]
    bad = [
        {"key": "nt", "image": img, "caption": "not in the table", "meta": {"uid": "stranger"}},
        {"key": "dj", "image": img, "caption": "broken json here", "meta": b"{not json"},
        {"key": "ni", "caption": "no image at all", "meta": {"uid": "g0x"}},
        {"key": "nc", "image": img, "meta": {"uid": "g1x"}},
        {"key": "bt", "image": img, "caption": "bad timestamp row", "meta": {"uid": "badtime"}},
        {"key": "oor", "image": img, "caption": "far future row", "meta": {"uid": "future"}},
        {"key": "keyuid", "image": img, "caption": "uid from the key"},  # no .json: the key is the uid
        {"key": "sh", "image": img, "caption": "a", "meta": {"uid": "short"}},
    ]
    write_input_shard(str(tmp_path / "in" / "a.tar"), good[:5] + bad)
    dup = {"key": "again", "image": img, "caption": "the same uid again", "meta": {"uid": "g2"}}
    write_input_shard(str(tmp_path / "in" / "b.tar"), good[5:] + [dup])
    with open(tmp_path / "in" / "c.tar", "wb") as f:  # a truncated shard: cut in its second sample's image
        f.write(open(tmp_path / "in" / "a.tar", "rb").read()[:3 * 1024 + 512 + 30])  # 1024 bytes a member
    rows = [(f"g{i}", 2015 + i % 2) for i in range(8)] + [("badtime", "soon"), ("future", 3100), ("keyuid", 2016),
                                                          ("short", 2016), ("g1x", 2016), ("g0x", 2016)]
    table = write_table(str(tmp_path / "ts.csv"), rows + [("g3", 2011), ("", 2012), ("x", 2013, "extra cell")])
    # g3 twice: the earliest time; a row without uid and a malformed row are counted and left out
    stream = reshard_stream(check_reshard_request(str(tmp_path / "in"), table,
                                                  {**SMALL, "eval_size": 1, "min_caption_words": 2}),
                            tmp_path / "out", progress=False)
    c = stream.provenance["counts"]
    assert c["skipped"] == {"bad_timestamp": 1, "corrupt_json": 1, "missing_caption": 1, "missing_image": 1,
                            "timestamp_out_of_range": 1, "uid_not_in_table": 1}
    assert c["filtered"] == {"caption_words": 1}
    assert c["duplicates"] == 2  # g2 again in b.tar, and c.tar's one whole sample is a.tar's g0
    assert c["source_skipped"] == {"unreadable_shard": 1}
    assert c["input_rows"] == 13 + 4 + 1  # c.tar: one whole sample before the cut
    assert stream.labels == ["2011", "2015", "2016"]  # g3 from the table's earlier row
    assert stream.provenance["reshard"]["table"] == {"table_rows": 16, "rows_without_uid": 1, "duplicate_uids": 1,
                                                      "malformed_rows": 1}
    ok, line = count_check(stream)
    assert ok, line
    keys = {k for st in stream.steps for _, ss in st.shard_sets() for rel in ss.shards
            for k in (n.split(".")[0] for n, _ in _members(os.path.join(stream.root, rel)))}
    assert keys == {f"g{i}" for i in range(8)} | {"keyuid"}


def test_image_filters_decode_but_keep_the_bytes(tmp_path):
    big, small = tiny_png(1, (40, 30)), tiny_png(2, (8, 8))
    write_input_shard(str(tmp_path / "in" / "a.tar"), [
        {"key": "big", "image": big, "caption": "a big one", "meta": {"uid": "big"}},
        {"key": "small", "image": small, "caption": "a small one", "meta": {"uid": "small"}},
        {"key": "wide", "image": tiny_png(3, (90, 20)), "caption": "a wide one", "meta": {"uid": "wide"}},
        {"key": "junk", "image": b"\x89PNG not really", "caption": "a junk one", "meta": {"uid": "junk"}}])
    table = write_table(str(tmp_path / "ts.csv"), [(u, 2016) for u in ("big", "small", "wide", "junk")])
    stream = reshard_stream(check_reshard_request(str(tmp_path / "in" / "a.tar"), table,
                                                  {"eval_size": 0, "validation_size": 0, "min_image_side": 10,
                                                   "max_aspect_ratio": 3}), tmp_path / "out", progress=False)
    c = stream.provenance["counts"]
    assert c["filtered"] == {"aspect_ratio": 1, "image_side": 1} and c["skipped"] == {"corrupt_image": 1}
    (rel,) = stream.steps[0].train.shards
    assert dict(_members(os.path.join(stream.root, rel)))["big.png"] == big


def test_an_interrupted_reshard_resumes_per_input_shard(tmp_path, monkeypatch):
    import ticlip.data.build.reshard as reshard
    from ticlip.data.build import reshard_map

    spec, table, _ = _corpus(tmp_path, shards=4)
    request = check_reshard_request(spec, table, SMALL)
    reference = reshard_stream(request, tmp_path / "ref", progress=False)
    calls = []

    def flaky(opts, job):
        calls.append(job[0])
        if job[0] == 2:
            raise KeyboardInterrupt  # the machine goes away while shard 2 is read
        return reshard_map.map_shard(opts, job)

    monkeypatch.setattr(reshard, "map_shard", flaky)
    with pytest.raises(KeyboardInterrupt):
        reshard_stream(request, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "stream.json").exists()
    calls.clear()
    monkeypatch.setattr(reshard, "map_shard", lambda opts, job: (calls.append(job[0]), reshard_map.map_shard(opts, job))[1])
    stream = reshard_stream(request, tmp_path / "out", progress=False)
    assert calls == [2, 3]  # shards 0 and 1 were done: not read again
    assert _tree(stream.root) == _tree(reference.root)
    assert not (tmp_path / "out" / ".build" / "parts").exists()  # the parts go once the stream is written
    calls.clear()
    assert reshard_stream(request, tmp_path / "out", progress=False).to_dict() == stream.to_dict()  # finished: as is
    assert calls == []


def test_an_interrupted_write_pass_resumes(tmp_path, monkeypatch):
    import ticlip.data.build.reshard as reshard

    spec, table, _ = _corpus(tmp_path)
    request = check_reshard_request(spec, table, SMALL)
    reference = reshard_stream(request, tmp_path / "ref", progress=False)
    real, written = reshard.write_output, []

    def flaky(job):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(job[0])
        return real(job)

    monkeypatch.setattr(reshard, "write_output", flaky)
    with pytest.raises(KeyboardInterrupt):
        reshard_stream(request, tmp_path / "out", progress=False)
    monkeypatch.setattr(reshard, "write_output", lambda job: (written.append(job[0]), real(job))[1])
    stream = reshard_stream(request, tmp_path / "out", progress=False)
    total = sum(len(ss.shards) for st in stream.steps for _, ss in st.shard_sets())
    assert len(written) == total  # the 3 finished shards were not written again
    assert _tree(stream.root) == _tree(reference.root)


def test_output_is_identical_whatever_the_engine_and_worker_count(tmp_path):
    pytest.importorskip("distributed")
    spec, table, _ = _corpus(tmp_path, shards=5, per_shard=10)
    request = check_reshard_request(spec, table, SMALL)
    one = reshard_stream(request, tmp_path / "one", progress=False)
    two = reshard_stream(request, tmp_path / "two", engine=LocalEngine(2), progress=False)
    engine = DaskEngine(workers=2, processes=False)
    try:
        dask = reshard_stream(request, tmp_path / "dask", engine=engine, progress=False)
    finally:
        engine.close()
    assert _tree(one.root) == _tree(two.root) == _tree(dask.root)
    assert len(_tree(one.root)) > 10


@pytest.mark.parametrize("args, message", [
    (["--timestamp-col", "time"], "no column 'time'; the table has: uid, timestamp (choose one with --timestamp-col)"),
    (["--uid-col", "key"], "no column 'key'; the table has: uid, timestamp (choose one with --uid-col)"),
    (["--max-image-side", "64"], "max_image_side does not apply to a reshard"),
    (["--caption-col", "text"], "--caption-col does not apply with --timestamps"),
])
def test_bad_input_is_one_line_before_anything_is_written(args, message, tmp_path, capsys):
    spec, table, _ = _corpus(tmp_path, shards=1, per_shard=2)
    out = tmp_path / "out"
    assert main(["data", "build", spec, "--timestamps", table, "--out", str(out), "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("spec, message", [
    ("in/{00005..00007}.tar", "no shards matched in/{00005..00007}.tar: 3 path(s), none exists"),
    ("empty", "no shards matched: the directory"),
    ("list.txt", "no shards matched: the list file"),
    ("in/{00000..00001}.tar", "1 of the 2 shards of"),
])
def test_shards_that_do_not_match_are_one_line(spec, message, tmp_path, capsys, monkeypatch):
    _, table, _ = _corpus(tmp_path, shards=1, per_shard=2)
    (tmp_path / "empty").mkdir()
    (tmp_path / "list.txt").write_text("# nothing\n\n")
    (tmp_path / "in" / "00000.tar").rename(tmp_path / "in" / "00001.tar")
    monkeypatch.chdir(tmp_path)
    assert main(["data", "build", spec, "--timestamps", table, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_list_file_and_the_cli(tmp_path, capsys):
    spec, table, _ = _corpus(tmp_path, shards=2, per_shard=6)
    (tmp_path / "shards.txt").write_text("in/00000.tar\n# a comment\n" + str(tmp_path / "in" / "00001.tar") + "\n")
    out = tmp_path / "out"
    assert main(["data", "build", str(tmp_path / "shards.txt"), "--timestamps", table, "--out", str(out),
                 "--eval-size", "1", "--validation-size", "0", "--quiet", "--workers", "1"]) == 0
    assert "resharded 12 samples of 2 shards" in capsys.readouterr().out
    stream = TimeStream.load(out)
    assert sum(st.train.count for st in stream.steps) == 12 - 3 and not stream.has_validation


def test_dask_missing_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(TiclipError, match=r"pip install 'ticlip\[dask\]'"):
        DaskEngine(workers=1)


def test_check_refuses_without_writing(tmp_path):
    spec, table, _ = _corpus(tmp_path, shards=1, per_shard=2)
    with pytest.raises(BuildError, match="dedup false does not apply"):
        check_reshard_request(spec, table, {"dedup": False})
    with pytest.raises(BuildError, match="unknown table format"):
        check_reshard_request(spec, str(tmp_path / "ts.jsonl"))


def test_tar_members_are_what_tarfile_makes_and_reads(tmp_path):
    import io

    from ticlip.data.build.tar_stream import member, read_members

    for name, data in [("k0.png", b"\x89PNG" * 33), ("a/b.txt", b""), ("x" * 100 + ".json", b"{}")]:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o444
        expected = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape") + data + bytes(-len(data) % 512)
        assert member(name, data) == expected
    members = [("short.txt", b"abc"), ("l" * 120 + ".txt", b"long gnu name"), ("é" * 60 + ".json", b"{}")]
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
            for name, data in members:
                if fmt == tarfile.USTAR_FORMAT:
                    name = "dir/" * 30 + "s.txt"  # a ustar prefix
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            entry = tarfile.TarInfo("adir")
            entry.type = tarfile.DIRTYPE
            tar.addfile(entry)  # a directory entry: not a member
        got = list(read_members(io.BytesIO(buf.getvalue())))
        want = [("dir/" * 30 + "s.txt" if fmt == tarfile.USTAR_FORMAT else n, d) for n, d in members]
        assert got == want
    broken = bytearray(member("a.txt", b"x"))
    broken[0] = ord("b")
    with pytest.raises(tarfile.ReadError, match="checksum"):
        list(read_members(io.BytesIO(bytes(broken))))
    with pytest.raises(EOFError, match="truncated"):
        list(read_members(io.BytesIO(member("a.txt", b"x" * 600)[:800])))


@pytest.mark.parametrize("name", ["a.png", "dir/0001.seg.json", "x/.hidden", "x/.a.b", "noext", "a.b/c.txt", "a.b/c", ".x.y"])
def test_member_names_split_as_webdataset_splits_them(name):
    from webdataset.tariterators import base_plus_ext

    from ticlip.data.build.reshard_map import split_name

    assert split_name(name) == base_plus_ext(name)
