"""Each merge operator (``ticlip.methods.merge_ops``) against a case computed by hand on small tensors;
non-floating entries always come from the newest model."""

import math

import pytest
import torch

from ticlip.methods import merge_ops as ops

STEP = torch.tensor([7])  # an integer buffer: never merged


def sd(*values, step=None):
    return {"w": torch.tensor(list(values), dtype=torch.float32), "n": torch.tensor([step if step is not None else 0])}


def close(a, b):
    return torch.allclose(a, torch.tensor(b, dtype=a.dtype), atol=1e-6)


def test_lerp_is_ema_and_takes_integers_from_the_newest():
    old, new = sd(0.0, 2.0, step=1), sd(4.0, 6.0, step=2)
    out = ops.lerp(old, new, 0.25)
    assert close(out["w"], [1.0, 3.0]) and out["n"].item() == 2
    assert torch.equal(ops.lerp(old, new, 1.0)["w"], new["w"]) and torch.equal(ops.lerp(old, new, 0.0)["w"], old["w"])
    assert close(old["w"], [0.0, 2.0])  # inputs untouched


def test_slerp_on_orthogonal_parallel_and_zero_tensors():
    h = math.sqrt(0.5)
    assert close(ops.slerp(sd(1.0, 0.0), sd(0.0, 1.0), 0.5)["w"], [h, h])  # ω = π/2: sin(π/4)/sin(π/2) each
    # ω = π/2, t = 1/3: sin(π/3) and sin(π/6)
    assert close(ops.slerp(sd(1.0, 0.0), sd(0.0, 1.0), 1 / 3)["w"], [math.sin(math.pi / 3), math.sin(math.pi / 6)])
    assert close(ops.slerp(sd(1.0, 2.0), sd(2.0, 4.0), 0.5)["w"], [1.5, 3.0])  # parallel: lerp
    assert close(ops.slerp(sd(0.0, 0.0), sd(2.0, 4.0), 0.25)["w"], [0.5, 1.0])  # zero norm: lerp
    assert ops.slerp(sd(1.0, 0.0, step=1), sd(0.0, 1.0, step=3), 0.5)["n"].item() == 3


def test_task_arithmetic():
    base, m1, m2 = sd(1.0, 1.0), sd(2.0, 0.0), sd(3.0, 1.0, step=5)  # τ1 = (1, -1), τ2 = (2, 0)
    out = ops.task_arithmetic(base, [m1, m2], 0.5)
    assert close(out["w"], [2.5, 0.5]) and out["n"].item() == 5
    assert close(ops.task_arithmetic(base, [m1, m2], 1.0)["w"], [4.0, 0.0])


def test_trim_keeps_the_top_k_fraction_by_magnitude():
    tau = torch.tensor([3.0, -1.0, 0.5, -2.0])
    assert close(ops.trim_top_k(tau, 0.5), [3.0, 0.0, 0.0, -2.0])
    assert close(ops.trim_top_k(tau, 0.1), [3.0, 0.0, 0.0, 0.0])  # at least one entry
    assert close(ops.trim_top_k(tau, 1.0), [3.0, -1.0, 0.5, -2.0])


def test_ties_trims_elects_signs_and_takes_the_disjoint_mean():
    # τ1 = (3, -1, 0.5, -2, 2), τ2 = (-1, -4, 0.2, 1, 4); top 60% (3 of 5) by magnitude:
    # τ1 -> (3, 0, 0, -2, 2), τ2 -> (0, -4, 0, 1, 4); signs of the sums (3, -4, 0, -1, 6): +, -, 0, -, +;
    # disjoint means: 3, -4, 0 (no entry), -2 (τ2's +1 disagrees), (2 + 4)/2 = 3
    base = sd(1.0, 1.0, 1.0, 1.0, 1.0)
    m1 = sd(4.0, 0.0, 1.5, -1.0, 3.0)
    m2 = sd(0.0, -3.0, 1.2, 2.0, 5.0, step=9)
    out = ops.ties(base, [m1, m2], top_k=0.6, scaling=1.0)
    assert close(out["w"], [4.0, -3.0, 1.0, -1.0, 4.0]) and out["n"].item() == 9
    assert close(ops.ties(base, [m1, m2], top_k=0.6, scaling=0.5)["w"], [2.5, -1.0, 1.0, 0.0, 2.5])


def test_elect_and_merge_without_trimming():
    merged = ops.elect_and_merge([torch.tensor([1.0, -2.0, 0.0]), torch.tensor([3.0, 1.0, 0.0])])
    assert close(merged, [2.0, -2.0, 0.0])  # sum signs +, -, 0


def test_dare_drops_with_rate_p_rescales_and_is_seeded():
    tau = torch.full((20000,), 2.0)
    out = ops.dare(tau, 0.75, torch.Generator().manual_seed(3))
    kept = out != 0
    assert set(out.unique().tolist()) == {0.0, 8.0}  # kept entries scaled by 1 / (1 - 0.75)
    assert abs(kept.float().mean().item() - 0.25) < 0.02
    assert abs(out.mean().item() - 2.0) < 0.1  # unbiased in expectation
    assert torch.equal(out, ops.dare(tau, 0.75, torch.Generator().manual_seed(3)))
    assert not torch.equal(out, ops.dare(tau, 0.75, torch.Generator().manual_seed(4)))
    assert torch.equal(ops.dare(tau, 0.0, torch.Generator()), tau)


def test_dare_ties_is_ties_without_trimming_at_rate_zero_and_seeded_otherwise():
    base = sd(1.0, 1.0, 1.0, 1.0, 1.0)
    m1, m2 = sd(4.0, 0.0, 1.5, -1.0, 3.0), sd(0.0, -3.0, 1.2, 2.0, 5.0, step=4)
    # no drop: signs of (2, -5, 0.7, -1, 6); disjoint means 3, (-1 - 4)/2, (0.5 + 0.2)/2, -2, 3
    out = ops.dare_ties(base, [m1, m2], drop_rate=0.0, scaling=1.0, seed=0)
    assert close(out["w"], [4.0, -1.5, 1.35, -1.0, 4.0]) and out["n"].item() == 4
    # one model at p = 0.5: every entry is the base or base + 2τ
    one = ops.dare_ties(base, [m1], drop_rate=0.5, scaling=1.0, seed=1)["w"]
    tau = m1["w"] - base["w"]
    assert all(torch.isclose(v, b) or torch.isclose(v, b + 2 * t) for v, b, t in zip(one, base["w"], tau))
    assert torch.equal(one, ops.dare_ties(base, [m1], drop_rate=0.5, scaling=1.0, seed=1)["w"])


def test_average_uniform_and_weighted():
    a, b, c = sd(1.0, 2.0), sd(3.0, 4.0), sd(5.0, 6.0, step=2)
    assert close(ops.average([a, b, c])["w"], [3.0, 4.0])
    out = ops.average([a, b, c], [1, 1, 2])  # (1 + 3 + 10) / 4, (2 + 4 + 12) / 4
    assert close(out["w"], [3.5, 4.5]) and out["n"].item() == 2
    with pytest.raises(ValueError):
        ops.average([a, b], [1.0])


def test_entries_missing_or_reshaped_in_an_older_model_come_from_the_newest():
    old = {"w": torch.zeros(2), "extra": torch.zeros(3)}
    new = {"w": torch.ones(2), "extra": torch.ones(4), "only_new": torch.ones(1)}
    out = ops.lerp(old, new, 0.5)
    assert close(out["w"], [0.5, 0.5]) and torch.equal(out["extra"], new["extra"])
    assert torch.equal(out["only_new"], new["only_new"])
