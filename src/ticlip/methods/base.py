"""The protocol every continual-training method follows.

A method is one class (in one module of ``ticlip.methods``) that the trainer drives per step t
(0-based index into the stream's steps). It reads a typed :class:`MethodContext` and returns:

- a :class:`StepPlan` (``plan``): where the weights start (``init``: the run's initial weights or the
  previous step's) and the training mixture, a list of typed sources with weights:
  :class:`StepSource` (all pairs of a step of this stream), :class:`BufferSource` (a stable random
  fraction of a step of this stream: a replay buffer) and :class:`PoolSource` (pairs from outside
  this stream: steps of another stream, or a list of shard URLs: a pretraining pool);
- a :class:`StepCost` estimated before the step (``estimate_cost``) and the actual one after it
  (``end_step`` returns it inside a :class:`StepOutcome`): the one description of the compute a
  method spends beyond its training pairs, in forward passes of one image-text pair;
- the compute of step t relative to the per-step budget C (``compute_multiplier``: oracle t + 1).

Hooks: ``begin_step`` (after the model is initialised), ``extra_loss`` (per batch), ``end_step``
(after training: patching's interpolation, EWC's Fisher pass), ``state_dict``/``load_state_dict``;
``training_key`` describes how the method changes training at step t (None: plain CLIP training), so
identical trainings of different methods are done once (``ticlip.train.reuse``).
Parameters are declared as a nested ``Params`` schema (``ticlip.schema.Schema``) and validated by
``ticlip.methods.get_method`` / ``check_method_params``. Methods never own the training loop and
never import ``ticlip.train``; what they need from the trainer comes in the context.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar, Literal, Union

from ticlip.schema import ConfigError, Schema

# "initial": the run's initial weights (random with the run's seed, or the run's --init checkpoint
# for the first step it trains); "previous": the checkpoint step t - 1 ended with; "trained": the
# weights step t - 1 trained, before its end_step changed them (the merge family's train_from=trained:
# step t - 1's constant-LR trunk under const-cosine, else the trained.pt the trainer writes beside
# checkpoint.pt when the next plan asks for it).
Init = Literal["initial", "previous", "trained"]
INITS = ("initial", "previous", "trained")


# --------------------------------------------------------------------------- plan sources
@dataclass(frozen=True)
class StepSource:
    """Every train pair of step ``step`` of this stream, drawn with probability ``weight``."""

    step: int
    weight: float
    pairs: int  # the step's train pairs
    kind: ClassVar[str] = "step"

    @property
    def fraction(self) -> float:
        return 1.0


@dataclass(frozen=True)
class BufferSource:
    """A replay buffer of step ``step`` of this stream: a stable random ``fraction`` of its train pairs
    (``pairs`` = fraction × step size, rounded), drawn with probability ``weight``."""

    step: int
    fraction: float
    weight: float
    pairs: int
    kind: ClassVar[str] = "buffer"

    def __post_init__(self):
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"a buffer of step {self.step} needs a fraction in (0, 1], got {self.fraction!r}")


@dataclass(frozen=True)
class PoolSource:
    """Pairs from outside this stream (a pretraining pool), drawn with probability ``weight``: either
    ``steps`` of the stream at ``stream`` (a directory or stream.json; no steps: all of them), or
    the webdataset ``shards`` listed (paths or URLs). ``pairs``: its size when known (else None)."""

    weight: float
    stream: str | None = None
    steps: tuple[int | str, ...] = ()
    shards: tuple[str, ...] = ()
    pairs: int | None = None
    kind: ClassVar[str] = "pool"

    def __post_init__(self):
        if (self.stream is None) == (not self.shards):
            raise ConfigError("a pool source names either a stream (with optional steps) or a list of shards, "
                              f"not both or neither (got stream={self.stream!r}, shards={list(self.shards)!r})")
        if self.shards and self.steps:
            raise ConfigError("a pool source of shards has no steps; give steps with a stream")
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "shards", tuple(self.shards))

    @property
    def fraction(self) -> float:
        return 1.0


PlanSource = Union[StepSource, BufferSource, PoolSource]


def source_to_dict(source: PlanSource) -> dict:
    """A source as a JSON-ready mapping with its ``kind`` (what step.json records)."""
    d = {"kind": source.kind, **asdict(source)}
    for key in ("steps", "shards"):
        if key in d:
            d[key] = list(d[key])
    return d


@dataclass
class StepPlan:
    """What step ``step`` trains on and where its weights start.

    ``subset_seed`` seeds the stable random replay subsets (``TimeStream.train_pipeline(subset_seed=)``);
    constant across steps, so a smaller buffer of a step is a subset of a larger one. None (the default)
    means the run's training seed, filled in by the trainer (``ticlip.train.buffers.with_run_seed``)."""

    step: int
    init: Init
    sources: list[PlanSource]
    subset_seed: int | str | None = None

    def __post_init__(self):
        if self.init not in INITS:
            raise ConfigError(f"step {self.step}: plan init must be one of {', '.join(INITS)}, got {self.init!r}")
        if not self.sources:
            raise ConfigError(f"step {self.step}: a plan needs at least one source")
        bad = [s for s in self.sources if not s.weight >= 0]
        if bad or not sum(s.weight for s in self.sources) > 0:
            raise ConfigError(f"step {self.step}: source weights must be >= 0 with a positive sum")

    @property
    def total_pairs(self) -> int:
        """Pairs of the sources of known size (pools of unknown size count 0)."""
        return sum(s.pairs or 0 for s in self.sources)

    def to_dict(self) -> dict:
        return {"step": self.step, "init": self.init, "sources": [source_to_dict(s) for s in self.sources],
                "subset_seed": self.subset_seed}


