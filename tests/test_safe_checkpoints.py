"""No code runs from a checkpoint (issue 11, point 1): every checkpoint ticlip reads is loaded with
``torch.load(weights_only=True)``. A planted pickle whose unpickling would create a marker file is
refused with one line as ``--init``, as ``ticlip eval --checkpoint``, and as ``method.pt`` or
``state.pt`` picked up by ``--resume``; the marker never appears. Empty, truncated and mismatched
checkpoints are named as such; open_clip / TiC-CLIP style checkpoints still load."""

import builtins
import errno
import os
import random
import shutil

import numpy as np
import pytest
import torch
from train_helpers import one_error_line, one_thread  # noqa: F401  (one_thread: autouse fixture)

from ticlip.cli import main
from ticlip.models import (CheckpointError, _main as models_main, check_init_checkpoint, checkpoint_weights,
                           create_model, read_checkpoint)

MODEL = "ticlip-tiny-32"


class Planted:
    """Unpickling this calls ``open(marker, "w")``: loading it with full unpickling creates the marker."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def plant(path, marker, around=None) -> str:
    """A torch.save file holding a Planted object (inside ``around``, a dict, if given)."""
    obj = Planted(marker)
    torch.save({**around, "payload": obj} if around is not None else {"state_dict": {"x": obj}}, str(path))
    return str(path)




def test_the_planted_file_really_runs_code_when_fully_unpickled(tmp_path):
    marker = tmp_path / "ran"
    plant(tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)  # what ticlip used to do
    assert marker.exists()


def _trunc_args(stream, logs, name):
    return ["train", "--stream", stream.root, "--logs", str(logs), "--name", name, "--method", "lwf",
            "--iterations-per-step", "4", "--batch-size", "8", "--workers", "0", "--warmup", "1",
            "--steps", "0:1", "--chunk-iterations", "2", "--save-every-s", "0", "--no-progress"]


@pytest.fixture(scope="module")
def crashed(toy_stream, tmp_path_factory):
    """An LwF run that finished step 0 (method.pt) and crashed inside step 1 (state.pt)."""
    from test_resume import Crash, config, crashing

    from ticlip.train.run import train_run

    logs = tmp_path_factory.mktemp("crashed")
    cfg = config(toy_stream, logs, "lwf", method="lwf")
    with pytest.raises(Crash):
        train_run(cfg, method=crashing("lwf", 4 + 3))
    run = logs / "lwf"
    assert (run / "steps" / "0" / "method.pt").exists() and (run / "steps" / "1" / "state.pt").exists()
    return cfg, run


def _copy_run(crashed, tmp_path):
    cfg, run = crashed
    logs = tmp_path / "logs"
    shutil.copytree(run, logs / run.name)
    return cfg.replace(logs=str(logs)), logs / run.name


@pytest.mark.parametrize("planted", ["steps/0/method.pt", "steps/1/state.pt"])
def test_resume_refuses_a_planted_method_or_state_file(crashed, tmp_path, capsys, planted):
    cfg, run = _copy_run(crashed, tmp_path)
    marker = tmp_path / "ran"
    good = torch.load(run / planted, weights_only=True)  # what ticlip writes loads weights-only
    assert isinstance(good, dict) and good
    plant(run / planted, marker, around=good)
    capsys.readouterr()
    rc = main(["train", "--resume", "--logs", cfg.logs, "--name", cfg.name, "--stream", cfg.stream,
               "--method", "lwf", "--no-progress"])
    assert rc == 2
    line = one_error_line(capsys, "train")
    assert str(run / planted) in line and "needs arbitrary unpickling" in line and "--trust" in line
    assert not marker.exists()


def test_resume_state_is_plain_data_and_restores_every_rng(tmp_path):
    from ticlip.atomic import torch_save_atomic
    from ticlip.train.step import rng_state, set_rng_state

    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    np.random.normal()  # numpy keeps a cached gaussian: part of the state
    path = torch_save_atomic({"rng": rng_state()}, str(tmp_path / "state.pt"))
    expected = (random.random(), np.random.normal(), float(torch.rand(1)))
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    set_rng_state(torch.load(path, weights_only=True)["rng"])
    assert (random.random(), np.random.normal(), float(torch.rand(1))) == expected


def test_init_and_eval_checkpoint_refuse_a_planted_file(toy_stream, tmp_path, capsys):
    marker = tmp_path / "ran"
    evil = plant(tmp_path / "evil.pt", marker)
    assert main(_trunc_args(toy_stream, tmp_path, "init") + ["--init", evil]) == 2
    line = one_error_line(capsys, "train")
    assert evil in line and "needs arbitrary unpickling" in line and "convert --trust" in line
    assert not (tmp_path / "init").exists()  # refused before the run directory was made
    assert main(["eval", "--checkpoint", evil, "--model", MODEL, "--stream", toy_stream.root,
                 "--out", str(tmp_path / "ev"), "--tasks", "retrieval"]) == 2
    line = one_error_line(capsys, "eval")
    assert evil in line and "needs arbitrary unpickling" in line
    assert not marker.exists()


def test_a_raw_pickle_is_refused_too(tmp_path):
    import pickle

    marker = tmp_path / "ran"
    with open(tmp_path / "raw.pt", "wb") as f:
        pickle.dump({"state_dict": {"x": Planted(marker)}}, f, protocol=4)
    with pytest.raises(CheckpointError, match="needs arbitrary unpickling"):
        read_checkpoint(str(tmp_path / "raw.pt"))
    assert not marker.exists()


@pytest.fixture(scope="module")
def weights():
    return create_model(MODEL, seed=7).model.state_dict()


def test_open_clip_and_tic_clip_style_checkpoints_load(tmp_path, weights):
    """open_clip's trainer (and TiC-CLIP's released checkpoints) save epoch, name, a DDP state dict
    with ``module.`` prefixes and the optimizer's state."""
    model = create_model(MODEL, seed=0).model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 32, 32), torch.zeros(2, 32, dtype=torch.long))["image_features"].sum().backward()
    opt.step()
    path = str(tmp_path / "epoch_8.pt")
    torch.save({"epoch": 8, "name": "tic-clip", "state_dict": {f"module.{k}": v for k, v in weights.items()},
                "optimizer": opt.state_dict()}, path)
    check_init_checkpoint(path, MODEL)
    loaded = create_model(MODEL, init=path, seed=1).model.state_dict()
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)


