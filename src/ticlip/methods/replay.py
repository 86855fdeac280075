"""Replay-buffer arithmetic shared by the methods: how many pairs of each step a plan draws.

Steps are 0-based; ``step_sizes[j]`` is step j's number of train pairs; D = ``step_sizes[t]``.

- ``all_buffer``: every pair of every earlier step.
- ``exp_buffer``: D old pairs, halved per step back in time: the previous step gets D/2, the one
  before D/4, ..., and the oldest step takes the remainder (so the buffer sums to D). For the
  paper's 1-based t=3: D/2, D/2; t=4: D/4, D/4, D/2.
- ``equal_buffer``: D old pairs split equally over the earlier steps (D/3 each at 1-based t=4).

A step holding fewer pairs than wanted contributes all it has and the shortfall is NOT moved to
other steps: the buffer is then smaller than D (the paper's "at most D old pairs").

The wanted counts become sources with ``weight ∝ pairs``: ``StepSource`` when a step gives all its
pairs, else ``BufferSource(fraction = pairs / step size)``; the trainer keeps
a stable random ``fraction`` of each step (``TimeStream.train_pipeline(fractions=..., weights=...,
subset_seed=plan.subset_seed)``) and samples steps with the weights, so old and new pairs are
shuffled together in every batch. Since ``stable_fraction`` is fixed per pair and seed, a step's
buffer at a smaller fraction is a subset of its buffer at a larger one, as if the buffer discarded
pairs, and the kept count is ``fraction × size`` in expectation, not exactly.
"""

from __future__ import annotations

from typing import Sequence

from ticlip.errors import TiclipError
from ticlip.methods.base import BufferSource, Init, StepPlan, StepSource


class PlanError(TiclipError, ValueError):
    """A step plan that cannot be made (step out of range, no train pairs)."""


def check_step(t: int, step_sizes: Sequence[int]) -> None:
    if not isinstance(t, int) or not 0 <= t < len(step_sizes):
        raise PlanError(f"step index {t!r} out of range for a stream of {len(step_sizes)} steps")
    bad = [n for n in step_sizes if not isinstance(n, int) or n < 0]
    if bad:
        raise PlanError(f"step sizes must be non-negative integers, got {bad[0]!r}")


def all_buffer(t: int, step_sizes: Sequence[int]) -> dict[int, float]:
    check_step(t, step_sizes)
    return {j: float(step_sizes[j]) for j in range(t)}


def exp_buffer(t: int, step_sizes: Sequence[int]) -> dict[int, float]:
    check_step(t, step_sizes)
    d = float(step_sizes[t])
    wanted = {j: d / 2 ** (t - j) for j in range(1, t)}
    if t >= 1:
        wanted[0] = d / 2 ** max(t - 1, 0)  # the oldest step takes the remainder
    return dict(sorted(wanted.items()))


def equal_buffer(t: int, step_sizes: Sequence[int]) -> dict[int, float]:
    check_step(t, step_sizes)
    d = float(step_sizes[t])
    return {j: d / t for j in range(t)} if t else {}


def make_plan(
    t: int,
    step_sizes: Sequence[int],
    old: dict[int, float],
    *,
    init: Init,
    subset_seed: int | str = 0,
) -> StepPlan:
    """A plan drawing all of step t plus ``old[j]`` wanted pairs from each earlier step j."""
    check_step(t, step_sizes)
    wanted = {**old, t: float(step_sizes[t])}
    kept: list[tuple[int, int]] = []  # (step, pairs)
    for j in sorted(wanted):
        size = step_sizes[j]
        pairs = min(size, int(round(wanted[j])))
        if size <= 0 or pairs <= 0:
            continue  # empty steps cannot be drawn from (train_pipeline refuses them)
        kept.append((j, pairs))
    if not kept:
        raise PlanError(f"step {t} has no train pairs to train on (step sizes: {list(step_sizes)})")
    total = sum(pairs for _, pairs in kept)
    sources = [
        StepSource(step=j, weight=pairs / total, pairs=pairs) if pairs == step_sizes[j]
        else BufferSource(step=j, fraction=pairs / step_sizes[j], weight=pairs / total, pairs=pairs)
        for j, pairs in kept
    ]
    return StepPlan(step=t, init=init, sources=sources, subset_seed=subset_seed)


__all__ = ["PlanError", "all_buffer", "check_step", "equal_buffer", "exp_buffer", "make_plan"]
