"""Sequential: warm start from the last checkpoint, train on step t's data only."""

from __future__ import annotations

from ticlip.methods.base import Init, Method, StepPlan
from ticlip.methods.replay import make_plan


def warm_init(t: int) -> Init:
    """Warm-started methods start step 0 from the run's initial weights."""
    return "previous" if t > 0 else "initial"


class Sequential(Method):
    name = "sequential"

    def plan(self, t: int, step_sizes: list[int]) -> StepPlan:
        return make_plan(t, step_sizes, {}, init=warm_init(t))
