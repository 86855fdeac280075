"""Replay-buffer arithmetic shared by the methods: how many pairs of each step a plan draws.

Steps are 0-based; ``step_sizes[j]`` is step j's number of train pairs; D = ``step_sizes[t]``.

- ``all_buffer``: every pair of every earlier step.
- ``exp_buffer``: D old pairs, halved per step back in time: the previous step gets D/2, the one
  before D/4, ..., and the oldest step takes the remainder (so the buffer sums to D). For the
  paper's 1-based t=3: D/2, D/2; t=4: D/4, D/4, D/2.
- ``equal_buffer``: D old pairs split equally over the earlier steps (D/3 each at 1-based t=4).

These are *wanted* counts. ``kept_counts`` turns them into the pairs a buffer really keeps, exact
integers: ``min(size_j, round(wanted_j))``, and, because the paper's buffer only discards, never more
of step j than step t-1's buffer kept of it (steps that grow would otherwise bring discarded pairs
back). The cap needs the previous step's counts, which are a pure function of the step sizes too, so
they are recomputed, not stored. A step holding fewer pairs than wanted contributes all it has and the
shortfall is NOT moved to other steps: the buffer is then smaller than D (the paper's "at most D old
pairs").

The counts become sources with ``weight ∝ pairs``: ``StepSource`` when a step gives all its pairs,
else ``BufferSource(fraction = pairs / step size, pairs)``. A source with no pairs (an empty step, a
share that rounds to 0 or was discarded earlier) is left out of the plan with a log line. The
trainer keeps exactly ``pairs`` of each buffered step: the first ``pairs`` of the step's pairs ranked
by a hash seeded with ``plan.subset_seed`` (``TimeStream.buffer_keys``), a ranking fixed across steps,
so what step t keeps of step j is a subset of what step t-1 kept of it.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

from ticlip.errors import TiclipError
from ticlip.methods.base import BufferSource, Init, StepPlan, StepSource

log = logging.getLogger(__name__)
_SAID: set = set()  # (step, source step, reason) already logged in this process

# a buffer rule: (t, step sizes) -> wanted pairs of each earlier step
BufferRule = Callable[[int, Sequence[int]], "dict[int, float]"]


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


def kept_counts(t: int, step_sizes: Sequence[int], buffer: BufferRule) -> dict[int, int]:
    """The pairs step t's buffer keeps of each earlier step j under ``buffer`` (``exp_buffer``,
    ``equal_buffer``, ``all_buffer``): ``min(size_j, round(wanted_j))``, capped by what step t-1 kept
    of j (the buffer only discards; step t-1 itself was new data then, so it is capped by its size)."""
    check_step(t, step_sizes)
    kept: dict[int, int] = {}
    for s in range(1, t + 1):
        wanted = buffer(s, step_sizes)
        now = {}
        for j in range(s):
            k = min(step_sizes[j], int(round(wanted.get(j, 0.0))))
            if j < s - 1:
                k = min(k, kept.get(j, 0))
            now[j] = max(k, 0)
        kept = now
    return kept


def _say_left_out(t: int, j: int, why: str) -> None:
    if (t, j, why) not in _SAID:
        _SAID.add((t, j, why))
        log.warning("plan of step %d: leaving step %d out: %s", t, j, why)


def make_plan(
    t: int,
    step_sizes: Sequence[int],
    old: dict[int, float],
    *,
    init: Init,
    subset_seed: int | str | None = None,
) -> StepPlan:
    """A plan drawing all of step t plus ``old[j]`` pairs from each earlier step j (``kept_counts``
    gives exact, only-discarding counts). Sources with no pairs are left out, with a log line."""
    check_step(t, step_sizes)
    wanted = {**old, t: float(step_sizes[t])}
    kept: list[tuple[int, int]] = []  # (step, pairs)
    for j in sorted(wanted):
        size = step_sizes[j]
        pairs = min(size, int(round(wanted[j])))
        if size <= 0:
            _say_left_out(t, j, "it has no train pairs")
            continue
        if pairs <= 0:
            _say_left_out(t, j, f"its buffer keeps no pairs (wanted {wanted[j]:.3g} of {size})")
            continue
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


def buffer_plan(t: int, step_sizes: Sequence[int], buffer: BufferRule, *, init: Init,
                subset_seed: int | str | None = None) -> StepPlan:
    """All of step t plus the buffer ``buffer`` keeps of the earlier steps (``kept_counts``)."""
    return make_plan(t, step_sizes, {j: float(k) for j, k in kept_counts(t, step_sizes, buffer).items()},
                     init=init, subset_seed=subset_seed)


__all__ = ["BufferRule", "PlanError", "all_buffer", "buffer_plan", "check_step", "equal_buffer", "exp_buffer",
           "kept_counts", "make_plan"]
