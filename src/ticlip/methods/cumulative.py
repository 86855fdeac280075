"""Cumulative methods: warm start and replay old data (all of it, or a D-sized buffer that only discards)."""

from __future__ import annotations

from ticlip.methods.base import Method, StepPlan
from ticlip.methods.replay import all_buffer, buffer_plan, equal_buffer, exp_buffer
from ticlip.methods.sequential import warm_init
from ticlip.schema import Field, Schema


class CumulativeAll(Method):
    """All data up to step t, from the last checkpoint."""

    name = "cumulative-all"
    buffer = staticmethod(all_buffer)

    class Params(Schema):
        seed: int | None = Field(None, description="seed of the replay subsets (fixed across steps); "
                                                   "default: the run's training seed")

    def __init__(self, **params):
        super().__init__(**params)
        self.seed = self.params["seed"]

    def plan(self, t: int, step_sizes: list[int]) -> StepPlan:
        """``subset_seed`` is the ``seed`` parameter, or None: the trainer then uses the run's seed."""
        return buffer_plan(t, step_sizes, type(self).buffer, init=warm_init(t), subset_seed=self.seed)


class CumulativeExp(CumulativeAll):
    """D new pairs + D old ones, halved per step back in time (see ``replay.exp_buffer``)."""

    name = "cumulative-exp"
    buffer = staticmethod(exp_buffer)


class CumulativeEqual(CumulativeAll):
    """D new pairs + D old ones split equally over the earlier steps."""

    name = "cumulative-equal"
    buffer = staticmethod(equal_buffer)
