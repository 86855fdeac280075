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

Meta schedules across steps (FoMo-in-Flux, Roth et al. 2024, §6; TiC-LM, Li et al. 2025): their LR
depends on where the step lies in the run (``StepPosition``), still a pure function of the iteration:

- ``wsd`` (warmup-stable-decay, "infinite"; Hägele et al. 2024, "Scaling Laws and Compute-Optimal
  Training Beyond Fixed Training Durations"; Ibrahim et al. 2024): a constant trunk that continues
  across steps, with an *anneal* branch over the last ``decay_fraction`` of each step for the
  deployable checkpoint; ``anneal`` shapes it: ``linear`` (1 - x), ``cosine`` ((1 + cos πx) / 2) or
  ``1-sqrt`` (1 - √x), x = (it - branch point) / branch length. ``const-cosine`` is ``wsd`` with the
  cosine anneal (the same floats).
- ``rsqrt``: inverse-square-root decay over the global iterations n (1-based) of the chain of
  warm-started steps the step belongs to, ``lr · sqrt(τ / max(n, τ))`` with τ = ``rsqrt_timescale``
  (0: the ``warmup`` setting, at least 1); the chain restarts (n from 1) at every step that starts
  from the run's initial weights. A cooldown branch shaped by ``anneal`` before each deployment, from
  the trunk's LR at the branch point to 0, like wsd's; the trunk continues undecayed by it.
- ``cosine-decaying-peak``: a cosine per step (as ``cosine``) whose peak decays by ``peak_decay`` per
  warm-started step: ``lr · peak_decay^k`` at the k-th step after the chain start (the autoregressive
  meta-schedules of FoMo-in-Flux and TiC-LM; ``peak_decay`` 1 is ``cosine``).
- ``global-cosine``: one cosine over the iterations of all steps of the run, ``lr · (1 + cos(π g / G)) / 2``
  at global iteration g of G, whatever the step's weights start from; refused where G is unknown.

For the new kinds a step's warmup scales the schedule's value: ``lr(it) = base(it) · (it + 1) / warmup``
for it < warmup (for wsd: open_clip's linear warmup to the peak).

The schedule-free AdamW optimizer (``TrainConfig.optimizer``, ``ticlip.train.loop.make_optimizer``)
takes ``constant`` (warmup only).

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
from dataclasses import asdict, dataclass, field
from typing import Sequence

from ticlip.errors import TiclipError

KINDS = ("cosine", "const-cosine", "constant", "wsd", "rsqrt", "cosine-decaying-peak", "global-cosine")
BRANCHED = ("const-cosine", "wsd", "rsqrt")  # a deployable anneal branch off a trunk that continues
ANNEALS = ("linear", "cosine", "1-sqrt")  # shapes of the branch (wsd, rsqrt)
META = ("wsd", "rsqrt", "cosine-decaying-peak", "global-cosine")  # the kinds that use a StepPosition
STARTS = ("initial", "previous")  # where a step's weights start: StepPlan.init


class ScheduleError(TiclipError, ValueError):
    """A schedule that cannot be built (unknown kind, warmup longer than the step, ...)."""


def branch_point(iterations: int, decay_fraction: float = 0.2) -> int:
    """The iteration at which a branched schedule's (const-cosine, wsd, rsqrt) decay branch forks off
    the trunk: ``iterations - round(decay_fraction × iterations)`` (at least one decay iteration)."""
    if iterations < 1:
        raise ScheduleError(f"a step needs at least one iteration, got {iterations}")
    decay = max(1, int(round(decay_fraction * iterations)))
    return max(0, iterations - decay)


def _check(kind: str, lr: float, warmup: int, decay_fraction: float, anneal: str = "cosine",
           rsqrt_timescale: int = 0, peak_decay: float = 1.0) -> None:
    if kind not in KINDS:
        raise ScheduleError(f"unknown LR schedule {kind!r}; choose one of {', '.join(KINDS)}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ScheduleError(f"the learning rate must be a positive number, got {lr!r}")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise ScheduleError(f"warmup must be a non-negative number of iterations, got {warmup!r}")
    if kind in BRANCHED and not 0 < decay_fraction < 1:
        raise ScheduleError(f"decay fraction must be in (0, 1), got {decay_fraction!r}")
    if anneal not in ANNEALS:
        raise ScheduleError(f"unknown anneal {anneal!r}: choose one of {', '.join(ANNEALS)}")
    if not isinstance(rsqrt_timescale, int) or isinstance(rsqrt_timescale, bool) or rsqrt_timescale < 0:
        raise ScheduleError(f"rsqrt_timescale must be a non-negative number of iterations, got {rsqrt_timescale!r}")
    if not (isinstance(peak_decay, (int, float)) and 0 < peak_decay <= 1):
        raise ScheduleError(f"peak_decay must be in (0, 1], got {peak_decay!r}")


def anneal_factor(shape: str, it: int, start: int, span: int) -> float:
    """The anneal branch's multiplier at iteration ``it`` of a branch of ``span`` iterations from
    ``start``: x = (it - start) / span; linear 1 - x, cosine (1 + cos πx) / 2, 1-sqrt 1 - √x
    (Hägele et al. 2024, §3)."""
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (it - start) / span))  # const-cosine's very expression
    x = (it - start) / span
    return 1.0 - x if shape == "linear" else 1.0 - math.sqrt(x)


@dataclass(frozen=True)
class StepPosition:
    """Where a step lies in the run, for the meta schedules (``step_position`` works it out).

    ``chain_step``: how many warm-started steps precede it since the last step that started from the
    run's initial weights (0 for such a step); ``chain_offset``: their iterations; ``run_offset``: the
    iterations of all earlier steps of the run; ``run_total``: of all steps (None: unknown)."""

    index: int = 0
    chain_step: int = 0
    chain_offset: int = 0
    run_offset: int = 0
    run_total: int | None = None

    def restarted(self) -> "StepPosition":
        """The same position for a step that starts from the initial weights: its chain starts here."""
        return StepPosition(self.index, 0, 0, self.run_offset, self.run_total)


@dataclass(frozen=True)
class Schedule:
    """The LR of one step: ``lr(it)`` for ``it`` in [0, iterations)."""

    kind: str
    peak_lr: float
    iterations: int
    warmup: int = 0  # warmup iterations of THIS step (resolved from where its weights start)
    decay_fraction: float = 0.2  # branched kinds only
    start: str = "initial"  # where the step's weights start (StepPlan.init): which warmup setting applied
    anneal: str = "cosine"  # wsd, rsqrt: the branch's shape
    rsqrt_timescale: int = 1  # rsqrt: τ, resolved (>= 1)
    peak_decay: float = 1.0  # cosine-decaying-peak
    position: StepPosition = field(default_factory=StepPosition)

    def __post_init__(self):
        _check(self.kind, self.peak_lr, self.warmup, self.decay_fraction, self.anneal, self.rsqrt_timescale,
               self.peak_decay)
        if self.start not in STARTS:
            raise ScheduleError(f"a step starts from {' or '.join(map(repr, STARTS))} weights, got {self.start!r}")
        if not isinstance(self.iterations, int) or self.iterations < 1:
            raise ScheduleError(f"a step needs at least one iteration, got {self.iterations!r}")
        if self.kind == "rsqrt" and self.rsqrt_timescale < 1:
            raise ScheduleError(f"rsqrt needs a timescale of at least one iteration, got {self.rsqrt_timescale}")
        if self.kind == "global-cosine":
            total = self.position.run_total
            if total is None:
                raise ScheduleError("schedule global-cosine needs the number of steps of the run, which is unknown "
                                    "here: choose another --schedule (e.g. cosine-decaying-peak or wsd)")
            if self.position.run_offset + self.iterations > total:
                raise ScheduleError(f"step at global iteration {self.position.run_offset} with {self.iterations} "
                                    f"iterations runs past the run's {total} (global-cosine)")
        limit = self.branch_point if self.has_branch else self.iterations
        if self.warmup >= limit and self.warmup > 0:
            flag = "--warmup" if self.start == "initial" else "--warmup-later"
            raise ScheduleError(
                f"warmup of {self.warmup} iterations does not fit a step of {self.iterations} iterations"
                + (f" (the decay branch starts at {limit})" if self.has_branch else "")
                + f": lower {flag} or raise the budget"
            )

    # ----------------------------------------------------------------------------- shape
    @property
    def has_branch(self) -> bool:
        return self.kind in BRANCHED

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

    def _base(self, it: int) -> float:
        """The meta kinds' undecayed (trunk) LR at iteration ``it``, before warmup."""
        pos = self.position
        if self.kind == "rsqrt":
            n = pos.chain_offset + it + 1  # 1-based iteration of the chain of warm-started steps
            return self.peak_lr * math.sqrt(self.rsqrt_timescale / max(n, self.rsqrt_timescale))
        if self.kind == "global-cosine":
            g, total = pos.run_offset + it, pos.run_total
            return 0.5 * (1.0 + math.cos(math.pi * g / total)) * self.peak_lr
        return self.peak_lr  # wsd (and const-cosine)

    def lr(self, it: int) -> float:
        """LR at iteration ``it`` of the deployable trajectory (the anneal branch for branched kinds)."""
        if not 0 <= it < self.iterations:
            raise ScheduleError(f"iteration {it} outside the step's [0, {self.iterations})")
        if self.kind in ("wsd", "rsqrt", "const-cosine") and it >= self.branch_point:
            bp = self.branch_point
            shape = "cosine" if self.kind == "const-cosine" else self.anneal
            return anneal_factor(shape, it, bp, self.iterations - bp) * self._base(bp)
        if self.kind in ("wsd", "rsqrt", "global-cosine"):
            base = self._base(it)
            return base * (it + 1) / self.warmup if it < self.warmup else base
        if it < self.warmup:
            return self._warmup_lr(it) * (self._peak_factor if self.kind == "cosine-decaying-peak" else 1.0)
        if self.kind == "constant":
            return self.peak_lr
        if self.kind == "cosine-decaying-peak":
            span = self.iterations - self.warmup
            return 0.5 * (1.0 + math.cos(math.pi * (it - self.warmup) / span)) * self.peak_lr * self._peak_factor
        start = self.warmup if self.kind == "cosine" else self.branch_point
        if it < start:
            return self.peak_lr
        span = self.iterations - start
        return 0.5 * (1.0 + math.cos(math.pi * (it - start) / span)) * self.peak_lr

    @property
    def _peak_factor(self) -> float:
        return self.peak_decay ** self.position.chain_step

    def trunk_lr(self, it: int) -> float:
        """LR of the trajectory that continues into the next step (differs only for branched kinds,
        where it keeps the trunk's undecayed LR past the branch point)."""
        if self.has_branch and self.branch_point <= it < self.iterations:
            return self._base(it)
        return self.lr(it)

    def apply(self, optimizer, it: int, *, trunk: bool = False) -> float:
        """Set the LR of every parameter group of ``optimizer`` for iteration ``it``; returns it."""
        lr = self.trunk_lr(it) if trunk else self.lr(it)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def to_dict(self) -> dict:
        """The schedule as recorded in step.json and keyed by the step cache: the TiC-CLIP kinds keep
        their fields; the meta kinds add their settings and the step's position."""
        d = asdict(self)
        if self.kind not in META:
            for key in ("anneal", "rsqrt_timescale", "peak_decay", "position"):
                d.pop(key)
        return d


@dataclass(frozen=True)
class ScheduleConfig:
    """The run-level schedule choice; ``for_step`` resolves it for one step.

    ``warmup``: iterations of steps that start from the run's initial weights; ``warmup_later``:
    of steps warm-started from the previous step; ``warmup_every_step``: the ablation that gives
    warm-started steps ``warmup`` too (then ``warmup_later`` must be 0 or equal to ``warmup``);
    ``anneal``, ``rsqrt_timescale``, ``peak_decay``: the meta kinds' settings (module docstring)."""

    kind: str = "cosine"
    lr: float = 5e-4
    warmup: int = 0
    warmup_every_step: bool = False
    decay_fraction: float = 0.2
    warmup_later: int = 0
    anneal: str = "cosine"
    rsqrt_timescale: int = 0
    peak_decay: float = 0.5

    def __post_init__(self):
        _check(self.kind, self.lr, self.warmup, self.decay_fraction, self.anneal, self.rsqrt_timescale,
               self.peak_decay)
        if not isinstance(self.warmup_later, int) or isinstance(self.warmup_later, bool) or self.warmup_later < 0:
            raise ScheduleError(f"warmup_later must be a non-negative number of iterations, got {self.warmup_later!r}")
        if self.warmup_every_step and self.warmup_later not in (0, self.warmup):
            raise ScheduleError(
                f"warmup_every_step warms warm-started steps up with warmup ({self.warmup}), but warmup_later is "
                f"{self.warmup_later}: pass one of them (warmup_every_step is warmup_later = warmup)")

    @property
    def has_branch(self) -> bool:
        return self.kind in BRANCHED

    def warmup_for(self, start: str) -> int:
        """Warmup iterations of a step whose weights start from ``start`` (``StepPlan.init``)."""
        if start not in STARTS:
            raise ScheduleError(f"a step starts from {' or '.join(map(repr, STARTS))} weights, got {start!r}")
        if start == "initial":
            return self.warmup
        return self.warmup if self.warmup_every_step else self.warmup_later

    def for_step(self, iterations: int, start: str, position: StepPosition | None = None) -> Schedule:
        """The schedule of a step of ``iterations`` whose weights start from ``start`` ("initial": the
        run's initial weights; "previous": the previous step's) at ``position`` in the run (the meta
        kinds; None: the first step of a run of unknown length)."""
        if self.kind not in META:
            return Schedule(self.kind, self.lr, iterations, self.warmup_for(start), self.decay_fraction, start)
        position = position if position is not None else StepPosition()
        if start == "initial":
            position = position.restarted()
        return Schedule(self.kind, self.lr, iterations, self.warmup_for(start), self.decay_fraction, start,
                        self.anneal, self.rsqrt_timescale or max(1, self.warmup), self.peak_decay, position)

    def extra_iterations(self, iterations: int, continues: bool = True) -> int:
        """Iterations a step of ``iterations`` runs on top of them: a branched schedule's trunk past the
        branch point (the anneal branch is not carried forward), trained only when the next step
        ``continues`` from this step's weights."""
        if not self.has_branch or not continues:
            return 0
        return iterations - branch_point(iterations, self.decay_fraction)

    def to_dict(self) -> dict:
        return asdict(self)


def step_position(method, budget, t: int, step_sizes: Sequence[int]) -> StepPosition:
    """Where step ``t`` lies in the run of ``method`` under ``budget`` (a ``ticlip.train.budget.Budget``):
    its iterations come from the budget as ``Budget.plan_step``'s, the chain of warm-started steps from
    the method's plans (``StepPlan.init``). A pure function of the run's settings, so resume needs none."""
    iterations = [budget.iterations_for(budget.per_step_macs * float(method.compute_multiplier(j)))
                  for j in range(budget.steps)]
    chain_start = 0
    for j in range(t, 0, -1):
        if method.plan(j, list(step_sizes)).init == "initial":
            chain_start = j
            break
    return StepPosition(index=t, chain_step=t - chain_start, chain_offset=sum(iterations[chain_start:t]),
                        run_offset=sum(iterations[:t]), run_total=sum(iterations))


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
    warmup_every_step: bool = False, decay_fraction: float = 0.2, anneal: str = "cosine", rsqrt_timescale: int = 0,
    peak_decay: float = 0.5, position: StepPosition | None = None,
) -> Schedule:
    """Shortcut for ``ScheduleConfig(...).for_step(iterations, start, position)``."""
    return ScheduleConfig(kind, lr, warmup, warmup_every_step, decay_fraction, warmup_later, anneal, rsqrt_timescale,
                          peak_decay).for_step(iterations, start, position)


__all__ = ["ANNEALS", "BRANCHED", "KINDS", "META", "STARTS", "Schedule", "ScheduleConfig", "ScheduleError", "StepPosition",
           "anneal_factor", "branch_point", "make_schedule", "next_step_continues", "step_position"]
