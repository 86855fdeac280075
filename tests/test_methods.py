"""Each method's data plan for T = 4 against TiC-CLIP's Table 1 (D = pairs of the current step).

The issue's "t=3"/"t=4" are 1-based; plans take 0-based step indices (paper t=4 is t=3 here)."""

import pytest

from ticlip.errors import TiclipError
from ticlip.methods import (METHODS, BufferSource, MethodError, StepSource, check_method_params, get_method,
                            list_methods, method_params)
from ticlip.schema import ConfigError

# unequal steps, large enough that no old step runs short for the -exp/-equal buffers
SIZES = [4000, 3000, 2000, 1200]


def pairs(plan):
    return {s.step: s.pairs for s in plan.sources}


def check_weights(plan):
    total = sum(s.pairs for s in plan.sources)
    assert sum(s.weight for s in plan.sources) == pytest.approx(1.0)
    for s in plan.sources:
        assert s.weight == pytest.approx(s.pairs / total)  # mixture ∝ pairs
        assert s.fraction == pytest.approx(s.pairs / SIZES[s.step])
        assert 0 < s.fraction <= 1


def test_registry():
    assert list_methods()[:9] == ["oracle", "restart", "sequential", "cumulative-all", "cumulative-exp",
                                  "cumulative-equal", "patching", "lwf", "ewc"]
    assert "ema-merge" in list_methods()
    for name in list_methods():
        m = get_method(name)
        assert m.name == name and isinstance(m, METHODS[name])
    with pytest.raises(MethodError, match="unknown method"):
        get_method("replay-everything")
    with pytest.raises(MethodError, match="no parameter"):
        get_method("sequential", lam=1.0)
    with pytest.raises(MethodError, match="fisher_batches.*'many'"):
        get_method("ewc", fisher_batches="many")
    with pytest.raises(TiclipError):
        get_method("patching", alphas=(0.0, 1.5))


def test_string_parameters_are_converted():
    m = get_method("ewc", **{"lambda": "250", "gamma": "0.5"})
    assert (m.lam, m.gamma) == (250.0, 0.5)
    assert m.params == {**method_params("ewc"), "lam": 250.0, "gamma": 0.5}
    assert get_method("patching", alphas="0, 0.5,1").alphas == (0.0, 0.5, 1.0)
    assert get_method("Cumulative_Exp", seed="7").plan(1, SIZES).subset_seed == 7


@pytest.mark.parametrize("name", ["oracle", "restart"])
def test_from_scratch_methods_train_on_everything(name):
    m = get_method(name)
    for t in range(4):
        plan = m.plan(t, SIZES)
        assert plan.init == "initial"
        assert pairs(plan) == {j: SIZES[j] for j in range(t + 1)}
        assert all(isinstance(s, StepSource) for s in plan.sources)  # every pair of every step
        assert m.compute_multiplier(t) == (t + 1 if name == "oracle" else 1)
        check_weights(plan)


@pytest.mark.parametrize("name", ["sequential", "patching", "lwf", "ewc", "ema-merge"])
def test_new_data_only_methods(name):
    m = get_method(name)
    for t in range(4):
        plan = m.plan(t, SIZES)
        assert plan.init == ("initial" if t == 0 else "previous")
        assert pairs(plan) == {t: SIZES[t]}
        assert m.compute_multiplier(t) == 1
        check_weights(plan)


def test_cumulative_all():
    m = get_method("cumulative-all")
    for t in range(4):
        plan = m.plan(t, SIZES)
        assert plan.init == ("initial" if t == 0 else "previous")
        assert pairs(plan) == {j: SIZES[j] for j in range(t + 1)}
        assert m.compute_multiplier(t) == 1
        check_weights(plan)


