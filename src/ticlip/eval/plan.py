"""Planning an evaluation: which dynamic tasks a stream supports (and their classes), the retrieval
subsample size, what a result depends on besides the model (``settings``), and which (model, task,
eval step) results are still pending given those already in eval.jsonl."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ticlip.errors import TiclipError
from ticlip.eval.cache import EvalSets, StaticSets
from ticlip.eval.tasks import TaskSpec


@dataclass
class ModelRef:
    """One model to evaluate: the row ``index``/``label`` of the matrix it fills."""

    index: int
    label: str
    checkpoint: str
    model: str
    outside: bool = False  # an outside checkpoint: its results are reused only for the same file


@dataclass
class DynamicTask:
    """A dynamic task as planned for a stream."""

    spec: TaskSpec
    steps: list[int]  # stream step indices that have the eval set
    classes: list[int] | None = None  # classification: ImageNet class indices (classifier columns)
    subset: list[int] | None = None  # subtree: classifier columns kept


Pending = list[tuple[TaskSpec, "int | None"]]  # (task, eval step index or None for a static task)


class EvalPlan:
    """The tasks of one evaluation and what each result depends on. ``skip(task, why)`` is told about
    every selected task that cannot be scored here."""

    def __init__(self, stream, specs: list[TaskSpec], eval_sets: EvalSets, static_sets: StaticSets, *,
                 named: list[str] | None, seeds: int, subsample: int | None, subsample_cap: int,
                 skip: Callable[[str, str], None], skipped: dict[str, str]):
        self.stream, self.specs, self.eval_sets, self.static_sets = stream, specs, eval_sets, static_sets
        self.seeds = seeds
        self._skip, self._skipped = skip, skipped
        self.dynamic = self._plan_dynamic(named or [])
        self.subsample = self._subsample_size(subsample, subsample_cap)

    def _plan_dynamic(self, named: list[str]) -> list[DynamicTask]:
        out = []
        for spec in self.specs:
            if not spec.dynamic:
                continue
            steps = [s.index for s in self.stream.steps if self.eval_sets.has_pairs(spec.eval_set, s)]
            if not steps:
                if spec.name in named:
                    self._skip(spec.name, f"stream {self.stream.name!r} has no eval set {spec.eval_set!r}")
                continue
            task = DynamicTask(spec, steps)
            if spec.kind == "dynamic_classification":
                try:
                    self._plan_classes(task)
                except TiclipError as e:
                    self._skip(spec.name, str(e))
                    continue
            out.append(task)
        return out

    def _plan_classes(self, task: DynamicTask) -> None:
        present: set[int] = set()
        for j in task.steps:
            for m in self.eval_sets.get(task.spec.eval_set, j).meta:
                if "class_index" not in m:
                    raise TiclipError(f"eval set {task.spec.eval_set!r} of step {j} has samples without meta 'class_index' (rebuild it with `ticlip data classify`)")
                present.add(int(m["class_index"]))
        if not present:
            raise TiclipError(f"eval set {task.spec.eval_set!r} is empty in every step")
        task.classes = sorted(present)
        if task.spec.subtree:
            from ticlip.data.imagenet_classes import subtree_class_indices

            under = set(subtree_class_indices(task.spec.subtree))
            task.subset = [c for c, k in enumerate(task.classes) if k in under]
            if not task.subset:
                raise TiclipError(f"no class of the stream's {task.spec.eval_set!r} sets lies under {task.spec.subtree}")

    def _subsample_size(self, given: int | None, cap: int) -> int | None:
        tasks = [t for t in self.dynamic if t.spec.kind == "dynamic_retrieval"]
        if not tasks:
            return None
        if given is not None:
            return given
        sizes = [self.eval_sets.size(t.spec.eval_set, j) for t in tasks for j in t.steps]
        return max(1, min(min(sizes), cap))

    def settings(self, spec: TaskSpec) -> dict:
        """What, besides the model, a result depends on; a result with other settings is redone."""
        if spec.kind == "dynamic_retrieval":
            return {"subsample": self.subsample, "seeds": list(range(self.seeds))}
        out = {}
        if spec.templates is not None:
            out["templates"] = spec.templates
        if spec.subtree:
            out["subtree"] = spec.subtree
        if spec.options.get("max_samples"):
            out["max_samples"] = spec.options["max_samples"]
        return out

    def pending(self, model: ModelRef, done: dict) -> tuple[Pending, int]:
        """(the (task, eval step index or None for static) pairs ``model`` still lacks, how many it
        has). Static data is read here, only for tasks some model still lacks."""

        def missing(spec: TaskSpec, j: int | None) -> bool:
            rec = done.get((model.index, spec.name, j))
            if rec is None or rec.get("settings", {}) != self.settings(spec):
                return True
            return model.outside and rec.get("checkpoint") != model.checkpoint

        todo, present = [], 0
        for task in self.dynamic:
            for j in task.steps:
                if missing(task.spec, j):
                    todo.append((task.spec, j))
                else:
                    present += 1
        for spec in self.specs:
            if spec.dynamic or spec.name in self._skipped:
                continue
            if not missing(spec, None):
                present += 1
            elif self.static_sets.get(spec) is not None:
                todo.append((spec, None))
        return todo, present


__all__ = ["DynamicTask", "EvalPlan", "ModelRef", "Pending"]
