"""Model merging over time: the ``merge`` method family (TIME's three axes, Dziadzio et al., "How to Merge
Your Multimodal Models Over Time?", CVPR 2025, §3; on FoMo-in-Flux, Roth et al., NeurIPS 2024, §4).

Per step t the method trains on step t's data (as Sequential), giving the **trained** weights θ_t, and
keeps a running **merge** M_t of the models trained so far:

    M_0 = θ_0                                  (nothing to merge yet)
    M_t = operator(M_{t-1}, θ_t)               lerp / slerp: the new model gets weight α
        = base + λ·Σ τ (TIES, DARE-TIES)       task vectors τ = M_{t-1} − base and θ_t − base
    M_t = Σ_{j<=t} w_j θ_j / Σ w_j             average: offline merging of every trained checkpoint

As in FoMo-in-Flux's continual merging (its paper, §4 "model merging"; TIME Fig. 2), the running merge
is merged with each newly trained model, and task vectors are taken against the **base**: the run's
initial weights (the pretrained model with ``--init``, else the seeded random init). FoMo-in-Flux's
released repository (ExplainableML/fomo_in_flux) holds only a placeholder README at the time of
writing, so this follows the papers' text. The operators are pure functions in
``ticlip.methods.merge_ops``.

Two choices are separate, as TIME frames them:

- ``train_from``: what step t + 1 trains from: ``trained`` (θ_t, before merging; served by the trainer
  as the plan's init "trained": step t's constant-LR trunk under const-cosine, else ``trained.pt``,
  which the trainer writes beside ``checkpoint.pt`` when the merge is deployed), ``merge`` (M_t) or
  ``initial`` (the run's initial weights, every step: TIME's "zero-shot" init). ``deployed`` is
  accepted and means whichever ``deploy`` names.
- ``deploy``: what is saved as step t's ``checkpoint.pt`` and evaluated: ``merge`` (M_t) or
  ``trained`` (θ_t).

Training from the trained weights while deploying them too (or deploying the weights of a step trained
from the initial weights) never uses the merge: those combinations are refused (use ``sequential``;
``restart`` is the from-scratch baseline). Merging costs no forward pass, so nothing is charged.

Patching (``patching``: lerp with α searched on validation sets) and ``ema-merge`` (lerp with a fixed
α) are the family's members with train_from = deploy = merge (``ticlip.methods.patching``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal

from ticlip.methods import merge_ops
from ticlip.methods.base import MethodContext, StepCost, StepOutcome, StepPlan
from ticlip.methods.params import MethodError, float_list
from ticlip.methods.sequential import Sequential
from ticlip.schema import Field, Schema, field_validator, model_validator

log = logging.getLogger(__name__)

OPERATORS = ("lerp", "slerp", "task-arithmetic", "ties", "dare-ties", "average")
OPERATOR_ALIASES = {"ema": "lerp", "interpolation": "lerp", "ta": "task-arithmetic", "dare": "dare-ties",
                    "offline": "average", "mean": "average"}
# the parameters each operator reads (train_from and deploy apply to every operator)
OPERATOR_PARAMS = {
    "lerp": ("alpha",), "slerp": ("alpha",), "task-arithmetic": ("scaling",), "ties": ("top_k", "scaling"),
    "dare-ties": ("drop_rate", "scaling", "seed"), "average": ("weights",),
}
DEFAULT_SCALING = {"task-arithmetic": 0.5, "ties": 1.0, "dare-ties": 1.0}
USES_BASE = ("task-arithmetic", "ties", "dare-ties")


def cpu_copy(state) -> dict:
    """A detached copy of a state dict (or a model's state) on the CPU."""
    if hasattr(state, "state_dict"):
        state = state.state_dict()
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


MERGE_INITIAL_HELP = ("M_{-1} = the run's initial weights: step 0's model is merged with them too (a pretrained "
                      "start, FoMo-in-Flux's setting); false: step 0 deploys what it trained (training from "
                      "scratch, TiC-CLIP's Patching)")


class MergeParams(Schema):
    operator: Literal["lerp", "slerp", "task-arithmetic", "ties", "dare-ties", "average"] = Field(
        "lerp", description="merge operator: lerp (EMA; alias ema), slerp, task-arithmetic, ties, dare-ties, "
        "average (offline merge of every trained checkpoint)")
    alpha: float = Field(0.5, ge=0, le=1, description="lerp/slerp: weight of the newly trained model")
    scaling: float | None = Field(None, gt=0, description="task-arithmetic/ties/dare-ties: λ on the merged task "
                                  "vector (default: 0.5 for task-arithmetic, i.e. the mean of two; 1 for ties)")
    top_k: float = Field(0.2, gt=0, le=1, description="ties: fraction of each task vector's entries kept, by "
                         "magnitude, per tensor")
    drop_rate: float = Field(0.5, ge=0, lt=1, description="dare-ties: probability p of dropping a task-vector "
                             "entry (kept ones scaled by 1/(1-p))")
    seed: int = Field(0, description="dare-ties: seed of the drop masks (combined with the step index)")
    weights: tuple[float, ...] = Field((), description="average: one weight > 0 per step (\"1,2,3,4\"); "
                                       "empty: uniform")
    train_from: Literal["trained", "merge", "initial", "deployed"] = Field(
        "merge", description="what step t+1 trains from: trained (before merging), merge, initial (the run's "
        "initial weights), deployed (= what deploy names)")
    deploy: Literal["trained", "merge"] = Field("merge", description="what step t saves and is evaluated on: "
                                                "merge or trained")
    merge_initial: bool = Field(False, description=MERGE_INITIAL_HELP)

    _split = field_validator("weights", mode="before")(float_list)

    @field_validator("operator", mode="before")
    @classmethod
    def _alias(cls, value):
        if isinstance(value, str):
            key = value.strip().lower().replace("_", "-")
            return OPERATOR_ALIASES.get(key, key)
        return value

    @field_validator("weights")
    @classmethod
    def _positive(cls, value):
        if any(not w > 0 for w in value):
            raise ValueError(f"average weights must all be > 0, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        used = OPERATOR_PARAMS[self.operator]
        stray = [k for k in ("alpha", "scaling", "top_k", "drop_rate", "seed", "weights")
                 if k in self.model_fields_set and k not in used]
        if stray:
            raise ValueError(f"parameter {stray[0]} is not used by operator {self.operator} (it reads: "
                             f"{', '.join(used)}); drop it or choose an operator that reads it")
        if self.train_from == "deployed":
            self.train_from = self.deploy
        if self.deploy == "trained" and self.train_from in ("trained", "initial"):
            raise ValueError(f"train_from={self.train_from} with deploy=trained never uses the merge (that is "
                             f"{'sequential' if self.train_from == 'trained' else 'training from the initial weights'}"
                             "); deploy the merge (deploy=merge) or train from it (train_from=merge)")
        if self.operator in DEFAULT_SCALING and self.scaling is None:
            self.scaling = DEFAULT_SCALING[self.operator]
        return self


class Merge(Sequential):
    """Sequential training plus a running merge of the trained models (see the module docstring)."""

    name = "merge"
    expensive_end_step = True  # the merge itself (a kill inside it does not redo the training)

    Params = MergeParams

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        self.operator, self.train_from, self.deploy = p.get("operator", "lerp"), p.get("train_from", "merge"), \
            p.get("deploy", "merge")
        self.alpha = p.get("alpha", 0.5)
        self.scaling, self.top_k, self.drop_rate = p.get("scaling"), p.get("top_k"), p.get("drop_rate")
        self.seed, self.weights = p.get("seed", 0), tuple(p.get("weights") or ())
        self.merge_initial = bool(p.get("merge_initial", False))
        self._reset_state()

    def _reset_state(self) -> None:
        self._merged: dict | None = None  # M_{t-1} on the CPU
        self._base: dict | None = None  # the run's initial weights (task vectors, train_from=initial)
        self._sum: dict | None = None  # average: Σ w_j θ_j
        self._weights_seen: list = []  # the steps inside the merge: [(label, w_j)] (w_j = 1 but for average)

    # ------------------------------------------------------------------- what the trainer asks
    @property
    def end_step_changes_weights(self) -> bool:  # type: ignore[override]
        """True when step t + 1 does not start from what step t trained on its constant-LR line: the
        deployed checkpoint is the merge, or the next step trains from the merge. (train_from=trained
        starts from the plan's init "trained": the trunk or ``trained.pt``, see the trainer.)"""
        return self.deploy == "merge" or self.train_from == "merge"

    @property
    def uses_base(self) -> bool:
        return self.operator in USES_BASE or self.train_from == "initial"

    def plan(self, t: int, step_sizes: list[int]) -> StepPlan:
        plan = super().plan(t, step_sizes)
        if t == 0:
            return plan
        init = {"trained": "trained" if self.deploy == "merge" else "previous", "merge": "previous",
                "initial": "initial"}[self.train_from]
        return dataclasses.replace(plan, init=init)

    def estimate_cost(self, t: int, stream=None) -> StepCost:
        """No forward passes (merging is arithmetic on weights); refuses a step without an average weight."""
        if self.weights and t >= len(self.weights):
            raise MethodError(f"method {self.name}: weights has {len(self.weights)} value(s) but step index {t} "
                              "needs one; give one weight per step of the stream")
        return StepCost()

    # ------------------------------------------------------------------- hooks
    def begin_step(self, ctx: MethodContext) -> None:
        t = ctx.step
        if self.uses_base and self._base is None:
            if t > 0:
                log.warning("%s: the run's initial weights are not in the method state at step %d: using the "
                            "weights this step starts from as the base", self.name, t)
            self._base = cpu_copy(ctx.model)
        if t == 0:
            if self.merge_initial:
                self._merged = cpu_copy(ctx.model)  # M_{-1}: the initial weights (the pretrained start)
            return
        if (self.train_from == "merge" and self.deploy == "merge") or self._merged is None:
            # the step starts from the deployed merge: it is M_{t-1} (also what an older state called "prev")
            self._merged = cpu_copy(ctx.model)
        if self.train_from == "merge" and self.deploy == "trained":
            ctx.model.load_state_dict(self._merged)  # checkpoint.pt holds θ_{t-1}; train from M_{t-1}
        elif self.train_from == "initial" and self._base is not None:
            ctx.model.load_state_dict(self._base)  # the run's initial weights (its --init, not a fresh init)

    def end_step(self, ctx: MethodContext) -> StepOutcome:
        trained = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
        merged, facts, cost = self.merge_step(ctx, trained)
        if self.deploy == "merge":
            ctx.model.load_state_dict(merged)
        return StepOutcome(facts, cost)

    def merge_step(self, ctx: MethodContext, trained: dict) -> tuple[dict, dict, StepCost]:
        """M_t from M_{t-1} (the method state) and θ_t; updates the state. (merged, facts, cost)."""
        t, label = ctx.step, self._label(ctx, ctx.step)
        facts = {"operator": self.operator, "train_from": self.train_from, "deployed": self.deploy}
        if self.operator == "average":
            merged, facts["coefficients"] = self._average(ctx, trained)
        else:
            self._weights_seen.append((label, 1.0))
            if (t == 0 and not self.merge_initial) or self._merged is None:
                merged, facts["coefficients"] = trained, {}
                facts["note"] = "nothing to merge yet: the merge is the trained model"
            else:
                merged, facts["coefficients"] = self.combine(t, self._merged, trained)
        self._merged = cpu_copy(merged)
        facts["merged_steps"] = [lbl for lbl, _ in self._weights_seen]  # the trained models inside M_t
        return merged, facts, StepCost()

    @staticmethod
    def _label(ctx: MethodContext, t: int) -> str:
        try:
            return ctx.stream.steps[t].label
        except (AttributeError, IndexError, TypeError):
            return str(t)

    def combine(self, t: int, prev: dict, trained: dict) -> tuple[dict, dict]:
        """The operator on (M_{t-1}, θ_t): (M_t, its coefficients for step.json)."""
        op = self.operator
        if op == "lerp":
            return merge_ops.lerp(prev, trained, self.alpha), {"previous_merge": 1.0 - self.alpha,
                                                                "trained": self.alpha}
        if op == "slerp":
            return merge_ops.slerp(prev, trained, self.alpha), {"alpha": self.alpha}
        if op == "task-arithmetic":
            return merge_ops.task_arithmetic(self._base, [prev, trained], self.scaling), {"scaling": self.scaling}
        if op == "ties":
            return (merge_ops.ties(self._base, [prev, trained], self.top_k, self.scaling),
                    {"scaling": self.scaling, "top_k": self.top_k})
        if op == "dare-ties":
            seed = self.step_seed(t)
            return (merge_ops.dare_ties(self._base, [prev, trained], self.drop_rate, self.scaling, seed),
                    {"scaling": self.scaling, "drop_rate": self.drop_rate, "seed": seed})
        raise MethodError(f"method {self.name}: unknown operator {op!r}")  # pragma: no cover - validated

    def step_seed(self, t: int) -> int:
        """DARE's mask seed at step t: a pure function of the ``seed`` parameter and t."""
        return int(self.seed) * 1_000_003 + int(t)

    def _average(self, ctx: MethodContext, trained: dict) -> tuple[dict, dict]:
        """Σ_{j<=t} w_j θ_j / Σ w_j, accumulated step by step in the order of ``merge_ops.average``."""
        t = ctx.step
        w = float(self.weights[t]) if self.weights else 1.0
        cpu = cpu_copy(trained)
        if self._sum is None:
            self._sum = {k: (v * w if v.is_floating_point() else v) for k, v in cpu.items()}
        else:
            self._sum = {k: (self._sum[k] + v * w if v.is_floating_point() and k in self._sum
                             and self._sum[k].shape == v.shape else v) for k, v in cpu.items()}
        self._weights_seen.append((self._label(ctx, t), w))
        total = sum(x for _, x in self._weights_seen)
        if len(self._weights_seen) == 1:
            merged = trained
        else:
            merged = {k: (self._sum[k].to(v.device) / total if v.is_floating_point() else v.clone())
                      for k, v in trained.items()}
        return merged, {"weights": {lbl: x / total for lbl, x in self._weights_seen}}

    # ------------------------------------------------------------------- state (weights-only safe)
    def state_dict(self) -> dict:
        state: dict = {}
        if self._merged is not None:
            state["merged"] = self._merged
        if self._base is not None:
            state["base"] = self._base
        if self._sum is not None:
            state["sum"] = self._sum
        if self._weights_seen:
            state["seen"] = [[lbl, w] for lbl, w in self._weights_seen]
        return state

    def load_state_dict(self, state: dict) -> None:
        self._reset_state()
        self._merged = state.get("merged", state.get("prev"))  # "prev": patching's state before the family
        self._base = state.get("base")
        self._sum = state.get("sum")
        self._weights_seen = [(str(lbl), float(w)) for lbl, w in state.get("seen") or []]


__all__ = ["DEFAULT_SCALING", "Merge", "MergeParams", "OPERATORS", "OPERATOR_ALIASES", "OPERATOR_PARAMS", "cpu_copy"]
