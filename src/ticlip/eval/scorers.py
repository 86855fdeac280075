"""Scorers: one function per task kind, registered in :data:`SCORERS` (``{kind: scorer}``), and
``score_retrieval``, the retrieval metric on one held-out set shared by the evaluator and by methods
that tune on held-out data (Patching's coefficient), so a method tunes on exactly the metric the
report shows.

Every retrieval score, the evaluator's and the methods', is ``recall_at_k`` (ties count against the
model; the evaluator's dynamic retrieval averages it over seeded subsamples, ``subsampled_recall``).

A scorer takes the task, the eval step index (None for static tasks) and a :class:`ScoringContext`
(the model's :class:`~ticlip.eval.cache.FeatureCache`, the run's eval sets and static data, the plan),
and returns a :class:`Score`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ticlip.errors import TiclipError
from ticlip.eval.cache import EvalSets, FeatureCache, StaticSets
from ticlip.eval.encode import encode_pixels, encode_texts
from ticlip.eval.retrieval import DEFAULT_KS, recall_at_k, subsample_recalls
from ticlip.eval.stats import classification_chance, retrieval_chance
from ticlip.eval.static import ClassificationData, RetrievalData
from ticlip.eval.zeroshot import zero_shot_accuracy


def score_retrieval(
    model,
    pixels: torch.Tensor,
    captions: Sequence[str],
    tokenizer: Callable,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 256,
    device: str = "cpu",
) -> dict[str, float]:
    """Recall@k both ways of ``model`` on preprocessed ``pixels`` and their ``captions``."""
    was_training = model.training
    try:
        img = encode_pixels(model, pixels, batch_size=batch_size, device=str(device))
        txt = encode_texts(model, tokenizer, list(captions), batch_size=batch_size, device=str(device))
    finally:
        model.train(was_training)
    return recall_at_k(img, txt, ks)


# ------------------------------------------------------------------------------ the evaluator's scorers
@dataclass
class Score:
    """A result's metrics (``metrics[spec.main_metric]`` is its score) and what else its record holds
    (``std``, ``seeds``, ``n``, ``images``, ``classes``, ``chance``: the main metric's chance level,
    ``trials``: Bernoulli trials behind it for the above-chance test, ``per_seed``: the main metric
    per retrieval subsample)."""

    metrics: dict
    extra: dict = field(default_factory=dict)


@dataclass
class ScoringContext:
    """What a scorer may use: the model's features, the run's data and the plan's decisions."""

    features: FeatureCache
    eval_sets: EvalSets
    static_sets: StaticSets
    stream: Any
    seeds: int = 3
    subsample: int | None = None  # dynamic retrieval's subsample size (the plan's)
    dynamic_tasks: dict = field(default_factory=dict)  # task name -> plan.DynamicTask (classes, subset)
    log: Callable[[str], None] = lambda msg: None


Scorer = Callable[[Any, "int | None", ScoringContext], Score]


def score_dynamic_retrieval(spec, j: int, ctx: ScoringContext) -> Score:
    """Recall@k on step ``j``'s eval set, averaged over ``seeds`` subsamples of ``subsample`` pairs."""
    img = ctx.features.dynamic_images(ctx.eval_sets, spec.eval_set, j)
    txt = ctx.features.dynamic_texts(ctx.eval_sets, spec.eval_set, j)
    runs, n = subsample_recalls(img, txt, size=ctx.subsample, seeds=range(ctx.seeds), key=j)
    metrics, std = _mean_std(runs)
    if n < ctx.subsample:
        ctx.log(f"  note: step {ctx.stream.steps[j].label} has {n} {spec.eval_set} pairs, fewer than "
                f"the subsample size {ctx.subsample}: all of them are scored once")
    main = spec.main_metric
    return Score(metrics, {"std": std, "seeds": list(range(ctx.seeds)) if n >= ctx.subsample else [0], "n": n,
                           "chance": retrieval_chance(n, main), "trials": 2 * n,
                           "per_seed": {main: [r[main] for r in runs]} if main in runs[0] else {}})


def _mean_std(runs: list[dict]) -> tuple[dict, dict]:
    """Mean and sample std (ddof=1; 0 for one run) of each metric over subsample runs."""
    values = {k: np.array([r[k] for r in runs]) for k in runs[0]}
    return ({k: float(v.mean()) for k, v in values.items()},
            {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()})


