"""Learning-rate schedules, one per step, as plain functions of the iteration within the step.

Kinds (TiC-CLIP's recipe and ablations):

- ``cosine``: linear warmup, then cosine decay to 0 at the step's last iteration. Every step starts
  from the same peak LR (lowering it hurts).
- ``const-cosine``: warmup as above, then a constant LR. The deployable checkpoint of the step is a
  *branch* that decays the LR with a cosine over the last ``decay_fraction`` (20%) of the step's
  iterations; the run continues into the next step from the constant *trunk*, which keeps training
  at the peak LR to the end of the step. The trunk's iterations are extra compute (charged), and the
  trunk is trained only when the next step continues from it (see ``next_step_continues``).
- ``constant``: warmup as above, then the peak LR.

Warmup depends on where the step's weights start (the method's plan, ``StepPlan.init``):

- ``"initial"`` (the run's initial weights: random, or ``--init``; every step of Oracle and Restart,
  step 0 of every method): ``warmup`` iterations. Training from scratch without warmup is costly
  (TiC-CLIP App. B.3: 29.9 -> 24.1 ImageNet zero-shot for ViT-B/16).
- ``"previous"`` (warm-started from step t - 1): ``warmup_later`` iterations, 0 by default (the
  paper's main recipe: warming up warm-started steps hurts); TiC-DataComp XL's release uses 2000
  (its first step: 10000). ``warmup_every_step=True`` is the ablation that warms warm-started steps
  up with ``warmup`` too (the same as ``warmup_later = warmup``).

Schedules hold no state: ``Schedule.lr(it)`` is a pure function, so resuming needs only the
iteration number. How the trainer runs const-cosine (see also docs/METHODS.md)::

    sched = cfg.for_step(iterations, plan.init)
    bp = sched.branch_point                      # == iterations for cosine/constant
    for it in range(bp):                         # shared part
        sched.apply(optimizer, it); train_one_iteration()
    if sched.has_branch:
        snapshot = copy of (model, optimizer) state             # the trunk at bp (if it continues)
        for it in range(bp, iterations):        # the decay branch -> deployable checkpoint
            sched.apply(optimizer, it); train_one_iteration()
        save the deployable checkpoint of step t
        if the next step continues from this step's weights:
            restore snapshot
            for it in range(bp, iterations):    # the trunk, constant LR -> next step's init
                sched.apply(optimizer, it, trunk=True); train_one_iteration()
            keep this state (not the deployable one) as the next step's starting point

Extra compute of const-cosine per step: ``sched.extra_iterations`` (= iterations - branch_point)
× global batch × MACs per pair when the trunk is trained; ``Budget.plan_step(..., schedule=cfg)``
adds it to the estimate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

from ticlip.errors import TiclipError

KINDS = ("cosine", "const-cosine", "constant")
STARTS = ("initial", "previous")  # where a step's weights start: StepPlan.init


class ScheduleError(TiclipError, ValueError):
    """A schedule that cannot be built (unknown kind, warmup longer than the step, ...)."""


def branch_point(iterations: int, decay_fraction: float = 0.2) -> int:
    """The iteration at which const-cosine's decay branch forks off the constant trunk:
    ``iterations - round(decay_fraction × iterations)`` (at least one decay iteration)."""
    if iterations < 1:
        raise ScheduleError(f"a step needs at least one iteration, got {iterations}")
    decay = max(1, int(round(decay_fraction * iterations)))
    return max(0, iterations - decay)


def _check(kind: str, lr: float, warmup: int, decay_fraction: float) -> None:
    if kind not in KINDS:
        raise ScheduleError(f"unknown LR schedule {kind!r}; choose one of {', '.join(KINDS)}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ScheduleError(f"the learning rate must be a positive number, got {lr!r}")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise ScheduleError(f"warmup must be a non-negative number of iterations, got {warmup!r}")
    if kind == "const-cosine" and not 0 < decay_fraction < 1:
        raise ScheduleError(f"decay fraction must be in (0, 1), got {decay_fraction!r}")


@dataclass(frozen=True)
class Schedule:
    """The LR of one step: ``lr(it)`` for ``it`` in [0, iterations)."""

    kind: str
    peak_lr: float
    iterations: int
    warmup: int = 0  # warmup iterations of THIS step (resolved from where its weights start)
    decay_fraction: float = 0.2  # const-cosine only
    start: str = "initial"  # where the step's weights start (StepPlan.init): which warmup setting applied

    def __post_init__(self):
        _check(self.kind, self.peak_lr, self.warmup, self.decay_fraction)
        if self.start not in STARTS:
            raise ScheduleError(f"a step starts from {' or '.join(map(repr, STARTS))} weights, got {self.start!r}")
        if not isinstance(self.iterations, int) or self.iterations < 1:
            raise ScheduleError(f"a step needs at least one iteration, got {self.iterations!r}")
        limit = self.branch_point if self.kind == "const-cosine" else self.iterations
        if self.warmup >= limit and self.warmup > 0:
            flag = "--warmup" if self.start == "initial" else "--warmup-later"
            raise ScheduleError(
                f"warmup of {self.warmup} iterations does not fit a step of {self.iterations} iterations"
                + (f" (the decay branch starts at {limit})" if self.kind == "const-cosine" else "")
                + f": lower {flag} or raise the budget"
            )

    # ----------------------------------------------------------------------------- shape
    @property
    def has_branch(self) -> bool:
        return self.kind == "const-cosine"

    @property
    def branch_point(self) -> int:
        """Where the deployable decay branch forks (``iterations`` when there is no branch)."""
        return branch_point(self.iterations, self.decay_fraction) if self.has_branch else self.iterations

    @property
    def extra_iterations(self) -> int:
        """Iterations run twice (decay branch and trunk): the extra compute to charge."""
        return self.iterations - self.branch_point

    def _warmup_lr(self, it: int) -> float:
        return self.peak_lr * (it + 1) / self.warmup  # open_clip's linear warmup

    def lr(self, it: int) -> float:
        """LR at iteration ``it`` of the deployable trajectory (the decay branch for const-cosine)."""
        if not 0 <= it < self.iterations:
            raise ScheduleError(f"iteration {it} outside the step's [0, {self.iterations})")
        if it < self.warmup:
            return self._warmup_lr(it)
        if self.kind == "constant":
            return self.peak_lr
        start = self.warmup if self.kind == "cosine" else self.branch_point
        if it < start:
            return self.peak_lr
        span = self.iterations - start
        return 0.5 * (1.0 + math.cos(math.pi * (it - start) / span)) * self.peak_lr

    def trunk_lr(self, it: int) -> float:
        """LR of the trajectory that continues into the next step (differs only for const-cosine,
        where it stays at the peak past the branch point)."""
        if self.has_branch and self.branch_point <= it < self.iterations:
            return self.peak_lr
        return self.lr(it)

    def apply(self, optimizer, it: int, *, trunk: bool = False) -> float:
        """Set the LR of every parameter group of ``optimizer`` for iteration ``it``; returns it."""
        lr = self.trunk_lr(it) if trunk else self.lr(it)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ScheduleConfig:
    """The run-level schedule choice; ``for_step`` resolves it for one step.

    ``warmup``: iterations of steps that start from the run's initial weights; ``warmup_later``:
    of steps warm-started from the previous step; ``warmup_every_step``: the ablation that gives
    warm-started steps ``warmup`` too (then ``warmup_later`` must be 0 or equal to ``warmup``)."""

    kind: str = "cosine"
    lr: float = 5e-4
    warmup: int = 0
    warmup_every_step: bool = False
    decay_fraction: float = 0.2
    warmup_later: int = 0

    def __post_init__(self):
        _check(self.kind, self.lr, self.warmup, self.decay_fraction)
        if not isinstance(self.warmup_later, int) or isinstance(self.warmup_later, bool) or self.warmup_later < 0:
            raise ScheduleError(f"warmup_later must be a non-negative number of iterations, got {self.warmup_later!r}")
        if self.warmup_every_step and self.warmup_later not in (0, self.warmup):
            raise ScheduleError(
                f"warmup_every_step warms warm-started steps up with warmup ({self.warmup}), but warmup_later is "
                f"{self.warmup_later}: pass one of them (warmup_every_step is warmup_later = warmup)")

    def warmup_for(self, start: str) -> int:
        """Warmup iterations of a step whose weights start from ``start`` (``StepPlan.init``)."""
        if start not in STARTS:
            raise ScheduleError(f"a step starts from {' or '.join(map(repr, STARTS))} weights, got {start!r}")
        if start == "initial":
            return self.warmup
        return self.warmup if self.warmup_every_step else self.warmup_later

    def for_step(self, iterations: int, start: str) -> Schedule:
        """The schedule of a step of ``iterations`` whose weights start from ``start`` ("initial": the
        run's initial weights; "previous": the previous step's)."""
        return Schedule(self.kind, self.lr, iterations, self.warmup_for(start), self.decay_fraction, start)

    def extra_iterations(self, iterations: int, continues: bool = True) -> int:
        """Iterations a step of ``iterations`` runs on top of them: const-cosine's trunk past the branch
        point, trained only when the next step ``continues`` from this step's weights."""
        if self.kind != "const-cosine" or not continues:
            return 0
        return iterations - branch_point(iterations, self.decay_fraction)

    def to_dict(self) -> dict:
        return asdict(self)


