"""Evaluation results shared between checkpoints with the same tensors.

Runs of an experiment often hold identical checkpoints: every method's step 0 when the step cache
(``ticlip.train.reuse``) let them share one training and the method's ``end_step`` left the weights
alone. Their results are the same, so a result computed for one is copied for the others.

Each (checkpoint, task, eval step) result is stored once as ``<root>/eval/<key>.json``, where the key
is a digest of what the result depends on (``result_facts``):

- the checkpoint's tensors (names, dtypes, shapes, bytes; not the file, whose metadata names its
  run) and the model name;
- the evaluation settings that can change a score (``EvalConfig`` minus ``IGNORED_EVAL_SETTINGS``:
  which tasks and steps are asked for, the workers and the pixel cache's size), with ``data_dir`` as
  an absolute path and the task file by its content;
- the eval sets' identity: the stream's manifest digest, the task's table entry, the plan's settings
  for it (subsample size, seeds, templates...) and the eval step's index;
- the code: ticlip's, torch's and open_clip's versions and a digest of the sources of ``ticlip/eval``,
  ``ticlip/models.py`` and the top level of ``ticlip/data``.

A copied result is appended to the run's ``eval.jsonl`` like a computed one, with this run's model
step and checkpoint, the seconds it took here, and ``shared_from`` (the checkpoint it was computed
for and the seconds that took). ``<root>`` is the run's step cache (``step_cache`` in its
``config.yaml``): an experiment's runs share ``<experiment>/step-cache`` by default.
"""

from __future__ import annotations

import copy
import datetime as _dt
import functools
import hashlib
import json
import os
import time
from typing import Any

from ticlip.atomic import write_text_atomic

SHARED_FORMAT = 1
IGNORED_EVAL_SETTINGS = frozenset({"tasks", "steps", "workers", "cache_bytes"})
# fields of a result record that belong to the model evaluated, not to the result
PER_MODEL_FIELDS = ("model_step", "checkpoint", "created", "time", "model", "shared_from")


def json_digest(obj: Any) -> str:
    """A stable hex digest of a JSON-ready object."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()


def tensor_digest(tensors: dict) -> str:
    """A digest of named tensors (names, dtypes, shapes and bytes), independent of the device they are on."""
    import torch

    h = hashlib.blake2b(digest_size=20)
    for name in sorted(tensors):
        v = tensors[name]
        if not isinstance(v, torch.Tensor):
            h.update(f"{name}={v!r};".encode())
            continue
        v = v.detach().to("cpu").contiguous()
        h.update(f"{name}:{v.dtype}:{tuple(v.shape)};".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def source_digest(package_dir: str, parts: list[str]) -> str:
    """A digest of the ``.py`` / ``.json`` files under ``parts`` of ``package_dir`` (directories are
    walked; a part ending in "/" stands for its top level only)."""
    files = []
    for part in parts:
        path = os.path.join(package_dir, part.rstrip("/"))
        if os.path.isfile(path):
            files.append(path)
        elif part.endswith("/"):
            files += [os.path.join(path, n) for n in os.listdir(path) if n.endswith((".py", ".json"))]
        elif os.path.isdir(path):
            for root, _, names in os.walk(path):
                files += [os.path.join(root, n) for n in names if n.endswith((".py", ".json", ".yaml"))]
    h = hashlib.blake2b(digest_size=20)
    for path in sorted(files):
        h.update(os.path.relpath(path, package_dir).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # src/ticlip


def versions() -> dict:
    """ticlip's (as installed), torch's and open_clip's versions."""
    from importlib.metadata import PackageNotFoundError, version

    import open_clip
    import torch

    try:
        ours = version("ticlip")
    except PackageNotFoundError:  # run from a source tree: the source digest tells versions apart
        ours = "unknown"
    return {"ticlip": ours, "torch": torch.__version__, "open_clip": getattr(open_clip, "__version__", "?")}


@functools.lru_cache(maxsize=1)
def eval_code_version() -> dict:
    """The versions and a digest of the sources a result depends on."""
    return {**versions(), "sources": source_digest(PACKAGE_DIR, ["eval", "models.py", "data/", "model_configs"])}


@functools.lru_cache(maxsize=64)
def _checkpoint_digest(path: str, size: int, mtime_ns: int) -> str | None:
    from ticlip.errors import TiclipError
    from ticlip.models import checkpoint_weights

    try:
        state = checkpoint_weights(path)  # weights only, open_clip layouts, "module." removed
    except TiclipError:  # e.g. a checkpoint holding objects: evaluated, never shared
        return None
    return tensor_digest(state) if state else None


