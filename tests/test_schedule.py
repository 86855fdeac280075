import pickle

import pytest

from ticlip.train.schedule import (Schedule, ScheduleConfig, ScheduleError, branch_point, make_schedule,
                                   next_step_continues)


def lrs(s: Schedule, trunk=False):
    return [s.trunk_lr(i) if trunk else s.lr(i) for i in range(s.iterations)]


def test_cosine_warms_up_from_the_initial_weights_only():
    cfg = ScheduleConfig(kind="cosine", lr=1e-3, warmup=10)
    first, later = cfg.for_step(100, "initial"), cfg.for_step(100, "previous")
    a, b = lrs(first), lrs(later)
    # warmup: linear rise to the peak over 10 iterations
    assert a[:10] == pytest.approx([1e-3 * (i + 1) / 10 for i in range(10)])
    assert all(x < y for x, y in zip(a[:9], a[1:10])) and a[9] == a[10] == pytest.approx(1e-3)
    # warm-started steps start at the peak, with no warmup (warmup_later defaults to 0)
    assert b[0] == pytest.approx(1e-3) and later.warmup == 0
    # the same peak at every step, then monotone decay towards 0
    assert max(a) == pytest.approx(max(b)) == pytest.approx(1e-3)
    assert all(x >= y for x, y in zip(b, b[1:]))
    assert b[-1] < 1e-3 * 0.01 and b[50] == pytest.approx(0.5e-3, rel=0.05)


def test_warmup_every_step_ablation():
    cfg = ScheduleConfig(kind="cosine", lr=1e-3, warmup=10, warmup_every_step=True)
    assert cfg.for_step(100, "previous").lr(0) == pytest.approx(1e-4)
    assert lrs(cfg.for_step(100, "previous")) == lrs(cfg.for_step(100, "initial"))
    # it is warmup_later = warmup; a different warmup_later alongside it is refused
    assert lrs(cfg.for_step(100, "previous")) == lrs(
        ScheduleConfig(kind="cosine", lr=1e-3, warmup=10, warmup_later=10).for_step(100, "previous"))
    with pytest.raises(ScheduleError, match="warmup_later"):
        ScheduleConfig(kind="cosine", lr=1e-3, warmup=10, warmup_every_step=True, warmup_later=3)


def test_from_scratch_steps_warm_up_whatever_their_index():
    """A step that starts from the initial weights warms up, not just step 0 (the schedule knows where
    the weights start, not the step's index)."""
    cfg = ScheduleConfig(kind="cosine", lr=1e-3, warmup=10)
    s = cfg.for_step(300, "initial")  # e.g. Oracle's step 2: 3 x the iterations, from random weights
    assert s.warmup == 10 and s.lr(0) == pytest.approx(1e-4) and s.start == "initial"
    with pytest.raises(ScheduleError, match="starts from"):
        cfg.for_step(100, "scratch")


def test_warmup_later_applies_to_warm_started_steps():
    cfg = ScheduleConfig(kind="cosine", lr=1e-3, warmup=100, warmup_later=10)  # TiC-DataComp XL's shape
    first, later = cfg.for_step(1000, "initial"), cfg.for_step(1000, "previous")
    assert first.warmup == 100 and later.warmup == 10 and later.start == "previous"
    assert lrs(later)[:10] == pytest.approx([1e-3 * (i + 1) / 10 for i in range(10)])
    assert later.lr(10) == pytest.approx(1e-3) and first.lr(10) == pytest.approx(1e-3 * 11 / 100)
    with pytest.raises(ScheduleError, match="--warmup-later"):  # the error names the setting to lower
        ScheduleConfig(kind="cosine", lr=1e-3, warmup=1, warmup_later=20).for_step(20, "previous")
    with pytest.raises(ScheduleError):
        ScheduleConfig(warmup_later=-1)


def test_xlarge_preset_warms_later_steps_up_as_the_release():
    """TiC-DataComp XL: the released configs warm the first step up for 10,000 iterations and every
    later warm-started step for 2,000 (params/*/2016.yaml vs 2017..2022.yaml)."""
    import os

    import ticlip
    from ticlip.config import TrainConfig
    from ticlip.schema import read_yaml_mapping

    preset = os.path.join(os.path.dirname(ticlip.__file__), "presets", "tic-datacomp-xlarge.yaml")
    train = TrainConfig.load(read_yaml_mapping(preset)["train"])
    assert (train.warmup, train.warmup_later, train.warmup_every_step) == (10000, 2000, False)
    cfg = ScheduleConfig(train.schedule, train.lr, train.warmup, train.warmup_every_step, train.decay_fraction,
                         train.warmup_later)
    assert cfg.for_step(20850, "previous").lr(0) == pytest.approx(1e-3 / 2000)
    assert cfg.for_step(20850, "initial").lr(0) == pytest.approx(1e-3 / 10000)


