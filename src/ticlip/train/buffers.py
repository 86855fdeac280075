"""A step's replay buffers as the trainer realises them: the run's subset seed and ``buffer.json``.

    plan = with_run_seed(method.plan(t, sizes), cfg.seed)   # subset_seed: the method's, else the run's
    write_buffer_json(step_dir, stream, plan)              # steps/<t>/buffer.json (rank 0)

``buffer.json`` maps the label of each earlier step the step's mixture may draw from to the uids of
its train pairs that the mixture may draw: all of them for a ``StepSource`` (Cumulative-All, Oracle,
Restart), the ``pairs`` kept for a ``BufferSource`` (Cumulative-Exp/-Equal), ``{}`` for methods that
train on the new step only. Each list is in the buffer's ranking (``TimeStream.buffer_pairs``): a
later, smaller buffer of a step is a prefix of it.
"""

from __future__ import annotations

import dataclasses
import json
import os

from ticlip.atomic import write_text_atomic

BUFFER_JSON = "buffer.json"


def with_run_seed(plan, run_seed: int):
    """``plan`` with ``subset_seed`` set to ``run_seed`` when the method left it unset (None): replay
    subsets then follow the training seed, and stay fixed across the run's steps."""
    if plan.subset_seed is not None:
        return plan
    return dataclasses.replace(plan, subset_seed=int(run_seed))


def buffer_contents(stream, plan) -> dict[str, list[str]]:
    """``{step label: [uid, ...]}``: the train pairs of each earlier step that ``plan`` may draw."""
    from ticlip.methods.base import BufferSource, StepSource

    seed = 0 if plan.subset_seed is None else plan.subset_seed
    out: dict[str, list[str]] = {}
    for source in plan.sources:
        if not isinstance(source, (StepSource, BufferSource)) or source.step >= plan.step or source.weight <= 0:
            continue
        pairs = source.pairs if isinstance(source, BufferSource) else None
        out[stream.steps[source.step].label] = [p.uid for p in stream.buffer_pairs(source.step, pairs, seed)]
    return out


def write_buffer_json(step_dir: str, stream, plan) -> str:
    """Write ``<step_dir>/buffer.json`` atomically; returns its path."""
    path = os.path.join(step_dir, BUFFER_JSON)
    lines = [f"{json.dumps(label, ensure_ascii=False)}: {json.dumps(uids, ensure_ascii=False)}"
             for label, uids in buffer_contents(stream, plan).items()]
    write_text_atomic(path, "{" + ",\n ".join(lines) + "}\n")  # one line per source step
    return path


__all__ = ["BUFFER_JSON", "buffer_contents", "with_run_seed", "write_buffer_json"]
