"""Where a step's weights start decides its warmup and whether const-cosine trains a trunk.

- every step that starts from the run's initial weights warms up (Oracle, Restart: every step);
  warm-started steps use ``warmup_later`` (default 0);
- under const-cosine the constant-LR trunk is trained and charged only when the next step starts from
  it: not for Oracle (next step from the initial weights), not for a method whose end hook changes the
  deployed weights (patching's interpolation: the next step starts from the patched checkpoint).
"""

import json
import os

import pytest
import torch
from train_helpers import one_thread  # noqa: F401  (autouse fixture)

from ticlip.config import TrainConfig
from ticlip.methods.patching import EmaMerge
from ticlip.run_layout import RunInfo
from ticlip.train.budget import macs_per_pair
from ticlip.train.run import train_run

LR = 1e-3


def config(stream, logs, name, method, **kw):
    base = dict(stream=stream.root, logs=str(logs), name=name, batch_size=8, workers=0, warmup=4, steps="0:1",
                chunk_iterations=2, save_every_s=0.0, progress=False, method=method, iterations_per_step=5, lr=LR)
    base.update(kw)
    return TrainConfig(**base)


def log(run_dir, t):
    with open(os.path.join(run_dir, "steps", str(t), "train_log.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def step_json(run_dir, t):
    with open(os.path.join(run_dir, "steps", str(t), "step.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("method,warmup_later,first_lr", [
    ("oracle", 0, LR / 4),  # from random weights again at step 1: the configured warmup
    ("restart", 0, LR / 4),
    ("sequential", 0, LR),  # warm-started: the paper's main recipe, no warmup
    ("sequential", 2, LR / 2),  # warm-started with a later-step warmup
])
def test_step_1_warms_up_by_where_its_weights_start(toy_stream, tmp_path, method, warmup_later, first_lr):
    train_run(config(toy_stream, tmp_path, "run", method, **({"warmup_later": warmup_later} if warmup_later else {})))
    run = tmp_path / "run"
    assert log(run, 0)[0]["lr"] == pytest.approx(LR / 4)  # step 0 always starts from the initial weights
    step1 = log(run, 1)
    assert step1[0]["iteration"] == 1 and step1[0]["lr"] == pytest.approx(first_lr)
    assert max(r["lr"] for r in step1) == pytest.approx(LR)  # the same peak at every step
    assert step_json(run, 1)["schedule"]["start"] == ("initial" if method in ("oracle", "restart") else "previous")


def test_oracle_under_const_cosine_trains_and_charges_no_trunk(toy_stream, tmp_path):
    cfg = config(toy_stream, tmp_path, "cc", "oracle", schedule="const-cosine", decay_fraction=0.4, warmup=1)
    train_run(cfg)
    run, mpp = tmp_path / "cc", macs_per_pair("ticlip-tiny-32")
    info = RunInfo.load(str(run))
    for t, iterations in ((0, 5), (1, 10)):  # Oracle: (t + 1) x the per-step iterations
        phases = {r["phase"] for r in log(run, t)}
        assert phases == {"main", "branch"}  # no trunk phase
        assert not (run / "steps" / str(t) / "continue.pt").exists()
        sj = step_json(run, t)
        assert sj["budget"]["extra_macs_estimate"] == 0.0 and sj["budget"]["overrun"] == 0.0
        assert sj["pairs_seen"] == iterations * 8 and info.steps[t].macs == iterations * 8 * mpp
    assert "random" in step_json(run, 1)["init"]


@pytest.mark.slow
def test_a_patched_step_is_where_the_next_step_starts_under_const_cosine(toy_stream, tmp_path):
    """Patching trains step t from the last patched model; const-cosine's trunk is unpatched, so the next
    step starts from the deployed (patched) checkpoint and no trunk is trained or charged."""
    assert EmaMerge.end_step_changes_weights  # patching's interpolation with a fixed α, declared by the method
    method = EmaMerge(alpha=0.5)
    cfg = config(toy_stream, tmp_path, "pc", "ema-merge", schedule="const-cosine", decay_fraction=0.4, warmup=1,
                 steps="0:2", method_params={"alpha": 0.5})
    train_run(cfg, method=method)
    run = tmp_path / "pc"
    for t in (0, 1):
        assert not (run / "steps" / str(t) / "continue.pt").exists()
        assert "trunk" not in {r["phase"] for r in log(run, t)}
        assert step_json(run, t)["budget"]["extra_macs_estimate"] == 0.0
    assert step_json(run, 1)["facts"]["alpha"] == 0.5  # step 1 was patched
    assert step_json(run, 2)["init"] == "step 1's checkpoint"
    # the model step 2 started from (the interpolation's "previous" model) is step 1's patched checkpoint
    patched = torch.load(run / "steps" / "1" / "checkpoint.pt", weights_only=True)["state_dict"]
    start = torch.load(run / "steps" / "2" / "method.pt", weights_only=True)["prev"]
    assert start.keys() == patched.keys()
    assert all(torch.equal(start[k], patched[k]) for k in patched)


def test_the_replay_subset_follows_the_training_seed(toy_stream, tmp_path):
    """Runs with different training seeds keep different replay buffers (the subset seed is the run's
    seed unless the method's ``seed`` parameter is given)."""
    buffers = {}
    for seed in (1, 0):
        train_run(config(toy_stream, tmp_path, f"s{seed}", "cumulative-exp", seed=seed, iterations_per_step=1,
                         warmup=0, steps="0:2"))
        run = tmp_path / f"s{seed}"
        assert step_json(run, 2)["plan"]["subset_seed"] == seed
        with open(run / "steps" / "2" / "buffer.json", encoding="utf-8") as f:
            buffers[seed] = json.load(f)
    label = toy_stream.steps[0].label
    assert len(buffers[0][label]) == len(buffers[1][label]) == 32  # -Exp at step 2: D/2 of step 0's 64 pairs
    assert buffers[0][label] != buffers[1][label] and set(buffers[0][label]) != set(buffers[1][label])