def test_constant():
    s = make_schedule("constant", 2e-3, 50, "initial", warmup=5)
    assert lrs(s)[5:] == [2e-3] * 45 and s.lr(0) == pytest.approx(4e-4)
    assert s.branch_point == 50 and s.extra_iterations == 0 and not s.has_branch


def test_const_cosine_branch():
    s = make_schedule("const-cosine", 1e-3, 100, "previous")
    bp = s.branch_point
    assert bp == branch_point(100) == 80 and s.extra_iterations == 20 and s.has_branch
    branch, trunk = lrs(s), lrs(s, trunk=True)
    assert branch[:bp] == trunk[:bp] == [1e-3] * bp  # constant before the fork
    assert branch[bp] == pytest.approx(1e-3)  # the decay starts from the peak
    assert all(x > y for x, y in zip(branch[bp:], branch[bp + 1:]))  # and falls
    assert branch[-1] < 1e-4
    assert trunk[bp:] == [1e-3] * 20  # the trunk (next step's start) stays constant
    assert ScheduleConfig(kind="const-cosine").extra_iterations(100) == 20
    assert ScheduleConfig(kind="cosine").extra_iterations(100) == 0
    assert ScheduleConfig(kind="const-cosine").extra_iterations(100, continues=False) == 0  # no trunk to train
    assert branch_point(3) == 2 and branch_point(1) == 0  # at least one decay iteration


def test_apply_sets_every_group_and_objects_pickle():
    import torch

    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p1]}, {"params": [p2], "weight_decay": 0.0}], lr=9.0)
    s = make_schedule("const-cosine", 1e-3, 10, warmup=2)
    assert s.apply(opt, 9) == s.lr(9)
    assert [g["lr"] for g in opt.param_groups] == [s.lr(9)] * 2
    assert s.apply(opt, 9, trunk=True) == 1e-3
    again = pickle.loads(pickle.dumps(s))
    assert again == s and lrs(again) == lrs(s)


@pytest.mark.parametrize("args", [
    dict(kind="linear"), dict(lr=0.0), dict(lr=float("inf")), dict(warmup=-1),
    dict(kind="const-cosine", decay_fraction=1.0),
])
def test_bad_configs(args):
    with pytest.raises(ScheduleError):
        ScheduleConfig(**args)


def test_bad_steps():
    with pytest.raises(ScheduleError, match="warmup"):
        make_schedule("cosine", 1e-3, 10, warmup=10)
    with pytest.raises(ScheduleError, match="decay branch"):
        make_schedule("const-cosine", 1e-3, 10, warmup=9)
    with pytest.raises(ScheduleError):
        make_schedule("cosine", 1e-3, 0)
    with pytest.raises(ScheduleError):
        make_schedule("cosine", 1e-3, 10).lr(10)
    # warm-started steps have no warmup by default, so a long warmup does not break them
    assert make_schedule("cosine", 1e-3, 10, "previous", warmup=50).lr(0) == pytest.approx(1e-3)


class _Planner:
    """A method whose plans start from ``inits[t]``."""

    def __init__(self, inits, end_step_changes_weights=False):
        self.inits, self.end_step_changes_weights = inits, end_step_changes_weights

    def plan(self, t, step_sizes):
        from types import SimpleNamespace

        return SimpleNamespace(init=self.inits[t])


def test_the_trunk_is_needed_only_when_the_next_step_continues():
    sizes = [10, 10, 10]
    warm = _Planner(["initial", "previous", "previous"])
    assert [next_step_continues(warm, t, sizes) for t in range(3)] == [True, True, False]  # none after the last
    scratch = _Planner(["initial"] * 3)  # Oracle, Restart
    assert not any(next_step_continues(scratch, t, sizes) for t in range(3))
    patched = _Planner(["initial", "previous", "previous"], end_step_changes_weights=True)
    assert not any(next_step_continues(patched, t, sizes) for t in range(3))