@pytest.mark.parametrize("content, words", [
    (b"", "is empty (0 bytes)"),
    ("truncated", "is truncated or not a PyTorch checkpoint"),
    (b"\x00\x01 random bytes, not a checkpoint" * 10, "is truncated or not a PyTorch checkpoint"),
])
def test_empty_and_truncated_checkpoints_are_named_as_such(tmp_path, weights, content, words):
    path = tmp_path / "checkpoint.pt"
    if content == "truncated":
        torch.save({"state_dict": weights}, str(path))
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    for call in (lambda: check_init_checkpoint(str(path), MODEL), lambda: create_model(MODEL, init=str(path))):
        with pytest.raises(CheckpointError) as e:
            call()
        assert words in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)
        assert "does not fit" not in str(e.value)


@pytest.mark.parametrize("kind", ["empty state dict", "other architecture"])
def test_a_checkpoint_that_does_not_fit_names_the_keys(tmp_path, kind):
    path = str(tmp_path / "init.pt")
    if kind == "empty state dict":
        torch.save({"state_dict": {}}, path)
    else:
        torch.save({"state_dict": create_model("ticlip-tiny-64", seed=0).model.state_dict()}, path)
    with pytest.raises(CheckpointError) as e:
        check_init_checkpoint(path, MODEL)
    msg = str(e.value)
    assert f"does not fit model {MODEL!r}" in msg and "\n" not in msg
    if kind == "empty state dict":
        assert "keys missing" in msg and "positional_embedding" in msg
    else:
        assert "shapes differ" in msg and "vs model" in msg


def test_train_refuses_a_bad_init_before_writing_anything(toy_stream, tmp_path, capsys):
    path = tmp_path / "init.pt"
    torch.save({"state_dict": {}}, str(path))
    assert main(_trunc_args(toy_stream, tmp_path / "logs", "bad") + ["--init", str(path)]) == 2
    line = one_error_line(capsys, "train")
    assert "--init" in line and "does not fit" in line
    assert not (tmp_path / "logs" / "bad").exists()


def test_eval_of_a_run_names_an_empty_checkpoint(crashed, tmp_path, capsys):
    _, run = _copy_run(crashed, tmp_path)
    (run / "steps" / "0" / "checkpoint.pt").write_bytes(b"")
    capsys.readouterr()
    assert main(["eval", str(run), "--tasks", "retrieval", "--steps", "0"]) == 2
    line = one_error_line(capsys, "eval")
    assert "checkpoint.pt is empty" in line


def test_convert_trust_turns_a_trusted_file_into_one_that_loads(tmp_path, weights):
    src, dst = str(tmp_path / "trusted.pt"), str(tmp_path / "plain.pt")
    # numpy arrays and scalars need full unpickling; the state dict itself is plain
    torch.save({"state_dict": weights, "args": {"lr": np.float64(0.1), "mean": np.zeros(3)}}, src)
    with pytest.raises(CheckpointError, match="needs arbitrary unpickling"):
        read_checkpoint(src)
    assert models_main(["convert", "--trust", src, dst]) == 0
    plain = read_checkpoint(dst)
    assert plain["args"]["lr"] == 0.1 and torch.equal(plain["args"]["mean"], torch.zeros(3, dtype=torch.float64))
    assert checkpoint_weights(dst).keys() == weights.keys()
    with pytest.raises(SystemExit):  # --trust is required: the user vouches for the file
        models_main(["convert", src, dst])


def test_atomic_writes_fsync_the_file_and_the_directory(tmp_path, monkeypatch):
    import stat

    from ticlip.atomic import torch_save_atomic, write_text_atomic

    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    torch_save_atomic({"a": torch.ones(2)}, str(tmp_path / "x.pt"))
    assert synced == [False, True]  # the file before the rename, then its directory
    synced.clear()
    write_text_atomic(str(tmp_path / "x.txt"), "hi")
    assert False in synced and synced[-1] is True


def test_a_full_disk_while_training_says_so(toy_stream, tmp_path, monkeypatch, capsys):
    from ticlip import atomic

    def full(obj, path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    assert main(_trunc_args(toy_stream, tmp_path, "full") + ["--steps", "0", "--method", "sequential"]) == 2
    line = one_error_line(capsys, "train")
    assert "disk is full" in line and str(tmp_path / "full") in line
    assert atomic.is_disk_full(OSError(errno.ENOSPC, "x"))
