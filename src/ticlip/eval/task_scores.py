"""Task-stream scores (FoMo-in-Flux: Roth et al., 2024, §3 "Evaluation"): *knowledge accumulation*
A_KA, the mean score on the adaptation tasks seen so far, *zero-shot retention* A_ZS, the mean score on
the held-out tasks (never trained on), and their geometric mean, after every step (curves) and at the
end. Time streams keep ID / backward / forward (``ticlip.eval.metrics``).

The score of a model on a task is zero-shot classification top-1 over that task's classes (prompts: the
task's template filled with each class name), on the task's eval set ``task``. We chose classification
over retrieval because task streams are classification-style sets whose captions repeat per class:
retrieval among identical captions is ill-posed (ties), while accuracy over the task's classes has a
clear chance level (1 / classes) and per-image Bernoulli trials for the above-chance test
(``ticlip.eval.stats``).

Where the numbers live: adaptation tasks are a dynamic task (``task-accuracy``, kind
``task_classification``: matrix E[i, j], model after step i on task j); held-out tasks are static tasks
named ``held-out:<task>`` (``held_out_specs``, loader ``stream_task``), one score per model step.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ticlip.eval.tasks import HELD_OUT_PREFIX, TaskSpec

TASK_ACCURACY = "task-accuracy"  # the dynamic task of adaptation tasks (tasklist.yaml)


def held_out_specs(stream) -> dict[str, TaskSpec]:
    """One static zero-shot task per held-out task of a task stream (none for a time stream)."""
    out = {}
    for st in getattr(stream, "held_out", []) or []:
        name = HELD_OUT_PREFIX + st.label
        out[name] = TaskSpec(name=name, kind="zeroshot_classification", loader="stream_task",
                             options={"task": st.label}, templates=[st.template] if st.template else None,
                             description=f"held-out task {st.label} of the task stream (never trained on)")
    return out


def knowledge_accumulation(E) -> np.ndarray:
    """Per model step i: mean of E[i, j] over the adaptation tasks j <= i seen so far (NaN cells skipped)."""
    E = np.asarray(E, dtype=float)
    out = np.full(E.shape[0], math.nan)
    for i in range(E.shape[0]):
        seen = E[i, : min(i + 1, E.shape[1])]
        seen = seen[~np.isnan(seen)]
        out[i] = seen.mean() if seen.size else math.nan
    return out


def zero_shot_retention(S) -> np.ndarray:
    """Per model step: mean score over the held-out tasks (columns of S; NaN cells skipped)."""
    S = np.asarray(S, dtype=float)
    if S.ndim != 2 or S.shape[1] == 0:
        return np.full(S.shape[0] if S.ndim else 0, math.nan)
    with np.errstate(all="ignore"):
        return np.array([row[~np.isnan(row)].mean() if (~np.isnan(row)).any() else math.nan for row in S])


def geometric_mean(a, b) -> np.ndarray:
    """sqrt(a * b) elementwise (NaN where either is NaN; negative products cannot occur for scores in [0, 1])."""
    return np.sqrt(np.asarray(a, dtype=float) * np.asarray(b, dtype=float))


def task_stream_summary(E, S, *, chance_adapt: Sequence[float] = (), chance_held: Sequence[float] = ()) -> dict:
    """Curves and final values of A_KA, A_ZS and their geometric mean, with the chance levels they compare to
    (A_KA's chance at step i: mean chance of tasks 0..i; A_ZS's: mean chance of the held-out tasks)."""
    ka, zs = knowledge_accumulation(E), zero_shot_retention(S)
    geo = geometric_mean(ka, zs)
    ca = np.asarray(list(chance_adapt), dtype=float)
    ka_chance = [float(ca[: i + 1].mean()) for i in range(len(ka))] if ca.size else []
    zs_chance = float(np.mean(chance_held)) if len(chance_held) else math.nan

    def last(v):
        v = v[~np.isnan(v)]
        return float(v[-1]) if v.size else math.nan

    return {"knowledge_accumulation": {"curve": ka.tolist(), "last": last(ka), "chance": ka_chance},
            "zero_shot_retention": {"curve": zs.tolist(), "last": last(zs), "chance": zs_chance},
            "geometric_mean": {"curve": geo.tolist(), "last": last(geo)}}


def task_difficulty(tasks, checkpoint: str, model: str, config, *, device: str = "cpu",
                    batch_size: int = 256) -> dict[str, float]:
    """Each task's zero-shot top-1 under ``checkpoint`` (the initial model) on the task's eval split (the
    one the build writes: ``ticlip.data.task_stream.split_task``), prompts from its template: the scores
    ``--order difficulty`` sorts by, easiest first."""
    import torch

    from ticlip.data.task_stream import load_image, split_task
    from ticlip.eval.encode import encode_pixels, eval_transform
    from ticlip.eval.zeroshot import build_classifier, templates, zero_shot_accuracy
    from ticlip.models import create_model, quiet_open_clip

    with quiet_open_clip():
        bundle = create_model(model, init=checkpoint, device=device)
    bundle.model.eval()
    transform = eval_transform(bundle)
    out = {}
    for task in tasks:
        _, ev = split_task(task, config.eval_per_class, config.split_seed)
        pixels = torch.stack([transform(load_image(e[0]).convert("RGB")) for e in ev])
        feats = encode_pixels(bundle.model, pixels, batch_size=batch_size, device=device)
        w = build_classifier(bundle.model, bundle.tokenizer, task.classes, templates([task.template]), device=device)
        out[task.name] = zero_shot_accuracy(feats, [task.classes.index(e[1]) for e in ev], w)["acc1"]
    return out


__all__ = ["HELD_OUT_PREFIX", "TASK_ACCURACY", "geometric_mean", "held_out_specs", "knowledge_accumulation",
           "task_difficulty", "task_stream_summary", "zero_shot_retention"]
