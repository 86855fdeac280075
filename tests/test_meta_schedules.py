"""Meta learning-rate schedules across steps (wsd, rsqrt, cosine-decaying-peak, global-cosine) and the
schedule-free AdamW optimizer: hand-computed LRs at chosen iterations, the step's position in the run,
validation, budget charges, the step cache key, and short trainings on the toy stream."""

import json
import math

import pytest
import torch
from train_helpers import one_thread  # noqa: F401  (autouse fixture)

from ticlip.config import TrainConfig
from ticlip.methods import get_method
from ticlip.schema import ConfigError
from ticlip.train.budget import Budget
from ticlip.train.schedule import (Schedule, ScheduleConfig, ScheduleError, StepPosition, make_schedule,
                                   step_position)


def lrs(s: Schedule, trunk=False):
    return [s.trunk_lr(i) if trunk else s.lr(i) for i in range(s.iterations)]


# ------------------------------------------------------------------------------- hand-computed LRs
@pytest.mark.parametrize("anneal, expected", [
    # 10 iterations, decay_fraction 0.4: branch point 6, span 4; x = 0, 1/4, 2/4, 3/4 at it = 6..9
    ("linear", [1.0, 0.75, 0.5, 0.25]),
    ("cosine", [1.0, (1 + math.sqrt(0.5)) / 2, 0.5, (1 - math.sqrt(0.5)) / 2]),
    ("1-sqrt", [1.0, 0.5, 1 - math.sqrt(0.5), 1 - math.sqrt(0.75)]),
])
def test_wsd_anneal_shapes(anneal, expected):
    s = make_schedule("wsd", 2e-3, 10, "initial", warmup=2, decay_fraction=0.4, anneal=anneal)
    assert s.branch_point == 6 and s.has_branch and s.extra_iterations == 4
    assert lrs(s)[:6] == pytest.approx([1e-3, 2e-3, 2e-3, 2e-3, 2e-3, 2e-3])  # warmup 2, then the stable trunk
    assert lrs(s)[6:] == pytest.approx([2e-3 * e for e in expected])
    assert lrs(s, trunk=True) == pytest.approx([1e-3] + [2e-3] * 9)  # the trunk never anneals


def test_const_cosine_is_wsd_with_a_cosine_anneal_bit_for_bit():
    for start, warmup in (("initial", 3), ("previous", 0)):
        old = make_schedule("const-cosine", 1e-3, 37, start, warmup=warmup, warmup_later=0, decay_fraction=0.3)
        new = make_schedule("wsd", 1e-3, 37, start, warmup=warmup, warmup_later=0, decay_fraction=0.3, anneal="cosine")
        assert lrs(old) == lrs(new) and lrs(old, True) == lrs(new, True)  # exact floats
    # const-cosine's step.json / cache-key dict keeps its fields (nothing new)
    assert set(make_schedule("const-cosine", 1e-3, 10).to_dict()) == {
        "kind", "peak_lr", "iterations", "warmup", "decay_fraction", "start"}


