"""Oracle and Restart: train from the run's initial weights on all data up to step t.

Oracle gets (t + 1)·C at 0-based step t (it retrains from scratch on everything, the compute an
ideal retraining would use); Restart gets the ordinary C.
"""

from __future__ import annotations

from ticlip.methods.base import Method, StepPlan
from ticlip.methods.replay import all_buffer, make_plan


class Oracle(Method):
    name = "oracle"

    def compute_multiplier(self, t: int) -> float:
        return float(t + 1)

    def plan(self, t: int, step_sizes: list[int]) -> StepPlan:
        return make_plan(t, step_sizes, all_buffer(t, step_sizes), init="initial")


class Restart(Method):
    name = "restart"

    def plan(self, t: int, step_sizes: list[int]) -> StepPlan:
        return make_plan(t, step_sizes, all_buffer(t, step_sizes), init="initial")