def test_cumulative_exp_halves_old_data_per_step():
    m = get_method("cumulative-exp")
    assert pairs(m.plan(0, SIZES)) == {0: 4000}
    d = SIZES[1]
    assert pairs(m.plan(1, SIZES)) == {0: d, 1: d}  # paper t=2: all D old from the one earlier step
    d = SIZES[2]
    assert pairs(m.plan(2, SIZES)) == {0: d // 2, 1: d // 2, 2: d}  # paper t=3: D/2, D/2
    d = SIZES[3]
    assert pairs(m.plan(3, SIZES)) == {0: d // 4, 1: d // 4, 2: d // 2, 3: d}  # paper t=4: D/4, D/4, D/2
    for t in range(1, 4):
        plan = m.plan(t, SIZES)
        old = sum(p for j, p in pairs(plan).items() if j < t)
        assert old == SIZES[t]  # D old pairs
        assert plan.init == "previous" and m.compute_multiplier(t) == 1
        assert [type(s) for s in plan.sources] == [BufferSource] * t + [StepSource]  # old: buffers; new: all
        check_weights(plan)


def test_cumulative_equal_splits_old_data_evenly():
    m = get_method("cumulative-equal")
    d = SIZES[3]
    assert pairs(m.plan(3, SIZES)) == {0: d // 3, 1: d // 3, 2: d // 3, 3: d}  # paper t=4: D/3 each
    d = SIZES[2]
    assert pairs(m.plan(2, SIZES)) == {0: d // 2, 1: d // 2, 2: d}
    for t in range(4):
        check_weights(m.plan(t, SIZES))


def test_short_old_steps_give_all_they_have_and_the_buffer_shrinks():
    sizes = [100, 3000, 2000, 2400]  # step 0 is smaller than the D/3 = 800 -equal wants
    plan = get_method("cumulative-equal").plan(3, sizes)
    assert pairs(plan) == {0: 100, 1: 800, 2: 800, 3: 2400}
    assert {s.step: s.fraction for s in plan.sources}[0] == 1.0
    plan = get_method("cumulative-exp").plan(3, sizes)  # wants 600, 600, 1200
    assert pairs(plan) == {0: 100, 1: 600, 2: 1200, 3: 2400}
    assert sum(s.weight for s in plan.sources) == pytest.approx(1.0)


def test_empty_steps_are_skipped_and_nothing_to_train_is_an_error():
    plan = get_method("cumulative-all").plan(2, [0, 50, 70])
    assert pairs(plan) == {1: 50, 2: 70}
    with pytest.raises(TiclipError, match="no train pairs"):
        get_method("sequential").plan(1, [10, 0])
    with pytest.raises(TiclipError, match="out of range"):
        get_method("sequential").plan(4, SIZES)


def test_plans_drive_the_stream_pipeline(toy_stream):
    """A plan maps onto TimeStream.train_pipeline: each buffer keeps exactly the plan's pairs, the
    same ones for a seed, and a smaller buffer of a step is a subset of a larger one."""
    sizes = [s.train.count for s in toy_stream.steps]
    plan = get_method("cumulative-equal", seed=3).plan(3, sizes)
    assert [s.step for s in plan.sources] == [0, 1, 2, 3]
    pipe = toy_stream.train_pipeline([s.step for s in plan.sources], weights=[s.weight for s in plan.sources],
                                     counts=[s.pairs for s in plan.sources], resampled=False,
                                     subset_seed=plan.subset_seed)
    got = sum(1 for _ in pipe)
    assert got == plan.total_pairs < sum(sizes)  # exactly the plan's pairs: the buffers really are subsets
    small, large = (set(toy_stream.buffer_keys(0, n, plan.subset_seed)) for n in (16, 32))
    assert len(small) == 16 and small <= large


def test_parameter_schema_errors_name_method_key_and_what_is_accepted():
    assert check_method_params("ewc", {"lambda": "5", "fisher-batches": "2"}, source="x.yaml") == {
        "lam": 5.0, "gamma": 1.0, "fisher_batches": 2, "fisher_batch_size": 64}
    assert check_method_params("patching", {"alphas": "0,0.5,1"}, source="x")["alphas"] == (0.0, 0.5, 1.0)
    with pytest.raises(ConfigError) as e:
        check_method_params("lwf", {"lamda": 1}, source="exp.yaml: method_params.lwf")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("exp.yaml: method_params.lwf: ")
    assert "lwf" in msg and "'lamda'" in msg and "lam=1.0" in msg and "temperature=1.0" in msg
    with pytest.raises(ConfigError, match=r"^src: .*gamma.*'lots'"):
        check_method_params("ewc", {"gamma": "lots"}, source="src")
    with pytest.raises(ConfigError, match=r"gamma"):
        check_method_params("ewc", {"gamma": 2}, source="src")  # outside [0, 1]
    with pytest.raises(ConfigError, match="^y: unknown method 'lwff'"):
        check_method_params("lwff", {}, source="y")
    with pytest.raises(ConfigError, match="alphas"):
        check_method_params("patching", {"alphas": "0,2"}, source="z")
    for name in list_methods():  # every method's defaults validate through its own schema
        assert check_method_params(name, {}, source="defaults") == method_params(name)
        assert get_method(name).params == method_params(name)
