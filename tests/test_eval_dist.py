"""Evaluation under torchrun: the ranks split the pending (model step, task) units round-robin, each
writes a part file, rank 0 merges them into eval.jsonl in one process's order; two gloo ranks give
the same eval.jsonl (but for timings) and the same tables as one process."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from ticlip.eval.dist import share
from ticlip.eval.results import append_result, merge_parts, part_path, part_paths, read_results
from ticlip.eval.runner import EvalConfig, evaluate_run

from test_eval_runner import TASKS, checkpoints, make_run, stream, task_file  # noqa: F401  (fixtures)

PER_RUN = ("time", "created")  # what differs between two evaluations of the same checkpoints


def _spec(name):
    return SimpleNamespace(name=name)


def test_units_are_model_task_pairs_dealt_round_robin():
    a, b, c = _spec("retrieval"), _spec("classification"), _spec("digits")
    plans = [("m0", [(a, 0), (a, 1), (b, 0), (c, None)], 0), ("m1", [], 4), ("m2", [(b, 1), (c, None)], 2)]
    # units in order: (m0, a) (m0, b) (m0, c) (m2, b) (m2, c) -> ranks 0 1 0 1 0
    mine = {r: [(m, [(s.name, j) for s, j in todo], present) for m, todo, present in share(plans, r, 2)]
            for r in (0, 1)}
    assert mine[0] == [("m0", [("retrieval", 0), ("retrieval", 1), ("digits", None)], 0), ("m1", [], 4),
                       ("m2", [("digits", None)], 2)]
    assert mine[1] == [("m0", [("classification", 0)], 0), ("m1", [], 4), ("m2", [("classification", 1)], 2)]
    assert share(plans, 0, 1) == plans


def _rec(model, task, step):
    return {"model_step": {"index": model, "label": str(model)}, "task": task,
            "eval_step": None if step is None else {"index": step, "label": str(step)}, "metrics": {"x": 1}}


def test_rank_parts_merge_into_eval_jsonl_in_one_process_order(tmp_path):
    log = str(tmp_path / "eval.jsonl")
    append_result(log, _rec(9, "old", None))
    for rec in (_rec(0, "b", 1), _rec(1, "a", 0)):
        append_result(part_path(log, 1), rec)
    for rec in (_rec(1, "b", None), _rec(0, "a", 0)):
        append_result(part_path(log, 0), rec)
    assert len(part_paths(log)) == 2
    order = {(0, "a", 0): 0, (0, "b", 1): 1, (1, "a", 0): 2, (1, "b", None): 3}
    assert merge_parts(log, order) == 4
    assert [(r["model_step"]["index"], r["task"]) for r in read_results(log)] == [
        (9, "old"), (0, "a"), (0, "b"), (1, "a"), (1, "b")]
    assert part_paths(log) == [] and merge_parts(log, order) == 0


def _strip(records):
    """The records without timings, checkpoint paths as the files they name (each run dir has its own path)."""
    return [{**{k: v for k, v in r.items() if k not in PER_RUN}, "checkpoint": os.path.realpath(r["checkpoint"])}
            for r in records]


@pytest.mark.timeout(300)
@pytest.mark.slow
def test_two_gloo_ranks_write_what_one_process_writes(tmp_path, stream, checkpoints, task_file):  # noqa: F811
    one = make_run(tmp_path / "one", stream, checkpoints)
    two = make_run(tmp_path / "two", stream, checkpoints)
    evaluate_run(one, EvalConfig(tasks=TASKS, task_file=task_file, seeds=2, batch_size=16), log=lambda m: None)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "ticlip.cli", "eval", two, "--tasks", ",".join(TASKS), "--task-file", task_file, "--seeds", "2",
         "--batch-size", "16", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)  # rank 0 alone prints the report, counting both ranks' work
    lines = read_results(os.path.join(one, "eval.jsonl"))
    assert report["evaluated"] == len(lines) == 3 * (2 * 4 + 1) + (3 * 4 if "classification-motor-vehicle" in TASKS else 0)
    assert report["models_loaded"] == 6  # 3 models on each rank: every model has units on both ranks
    assert _strip(read_results(os.path.join(two, "eval.jsonl"))) == _strip(lines)
    for name in sorted(os.listdir(one)):
        if name.endswith(".csv"):
            assert (tmp_path / "two" / name).read_text() == (tmp_path / "one" / name).read_text(), name
    assert not part_paths(os.path.join(two, "eval.jsonl"))
