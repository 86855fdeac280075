"""Cumulative methods: warm start and replay old data (all of it, a D-sized buffer that only discards, or a
fixed-size buffer of ``limit`` pairs: a reservoir or the most recent pairs)."""

from __future__ import annotations

from ticlip.methods.base import Method, StepPlan
from ticlip.methods.replay import all_buffer, buffer_counts, buffer_plan, equal_buffer, exp_buffer, make_plan
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


class CumulativeReservoir(CumulativeAll):
    """All of step t plus a reservoir of ``limit`` old pairs: a uniform sample of everything before t
    (Vitter's Algorithm R, see ``replay.reservoir_counts``); sources weighted by their pairs."""

    name = "cumulative-reservoir"
    policy = "reservoir"  # replay.buffer_counts' policy name

    class Params(Schema):
        limit: int | None = Field(None, gt=0, description="the buffer's size in pairs (a memory limit); "
                                                          "default: the first step's train pairs")
        seed: int | None = Field(None, description="seed of the reservoir's draws (default 0) and of the replay "
                                                   "subsets (default: the run's training seed)")

    def __init__(self, **params):
        super().__init__(**params)
        self.limit = self.params["limit"]

    def kept(self, t: int, step_sizes: list[int]) -> dict[int, int]:
        return buffer_counts(self.policy, t, step_sizes, limit=self.limit, seed=self.seed or 0)

    def plan(self, t: int, step_sizes: list[int]) -> StepPlan:
        old = {j: float(k) for j, k in self.kept(t, step_sizes).items()}
        return make_plan(t, step_sizes, old, init=warm_init(t), subset_seed=self.seed)


class CumulativeFifo(CumulativeReservoir):
    """All of step t plus the ``limit`` most recent old pairs (``replay.fifo_counts``)."""

    name = "cumulative-fifo"
    policy = "fifo"

    class Params(Schema):
        limit: int | None = Field(None, gt=0, description="the buffer's size in pairs (a memory limit); "
                                                          "default: the first step's train pairs")
        seed: int | None = Field(None, description="seed of the replay subsets (fixed across steps); "
                                                   "default: the run's training seed")
