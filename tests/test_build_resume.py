"""Idempotent, resumable builds: interrupted builds finish with the same result; other configs
or inputs into the same directory are refused unless asked to overwrite."""

import hashlib
import json
import os

import pytest

import ticlip.data.build.images as images_mod
from test_build import image_rows, write_csv
from ticlip.data.build import BuildConfig, BuildError, build_stream
from ticlip.data.stream import TimeStream
from ticlip.data.table import read_table
from ticlip.data.toy import make_toy_stream

CONFIG = dict(eval_size=5, shard_size=8, max_image_side=16)


def run(table, out, workers=1, overwrite=False, records=None, **overrides):
    cfg = BuildConfig(**{**CONFIG, **overrides})
    return build_stream(records if records is not None else read_table(table), str(out), cfg, name="r",
                        source="table", source_params={"table": "t.csv"}, progress=False, workers=workers,
                        overwrite=overwrite)


def tree(out):
    """{relative path: sha256} of every shard and sizes.json, plus the manifest minus its root."""
    files = {}
    for d, _, names in os.walk(os.path.join(out, "steps")):
        for n in names:
            p = os.path.join(d, n)
            files[os.path.relpath(p, out)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    manifest = json.load(open(os.path.join(out, "stream.json")))
    return files, manifest


@pytest.fixture
def table(tmp_path):
    rows = image_rows(tmp_path, 60, ["2015", "2016", "2017"])
    rows[7]["image"] = str(tmp_path / "missing.png")
    return write_csv(tmp_path / "t.csv", rows)


@pytest.fixture
def reference(table, tmp_path):
    run(table, tmp_path / "ref")
    return tree(tmp_path / "ref")


def test_interrupted_reading_then_resumed(table, tmp_path, reference):
    def failing():
        for i, r in enumerate(read_table(table)):
            if i == 30:
                raise RuntimeError("source died")
            yield r

    with pytest.raises(RuntimeError, match="source died"):
        run(table, tmp_path / "out", records=failing())
    assert not os.path.exists(tmp_path / "out" / "stream.json")
    run(table, tmp_path / "out")
    assert tree(tmp_path / "out") == reference


def test_interrupted_after_some_shards_then_resumed(table, tmp_path, reference, monkeypatch):
    real = images_mod.write_shard
    written = []

    def flaky(path, samples):
        if len(written) == 4:
            raise KeyboardInterrupt
        written.append(path)
        return real(path, samples)

    monkeypatch.setattr(images_mod, "write_shard", flaky)
    with pytest.raises(KeyboardInterrupt):
        run(table, tmp_path / "out")
    assert not os.path.exists(tmp_path / "out" / "stream.json")
    first = list(written)

    written.clear()
    monkeypatch.setattr(images_mod, "write_shard", lambda p, s: (written.append(p), real(p, s))[1])
    run(table, tmp_path / "out")
    assert tree(tmp_path / "out") == reference
    total = len([f for f in reference[0] if f.endswith(".tar")])  # 3 eval + 6 train shards
    assert len(first) == 4 and len(written) == total - 4  # finished shards were not written again
    assert not set(first) & set(written)

    # a finished build re-run: nothing is written, same result
    written.clear()
    run(table, tmp_path / "out")
    assert written == [] and tree(tmp_path / "out") == reference


def test_workers_give_identical_output(table, tmp_path, reference):
    run(table, tmp_path / "par", workers=2)
    assert tree(tmp_path / "par") == reference


def test_other_config_refused_unless_overwrite(table, tmp_path):
    out = tmp_path / "out"
    run(table, out)
    with pytest.raises(BuildError, match=r"different configuration \(config.eval_size: 5 -> 6\).*--overwrite"):
        run(table, out, eval_size=6)
    s = run(table, out, eval_size=6, overwrite=True)
    assert s.provenance["config"]["eval_size"] == 6
    assert TimeStream.load(out).steps[0].eval["retrieval"].count == 6
    # image_cache_dir does not shape the output: no conflict
    run(table, out, eval_size=6, image_cache_dir=str(tmp_path / "cache"))


def test_changed_input_refused(table, tmp_path):
    out = tmp_path / "out"
    run(table, out)
    with open(table, "a") as f:
        f.write(f"{tmp_path}/img/1.png,one more photo,2016\n")
    with pytest.raises(BuildError, match="different input rows"):
        run(table, out)
    assert run(table, out, overwrite=True).provenance["counts"]["input_rows"] == 61


def test_foreign_stream_refused(table, tmp_path):
    make_toy_stream(str(tmp_path / "toy"), steps=2)
    with pytest.raises(BuildError, match="no build record"):
        run(table, tmp_path / "toy")
    run(table, tmp_path / "toy", overwrite=True)
    assert TimeStream.load(tmp_path / "toy").name == "r"
    assert os.path.exists(tmp_path / "toy" / "steps" / "0" / "eval-retrieval-000000.tar")
    assert not os.path.exists(tmp_path / "toy" / "steps" / "0" / "eval-000000.tar")  # the toy's shards are gone
