"""The on-disk layout of a training run, shared by training (writer) and evaluation (reader).

    runs/<name>/config.yaml                 the resolved configuration
                run.json                    RunInfo below: stream, model, method, per-step records, and
                                            the run's pinned inputs (absolute stream and init paths
                                            with their fingerprints, checked by --resume)
                steps/<index>/checkpoint.pt open_clip-format checkpoint after step <index> (0-based)
                steps/<index>/train_log.jsonl
                eval.jsonl                  one line per (model step, task); append-only, resumable
                matrix_<task>.csv           the evaluation matrix E for one task
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields

from ticlip.atomic import write_json_atomic
from ticlip.errors import TiclipError

RUN_INFO = "run.json"


@dataclass
class StepRecord:
    """What training produced for one step."""

    index: int
    label: str
    checkpoint: str  # relative to the run dir
    pairs_seen: int = 0
    macs: float = 0.0  # MACs spent on this step (training + method extras)
    cumulative_macs: float = 0.0
    finished: bool = False


def _known(kind, d: dict) -> dict:
    """The entries of ``d`` that are fields of the dataclass ``kind``."""
    names = {f.name for f in fields(kind)}
    return {k: v for k, v in d.items() if k in names}


@dataclass
class RunInfo:
    name: str
    stream: str
    model: str
    method: str
    seed: int = 0
    steps: list[StepRecord] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    # Pinned inputs (run.json files written before these fields existed read as ""/None: not pinned).
    # ``stream`` above is the stream's absolute root (or URL); ``init`` the --init file's absolute path
    # (or URL), None without --init.
    stream_fingerprint: str = ""  # json_fingerprint of the manifest's content
    init: str | None = None
    init_fingerprint: str = ""  # file_fingerprint of the --init file ("" for a URL)
    label: str = ""  # the report row (an experiment's variant name); "" (older runs too): the method

    @staticmethod
    def path(run_dir: str) -> str:
        return os.path.join(run_dir, RUN_INFO)

    @classmethod
    def load(cls, run_dir: str) -> "RunInfo":
        p = cls.path(run_dir)
        if not os.path.exists(p):
            raise TiclipError(f"{run_dir} is not a ticlip run (no {RUN_INFO}); train one with `ticlip train`")
        with open(p, encoding="utf-8") as f:
            d = json.load(f)
        # keys this version does not know (a run.json written by a newer ticlip) are left out rather than
        # failing: what they record is not needed to read the run
        steps = [StepRecord(**_known(StepRecord, s)) for s in d.pop("steps", [])]
        return cls(steps=steps, **_known(cls, d))

    def save(self, run_dir: str) -> None:
        write_json_atomic(self.path(run_dir), asdict(self))

    def checkpoint_path(self, run_dir: str, index: int) -> str:
        for s in self.steps:
            if s.index == index:
                return os.path.join(run_dir, s.checkpoint)
        raise TiclipError(f"run {self.name} has no checkpoint for step {index}")


MIB = 1 << 20


def json_fingerprint(obj) -> str:
    """sha256 of ``obj`` as canonical JSON (sorted keys): the same content, however it was formatted."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_fingerprint(path: str) -> str:
    """A fast fingerprint of a local file: its size and the sha256 of its first and last MiB (the whole
    file when it is at most 2 MiB). Checkpoints are hundreds of MB, so hashing all of it on every
    --resume would cost seconds to minutes; a replaced or re-saved checkpoint changes its size or its
    header and tail (the zip directory at the end of a torch.save file) in practice, but an edit of a
    middle byte only would go unnoticed."""
    size = os.path.getsize(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= 2 * MIB:
            h.update(f.read())
        else:
            h.update(f.read(MIB))
            f.seek(size - MIB)
            h.update(f.read(MIB))
    return f"size{size}:head-tail-sha256:{h.hexdigest()}"


def step_dir(run_dir: str, index: int) -> str:
    return os.path.join(run_dir, "steps", str(index))


def log_records(path: str):
    """The JSON records of a ``*.jsonl`` log (a step's train_log.jsonl), in order; lines that do not parse
    (a line cut by a kill) are left out; a missing file has none."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                yield json.loads(line)
            except ValueError:
                continue