# --------------------------------------------------------------------------- cost
@dataclass(frozen=True)
class StepCost:
    """Compute a step spends beyond one forward pass per training pair, in forward passes of one pair.

    ``extra_forward_passes_per_pair``: per training pair, charged by the loop on the batches where
    the method's extra loss ran (LwF: 1, the frozen old model); ``extra_pairs``: pairs forwarded
    outside training (EWC's Fisher sample, patching's scoring grid × held-out pairs); ``note``: what
    the estimate could not count (e.g. held-out sizes unknown without a stream)."""

    extra_forward_passes_per_pair: float = 0.0
    extra_pairs: int = 0
    note: str = ""

    def extra_macs(self, train_macs: float, macs_per_pair: float) -> float:
        """Extra MACs given the step's training MACs and the MACs of one pair's forward pass."""
        return self.extra_forward_passes_per_pair * train_macs + self.extra_pairs * macs_per_pair

    def end_macs(self, macs_per_pair: float) -> float:
        """MACs of the work outside the training loop (``extra_pairs``)."""
        return float(self.extra_pairs * macs_per_pair)


@dataclass
class StepOutcome:
    """What ``end_step`` reports: ``facts`` to log in step.json (chosen coefficient, Fisher size, ...)
    and the compute it actually spent (None: the hook did no work worth counting)."""

    facts: dict = field(default_factory=dict)
    cost: StepCost | None = None


# --------------------------------------------------------------------------- context
@dataclass(frozen=True)
class StepBudgetFacts:
    """The budget facts of one step: ``iterations`` of ``batch_size`` pairs per process on
    ``world_size`` processes (this one is ``rank``), ``macs_per_pair`` forward MACs per pair."""

    iterations: int = 0
    batch_size: int = 0
    world_size: int = 1
    rank: int = 0
    macs_per_pair: float = 0.0


# score_retrieval(model, pixels, captions, *, batch_size=256) -> recall_at_k's dict ("mean_recall@1", ...):
# the evaluator's retrieval metric, with the tokenizer and device bound by the trainer.
RetrievalScorer = Callable[..., dict]


@dataclass
class MethodContext:
    """What the trainer hands to a method's hooks for one step.

    ``initial_weights``: the run's initial weights (a checkpoint path, or None for a random init with
    ``seed``); ``score_retrieval``: the shared held-out scorer for methods that tune (see
    ``RetrievalScorer``); ``eval_transform``/``tokenizer``: how held-out images and captions become
    tensors for this model."""

    step: int
    stream: Any  # TimeStream
    model: Any  # the model being trained (unwrapped)
    label: str = ""
    device: Any = "cpu"
    tokenizer: Any = None
    eval_transform: Any = None
    seed: int = 0
    initial_weights: str | None = None
    budget: StepBudgetFacts = field(default_factory=StepBudgetFacts)
    score_retrieval: RetrievalScorer | None = None


# --------------------------------------------------------------------------- the base class
class Method:
    """Base class: Sequential-like defaults (no extra loss, no extra compute, nothing after the step)."""

    name: ClassVar[str] = "base"
    # True when end_step does real work (a Fisher pass, a coefficient search): the trainer then saves
    # the resumable state before calling it, so a kill inside it does not redo the training.
    expensive_end_step: ClassVar[bool] = False
    # True when end_step changes the deployed weights (patching's interpolation): the next step then
    # starts from the deployed checkpoint, never from const-cosine's constant-LR trunk (which never saw
    # what end_step did), so the trainer runs and charges no trunk for such a method.
    end_step_changes_weights: ClassVar[bool] = False

    class Params(Schema):
        """No parameters."""

    def __init__(self, **params):
        from ticlip.methods.params import resolve_params

        self.params: dict = resolve_params(type(self), params)

    def plan(self, t: int, step_sizes: list[int]) -> StepPlan:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute_multiplier(self, t: int) -> float:
        """Compute of step t in units of the per-step budget C (oracle: t + 1)."""
        return 1.0

    def estimate_cost(self, t: int, stream=None) -> StepCost:
        """The extra compute of step t, estimated before the step. ``stream`` (a TimeStream, or None
        when unknown) lets a method count its own held-out data."""
        return StepCost()

    def begin_step(self, ctx: MethodContext) -> None:
        """Called after the model is initialised for step t and before training."""

    def extra_loss(self, model, images, texts, outputs: dict):
        """An additional loss term for this batch (a scalar tensor), or None."""
        return None

    def training_key(self, t: int) -> dict | None:
        """How this method changes step t's TRAINING beyond the plan (extra loss, regulariser, gradient
        hooks), as JSON-ready facts; None: plain CLIP training. Two runs whose steps agree on the plan,
        the starting weights, the settings and this key train identically, so the trainer may reuse
        one's result for the other (``ticlip.train.reuse``); what ``end_step`` does is not part of it.
        The default is None only when ``extra_loss`` is the base one; otherwise the method's name and
        parameters (never shared by mistake). Override it where the answer depends on t or state;
        tensors (or dicts of them) may appear in the facts: the trainer digests their contents."""
        if getattr(self.extra_loss, "__func__", None) is Method.extra_loss:
            return None
        return {"method": self.name, "params": self.params}

    def end_step(self, ctx: MethodContext) -> StepOutcome:
        """Called after step t's training; may change ``ctx.model`` in place (patching)."""
        return StepOutcome()

    def state_dict(self) -> dict:
        """Method state to checkpoint across steps (previous weights, Fisher, ...)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


__all__ = [
    "BufferSource", "INITS", "Init", "Method", "MethodContext", "PlanSource", "PoolSource", "RetrievalScorer",
    "StepBudgetFacts", "StepCost", "StepOutcome", "StepPlan", "StepSource", "source_to_dict",
]