def test_rsqrt_decays_over_the_chain_and_cools_down_before_deployment():
    # tau 4; step of 10 iterations at chain offset 12 (n = 13..22); branch point 8 (decay_fraction 0.2)
    pos = StepPosition(index=1, chain_step=1, chain_offset=12, run_offset=12, run_total=40)
    s = make_schedule("rsqrt", 1e-3, 10, "previous", rsqrt_timescale=4, anneal="linear", position=pos)
    assert s.lr(0) == pytest.approx(1e-3 * math.sqrt(4 / 13))
    assert s.lr(3) == pytest.approx(1e-3 * math.sqrt(4 / 16)) == pytest.approx(5e-4)
    bp_lr = 1e-3 * math.sqrt(4 / 21)  # the trunk's LR at the branch point (n = 21)
    assert s.lr(8) == pytest.approx(bp_lr) and s.lr(9) == pytest.approx(bp_lr * 0.5)  # linear cooldown
    assert s.trunk_lr(9) == pytest.approx(1e-3 * math.sqrt(4 / 22))  # the trunk keeps decaying as rsqrt
    # the first step of a chain: flat at the peak while n <= tau (the warmup's role), then 1/sqrt
    first = make_schedule("rsqrt", 1e-3, 10, "initial", rsqrt_timescale=4, position=pos)
    assert first.position.chain_offset == 0  # a step from the initial weights restarts the chain
    assert lrs(first)[:4] == pytest.approx([1e-3] * 4) and first.lr(7) == pytest.approx(1e-3 * math.sqrt(4 / 8))
    # the timescale defaults to the warmup; with warmup it rises linearly to rsqrt's value
    w = make_schedule("rsqrt", 1e-3, 10, "initial", warmup=4)
    assert w.rsqrt_timescale == 4 and lrs(w)[:5] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3 * math.sqrt(4 / 5)])


def test_cosine_decaying_peak_follows_the_factor_per_warm_started_step():
    cos = make_schedule("cosine", 1e-3, 8, "previous")
    for k in range(4):
        s = make_schedule("cosine-decaying-peak", 1e-3, 8, "previous", peak_decay=0.5,
                          position=StepPosition(index=k, chain_step=k, chain_offset=8 * k))
        assert lrs(s) == pytest.approx([0.5 ** k * x for x in lrs(cos)])
        assert s.lr(0) == pytest.approx(1e-3 * 0.5 ** k) and s.lr(4) == pytest.approx(0.5e-3 * 0.5 ** k)
    # peak_decay 1 is the per-step cosine; a step from the initial weights restarts at the full peak
    one = make_schedule("cosine-decaying-peak", 1e-3, 8, "previous", peak_decay=1.0, position=StepPosition(chain_step=3))
    assert lrs(one) == lrs(cos)
    assert make_schedule("cosine-decaying-peak", 1e-3, 8, "initial", position=StepPosition(chain_step=3)).lr(0) == 1e-3


def test_global_cosine_spans_the_whole_run():
    # 4 steps of 10 iterations: G = 40; step 2 covers g = 20..29
    s = make_schedule("global-cosine", 1e-3, 10, "previous", position=StepPosition(2, 2, 20, 20, 40))
    assert s.lr(0) == pytest.approx(0.5e-3)  # g = 20 = G / 2
    assert s.lr(5) == pytest.approx(1e-3 * (1 + math.cos(math.pi * 25 / 40)) / 2)
    first = make_schedule("global-cosine", 1e-3, 10, "initial", warmup=2, position=StepPosition(0, 0, 0, 0, 40))
    assert first.lr(0) == pytest.approx(0.5e-3) and first.lr(1) == pytest.approx(1e-3 * (1 + math.cos(math.pi / 40)) / 2)
    with pytest.raises(ScheduleError, match="global-cosine needs the number of steps"):
        make_schedule("global-cosine", 1e-3, 10, "initial")  # no position: the run's length is unknown


def test_step_position_from_the_method_and_budget():
    budget = Budget.from_iterations(10, 4, 1.0, 8)
    sizes = [100] * 4
    seq = [step_position(get_method("sequential"), budget, t, sizes) for t in range(4)]
    assert [(p.chain_step, p.chain_offset, p.run_offset, p.run_total) for p in seq] == [
        (0, 0, 0, 40), (1, 10, 10, 40), (2, 20, 20, 40), (3, 30, 30, 40)]
    oracle = [step_position(get_method("oracle"), budget, t, sizes) for t in range(4)]  # (t+1)·C, from scratch
    assert [(p.chain_step, p.chain_offset, p.run_offset, p.run_total) for p in oracle] == [
        (0, 0, 0, 100), (0, 0, 10, 100), (0, 0, 30, 100), (0, 0, 60, 100)]