def next_step_continues(method, t: int, step_sizes: Sequence[int]) -> bool:
    """Whether step t + 1 of the stream starts from the weights step t trains (so const-cosine must
    train, and charge, step t's constant-LR trunk): asked of the method's plan for t + 1.

    False after the stream's last step, when the next plan starts from the run's initial weights
    (Oracle, Restart), and when the method's ``end_step`` changes the deployed weights
    (``end_step_changes_weights``, e.g. patching): the next step then starts from the deployed
    checkpoint, since the trunk never saw what ``end_step`` did. True when the next plan's init is
    "trained" (the weights step t trained before ``end_step``: the trunk continues them)."""
    if t + 1 >= len(step_sizes):
        return False
    init = method.plan(t + 1, list(step_sizes)).init
    if init == "trained":  # the weights step t trained, before end_step: its trunk (the merge family)
        return True
    if getattr(method, "end_step_changes_weights", False):
        return False
    return init == "previous"


def make_schedule(
    kind: str, lr: float, iterations: int, start: str = "initial", *, warmup: int = 0, warmup_later: int = 0,
    warmup_every_step: bool = False, decay_fraction: float = 0.2,
) -> Schedule:
    """Shortcut for ``ScheduleConfig(...).for_step(iterations, start)``."""
    return ScheduleConfig(kind, lr, warmup, warmup_every_step, decay_fraction, warmup_later).for_step(iterations, start)


__all__ = ["KINDS", "STARTS", "Schedule", "ScheduleConfig", "ScheduleError", "branch_point", "make_schedule",
           "next_step_continues"]