def checkpoint_digest(path: str) -> str | None:
    """The digest of a checkpoint's tensors (None: not readable as tensors)."""
    st = os.stat(path)
    return _checkpoint_digest(os.path.abspath(path), st.st_size, st.st_mtime_ns)


class SharedResults:
    """Results of an ``Evaluator`` shared through ``<root>/eval/`` (see the module docstring)."""

    def __init__(self, root: str, evaluator):
        self.dir = os.path.join(root, "eval")
        self.ev = evaluator
        cfg = evaluator.config.model_dump()
        settings = {k: v for k, v in cfg.items() if k not in IGNORED_EVAL_SETTINGS}
        if settings.get("data_dir"):
            settings["data_dir"] = os.path.abspath(settings["data_dir"])
        if settings.get("task_file") and os.path.exists(settings["task_file"]):
            with open(settings["task_file"], "rb") as f:
                settings["task_file"] = hashlib.blake2b(f.read(), digest_size=20).hexdigest()
        self.base = {"format": SHARED_FORMAT, "code": eval_code_version(), "settings": settings,
                     "stream": json_digest(evaluator.stream.to_dict())}
        self.copied = 0

    @classmethod
    def for_run(cls, run_dir: str, evaluator) -> "SharedResults | None":
        """Sharing through the run's step cache (its config.yaml's ``step_cache``), or None."""
        from ticlip.schema import read_yaml_mapping

        path = os.path.join(run_dir, "config.yaml")
        if not os.path.exists(path):
            return None
        root = read_yaml_mapping(path).get("step_cache")
        # a relative cache path is relative to where the run was trained; from elsewhere it is not
        # there, and nothing is shared (rather than starting a stray cache)
        return cls(str(root), evaluator) if root and os.path.isdir(str(root)) else None

    def result_facts(self, ref, spec, j: int | None) -> dict | None:
        ckpt = checkpoint_digest(ref.checkpoint)
        if ckpt is None:
            return None
        return {**self.base, "model": ref.model, "checkpoint": ckpt, "task": spec.model_dump(),
                "plan": self.ev.plan.settings(spec), "eval_step": j}

    def _path(self, facts: dict) -> str:
        return os.path.join(self.dir, f"{json_digest(facts)}.json")

    def split(self, ref, todo: list) -> tuple[list[dict], list]:
        """(records copied from the store and appended to the run's eval.jsonl, the rest of ``todo``)."""
        from ticlip.eval.metrics import json_safe
        from ticlip.eval.results import append_result

        copied, rest = [], []
        for spec, j in todo:
            t0 = time.perf_counter()
            facts = self.result_facts(ref, spec, j)
            stored = _read_json(self._path(facts)) if facts is not None else None
            if stored is None or stored.get("format") != SHARED_FORMAT:
                rest.append((spec, j))
                continue
            rec = copy.deepcopy(stored["record"])
            rec.update(
                model_step={"index": ref.index, "label": ref.label}, model=ref.model, checkpoint=ref.checkpoint,
                time=round(time.perf_counter() - t0, 4),
                created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                shared_from={"checkpoint": stored.get("checkpoint"), "time": stored.get("time")},
            )
            rec = json_safe(rec)
            append_result(self.ev.write_path, rec)  # eval.jsonl, or this rank's part file
            copied.append(rec)
        if copied:
            self.copied += len(copied)
            self.ev.log(f"model step {ref.label}: {len(copied)} results copied from a checkpoint with the same "
                        f"tensors ({self.dir})")
        return copied, rest

    def store(self, ref, records: list[dict]) -> None:
        """Keep computed results for checkpoints with the same tensors (atomically, one file each)."""
        specs = {s.name: s for s in self.ev.specs}
        for rec in records:
            if "shared_from" in rec or rec.get("task") not in specs:
                continue
            j = None if rec.get("eval_step") is None else rec["eval_step"]["index"]
            facts = self.result_facts(ref, specs[rec["task"]], j)
            if facts is None:
                continue
            os.makedirs(self.dir, exist_ok=True)
            body = {"format": SHARED_FORMAT, "checkpoint": rec.get("checkpoint"), "time": rec.get("time"),
                    "record": {k: v for k, v in rec.items() if k not in PER_MODEL_FIELDS}}
            write_text_atomic(self._path(facts), json.dumps(body, sort_keys=True) + "\n")


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


__all__ = ["IGNORED_EVAL_SETTINGS", "PACKAGE_DIR", "SharedResults", "checkpoint_digest", "eval_code_version", "json_digest",
           "source_digest", "tensor_digest", "versions"]
