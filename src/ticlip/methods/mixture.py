"""Data mixtures (FoMo-in-Flux): every batch drawn from named sources with ratios.

FoMo-in-Flux (Roth et al., "A Practitioner's Guide to Continual Multimodal Pretraining", NeurIPS 2024,
§3 and its data-centric study; code ExplainableML/fomo_in_flux) trains each update on a mixture of
three sources, set as ``experiment.task.data_mixture`` with the keys ``update`` / ``buffer`` /
``pretraining`` ("by default, this mixes pretraining, replay and streaming data equally"; issue 12
takes 0.34 / 0.33 / 0.33). Ours map one to one:

- ``new``      (FoMo's ``update``): every train pair of step t;
- ``buffer``   (FoMo's ``buffer``): a replay buffer of this stream's earlier steps, kept by ``policy``:
  ``all`` (every earlier pair), ``exp`` / ``equal`` (TiC-CLIP's D-sized buffers, ``replay.kept_counts``),
  ``reservoir`` (``limit`` pairs, Vitter's Algorithm R over the steps so far, ``replay.reservoir_counts``)
  or ``fifo`` (the ``limit`` most recent pairs, ``replay.fifo_counts``); within the buffer pairs are
  drawn uniformly (each buffered step weighted by the pairs it keeps);
- ``pool``     (FoMo's ``pretraining``): a pretraining pool outside the stream, another stream's train
  steps (``pool_stream``, optional ``pool_steps``) or any webdataset shards (``pool_shards``: paths or
  fsspec URLs, a list or brace patterns like ``pool-{000..015}.tar``).

FoMo cuts each batch into fixed slices (``int(B × ratio)``, the remainder handed out one by one);
here every sample's source is drawn with the ratios by the trainer's seeded mixers (``Mixture`` /
``MemoryMixture``), so a batch's composition varies around the ratios and the step's shares match
them; step.json records each source's ratio and the pairs actually drawn from it.

A source that is missing at a step (no buffer at step 0 or an empty one, no pool configured, a step
without pairs) gives its ratio to the others in proportion to theirs: the used ratios are the asked
ones of the present sources, renormalised to sum 1 (``redistribute``); ``end_step`` records both and
what was missing. FoMo does the same at its first task, where the empty buffer's slice goes to the
update and pretraining slices (split equally there, proportionally here; equal ratios agree).

The pool's pairs are ordinary training pairs: the step's iterations stay the budget's, and the pool
only takes its share of each batch, so it costs no extra compute and is charged like any other pair.
Pool streams and shard URLs are checked before any work by the trainer (``ticlip.train.run.check_run``:
the stream must load, shard URLs go through ``ticlip.data.shards.check_shard_url``, never ``pipe:``).
"""

from __future__ import annotations

import logging
from typing import Literal

from ticlip.methods.base import BufferSource, Method, MethodContext, PoolSource, StepOutcome, StepPlan, StepSource
from ticlip.methods.replay import POLICIES, PlanError, buffer_counts
from ticlip.methods.sequential import warm_init
from ticlip.schema import Field, Schema, field_validator, model_validator

log = logging.getLogger(__name__)

GROUPS = ("new", "buffer", "pool")
FOMO_RATIOS = {"new": 0.34, "buffer": 0.33, "pool": 0.33}


def redistribute(asked: dict[str, float], present: dict[str, bool]) -> dict[str, float]:
    """The ratios used: the asked ratios of the present sources, scaled to sum 1 (a missing source's
    ratio goes to the others in proportion to theirs); 0 for missing ones. Empty when no present
    source has a ratio above 0."""
    kept = {g: float(r) if present.get(g) else 0.0 for g, r in asked.items()}
    total = sum(kept.values())
    return {g: r / total for g, r in kept.items()} if total > 0 else {}


def _split_patterns(value):
    """A string of shards: comma-separated brace patterns (commas inside braces belong to the pattern)."""
    if not isinstance(value, str):
        return value
    parts, depth, cur = [], 0, ""
    for ch in value:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p.strip() for p in parts + [cur] if p.strip()]


