"""Patching (sequential weight interpolation) and EMA merging.

Patching (TiC-CLIP, after Ilharco et al.'s PAINT): train on step t's data from the last *patched*
model θ_prev, then set θ = (1 − α)·θ_prev + α·θ_new with α chosen on a grid by the mean retrieval
Recall@1 (``mean_recall@1``: image→text and text→image, the evaluator's own metric through the
context's ``score_retrieval``) on the held-out data of the steps before t. Step 0 trains without
patching. Scoring costs (grid size × held-out pairs) forward passes: ``StepCost.extra_pairs``.

EMA merge (FoMo-in-Flux's model merging, the simplest form): the same interpolation with a fixed α
and no search, so no extra compute.

``end_step`` changes ``ctx.model`` in place; the trainer saves step t's checkpoint after it, so the
next step's "previous" model is the patched one.
"""

from __future__ import annotations

import logging

from ticlip.errors import TiclipError
from ticlip.methods.base import MethodContext, StepCost, StepOutcome
from ticlip.methods.params import float_list
from ticlip.methods.sequential import Sequential
from ticlip.schema import Field, Schema, field_validator

log = logging.getLogger(__name__)

DEFAULT_ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))


def _float_state(model) -> dict:
    """A detached copy of the model's state on the CPU."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def interpolate(prev: dict, new: dict, alpha: float) -> dict:
    """(1 − α)·prev + α·new for floating-point tensors; other entries come from ``new``."""
    out = {}
    for k, v in new.items():
        p = prev.get(k)
        if p is not None and v.is_floating_point() and p.shape == v.shape:
            out[k] = p.to(v.device, v.dtype).lerp(v, alpha) if alpha != 1.0 else v.clone()
        else:
            out[k] = v.clone()
    return out


def _check_alphas(alphas: tuple) -> tuple:
    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
        raise ValueError(f"patching coefficients must lie in [0, 1], got {list(alphas)}")
    return alphas


class _Interpolating(Sequential):
    """Sequential training, then θ = (1 − α)·θ_prev + α·θ_new with α from ``self.alphas`` (a search
    over held-out data when there are several)."""

    expensive_end_step = True
    alphas: tuple = (1.0,)
    task: str = "retrieval"
    eval_batch_size: int = 256

    def __init__(self, **params):
        super().__init__(**params)
        self._prev: dict | None = None

    # ------------------------------------------------------------------- cost
    def held_out_pairs(self, t: int, stream) -> int:
        """Held-out pairs of the steps before t that the search scores."""
        return sum(s.eval[self.task].count for s in stream.steps[:t] if self.task in s.eval)

    def estimate_cost(self, t: int, stream=None) -> StepCost:
        if t == 0 or len(self.alphas) < 2:
            return StepCost()
        if stream is None:
            return StepCost(note=f"{self.name}'s scoring cost ({len(self.alphas)} coefficients x held-out "
                                 f"{self.task!r} pairs of earlier steps) needs the stream: not estimated here")
        return StepCost(extra_pairs=len(self.alphas) * self.held_out_pairs(t, stream))

    # ----------------------------------------------------------------------------- hooks
    def begin_step(self, ctx: MethodContext) -> None:
        # The model was just initialised from the last patched checkpoint: remember it.
        self._prev = _float_state(ctx.model) if ctx.step > 0 else None

    def _held_out(self, ctx: MethodContext):
        """Previous steps' held-out sets as (pixels, captions); skipped steps are counted."""
        import torch

        sets, missing = [], []
        for j in range(ctx.step):
            st = ctx.stream.step(j)
            if self.task not in st.eval:
                missing.append(st.label)
                continue
            es = ctx.stream.eval_set(j, self.task)
            if len(es) == 0:
                missing.append(st.label)
                continue
            sets.append((torch.stack([ctx.eval_transform(im) for im in es.images]), list(es.captions)))
        if missing:
            log.warning("%s: %d earlier step(s) have no %r eval data: %s", self.name, len(missing), self.task,
                        ", ".join(missing))
        return sets, missing

    def choose_alpha(self, ctx: MethodContext, prev: dict, new: dict) -> tuple[float, dict, int]:
        """(best α, {α: score}, pairs scored) by the mean over earlier held-out sets of the shared
        scorer's ``mean_recall@1``. Ties go to the larger α (more of the new model)."""
        if ctx.eval_transform is None or ctx.score_retrieval is None:
            raise TiclipError(f"{self.name} needs the trainer to pass eval_transform and score_retrieval "
                              "in the MethodContext")
        sets, _ = self._held_out(ctx)
        if not sets:
            return 1.0, {}, 0
        scores: dict[float, float] = {}
        for a in self.alphas:
            ctx.model.load_state_dict(interpolate(prev, new, a))
            scores[a] = sum(
                ctx.score_retrieval(ctx.model, pixels, captions, batch_size=self.eval_batch_size)["mean_recall@1"]
                for pixels, captions in sets
            ) / len(sets)
        best = max(scores, key=lambda a: (scores[a], a))
        pairs = len(self.alphas) * sum(len(captions) for _, captions in sets)
        return best, scores, pairs

    def end_step(self, ctx: MethodContext) -> StepOutcome:
        if ctx.step == 0 or self._prev is None:
            return StepOutcome({"alpha": 1.0}, StepCost())
        new = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
        if len(self.alphas) == 1:
            alpha, scores, pairs = self.alphas[0], {}, 0
        else:
            alpha, scores, pairs = self.choose_alpha(ctx, self._prev, new)
        ctx.model.load_state_dict(interpolate(self._prev, new, alpha))
        return StepOutcome({"alpha": alpha, "alpha_scores": {str(a): s for a, s in scores.items()}},
                           StepCost(extra_pairs=pairs))

    def state_dict(self) -> dict:
        return {"prev": self._prev}

    def load_state_dict(self, state: dict) -> None:
        self._prev = state.get("prev")


class Patching(_Interpolating):
    name = "patching"

    class Params(Schema):
        alphas: tuple[float, ...] = Field(DEFAULT_ALPHAS, description="coefficient grid α in [0, 1] (\"0,0.5,1\")")
        task: str = Field("retrieval", description="the held-out eval set of earlier steps that α is tuned on")
        eval_batch_size: int = Field(256, ge=1, description="batch size of the scoring forward passes")

        _split = field_validator("alphas", mode="before")(float_list)

        @field_validator("alphas")
        @classmethod
        def _in_unit_interval(cls, value):
            return _check_alphas(value)

    def __init__(self, **params):
        super().__init__(**params)
        self.alphas = tuple(self.params["alphas"])
        self.task = self.params["task"]
        self.eval_batch_size = self.params["eval_batch_size"]


class EmaMerge(_Interpolating):
    """Interpolate the previous merged model and the new one with a fixed α (no search)."""

    name = "ema-merge"

    class Params(Schema):
        alpha: float = Field(0.5, ge=0, le=1, description="weight α of the new model in the merge")

    def __init__(self, **params):
        super().__init__(**params)
        self.alpha = self.params["alpha"]
        self.alphas = (self.alpha,)
