"""Cumulative methods: warm start and replay old data (all of it, or a D-sized buffer)."""

from __future__ import annotations

from ticlip.methods.base import Method, StepPlan
from ticlip.schema import Field, Schema
from ticlip.methods.replay import all_buffer, equal_buffer, exp_buffer, make_plan
from ticlip.methods.sequential import warm_init


class CumulativeAll(Method):
    """All data up to step t, from the last checkpoint."""

    name = "cumulative-all"

    class Params(Schema):
        seed: int = Field(0, description="seed of the stable random replay subsets (fixed across steps)")

    def __init__(self, **params):
        super().__init__(**params)
        self.seed = self.params["seed"]

    def plan(self, t: int, step_sizes: list[int]) -> StepPlan:
        return make_plan(t, step_sizes, all_buffer(t, step_sizes), init=warm_init(t), subset_seed=self.seed)


class CumulativeExp(CumulativeAll):
    """D new pairs + D old ones, halved per step back in time (see ``replay.exp_buffer``)."""

    name = "cumulative-exp"

    def plan(self, t: int, step_sizes: list[int]) -> StepPlan:
        return make_plan(t, step_sizes, exp_buffer(t, step_sizes) if t else {}, init=warm_init(t),
                         subset_seed=self.seed)


class CumulativeEqual(CumulativeAll):
    """D new pairs + D old ones split equally over the earlier steps."""

    name = "cumulative-equal"

    def plan(self, t: int, step_sizes: list[int]) -> StepPlan:
        return make_plan(t, step_sizes, equal_buffer(t, step_sizes) if t else {}, init=warm_init(t),
                         subset_seed=self.seed)
