"""Patching (sequential weight interpolation) and EMA merging: members of the ``merge`` family
(``ticlip.methods.merge``) with operator lerp, trained from and deploying the merge.

Patching (TiC-CLIP, after Ilharco et al.'s PAINT): train on step t's data from the last *patched*
model θ_prev, then set θ = (1 − α)·θ_prev + α·θ_new with α chosen on a grid by the mean retrieval
Recall@1 (``mean_recall@1``: image→text and text→image, the evaluator's own metric through the
context's ``score_retrieval``) on the **validation sets** of the steps before t
(``TimeStream.validation_set``: held out by the builder, disjoint from train and from every eval set,
never evaluated), so the coefficient is never tuned on the pairs the evaluation matrix reports. Step
0 trains without patching. Scoring costs (grid size × validation pairs) forward passes:
``StepCost.extra_pairs``. A stream without validation sets (built before they existed, or with
``validation_size`` 0) is refused with a one-line error saying how to rebuild it.

EMA merge (FoMo-in-Flux's model merging, the simplest form): the same interpolation with a fixed α
and no search, so no extra compute.

``end_step`` changes ``ctx.model`` in place; the trainer saves step t's checkpoint after it, so the
next step's "previous" model is the patched one. The interpolation is ``merge_ops.lerp`` (the family's
operator), and the running merge lives in the family's state (``merged``).
"""

from __future__ import annotations

import logging

from ticlip.errors import TiclipError
from ticlip.methods.base import MethodContext, StepCost
from ticlip.methods.merge import MERGE_INITIAL_HELP, Merge
from ticlip.methods.merge_ops import lerp
from ticlip.methods.params import float_list
from ticlip.schema import Field, Schema, field_validator

log = logging.getLogger(__name__)

DEFAULT_ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))


def interpolate(prev: dict, new: dict, alpha: float) -> dict:
    """(1 − α)·prev + α·new for floating-point tensors; other entries come from ``new`` (``merge_ops.lerp``)."""
    return lerp(prev, new, alpha)


def _check_alphas(alphas: tuple) -> tuple:
    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
        raise ValueError(f"patching coefficients must lie in [0, 1], got {list(alphas)}")
    return alphas