class DataMixture(Method):
    """New data, a replay buffer and a pretraining pool, drawn with ratios (see the module docstring)."""

    name = "mixture"

    class Params(Schema):
        new: float = Field(FOMO_RATIOS["new"], ge=0, description="ratio of step t's new pairs in each batch "
                                                                 "(FoMo-in-Flux's update share)")
        buffer: float = Field(FOMO_RATIOS["buffer"], ge=0, description="ratio of the replay buffer of earlier "
                                                                       "steps (FoMo-in-Flux's buffer share)")
        pool: float = Field(FOMO_RATIOS["pool"], ge=0, description="ratio of the pretraining pool (FoMo-in-Flux's "
                                                                   "pretraining share)")
        policy: Literal["all", "exp", "equal", "reservoir", "fifo"] = Field(
            "all", description="what the buffer keeps: all earlier pairs, TiC-CLIP's exp / equal D-sized buffers, "
            "a reservoir of limit pairs (Algorithm R) or the limit most recent pairs (fifo)")
        limit: int | None = Field(None, gt=0, description="reservoir / fifo: the buffer's size in pairs (a memory "
                                                          "limit); default: the first step's train pairs")
        pool_stream: str | None = Field(None, description="the pool: a stream directory or stream.json whose "
                                                          "train steps are drawn")
        pool_steps: tuple[int | str, ...] = Field((), description="the pool stream's steps (indices or labels); "
                                                                  "default: all of them")
        pool_shards: tuple[str, ...] = Field((), description="the pool: webdataset shards (paths or fsspec URLs; "
                                                             "a list, or brace patterns like pool-{000..015}.tar)")
        seed: int | None = Field(None, description="seed of the reservoir's draws (default 0) and of the replay "
                                                   "subsets (default: the run's training seed)")

        @field_validator("pool_steps", mode="before")
        @classmethod
        def _steps_list(cls, value):
            if isinstance(value, (int, str)):
                value = [v.strip() for v in str(value).split(",") if v.strip()]
                return [int(v) if v.lstrip("-").isdigit() else v for v in value]
            return value

        @field_validator("pool_shards", mode="before")
        @classmethod
        def _expand(cls, value):
            import braceexpand  # webdataset's own brace expansion (a webdataset dependency)

            value = _split_patterns(value)
            if isinstance(value, (list, tuple)):
                return [u for p in value for u in braceexpand.braceexpand(str(p))]
            return value

        @model_validator(mode="after")
        def _consistent(self):
            if not self.new + self.buffer + self.pool > 0:
                raise ValueError("the ratios new, buffer and pool are all 0: give at least one a positive ratio")
            if self.pool_stream is not None and self.pool_shards:
                raise ValueError("give the pool as pool_stream or as pool_shards, not both")
            if self.pool_steps and self.pool_stream is None:
                raise ValueError("pool_steps needs pool_stream (the stream whose steps they are)")
            if self.limit is not None and self.policy not in ("reservoir", "fifo"):
                raise ValueError(f"limit applies to the reservoir and fifo policies, not to policy {self.policy!r}")
            for url in self.pool_shards:  # the full check (check_shard_url) runs in check_run, before any work
                if str(url).strip().lower().startswith("pipe:"):
                    raise ValueError(f"pool shard {url!r} is a pipe: URL, which runs a shell command; give file "
                                     "paths or fsspec URLs (s3://, gs://, https://)")
            return self

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        self.asked = {g: float(p[g]) for g in GROUPS}
        self.policy, self.limit, self.seed = p["policy"], p["limit"], p["seed"]
        self.pool_stream, self.pool_steps = p["pool_stream"], tuple(p["pool_steps"])
        self.pool_shards = tuple(p["pool_shards"])

    @property
    def has_pool(self) -> bool:
        return self.pool_stream is not None or bool(self.pool_shards)

    def ratios(self, t: int, step_sizes: list[int]) -> dict:
        """What step t's mixture draws: ``asked`` and ``used`` ratios per source, the ``missing`` sources
        and the buffer's pairs per earlier step (``buffer_counts``)."""
        kept = {j: k for j, k in buffer_counts(self.policy, t, step_sizes, limit=self.limit,
                                               seed=self.seed or 0).items() if k > 0}
        present = {"new": step_sizes[t] > 0, "buffer": bool(kept), "pool": self.has_pool}
        used = redistribute(self.asked, present)
        if not used:
            have = [g for g in GROUPS if present[g]] or ["none"]
            raise PlanError(f"step {t}: the mixture has nothing to draw: the sources with a ratio above 0 "
                            f"({', '.join(g for g in GROUPS if self.asked[g] > 0)}) are missing here, present: "
                            f"{', '.join(have)}; give a present source a positive ratio")
        missing = [g for g in GROUPS if self.asked[g] > 0 and not present[g]]
        return {"asked": dict(self.asked), "used": used, "missing": missing, "policy": self.policy,
                "buffer_pairs": {str(j): k for j, k in kept.items()}}

    def plan(self, t: int, step_sizes: list[int]) -> StepPlan:
        facts = self.ratios(t, step_sizes)
        used = facts["used"]
        sources: list = []
        if used["new"] > 0:
            sources.append(StepSource(step=t, weight=used["new"], pairs=step_sizes[t]))
        if used["buffer"] > 0:
            kept = {int(j): k for j, k in facts["buffer_pairs"].items()}
            total = sum(kept.values())
            for j, k in kept.items():  # uniform over the buffer's pairs
                w = used["buffer"] * k / total
                sources.append(StepSource(step=j, weight=w, pairs=k) if k == step_sizes[j]
                               else BufferSource(step=j, fraction=k / step_sizes[j], weight=w, pairs=k))
        if used["pool"] > 0:
            sources.append(PoolSource(weight=used["pool"], stream=self.pool_stream, steps=self.pool_steps,
                                      shards=self.pool_shards))
        return StepPlan(step=t, init=warm_init(t), sources=sources, subset_seed=self.seed)

    def end_step(self, ctx: MethodContext) -> StepOutcome:
        facts = self.ratios(ctx.step, ctx.stream.step_sizes)
        if facts["missing"]:
            log.info("mixture step %d: %s missing, ratios redistributed to %s", ctx.step, ", ".join(facts["missing"]),
                     {g: round(r, 4) for g, r in facts["used"].items()})
        return StepOutcome({"mixture_ratios": facts})


__all__ = ["DataMixture", "FOMO_RATIOS", "GROUPS", "POLICIES", "buffer_counts", "redistribute"]
