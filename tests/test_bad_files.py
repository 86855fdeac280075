"""Bad data files (issue 11, points 2, 6, 7): a command-running shard URL is refused when the manifest
is loaded; a manifest with wrong types, a non-UTF-8 table, a missing step directory and a full disk
each end in one line naming the file or key; implausible timestamps are counted, not filed under
1969/1970; a truncated shard and a corrupt image are skipped and counted in training, evaluation and
the report; ``ticlip data info --verify`` reads every shard."""

import errno
import json
import os
import shutil

import pytest
from test_build import image_rows, write_csv
from train_helpers import one_error_line, one_thread  # noqa: F401  (one_thread: autouse fixture)

from ticlip.cli import main
from ticlip.data.shards import ShardSample, encode_image, write_shard
from ticlip.data.stream import StreamError, TimeStream

MODEL = "ticlip-tiny-32"




def copy_stream(toy_stream, tmp_path, name="s") -> str:
    root = str(tmp_path / name)
    shutil.copytree(toy_stream.root, root)
    return root


def edit_manifest(root: str, change) -> str:
    path = os.path.join(root, "stream.json")
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    change(d)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(d, f)
    return path


def train_args(root, logs, name="r", steps="0", memory=()):
    return ["train", "--stream", root, "--logs", str(logs), "--name", name, "--method", "sequential",
            "--iterations-per-step", "4", "--batch-size", "8", "--workers", "0", "--warmup", "0",
            "--steps", steps, "--no-progress", *memory]


# ------------------------------------------------------------------------------ pipe: URLs
@pytest.mark.parametrize("where", ["train", "eval"])
def test_a_pipe_url_in_a_manifest_is_refused_on_load_by_every_command(toy_stream, tmp_path, capsys, where):
    from ticlip.models import create_model, save_checkpoint

    root = copy_stream(toy_stream, tmp_path)
    marker = tmp_path / "MARKER"
    url = f"pipe:touch {marker}"

    def plant(d):
        target = d["steps"][1]["train"] if where == "train" else d["steps"][1]["eval"]["retrieval"]
        target["shards"] = [url] + target["shards"]

    manifest = edit_manifest(root, plant)
    ckpt = save_checkpoint(create_model(MODEL, seed=0).model, str(tmp_path / "c.pt"), name=MODEL)
    commands = {
        "train": train_args(root, tmp_path / "logs"),
        "eval": ["eval", "--checkpoint", ckpt, "--model", MODEL, "--stream", root, "--out", str(tmp_path / "ev"),
                 "--tasks", "retrieval"],
        "data": ["data", "info", root],
    }
    for command, argv in commands.items():
        assert main(argv) == 2, command
        line = one_error_line(capsys, command)
        assert manifest in line and url in line and "pipe:" in line, line
    assert not marker.exists()
    assert not (tmp_path / "logs" / "r").exists()


@pytest.mark.parametrize("url, ok", [
    ("steps/0/a.tar", True), ("/abs/a.tar", True), ("s3://bucket/a.tar", True), ("https://host/a.tar", True),
    ("pipe:curl x", False), ("PIPE:ls", False), ("gopen:x", False), ("nosuchfs://x/a.tar", False),
])
def test_shard_urls_are_files_or_fsspec(url, ok):
    from ticlip.data.shards import UnsafeShardURL, check_shard_url

    if ok:
        check_shard_url(url, "m")
    else:
        with pytest.raises(UnsafeShardURL):
            check_shard_url(url, "m")


def test_a_pipe_url_never_reaches_a_shell_even_without_the_manifest_check(tmp_path):
    from ticlip.data.shards import UnsafeShardURL, open_shard

    marker = tmp_path / "MARKER"
    with pytest.raises(UnsafeShardURL):
        open_shard(f"pipe:touch {marker}")
    assert not marker.exists()


# ------------------------------------------------------------------------------ manifest types
@pytest.mark.parametrize("change, key", [
    (lambda d: d["steps"][0]["train"].update(count="abc"), "steps[0].train.count"),
    (lambda d: d.update(steps={"0": 1}), "steps must be a list"),
    (lambda d: d["steps"][1]["train"].update(shards="steps/1/train-000000.tar"), "steps[1].train.shards"),
    (lambda d: d["steps"][0]["eval"].update(retrieval=[1, 2]), "steps[0].eval.retrieval"),
    (lambda d: d["steps"][2].pop("label"), "steps[2] lacks field 'label'"),
])
def test_a_manifest_with_wrong_types_names_the_key(toy_stream, tmp_path, capsys, change, key):
    root = copy_stream(toy_stream, tmp_path)
    manifest = edit_manifest(root, change)
    assert main(["data", "info", root]) == 2
    line = one_error_line(capsys, "data")
    assert manifest in line and key in line