class _Interpolating(Merge):
    """Sequential training, then θ = (1 − α)·θ_prev + α·θ_new with α from ``self.alphas`` (a search
    over the earlier steps' validation sets when there are several): the ``merge`` family with operator
    lerp, train_from = deploy = merge (θ_prev is the running merge M_{t-1})."""

    expensive_end_step = True
    # The next step trains from the merged weights (the paper's Patching), so under const-cosine
    # there is no constant-LR trunk to continue from.
    end_step_changes_weights = True
    alphas: tuple = (1.0,)
    eval_batch_size: int = 256

    # ------------------------------------------------------------------- cost
    @property
    def searches(self) -> bool:
        return len(self.alphas) > 1

    def check_stream(self, stream) -> None:
        """Refuse a stream without validation sets when α is searched (never tune on eval data)."""
        if self.searches and stream is not None and not stream.has_validation:
            raise TiclipError(
                f"{self.name} tunes its coefficient on the validation sets of earlier steps, and stream "
                f"{stream.name!r} has none (built before validation sets existed, or with validation_size 0); "
                "rebuild it with `ticlip data build ... --validation-size N` (an experiment: "
                "stream.build.validation_size), or give one coefficient (alphas=A: no search)"
            )

    def validation_pairs(self, t: int, stream) -> int:
        """Validation pairs of the steps before t: what the search scores, per coefficient."""
        return sum(stream.validation_count(s) for s in stream.steps[:t])

    def estimate_cost(self, t: int, stream=None) -> StepCost:
        if t == 0 or not self.searches:
            return StepCost()
        if stream is None:
            return StepCost(note=f"{self.name}'s scoring cost ({len(self.alphas)} coefficients x validation "
                                 "pairs of earlier steps) needs the stream: not estimated here")
        self.check_stream(stream)
        return StepCost(extra_pairs=len(self.alphas) * self.validation_pairs(t, stream))

    # ----------------------------------------------------------------------------- hooks
    def begin_step(self, ctx: MethodContext) -> None:
        # The model was just initialised from the last patched checkpoint: the family remembers it as
        # the running merge M_{t-1}.
        super().begin_step(ctx)
        if ctx.step > 0:
            self.check_stream(ctx.stream)  # before training, not after it

    def _validation(self, ctx: MethodContext):
        """The validation sets of the steps before this one as (label, pixels, captions); the labels
        of earlier steps without validation pairs are returned too (and logged)."""
        import torch

        self.check_stream(ctx.stream)
        sets, missing = [], []
        for j in range(ctx.step):
            st = ctx.stream.step(j)
            if ctx.stream.validation_count(st) == 0:
                missing.append(st.label)
                continue
            vs = ctx.stream.validation_set(j)
            sets.append((st.label, torch.stack([ctx.eval_transform(im) for im in vs.images]), list(vs.captions)))
        if missing:
            log.warning("%s: %d earlier step(s) have no validation pairs: %s", self.name, len(missing),
                        ", ".join(missing))
        return sets, missing

    def choose_alpha(self, ctx: MethodContext, prev: dict, new: dict) -> tuple[float, dict, int, dict]:
        """(best α, {α: score}, pairs scored, the set used) by the mean over the earlier steps'
        validation sets of the shared scorer's ``mean_recall@1``. Ties go to the larger α (more of the
        new model). The set used: ``{"set": "validation", "steps": [labels], "pairs": n,
        "skipped_steps": [labels without validation pairs]}`` (``pairs``: per coefficient)."""
        if ctx.eval_transform is None or ctx.score_retrieval is None:
            raise TiclipError(f"{self.name} needs the trainer to pass eval_transform and score_retrieval "
                              "in the MethodContext")
        sets, missing = self._validation(ctx)
        tuned_on = {"set": "validation", "steps": [label for label, _, _ in sets],
                    "pairs": sum(len(captions) for _, _, captions in sets), "skipped_steps": missing}
        if not sets:
            log.warning("%s: no validation pairs before step %d: keeping the new model (alpha 1)", self.name,
                        ctx.step)
            return 1.0, {}, 0, tuned_on
        scores: dict[float, float] = {}
        for a in self.alphas:
            ctx.model.load_state_dict(interpolate(prev, new, a))
            scores[a] = sum(
                ctx.score_retrieval(ctx.model, pixels, captions, batch_size=self.eval_batch_size)["mean_recall@1"]
                for _, pixels, captions in sets
            ) / len(sets)
        best = max(scores, key=lambda a: (scores[a], a))
        return best, scores, len(self.alphas) * tuned_on["pairs"], tuned_on

    def merge_step(self, ctx: MethodContext, trained: dict) -> tuple[dict, dict, StepCost]:
        """M_t = lerp(M_{t-1}, θ_t, α), α fixed or searched; step 0 is not patched (unless merge_initial:
        M_{-1} is then the run's initial weights). The state keeps
        M_{t-1} (the weights the step started from, as before the family): the next step starts from
        M_t, the deployed checkpoint, and ``begin_step`` takes it from there."""
        prev = self._merged
        if (ctx.step == 0 and not self.merge_initial) or prev is None:
            return trained, {"alpha": 1.0}, StepCost()
        if not self.searches:
            merged = interpolate(prev, trained, self.alphas[0])
            facts, cost = {"alpha": self.alphas[0], "alpha_scores": {}}, StepCost()
        else:
            alpha, scores, pairs, tuned_on = self.choose_alpha(ctx, prev, trained)
            merged = interpolate(prev, trained, alpha)
            facts = {"alpha": alpha, "alpha_scores": {str(a): s for a, s in scores.items()}, "tuned_on": tuned_on}
            cost = StepCost(extra_pairs=pairs)
        return merged, facts, cost

    def state_dict(self) -> dict:
        return {"prev": self._merged}  # the layout of method.pt before the family


class Patching(_Interpolating):
    name = "patching"

    class Params(Schema):
        alphas: tuple[float, ...] = Field(
            DEFAULT_ALPHAS, description="coefficient grid α in [0, 1] (\"0,0.5,1\"), scored on the validation "
            "sets of earlier steps")
        eval_batch_size: int = Field(256, ge=1, description="batch size of the scoring forward passes")

        _split = field_validator("alphas", mode="before")(float_list)

        @field_validator("alphas")
        @classmethod
        def _in_unit_interval(cls, value):
            return _check_alphas(value)

    def __init__(self, **params):
        super().__init__(**params)
        self.operator, self.train_from, self.deploy = "lerp", "merge", "merge"
        self.alphas = tuple(self.params["alphas"])
        self.eval_batch_size = self.params["eval_batch_size"]


class EmaMerge(_Interpolating):
    """Interpolate the previous merged model and the new one with a fixed α (no search)."""

    name = "ema-merge"

    class Params(Schema):
        alpha: float = Field(0.5, ge=0, le=1, description="weight α of the new model in the merge")
        merge_initial: bool = Field(False, description=MERGE_INITIAL_HELP)

    def __init__(self, **params):
        super().__init__(**params)
        self.operator, self.train_from, self.deploy = "lerp", "merge", "merge"
        self.alpha = self.params["alpha"]
        self.alphas = (self.alpha,)
