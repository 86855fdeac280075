"""--resume reaches the same final weights as an uninterrupted run (CPU, same seed): after a crash at
several points (main phase, const-cosine's branch and trunk, DataLoader workers with accumulation and
LwF) and after a real `kill -9` of `python -m ticlip.cli train`."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from train_helpers import Crash, crashing, one_thread  # noqa: F401  (one_thread: autouse fixture)

from ticlip.cli import main
from ticlip.config import TrainConfig
from ticlip.train.run import train_run




def checkpoints(run_dir) -> dict:
    out = {}
    for t in sorted(os.listdir(os.path.join(run_dir, "steps"))):
        out[t] = torch.load(os.path.join(run_dir, "steps", t, "checkpoint.pt"), weights_only=False)["state_dict"]
    return out


def assert_same_weights(a_dir, b_dir):
    a, b = checkpoints(a_dir), checkpoints(b_dir)
    assert a.keys() == b.keys() and a
    for t in a:
        assert a[t].keys() == b[t].keys()
        different = [k for k in a[t] if not torch.equal(a[t][k], b[t][k])]
        assert not different, f"step {t}: {different[:5]}"


def config(stream, logs, name, **kw):
    base = dict(stream=stream.root, logs=str(logs), name=name, batch_size=8, workers=0, warmup=1, steps="0:1",
                chunk_iterations=2, save_every_s=0.0, progress=False, method="sequential", iterations_per_step=4)
    base.update(kw)
    return TrainConfig(**base)


CASES = {
    # name: (config changes, batches before the crash, where the resumed run must pick up)
    "cosine-main": ({}, 4 + 3, "step 2020: resuming main phase at iteration 2/4"),
    # 5 iterations: 3 constant, then 2 in the decay branch and 2 in the trunk (the same 2 batches)
    "const-cosine-branch": ({"schedule": "const-cosine", "iterations_per_step": 5, "decay_fraction": 0.4,
                             "chunk_iterations": 1}, 7 + 3 + 1, "step 2020: resuming branch phase at iteration 4/5"),
    "const-cosine-trunk": ({"schedule": "const-cosine", "iterations_per_step": 5, "decay_fraction": 0.4,
                            "chunk_iterations": 1}, 3 + 2 + 1, "step 2019: resuming trunk phase at iteration 4/5"),
    # a branched meta schedule (rsqrt: the chain's global iteration, a 1-sqrt cooldown) and schedule-free AdamW
    # (its z / weight-sum state, resumed in train mode, saved in eval mode)
    "rsqrt-branch": ({"schedule": "rsqrt", "anneal": "1-sqrt", "iterations_per_step": 5, "decay_fraction": 0.4,
                      "chunk_iterations": 1}, 7 + 3 + 1, "step 2020: resuming branch phase at iteration 4/5"),
    "schedule-free-main": ({"schedule": "constant", "optimizer": "schedule-free-adamw"}, 4 + 3,
                           "step 2020: resuming main phase at iteration 2/4"),
    "workers-accum-lwf": ({"workers": 2, "accum_freq": 2, "method": "lwf"}, 2 * 4 + 2 * 3,
                          "step 2020: resuming main phase at iteration 2/4"),
    # a LoRA adapter (merged at each step's end) in const-cosine's trunk, which continues the adapter
    "lora-const-cosine-trunk": ({"update": "lora", "schedule": "const-cosine", "iterations_per_step": 5,
                                 "decay_fraction": 0.4, "chunk_iterations": 1}, 3 + 2 + 1,
                                "step 2019: resuming trunk phase at iteration 4/5"),
}
# The same on the webdataset path (memory_limit_mb 0), which streams over the memory limit take.
CASES.update({f"{name}-webdataset": ({**changes, "memory_limit_mb": 0}, crash, at)
              for name, (changes, crash, at) in list(CASES.items())
              if name in ("const-cosine-branch", "workers-accum-lwf")})


# The fast tier keeps one case per code path (main phase, branch, trunk, workers); these run in the full tier.
FULL_TIER_ONLY = {"const-cosine-branch-webdataset", "rsqrt-branch", "const-cosine-trunk",
                  "workers-accum-lwf-webdataset"}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in FULL_TIER_ONLY else c
                                  for c in CASES])
def test_resume_after_a_crash_gives_the_same_weights(toy_stream, tmp_path, capsys, case):
    changes, crash_after, resumed_at = CASES[case]
    reference = config(toy_stream, tmp_path, "ref", **changes)
    train_run(reference)
    cfg = config(toy_stream, tmp_path, "crashed", **changes)
    with pytest.raises(Crash):
        train_run(cfg, method=crashing(cfg.method, crash_after))
    assert any(os.path.exists(tmp_path / "crashed" / "steps" / t / "state.pt") for t in ("0", "1"))
    capsys.readouterr()
    train_run(cfg, resume=True)
    assert resumed_at in capsys.readouterr().err  # it continued from the saved state, not from the step's start
    assert_same_weights(tmp_path / "ref", tmp_path / "crashed")
    path = "webdataset" if changes.get("memory_limit_mb") == 0 else "memory"
    for t in ("0", "1"):
        assert json.load(open(tmp_path / "crashed" / "steps" / t / "step.json"))["facts"]["data_path"] == path
    for t in ("0", "1"):  # the log has each iteration once, in order, after the resume
        log = [json.loads(line) for line in open(tmp_path / "crashed" / "steps" / t / "train_log.jsonl")]
        ref = [json.loads(line) for line in open(tmp_path / "ref" / "steps" / t / "train_log.jsonl")]
        assert [(r["phase"], r["iteration"], r["loss"]) for r in log] == [
            (r["phase"], r["iteration"], r["loss"]) for r in ref]


@pytest.mark.slow
def test_kill_9_mid_step_then_resume(toy_stream, tmp_path, capsys):
    args = ["train", "--stream", toy_stream.root, "--logs", str(tmp_path), "--method", "cumulative-all",
            "--iterations-per-step", "10", "--batch-size", "8", "--workers", "0", "--warmup", "1",
            "--steps", "0:1", "--chunk-iterations", "2", "--save-every-s", "0", "--no-progress"]
    assert main(args + ["--name", "ref"]) == 0

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ticlip.cli", *args, "--name", "killed", "--threads", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = tmp_path / "killed" / "steps" / "1" / "train_log.jsonl"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if log.exists() and sum(1 for _ in open(log)) >= 3:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert (tmp_path / "killed" / "steps" / "1" / "state.pt").exists()
    assert not (tmp_path / "killed" / "steps" / "1" / "checkpoint.pt").exists()

    assert main(args + ["--name", "killed"]) == 2  # no --resume: refused, pointing at --resume
    capsys.readouterr()
    assert main(["train", "--logs", str(tmp_path), "--name", "killed", "--resume", "--no-progress"]) == 0
    assert re.search(r"step 2020: resuming main phase at iteration [2468]/10", capsys.readouterr().err)
    assert_same_weights(tmp_path / "ref", tmp_path / "killed")
    assert not (tmp_path / "killed" / "steps" / "1" / "state.pt").exists()
