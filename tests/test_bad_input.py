"""Bad input costs seconds: every command checks all its inputs before it writes or trains anything.

Each case runs the CLI in-process (``ticlip.cli.main``) and asserts: a non-zero exit, exactly one line
on stderr that names the file or key and says what to do, no traceback, nothing written (no run,
experiment or stream directory, no lock file), and every file that existed before unchanged.
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from train_helpers import one_thread  # noqa: F401  (autouse fixture)

from ticlip.cli import main
from ticlip.locking import LOCK_NAME


def snapshot(root) -> dict:
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs:
            out[os.path.relpath(os.path.join(d, name), root) + "/"] = None
        for name in files:
            p = os.path.join(d, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


def refused(argv, capsys, root, *needles, rc=None):
    """Run ``ticlip ARGV``; assert it was refused with one line holding every needle, and that nothing
    under ``root`` changed. Returns the line."""
    before = snapshot(root)
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code != 0 if rc is None else code == rc
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert snapshot(root) == before
    return lines[0]


# ------------------------------------------------------------------------------ ticlip run
def _experiment(tmp_path, stream, **changes):
    d = {
        "name": "exp", "logs": str(tmp_path / "runs"),
        "stream": stream if isinstance(stream, dict) else {"path": stream, "source": None},
        "train": {"iterations_per_step": 2, "batch_size": 8, "warmup": 1, "workers": 0, "progress": False},
        "methods": ["sequential"], "seeds": [0], "eval": {"tasks": ["retrieval"], "seeds": 1},
    }
    d.update(changes)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


# a stream that would be built first: a refusal must come before the build
BUILD = {"path": None, "source": "synthetic", "build": {}, "options": {}}

EXPERIMENT_CASES = {
    "seeds: x": ({"seeds": "x"}, ["seeds", "'x'"]),
    "eval.subsample: abc": ({"eval": {"subsample": "abc"}}, ["eval: subsample", "abc"]),
    "eval typo": ({"eval": {"taks": ["retrieval"]}}, ["eval", "taks"]),
    "eval task name": ({"eval": {"tasks": ["retreival"]}}, ["retreival"]),
    "method_params key": ({"methods": ["lwf"], "method_params": {"lwf": {"lamda": 1.0}}}, ["method_params.lwf", "lamda"]),
    "method_params value": ({"methods": ["lwf"], "method_params": {"lwf": {"lam": "much"}}}, ["method_params.lwf", "much"]),
    "train typo": ({"train": {"iterations_per_stp": 2}}, ["iterations_per_stp"]),
}


@pytest.mark.parametrize("case", list(EXPERIMENT_CASES))
def test_ticlip_run_refuses_bad_input_before_building_or_training(tmp_path, capsys, case):
    changes, needles = EXPERIMENT_CASES[case]
    stream = dict(BUILD, path=str(tmp_path / "stream"))
    path = _experiment(tmp_path, stream, **changes)
    line = refused(["run", path], capsys, tmp_path, *needles, rc=2)
    assert str(path) in line  # names the file
    assert not (tmp_path / "stream").exists() and not (tmp_path / "runs").exists()


def test_ticlip_run_checks_the_runs_against_an_existing_stream_before_training(tmp_path, toy_stream, capsys):
    path = _experiment(tmp_path, toy_stream.root, train={"iterations_per_step": 2, "batch_size": 8, "warmup": 5,
                                                         "workers": 0, "progress": False})
    refused(["run", path], capsys, tmp_path, "warmup", str(path), rc=2)
    assert not (tmp_path / "runs").exists()


def test_set_garbage_names_set(tmp_path, toy_stream, capsys):
    path = _experiment(tmp_path, toy_stream.root)
    line = refused(["run", path, "--set", "garbage"], capsys, tmp_path, "--set", "KEY=VALUE", rc=2)
    assert "--method-param" not in line


def test_a_second_ticlip_run_of_one_experiment_is_refused_naming_the_holder(tmp_path, toy_stream, capsys):
    path = _experiment(tmp_path, toy_stream.root)
    proc = _hold(tmp_path / "runs" / "exp")
    try:
        refused(["run", path], capsys, tmp_path, "experiment", f"pid {proc.pid}", "in use", rc=2)
    finally:
        proc.kill()
        proc.wait()


HOLD = textwrap.dedent("""
    import sys, time
    from ticlip.locking import DirLock
    with DirLock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(120)
