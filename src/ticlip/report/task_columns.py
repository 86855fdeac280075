"""Task-stream columns of the summary table and their curve plot: knowledge accumulation (A_KA: mean on
the adaptation tasks seen so far), zero-shot retention (A_ZS: mean on the held-out tasks) and their
geometric mean, as ``ticlip.eval.task_scores`` defines them (FoMo-in-Flux, Roth et al., 2024, §3).

A run has them when its results hold the dynamic task ``task-accuracy`` and static tasks
``held-out:<task>``; time streams have neither and keep ID / backward / forward only.
"""

from __future__ import annotations

import math

import numpy as np

from ticlip.eval.task_scores import (HELD_OUT_PREFIX, TASK_ACCURACY, geometric_mean, knowledge_accumulation,
                                     zero_shot_retention)

TASK_COLUMNS = (("ka", "Knowledge acc."), ("zr", "Zero-shot ret."), ("geo", "Geo. mean"))
TASK_GROUP = "Task stream"


def held_out_tasks(run) -> list[str]:
    return [t for t in run.static if t.startswith(HELD_OUT_PREFIX)]


def has_task_scores(run) -> bool:
    return TASK_ACCURACY in run.matrices and bool(held_out_tasks(run))


def task_curves(run) -> dict[str, np.ndarray]:
    """Per model step: ka, zr and geo of one run."""
    held = held_out_tasks(run)
    S = np.stack([run.static[t] for t in held], axis=1) if held else np.zeros((len(run.labels), 0))
    ka = knowledge_accumulation(run.matrices[TASK_ACCURACY])
    zr = zero_shot_retention(S)
    return {"ka": ka, "zr": zr, "geo": geometric_mean(ka, zr)}


def task_value(run, key: str) -> float:
    """The final value (last step with a score) of ``key`` for one run."""
    v = task_curves(run)[key]
    v = v[~np.isnan(v)]
    return float(v[-1]) if v.size else math.nan


def task_chance(group, key: str) -> float:
    """Chance level of ``key`` at the last step: mean chance of all adaptation tasks (the diagonal's),
    mean chance of the held-out tasks, and their geometric mean."""
    run = group.runs[0]
    C = group.chance_matrix(TASK_ACCURACY)
    ka = float(np.nanmean(np.diag(C))) if not np.isnan(np.diag(C)).all() else math.nan
    held = [run.static_chance.get(t, math.nan) for t in held_out_tasks(run)]
    zr = float(np.nanmean(held)) if held and not np.isnan(held).all() else math.nan
    return {"ka": ka, "zr": zr, "geo": math.sqrt(ka * zr) if not math.isnan(ka * zr) else math.nan}[key]


def mean_curves(group) -> dict[str, np.ndarray]:
    """Each curve averaged over the group's runs (training seeds)."""
    per = [task_curves(r) for r in group.runs]
    with np.errstate(all="ignore"):
        return {k: np.nanmean(np.stack([p[k] for p in per]), axis=0) for k in ("ka", "zr", "geo")}


__all__ = ["TASK_COLUMNS", "TASK_GROUP", "has_task_scores", "held_out_tasks", "mean_curves", "task_chance",
           "task_curves", "task_value"]
