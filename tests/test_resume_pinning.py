"""A run pins its inputs (run.json: absolute stream root and --init path with fingerprints); --resume
uses them from any working directory, refuses a changed stream or --init with one line, and keeps the
saved settings the resume command line does not give (threads: the weights then equal an uninterrupted
run's bit for bit)."""

import json
import os

import pytest
import torch
from train_helpers import Crash, crashing, one_thread  # noqa: F401  (one_thread: autouse fixture)

from ticlip.cli import main
from ticlip.config import TrainConfig
from ticlip.data.toy import make_toy_stream
from ticlip.run_layout import RunInfo
from ticlip.train.run import load_resume_config, train_run




def settings(stream, logs, name, **kw):
    base = dict(stream=stream, logs=str(logs), name=name, batch_size=8, workers=0, warmup=1, steps="0:1",
                chunk_iterations=2, save_every_s=0.0, progress=False, method="sequential", iterations_per_step=4)
    base.update(kw)
    return TrainConfig(**base)


def weights(run_dir) -> dict:
    out = {}
    for t in sorted(os.listdir(os.path.join(run_dir, "steps"))):
        ckpt = torch.load(os.path.join(run_dir, "steps", t, "checkpoint.pt"), map_location="cpu", weights_only=True)
        out[t] = ckpt["state_dict"]
    return out


def assert_same_weights(a_dir, b_dir):
    a, b = weights(a_dir), weights(b_dir)
    assert a.keys() == b.keys() and a
    for t in a:
        different = [k for k in a[t] if not torch.equal(a[t][k], b[t][k])]
        assert not different, f"step {t}: {different[:5]}"


def snapshot(root) -> dict:
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


@pytest.fixture()
def two_places(tmp_path, monkeypatch):
    """Two working directories, each with its own stream at the relative path 'stream'."""
    a, b = tmp_path / "a", tmp_path / "b"
    make_toy_stream(str(a / "stream"), steps=2, train_per_step=48, eval_per_step=8, validation_per_step=0)
    make_toy_stream(str(b / "stream"), steps=2, train_per_step=48, eval_per_step=8, validation_per_step=0, seed=7)
    return a, b


@pytest.mark.slow
def test_resume_from_another_directory_trains_on_the_pinned_stream_with_the_saved_threads(two_places, tmp_path,
                                                                                           monkeypatch, capsys):
    a, b = two_places
    logs = tmp_path / "runs"
    monkeypatch.chdir(a)
    train_run(settings("stream", logs, "ref", threads=2))  # uninterrupted, from a/
    cfg = settings("stream", logs, "crashed", threads=2)
    with pytest.raises(Crash):
        train_run(cfg, method=crashing("sequential", 4 + 3))  # dies in step 1
    info = RunInfo.load(str(logs / "crashed"))
    assert info.stream == str(a / "stream") and info.stream_fingerprint.startswith("sha256:")

    monkeypatch.chdir(b)  # 'stream' here is another stream; the run must not notice
    torch.set_num_threads(1)
    capsys.readouterr()
    assert main(["train", "--logs", str(logs), "--name", "crashed", "--resume", "--no-progress"]) == 0
    assert "resuming main phase" in capsys.readouterr().err
    assert torch.get_num_threads() == 2  # the saved thread count, not the default
    assert_same_weights(logs / "ref", logs / "crashed")
    saved = (logs / "crashed" / "config.yaml").read_text()
    assert "stream: stream" in saved and "threads: 2" in saved  # the config as the user gave it


def test_resume_keeps_saved_settings_that_the_command_line_does_not_give(tmp_path, toy_stream):
    cfg = settings(toy_stream.root, tmp_path, "r", threads=3, save_every_s=5.0)
    os.makedirs(tmp_path / "r")
    cfg.to_yaml(str(tmp_path / "r" / "config.yaml"))
    resumed = load_resume_config(TrainConfig(name="r", logs=str(tmp_path)), given={"name", "logs"})
    assert resumed.threads == 3 and resumed.save_every_s == 5.0
    resumed = load_resume_config(TrainConfig(name="r", logs=str(tmp_path), threads=1), given={"name", "threads"})
    assert resumed.threads == 1  # given on the resume command line: it wins
    # library callers: the fields set on the TrainConfig count as given
    assert load_resume_config(TrainConfig(name="r", logs=str(tmp_path))).threads == 3


def _crashed_run(tmp_path, stream_root, **kw):
    cfg = settings(stream_root, tmp_path / "runs", "crashed", **kw)
    with pytest.raises(Crash):
        train_run(cfg, method=crashing("sequential", 4 + 3))
    return tmp_path / "runs" / "crashed"


def _refused_resume(tmp_path, capsys, run_dir, word):
    before = snapshot(run_dir)
    capsys.readouterr()
    rc = main(["train", "--logs", str(tmp_path / "runs"), "--name", "crashed", "--resume", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert word in err and "run.json" in err or word in err and "--name" in err
    assert snapshot(run_dir) == before  # nothing written, nothing removed (no lock file left either)


@pytest.mark.slow
def test_resume_refuses_a_changed_stream(tmp_path, capsys):
    stream = make_toy_stream(str(tmp_path / "stream"), steps=2, train_per_step=48, eval_per_step=8,
                             validation_per_step=0)
    run_dir = _crashed_run(tmp_path, stream.root)
    manifest = tmp_path / "stream" / "stream.json"
    d = json.loads(manifest.read_text())
    d["name"] = "someone-elses"
    manifest.write_text(json.dumps(d))
    _refused_resume(tmp_path, capsys, run_dir, "changed")


@pytest.mark.slow
def test_resume_refuses_a_changed_init(tmp_path, toy_stream, capsys):
    train_run(settings(toy_stream.root, tmp_path / "src", "init", steps="0:0", iterations_per_step=2))
    init = tmp_path / "init.pt"
    init.write_bytes((tmp_path / "src" / "init" / "steps" / "0" / "checkpoint.pt").read_bytes())
    run_dir = _crashed_run(tmp_path, toy_stream.root, init=str(init))
    assert RunInfo.load(str(run_dir)).init == str(init)
    ckpt = torch.load(init, weights_only=True)
    ckpt["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, init)
    _refused_resume(tmp_path, capsys, run_dir, "changed")


def test_old_run_json_without_pins_still_loads(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"name": "old", "stream": "/data/s", "model": "m", "method": "x",
                                                   "seed": 1, "steps": [], "extra": {}}))
    info = RunInfo.load(str(tmp_path))
    assert info.stream_fingerprint == "" and info.init is None


def test_newer_run_json_with_unknown_keys_still_loads(tmp_path):
    """A run.json written by a newer ticlip (keys this version does not know, at the top and in a step)
    is read, not a TypeError traceback; the known fields keep their values."""
    step = {"index": 0, "label": "2015", "checkpoint": "steps/0/checkpoint.pt", "finished": True, "from_future": 1}
    (tmp_path / "run.json").write_text(json.dumps({"name": "new", "stream": "/data/s", "model": "m", "method": "x",
                                                   "seed": 2, "steps": [step], "extra": {}, "from_future": "y"}))
    info = RunInfo.load(str(tmp_path))
    assert (info.name, info.seed, info.steps[0].label, info.steps[0].finished) == ("new", 2, "2015", True)