def score_dynamic_classification(spec, j: int, ctx: ScoringContext) -> Score:
    """Zero-shot top-1 over the ImageNet classes present in the stream's sets (restricted to the
    task's WordNet subtree, if any) on step ``j``'s eval set."""
    from open_clip import IMAGENET_CLASSNAMES

    task = ctx.dynamic_tasks[spec.name]
    # One classifier per eval set and template set: subtree tasks reuse its columns.
    w = ctx.features.classifier(f"dynamic:{spec.eval_set}:{spec.templates}",
                                [IMAGENET_CLASSNAMES[k] for k in task.classes], spec.templates or "openai")
    img = ctx.features.dynamic_images(ctx.eval_sets, spec.eval_set, j)
    col = {k: c for c, k in enumerate(task.classes)}
    labels = [col[int(m["class_index"])] for m in ctx.eval_sets.get(spec.eval_set, j).meta]
    if task.subset is not None:
        subset = set(task.subset)
        n = sum(1 for y in labels if y in subset)
        metrics = zero_shot_accuracy(img, labels, w, classes=task.subset) if n else {"acc1": None}
        classes = len(task.subset)
    else:
        n = len(labels)
        metrics = zero_shot_accuracy(img, labels, w)
        classes = len(task.classes)
    return Score(metrics, {"n": n, "classes": classes, "chance": classification_chance(classes, spec.main_metric),
                           "trials": n})


def score_task_classification(spec, j: int, ctx: ScoringContext) -> Score:
    """Zero-shot top-1 over task ``j``'s own classes (a task stream's adaptation task; see
    ``ticlip.eval.task_scores``), prompts from the task's template."""
    st = ctx.stream.steps[j]
    if not st.classes:
        raise TiclipError(f"step {st.label!r} lists no classes: task-accuracy needs a task stream")
    w = ctx.features.classifier(f"task:{st.label}", list(st.classes), spec.templates or [st.template or "a photo of a {c}."])
    img = ctx.features.dynamic_images(ctx.eval_sets, spec.eval_set, j)
    labels = [int(m["class_index"]) for m in ctx.eval_sets.get(spec.eval_set, j).meta]
    classes = len(st.classes)
    return Score(zero_shot_accuracy(img, labels, w), {"n": len(labels), "classes": classes,
                 "chance": classification_chance(classes, spec.main_metric), "trials": len(labels)})


def _static_data(spec, ctx: ScoringContext, kind: type):
    data = ctx.static_sets.get(spec)
    if not isinstance(data, kind):
        raise TiclipError(f"task {spec.name!r}: loader {spec.loader!r} gave {type(data).__name__}, "
                          f"not the {kind.__name__} a {spec.kind} task scores")
    return data


def score_static_classification(spec, j: None, ctx: ScoringContext) -> Score:
    """Zero-shot accuracy on a static classification set."""
    data = _static_data(spec, ctx, ClassificationData)
    w = ctx.features.classifier(f"static:{spec.name}", data.classnames, spec.templates or data.templates or "photo")
    feats, labels = ctx.features.labelled_images(("static", spec.name), data.dataset)
    classes = len(data.classnames)
    return Score(zero_shot_accuracy(feats, labels, w), {"n": len(labels), "classes": classes,
                 "chance": classification_chance(classes, spec.main_metric), "trials": len(labels)})


def score_static_retrieval(spec, j: None, ctx: ScoringContext) -> Score:
    """Recall@k on a static retrieval set (several captions per image allowed)."""
    data = _static_data(spec, ctx, RetrievalData)
    img = ctx.features.encode_images(("static", spec.name), data.images)
    txt = ctx.features.encode_texts(data.captions)
    metrics = recall_at_k(img, txt, text_to_image=data.text_to_image)
    return Score(metrics, {"n": len(data.captions), "images": len(data.images),
                           "chance": retrieval_chance(len(data.images), spec.main_metric),
                           "trials": len(data.captions) + len(data.images)})


SCORERS: dict[str, Scorer] = {
    "dynamic_retrieval": score_dynamic_retrieval,
    "dynamic_classification": score_dynamic_classification,
    "zeroshot_classification": score_static_classification,
    "retrieval": score_static_retrieval,
    "task_classification": score_task_classification,
}


def scorer_for(kind: str) -> Scorer:
    """The scorer registered for task kind ``kind``; a TiclipError naming the known kinds otherwise."""
    try:
        return SCORERS[kind]
    except KeyError:
        raise TiclipError(f"no scorer for task kind {kind!r}; known kinds: {', '.join(SCORERS)}") from None


def score_task(spec, j: int | None, ctx: ScoringContext) -> Score:
    """Score task ``spec`` on eval step ``j`` (None: a static task) with the scorer of its kind."""
    return scorer_for(spec.kind)(spec, j, ctx)


__all__ = [
    "SCORERS", "Score", "Scorer", "ScoringContext", "score_dynamic_classification", "score_dynamic_retrieval",
    "score_retrieval", "score_static_classification", "score_static_retrieval", "score_task", "scorer_for",
]
