"""The task registry: a declarative table (``tasklist.yaml``, shipped with ticlip) of what
`ticlip eval` scores, optionally extended or overridden by a user's YAML file of the same layout.
Each entry is a :class:`TaskSpec` (a schema: unknown keys and bad values are one-line errors).
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Literal

from ticlip.eval.static import LOADER_KINDS, LOADERS, resolve_path
from ticlip.schema import ConfigError, Field, Schema, field_validator, read_yaml_mapping

DYNAMIC_KINDS = ("dynamic_retrieval", "dynamic_classification", "task_classification")
STATIC_KINDS = ("zeroshot_classification", "retrieval")
KINDS = DYNAMIC_KINDS + STATIC_KINDS
MAIN_METRIC = {
    "dynamic_retrieval": "mean_recall@1",
    "retrieval": "mean_recall@1",
    "dynamic_classification": "acc1",
    "zeroshot_classification": "acc1",
    "task_classification": "acc1",
}
Kind = Literal["dynamic_retrieval", "dynamic_classification", "zeroshot_classification", "retrieval",
               "task_classification"]


class TaskError(ConfigError):
    """A task table entry is malformed, or a task name is unknown."""


class TaskSpec(Schema):
    """One row of the task table (its key in the table is ``name``)."""

    name: str = Field(description="the task's name (its key in the table)")
    kind: Kind = Field(description="what is scored and how (see tasklist.yaml)")
    eval_set: str | None = Field(None, validate_default=True, description="dynamic tasks: the stream's eval set name")
    subtree: str | None = Field(None, description="dynamic classification: WordNet synset id restricting the classes")
    loader: str | None = Field(None, validate_default=True,
                               description="static tasks: a loader name in ticlip.eval.static.LOADERS")
    options: dict[str, Any] = Field(default_factory=dict, description="the loader's options (paths may use {data_dir})")
    templates: str | list[str] | None = Field(
        None, description="template set name or a list of '{c}' strings (none: the loader's, else 'photo')")
    default: bool = Field(True, description="part of the default selection")
    description: str = Field("", description="one line shown by --list-tasks")

    @field_validator("eval_set")
    @classmethod
    def _eval_set_for_dynamic_kinds(cls, value, info):
        kind = info.data.get("kind")
        if kind in DYNAMIC_KINDS and not value:
            raise ValueError(f"a {kind} task needs eval_set (the stream's eval set name)")
        return value

    @field_validator("loader")
    @classmethod
    def _loader_for_static_kinds(cls, value, info):
        kind = info.data.get("kind")
        if kind in STATIC_KINDS:
            if value not in LOADERS:
                raise ValueError(f"a {kind} task needs a loader, one of {', '.join(sorted(LOADERS))}")
            if LOADER_KINDS[value] != kind:
                raise ValueError(f"loader {value!r} gives {LOADER_KINDS[value]} data, not {kind}")
        return value

    @property
    def dynamic(self) -> bool:
        return self.kind in DYNAMIC_KINDS

    @property
    def main_metric(self) -> str:
        return MAIN_METRIC[self.kind]

    @classmethod
    def from_entry(cls, name: str, entry: Any, *, origin: str = "task table") -> "TaskSpec":
        """The table entry ``entry`` (a mapping without ``name``) of task ``name``; TaskError if malformed."""
        if not isinstance(entry, dict):
            raise TaskError(f"{origin}: task {name!r}: expected a mapping, got {type(entry).__name__}")
        if "name" in entry:
            raise TaskError(f"{origin}: task {name!r}: unknown key 'name' (the task's name is its key in the table)")
        try:
            return cls.load({**entry, "name": name}, source=f"{origin}: task {name!r}")
        except ConfigError as e:
            raise TaskError(str(e)) from None


def _parse(table: Any, origin: str) -> dict[str, TaskSpec]:
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise TaskError(f"{origin}: expected a mapping of task name -> fields")
    return {str(name): TaskSpec.from_entry(str(name), d, origin=origin) for name, d in table.items()}


def builtin_tasks() -> dict[str, TaskSpec]:
    import yaml

    text = resources.files("ticlip.eval").joinpath("tasklist.yaml").read_text(encoding="utf-8")
    return _parse(yaml.safe_load(text), "tasklist.yaml")


def load_tasks(task_file: str | None = None) -> dict[str, TaskSpec]:
    """The built-in table, with the entries of ``task_file`` added (same name: replaced)."""
    tasks = builtin_tasks()
    if task_file:
        try:
            table = read_yaml_mapping(task_file)
        except ConfigError as e:
            raise TaskError(str(e)) from None
        tasks.update(_parse(table, task_file))
    return tasks


HELD_OUT = "held-out"  # every held-out task of a task stream (ticlip.eval.task_scores)
HELD_OUT_PREFIX = HELD_OUT + ":"


def select_tasks(tasks: dict[str, TaskSpec], names: list[str] | None) -> list[TaskSpec]:
    """Tasks by name (``None``: every ``default`` task), in table order; unknown names are an error.

    ``"dynamic"`` and ``"static"`` stand for all default tasks of that group; ``"held-out"`` for a task
    stream's held-out tasks (``held-out:<task>``, added to the table from the stream; none otherwise).
    """
    if not names:
        return [t for t in tasks.values() if t.default]
    chosen: list[str] = []
    for n in names:
        if n in ("dynamic", "static"):
            group = [t.name for t in tasks.values() if t.default and t.dynamic == (n == "dynamic")]
        elif n == HELD_OUT:
            group = [t.name for t in tasks.values() if t.name.startswith(HELD_OUT_PREFIX)]
        elif n in tasks:
            group = [n]
        else:
            raise TaskError(f"unknown task {n!r}; known tasks: {', '.join(tasks)} (or 'dynamic', 'static', "
                            f"'held-out')")
        chosen += [g for g in group if g not in chosen]
    return [tasks[n] for n in tasks if n in chosen]


__all__ = [
    "DYNAMIC_KINDS",
    "KINDS",
    "MAIN_METRIC",
    "STATIC_KINDS",
    "TaskError",
    "TaskSpec",
    "builtin_tasks",
    "load_tasks",
    "resolve_path",
    "select_tasks",
]