# ------------------------------------------------------------------------------- budget and checks
def test_branches_not_carried_forward_are_charged():
    budget = Budget.from_iterations(10, 4, 1.0, 8)
    for kind in ("wsd", "rsqrt", "const-cosine"):
        rows = budget.plan(get_method("sequential"), schedule=ScheduleConfig(kind=kind, warmup=2))
        assert [r.extra_macs_estimate for r in rows] == [2 * 8.0] * 3 + [0.0]  # 2 trunk iterations x 8 pairs
    for kind in ("cosine-decaying-peak", "global-cosine", "constant"):
        assert all(r.extra_macs_estimate == 0 for r in budget.plan(get_method("sequential"),
                                                                   schedule=ScheduleConfig(kind=kind)))


@pytest.mark.parametrize("changes, message", [
    ({"schedule": "cosine", "optimizer": "schedule-free-adamw"}, "schedule-free-adamw takes no LR schedule"),
    ({"schedule": "wsd", "anneal": "quadratic"}, "anneal"),
    ({"schedule": "cosine-decaying-peak", "peak_decay": 1.5}, "peak_decay"),
])
def test_bad_settings_are_one_line_errors(toy_stream, changes, message):
    from ticlip.train.run import check_run

    with pytest.raises(ConfigError, match=message) as e:
        cfg = TrainConfig.load(dict(stream=toy_stream.root, iterations_per_step=5, **changes))
        check_run(cfg, toy_stream)
    assert "\n" not in str(e.value)


def test_cli_flags_reach_the_config():
    from ticlip.cli import build_parser
    from ticlip.train.cli import config_from_args

    args = build_parser().parse_args(["train", "--stream", "s", "--iterations-per-step", "3", "--schedule", "rsqrt",
                                      "--anneal", "1-sqrt", "--rsqrt-timescale", "7", "--peak-decay", "0.8",
                                      "--optimizer", "schedule-free-adamw"])
    cfg, _ = config_from_args(args)
    assert (cfg.schedule, cfg.anneal, cfg.rsqrt_timescale, cfg.peak_decay, cfg.optimizer) == (
        "rsqrt", "1-sqrt", 7, 0.8, "schedule-free-adamw")


def test_experiment_yaml_sweeps_schedules(tmp_path):
    from ticlip.experiment import ExperimentConfig, expand

    exp = ExperimentConfig.from_dict({
        "name": "meta", "logs": str(tmp_path), "stream": {"path": "s", "source": None},
        "train": {"iterations_per_step": 2, "anneal": "1-sqrt", "rsqrt_timescale": 3},
        "sweep": {"schedule": ["wsd", "rsqrt", "global-cosine"]}, "methods": ["sequential"], "seeds": [0],
        "eval": {"tasks": ["retrieval"], "seeds": 1}})
    runs = {r.name: r.config for r in expand(exp)}
    assert runs["sequential-schedulersqrt-s0"].anneal == "1-sqrt" and len(runs) == 3
    bad = ExperimentConfig.from_dict({
        "name": "meta", "logs": str(tmp_path), "stream": {"path": "s", "source": None},
        "train": {"iterations_per_step": 2, "optimizer": "schedule-free-adamw"}, "sweep": {"schedule": ["wsd"]},
        "methods": ["sequential"], "seeds": [0], "eval": {"tasks": ["retrieval"], "seeds": 1}})
    with pytest.raises(ConfigError, match="run sequential-s0: train: optimizer schedule-free-adamw"):
        expand(bad)