# ------------------------------------------------------------------------------ missing files
def test_a_missing_step_directory_is_found_before_training(toy_stream, tmp_path, capsys):
    root = copy_stream(toy_stream, tmp_path)
    shutil.rmtree(os.path.join(root, "steps", "2"))
    assert main(train_args(root, tmp_path / "logs", steps="0:3")) == 2
    line = one_error_line(capsys, "train")
    assert "step '2021'" in line or "steps/2" in line
    assert "directory" in line and "missing" in line
    assert not (tmp_path / "logs" / "r").exists()  # nothing trained, nothing written
    assert main(["data", "info", root]) == 0  # info describes the stream and names what is missing
    out = capsys.readouterr().out
    assert "MISSING" in out and "--verify" in out


# ------------------------------------------------------------------------------ tables and timestamps
def test_a_binary_or_latin1_table_is_one_line(tmp_path, capsys):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("image,caption,timestamp\na.png,caf\xe9 au lait,2016\n".encode("latin-1"))
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe" * 50)
    for path in (latin, binary):
        assert main(["data", "build", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
        line = one_error_line(capsys, "data")
        assert str(path) in line and "UTF-8" in line and "iconv" in line
    assert not os.path.exists(tmp_path / "out" / "stream.json")


@pytest.mark.parametrize("value", [-5, 99999, "-5", "99999", "0", "0200-01-01", 1e13])
def test_implausible_timestamps_are_out_of_range(value):
    from ticlip.data.timestamps import TimestampOutOfRange, parse_timestamp

    with pytest.raises(TimestampOutOfRange):
        parse_timestamp(value)


def test_out_of_range_timestamps_are_counted_not_filed_under_1969(tmp_path):
    from ticlip.data.build import BuildConfig, build_stream
    from ticlip.data.table import read_table

    rows = image_rows(tmp_path, 24, ["2014", "2015"])
    rows[0]["timestamp"], rows[1]["timestamp"] = "-5", "99999"
    table = write_csv(tmp_path / "t.csv", rows)
    stream = build_stream(read_table(table), str(tmp_path / "s"), BuildConfig(eval_size=2, max_image_side=8),
                          name="t", source="table", progress=False)
    assert stream.labels == ["2014", "2015"]
    assert stream.provenance["counts"]["skipped"] == {"timestamp_out_of_range": 2}


# ------------------------------------------------------------------------------ full disk, spool
def test_a_full_disk_during_a_build_says_so_and_leaves_no_spool(tmp_path, capsys, monkeypatch):
    from ticlip.atomic import atomic_path
    from ticlip.data.build import images

    rows = image_rows(tmp_path, 24, ["2014", "2015"])
    table = write_csv(tmp_path / "t.csv", rows)
    out = tmp_path / "out"

    def full_disk(path, samples):  # the first shard write fills the disk
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"part of a tar")
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(images, "write_shard", full_disk)
    assert main(["data", "build", table, "--out", str(out), "--eval-size", "2", "--max-image-side", "8",
                 "--workers", "1", "--quiet"]) == 2
    line = one_error_line(capsys, "data")
    assert "disk is full" in line and str(out) in line
    assert not list(out.rglob("spool.bin")) and not list(out.rglob("*.tmp-*")) and not (out / "stream.json").exists()


def test_a_failed_build_leaves_no_spool(tmp_path, monkeypatch):
    from ticlip.data.build import BuildConfig, build_stream, images
    from ticlip.data.records import Record

    def broken(*a, **k):
        raise RuntimeError("image pass failed")

    from PIL import Image

    records = [Record(image=Image.new("RGB", (8, 8), (i, 0, 0)), caption=f"photo number {i}",
                      timestamp=str(2014 + i % 2), uid=f"u{i}") for i in range(20)]
    monkeypatch.setattr(images, "write_shard", broken)
    with pytest.raises(RuntimeError):
        build_stream(records, str(tmp_path / "s"), BuildConfig(eval_size=2), name="t", source="test", progress=False)
    assert not list((tmp_path / "s").rglob("spool.bin"))


# ------------------------------------------------------------------------------ corrupt samples
def _corrupt(root: str) -> None:
    """Step 0 of the stream at ``root``: train shard 0 truncated, train shard 1 and the eval shard each
    with one image that does not decode (the other samples intact)."""
    stream = TimeStream.load(root)
    st = stream.steps[0]
    first = stream.resolve(st.train.shards[0])
    size = os.path.getsize(first)
    with open(first, "r+b") as f:
        f.truncate(size // 2)
    for rel in (st.train.shards[1], st.eval["retrieval"].shards[0]):
        path = stream.resolve(rel)
        samples = list(stream.iter_samples([path]))
        out = []
        for k, s in enumerate(samples):
            ext, data = encode_image(s["image"])
            out.append(ShardSample(s["__key__"], ext, b"not an image" if k == 0 else data, f"caption {k}", s["meta"]))
        write_shard(path, out)


@pytest.fixture(scope="module")
def corrupt_run(toy_stream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corrupt")
    root = copy_stream(toy_stream, tmp)
    _corrupt(root)
    logs = tmp / "logs"
    # default settings: step 0 cannot be decoded into memory (ticlip.train.memory), so it trains on the
    # webdataset path, which skips and counts
    assert main(train_args(root, logs, name="c", steps="0")) == 0
    return root, logs / "c"


def test_corrupt_samples_in_training_are_skipped_and_counted(corrupt_run, toy_stream, tmp_path):
    _, run = corrupt_run
    log = [json.loads(line) for line in open(run / "steps" / "0" / "train_log.jsonl")]
    logged = {}
    for record in log:
        for reason, n in record.get("skipped", {}).items():
            logged[reason] = logged.get(reason, 0) + n
    step = json.load(open(run / "steps" / "0" / "step.json"))
    assert step["skipped_samples"] == logged
    assert logged.get("unreadable shard", 0) >= 1 and logged.get("undecodable sample", 0) >= 1
    # the webdataset path on its own (no in-memory attempt) counts the same way
    root = copy_stream(toy_stream, tmp_path)
    _corrupt(root)
    assert main(train_args(root, tmp_path / "logs", name="w", memory=["--memory-limit-mb", "0"])) == 0
    skipped = json.load(open(tmp_path / "logs" / "w" / "steps" / "0" / "step.json"))["skipped_samples"]
    assert skipped.get("unreadable shard", 0) >= 1 and skipped.get("undecodable sample", 0) >= 1


def test_corrupt_samples_in_evaluation_are_skipped_counted_and_reported(corrupt_run, capsys):
    root, run = corrupt_run
    capsys.readouterr()
    assert main(["eval", str(run), "--tasks", "retrieval"]) == 0
    records = [json.loads(line) for line in open(run / "eval.jsonl")]
    bad = [r for r in records if r.get("skipped_samples")]
    assert bad and all(r["eval_step"]["index"] == 0 for r in bad)
    assert bad[0]["skipped_samples"] == {"undecodable sample": 1}
    assert all(r["n"] == 15 for r in bad if "n" in r)  # 16 pairs, 1 left out
    summary = json.load(open(run / "eval_summary.json"))
    assert summary["skipped_samples"] == {"retrieval 2019": {"undecodable sample": 1}}
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "skipped unreadable samples" in out and "1 in eval sets" in out and "while training" in out


# ------------------------------------------------------------------------------ info --verify
def test_info_verify_reads_every_shard(toy_stream, tmp_path, capsys):
    root = copy_stream(toy_stream, tmp_path)
    assert main(["data", "info", root, "--verify"]) == 0
    out = capsys.readouterr().out
    assert "verify:" in out and "OK" in out and "problem:" not in out
    _corrupt(root)
    assert main(["data", "info", root]) == 0  # plain info checks counts and files only, and says so
    out = capsys.readouterr().out
    assert "--verify" in out and "verify:" not in out
    assert main(["data", "info", root, "--verify"]) == 1
    out = capsys.readouterr().out
    problems = [line for line in out.splitlines() if line.startswith("problem:")]
    assert "FAILED" in out and any("train: 1 unreadable shard" in p for p in problems)
    assert any("eval retrieval: 1 undecodable sample" in p for p in problems)
    assert any("eval retrieval: the manifest claims 16 pairs, its shards hold 15" in p for p in problems)
    assert main(["data", "info", root, "--verify", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["verify"]["ok"] is False and doc["verify"]["problems"] == [p.split(":", 1)[1].strip() for p in problems]


def test_a_stream_error_is_a_one_line_user_error(toy_stream, tmp_path):
    root = copy_stream(toy_stream, tmp_path)
    edit_manifest(root, lambda d: d["steps"][0].update(index="zero"))
    with pytest.raises(StreamError) as e:
        TimeStream.load(root)
    assert "steps[0].index" in str(e.value) and "\n" not in str(e.value)


def test_a_pipe_url_in_a_pool_source_is_refused_before_reading(tmp_path):
    from ticlip.data.shards import UnsafeShardURL
    from ticlip.methods.base import PoolSource
    from ticlip.train.batches import _pool

    marker = tmp_path / "MARKER"
    with pytest.raises(UnsafeShardURL, match="pipe:"):
        _pool(PoolSource(weight=1.0, shards=(f"pipe:touch {marker}",)))
    assert not marker.exists()