""")


def _hold(directory):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


# ------------------------------------------------------------------------------ ticlip train
def _train_args(stream, logs, *extra):
    return [str(a) for a in ["train", "--stream", stream, "--logs", logs, "--name", "r", "--method", "sequential", "--steps", "0:0",
            "--iterations-per-step", "2", "--batch-size", "8", "--warmup", "1", "--workers", "0", "--no-progress",
            *extra]]


TRAIN_CASES = {
    "method param": (["--method", "lwf", "--method-param", "lamda=1"], ["lamda"]),
    "method param garbage": (["--method-param", "garbage"], ["--method-param", "KEY=VALUE"]),
    "missing init": (["--init", "nowhere.pt"], ["nowhere.pt"]),
    "steps": (["--steps", "1999:2000"], ["--steps"]),
    "warmup": (["--warmup", "9"], ["warmup"]),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_ticlip_train_refuses_bad_input_before_writing(tmp_path, toy_stream, capsys, case):
    extra, needles = TRAIN_CASES[case]
    refused(_train_args(toy_stream.root, tmp_path / "runs", *extra), capsys, tmp_path, *needles, rc=2)
    assert not (tmp_path / "runs").exists()


def _bad_inits(tmp_path):
    (tmp_path / "random.pt").write_bytes(os.urandom(4096))
    torch.save({"state_dict": {}}, tmp_path / "empty-state.pt")
    torch.save({"state_dict": {"visual.proj": torch.zeros(3, 3)}}, tmp_path / "other-arch.pt")
    (tmp_path / "zero.pt").write_bytes(b"")
    return ["random.pt", "empty-state.pt", "other-arch.pt", "zero.pt"]


@pytest.mark.slow
def test_a_bad_init_leaves_no_run_and_a_good_one_then_trains(tmp_path, toy_stream, capsys):
    names = _bad_inits(tmp_path)
    logs = tmp_path / "runs"
    for name in names:
        refused(_train_args(toy_stream.root, logs, "--init", tmp_path / name), capsys, tmp_path, name, rc=2)
        assert not logs.exists()
    # a good checkpoint of the right model, under the same --name: nothing blocks it
    assert main(_train_args(toy_stream.root, tmp_path / "src")) == 0
    good = tmp_path / "src" / "r" / "steps" / "0" / "checkpoint.pt"
    assert main(_train_args(toy_stream.root, logs, "--init", good)) == 0
    assert (logs / "r" / "steps" / "0" / "checkpoint.pt").exists() and not (logs / "r" / LOCK_NAME).exists()


def test_a_bad_init_in_an_experiment_is_refused_before_anything(tmp_path, toy_stream, capsys):
    _bad_inits(tmp_path)
    train = {"iterations_per_step": 2, "batch_size": 8, "warmup": 1, "workers": 0, "progress": False,
             "init": str(tmp_path / "other-arch.pt")}
    path = _experiment(tmp_path, dict(BUILD, path=str(tmp_path / "stream")), train=train)
    refused(["run", path], capsys, tmp_path, "other-arch.pt", rc=2)


def test_a_second_ticlip_train_of_one_run_is_refused_naming_the_holder(tmp_path, toy_stream, capsys):
    proc = _hold(tmp_path / "runs" / "r")
    try:
        refused(_train_args(toy_stream.root, tmp_path / "runs"), capsys, tmp_path, "run", f"pid {proc.pid}",
                "since", rc=2)
    finally:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------------------ ticlip eval
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, toy_stream):
    logs = tmp_path_factory.mktemp("evalruns")
    assert main(_train_args(toy_stream.root, logs)) == 0
    return logs / "r"


EVAL_CASES = {
    "task name": (["--tasks", "retreival"], ["retreival"]),
    "steps": (["--steps", "7"], ["7"]),
    "subsample": (["--subsample", "abc"], ["subsample"]),
}


@pytest.mark.parametrize("case", list(EVAL_CASES))
def test_ticlip_eval_refuses_bad_input_before_writing(trained_run, capsys, case):
    extra, needles = EVAL_CASES[case]
    refused(["eval", trained_run, *extra], capsys, trained_run, *needles)


def test_ticlip_eval_of_a_run_in_use_is_refused(trained_run, capsys):
    proc = _hold(trained_run)
    try:
        refused(["eval", trained_run, "--tasks", "retrieval"], capsys, trained_run, f"pid {proc.pid}", rc=2)
    finally:
        proc.kill()
        proc.wait()


def test_ticlip_eval_of_an_empty_checkpoint_is_one_line(tmp_path, toy_stream, capsys):
    (tmp_path / "zero.pt").write_bytes(b"")
    refused(["eval", "--checkpoint", tmp_path / "zero.pt", "--model", "ticlip-tiny-32", "--stream", toy_stream.root,
             "--out", tmp_path / "out", "--tasks", "retrieval"], capsys, tmp_path, "zero.pt", rc=2)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ ticlip data build
BUILD_CASES = {
    "setting": (["--eval-size", "abc"], ["eval-size"]),
    "option": (["--option", "nope=1"], ["nope"]),
    "option garbage": (["--option", "garbage"], ["--option", "KEY=VALUE"]),
}


@pytest.mark.parametrize("case", list(BUILD_CASES))
def test_ticlip_data_build_refuses_bad_input_before_writing(tmp_path, capsys, case):
    extra, needles = BUILD_CASES[case]
    refused(["data", "build", "synthetic", "--out", tmp_path / "s", "--quiet", *extra], capsys, tmp_path, *needles)
    assert not (tmp_path / "s").exists()


def test_ticlip_data_build_refuses_a_bad_table_before_writing(tmp_path, capsys):
    (tmp_path / "latin1.csv").write_bytes("image,caption,timestamp\nx.png,caf\xe9,2015\n".encode("latin-1"))
    refused(["data", "build", tmp_path / "latin1.csv", "--out", tmp_path / "s", "--quiet"], capsys, tmp_path,
            "latin1.csv", rc=2)
    assert not (tmp_path / "s").exists()


def test_a_second_build_into_one_directory_is_refused(tmp_path, capsys):
    proc = _hold(tmp_path / "s")
    try:
        refused(["data", "build", "synthetic", "--out", tmp_path / "s", "--quiet"], capsys, tmp_path, "stream",
                f"pid {proc.pid}", rc=2)
    finally:
        proc.kill()
        proc.wait()
