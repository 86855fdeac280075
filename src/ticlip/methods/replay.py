"""Replay-buffer arithmetic shared by the methods: how many pairs of each step a plan draws.

Steps are 0-based; ``step_sizes[j]`` is step j's number of train pairs; D = ``step_sizes[t]``.

- ``all_buffer``: every pair of every earlier step.
- ``exp_buffer``: D old pairs, halved per step back in time: the previous step gets D/2, the one
  before D/4, ..., and the oldest step takes the remainder (so the buffer sums to D). For the
  paper's 1-based t=3: D/2, D/2; t=4: D/4, D/4, D/2.
- ``equal_buffer``: D old pairs split equally over the earlier steps (D/3 each at 1-based t=4).

These are *wanted* counts.

Two more policies keep a buffer of a fixed size ``limit`` in pairs (a memory limit), whatever D is; their
counts are exact already (no rounding) and only discard, so ``kept_counts`` is not needed for them:

- ``reservoir_counts``: Vitter's Algorithm R (Vitter 1985, "Random sampling with a reservoir", ACM TOMS
  11(1)) run over the stream's pairs in step order: after the steps before t, the buffer is a uniform
  random ``limit``-subset of all their pairs (all of them while they fit).
- ``fifo_counts``: the ``limit`` most recent pairs: whole steps from t-1 backwards, and of the oldest step
  that fits only in part, as many pairs as fit.
 ``kept_counts`` turns them into the pairs a buffer really keeps, exact
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


def _check_limit(limit) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise PlanError(f"a buffer limit must be a positive number of pairs, got {limit!r}")
    return limit


# numpy's hypergeometric sampler takes populations below 10**9 (per colour)
_EXACT_BELOW = 10**9


def _hypergeometric(rng, good: int, bad: int, draws: int) -> int:
    """Good items among ``draws`` drawn without replacement from ``good`` + ``bad``: numpy's exact sampler,
    or past its range (10**9 per colour) the binomial limit, kept inside the possible range."""
    if draws <= 0 or good <= 0:
        return 0
    if bad <= 0:
        return draws
    if good < _EXACT_BELOW and bad < _EXACT_BELOW:
        return int(rng.hypergeometric(good, bad, draws))
    return int(min(good, draws, max(draws - bad, rng.binomial(draws, good / (good + bad)))))


def reservoir_counts(t: int, step_sizes: Sequence[int], limit: int, seed: int = 0) -> dict[int, int]:
    """The pairs of each step j < t in a reservoir of ``limit`` pairs after the steps before t, as
    Algorithm R leaves it: a pure function of (step sizes, seed, limit).

    Algorithm R keeps the first ``limit`` items, then item i (1-based) replaces a uniformly chosen
    slot with probability limit / i. Run pair by pair it costs O(pairs) (billions on TiC-DataComp), so
    it is run here on the per-step counts, which follow exactly the same law: after step s (N pairs
    so far, n of them step s's), the reservoir is a uniform ``limit``-subset of the N pairs, so the
    number of step-s pairs in it is hypergeometric (n good, N - n bad, ``limit`` drawn), and the old
    pairs that stay are a uniform subset of the previous reservoir (every slot is equally likely to be
    overwritten), so their split over the earlier steps is multivariate hypergeometric over the
    previous counts. Step s's draws use a numpy generator seeded by (seed, s), so the reservoir of
    step t extends the one of step t - 1 and a resumed run or the step cache sees the same counts.
    Which pairs of a step stay is the buffer ranking's prefix (``TimeStream.buffer_keys``): a uniform
    subset of the step for a seeded hash, nested as the count shrinks, as Algorithm R's survivors are.
    Populations of 10**9 pairs or more (numpy's exact sampler stops there) draw from the binomial limit
    (p = good / population), which differs from the hypergeometric law by O(draws / population)."""
    import numpy as np

    check_step(t, step_sizes)
    limit = _check_limit(limit)
    kept: dict[int, int] = {}
    seen = 0
    for s in range(t):
        n = step_sizes[s]
        if n == 0:
            continue
        if seen + n <= limit:  # everything still fits
            kept[s] = n
            seen += n
            continue
        rng = np.random.default_rng([int(seed) % 2**32, s, 0x52])
        new = _hypergeometric(rng, n, seen, limit)
        old = [j for j in sorted(kept) if kept[j] > 0]
        left, rest = limit - new, sum(kept[j] for j in old)
        stay = {}
        for j in old:  # the old pairs that stay, split over the steps one after another (the marginals)
            rest -= kept[j]
            stay[j] = _hypergeometric(rng, kept[j], rest, left)
            left -= stay[j]
        kept = stay
        kept[s] = new
        seen += n
    return {j: k for j, k in sorted(kept.items())}


def fifo_counts(t: int, step_sizes: Sequence[int], limit: int) -> dict[int, int]:
    """The ``limit`` most recent pairs before step t: all of steps t-1, t-2, ... while they fit, then
    the part of the next older step that still fits (its first pairs in the buffer ranking: the pairs
    of one step share its time, so ties are broken by the stable random ranking), then nothing. A pure
    function of (step sizes, limit); a step's count only shrinks as t grows (FIFO only discards)."""
    check_step(t, step_sizes)
    room = _check_limit(limit)
    kept: dict[int, int] = {}
    for j in range(t - 1, -1, -1):
        take = min(step_sizes[j], room)
        if take > 0:
            kept[j] = take
        room -= take
    return dict(sorted(kept.items()))


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



# --------------------------------------------------------------------------- buffer policies by name
POLICIES = ("all", "exp", "equal", "reservoir", "fifo")


def default_limit(limit: int | None, step_sizes) -> int:
    """A fixed buffer's size in pairs: ``limit``, or (None) the first step's train pairs, so that the
    buffer holds about one step, like TiC-CLIP's D-sized buffers, but never grows."""
    return int(limit) if limit is not None else max(1, int(step_sizes[0]))


def buffer_counts(policy: str, t: int, step_sizes, *, limit: int | None = None, seed: int = 0) -> dict[int, int]:
    """The pairs of each earlier step j that step t's buffer keeps under ``policy`` (see ``POLICIES``):
    the one mapping from a policy name to counts, used by the cumulative methods and by mixtures."""
    check_step(t, step_sizes)
    if policy == "all":
        return {j: int(n) for j, n in all_buffer(t, step_sizes).items()}
    if policy in ("exp", "equal"):
        return kept_counts(t, step_sizes, exp_buffer if policy == "exp" else equal_buffer)
    if policy == "reservoir":
        return reservoir_counts(t, step_sizes, default_limit(limit, step_sizes), seed)
    if policy == "fifo":
        return fifo_counts(t, step_sizes, default_limit(limit, step_sizes))
    raise PlanError(f"unknown buffer policy {policy!r}; choose one of: {', '.join(POLICIES)}")


__all__ = [
    "BufferRule", "POLICIES", "PlanError", "all_buffer", "buffer_counts", "buffer_plan", "check_step",
    "default_limit", "equal_buffer", "exp_buffer", "fifo_counts", "kept_counts", "make_plan", "reservoir_counts",
]