# ------------------------------------------------------------------------------- schedule-free AdamW
def test_schedule_free_switches_to_the_average_after_the_loop():
    from ticlip.train.loop import make_optimizer, schedule_free_mode

    model = torch.nn.Linear(2, 2)
    opt = make_optimizer(model, lr=0.1, wd=0.0, kind="schedule-free-adamw")
    schedule_free_mode(opt, train=True)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    y = model.weight.detach().clone()
    z = opt.state[model.weight]["z"].clone()
    schedule_free_mode(opt, train=False)  # p <- x = y + (1 - 1/beta1)(z - y)
    assert torch.allclose(model.weight, y + (1 - 1 / 0.9) * (z - y))
    assert opt.state_dict()["param_groups"][0]["train_mode"] is False


# ------------------------------------------------------------------------------- training on the toy stream
def _cfg(stream, tmp_path, name, **kw):
    return TrainConfig(stream=stream.root, logs=str(tmp_path), name=name, batch_size=8, workers=0, warmup=1,
                       iterations_per_step=5, decay_fraction=0.4, steps="0:1", progress=False, method="sequential",
                       **kw)


def _log(tmp_path, name, t):
    return [json.loads(line) for line in open(tmp_path / name / "steps" / str(t) / "train_log.jsonl")]


@pytest.mark.parametrize("kw", [
    {"schedule": "rsqrt", "anneal": "1-sqrt"}, {"schedule": "wsd", "anneal": "linear"},
    {"schedule": "cosine-decaying-peak", "peak_decay": 0.5}, {"schedule": "global-cosine"},
    {"schedule": "constant", "optimizer": "schedule-free-adamw"},
])
def test_short_training_per_schedule(toy_stream, tmp_path, kw):
    from ticlip.train.run import train_run

    train_run(_cfg(toy_stream, tmp_path, "r", **kw))
    step1 = json.load(open(tmp_path / "r" / "steps" / "1" / "step.json"))
    log0, log1 = _log(tmp_path, "r", 0), _log(tmp_path, "r", 1)
    assert all(math.isfinite(r["loss"]) for r in log0 + log1)
    lr1 = {(r["phase"], r["iteration"]): r["lr"] for r in log1}
    kind = kw["schedule"]
    if kind == "rsqrt":  # tau = warmup = 1: 1e-3 / sqrt(n); step 1 continues the chain at n = 6
        assert lr1["main", 1] == pytest.approx(1e-3 / math.sqrt(6))
        assert lr1["branch", 5] == pytest.approx(1e-3 / math.sqrt(9) * (1 - math.sqrt(0.5)))
        assert step1["schedule"]["position"]["chain_offset"] == 5
        assert json.load(open(tmp_path / "r" / "steps" / "0" / "step.json"))["budget"]["extra_macs_estimate"] > 0
    if kind == "wsd":
        assert lr1["branch", 5] == pytest.approx(0.5e-3) and lr1["trunk", 5] == 1e-3  # linear anneal; stable trunk
        assert step1["budget"]["extra_macs_estimate"] > 0  # step 2 continues from step 1's trunk: charged
    if kind == "cosine-decaying-peak":
        assert lr1["main", 1] == pytest.approx(0.5e-3)
    if kind == "global-cosine":  # 4-step stream, 20 iterations; step 1 starts at g = 5
        assert lr1["main", 1] == pytest.approx(1e-3 * (1 + math.cos(math.pi * 5 / 20)) / 2)
    if "optimizer" in kw:
        ck = torch.load(tmp_path / "r" / "steps" / "1" / "checkpoint.pt", weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in ck.values() if v.is_floating_point())


def test_the_step_cache_key_holds_the_schedule_and_its_position():
    """``reuse.step_facts`` keys on ``sched.to_dict()`` (and every TrainConfig setting): for the meta kinds
    it carries their settings and the step's position, so steps at different places never share."""
    a = make_schedule("cosine-decaying-peak", 1e-3, 5, "previous", position=StepPosition(1, 1, 5, 5, 20))
    b = make_schedule("cosine-decaying-peak", 1e-3, 5, "previous", position=StepPosition(2, 2, 10, 10, 20))
    assert a.to_dict() != b.to_dict() and a.to_dict()["position"]["chain_step"] == 1
