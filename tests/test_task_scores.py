"""Task-stream scores (issue 13 point 5): knowledge accumulation, zero-shot retention, their geometric mean,
per step and at the end, through `ticlip eval` result files and `ticlip report` / `ticlip compare`."""

from __future__ import annotations

import csv
import math
import os

import numpy as np
import pytest

from ticlip.eval.task_scores import (geometric_mean, held_out_specs, knowledge_accumulation, task_stream_summary,
                                     zero_shot_retention)

NAN = math.nan


def test_knowledge_accumulation_averages_the_tasks_seen_so_far():
    E = np.array([[0.8, 0.1, 0.2],
                  [0.6, 0.9, 0.3],
                  [0.5, 0.7, 1.0]])
    # step 0: E00; step 1: (E10 + E11) / 2; step 2: (E20 + E21 + E22) / 3
    assert np.allclose(knowledge_accumulation(E), [0.8, 0.75, 2.2 / 3])
    E[2, 1] = NAN  # a missing cell is left out of its row's mean
    assert np.allclose(knowledge_accumulation(E), [0.8, 0.75, 0.75])


def test_zero_shot_retention_and_the_geometric_mean():
    S = np.array([[0.4, 0.6], [0.3, NAN], [0.2, 0.2]])  # model steps x held-out tasks
    zs = zero_shot_retention(S)
    assert np.allclose(zs, [0.5, 0.3, 0.2])
    assert np.allclose(geometric_mean([0.8, 0.75, 0.5], zs), [math.sqrt(0.4), math.sqrt(0.225), math.sqrt(0.1)])


def test_summary_curves_finals_and_chance():
    E = np.array([[1.0, 0.0], [0.5, 0.5]])
    S = np.array([[0.25], [0.64]])
    s = task_stream_summary(E, S, chance_adapt=[0.5, 0.1], chance_held=[0.2])
    assert s["knowledge_accumulation"] == {"curve": [1.0, 0.5], "last": 0.5, "chance": [0.5, 0.3]}
    assert s["zero_shot_retention"]["last"] == 0.64 and s["zero_shot_retention"]["chance"] == 0.2
    assert np.allclose(s["geometric_mean"]["curve"], [0.5, math.sqrt(0.32)])


def test_held_out_tasks_become_static_tasks_and_time_streams_get_none(toy_stream, tmp_path):
    from test_task_streams import toy_records

    from ticlip.data.task_stream import TaskBuildConfig, build_task_stream, group_tasks

    s = build_task_stream(group_tasks(toy_records(per_class=2)), tmp_path / "s", TaskBuildConfig(held_out=["zoo", "grey"]),
                          name="t", source="t")
    specs = held_out_specs(s)
    assert list(specs) == ["held-out:grey", "held-out:zoo"]  # held-out tasks keep the given order
    assert specs["held-out:zoo"].kind == "zeroshot_classification" and specs["held-out:zoo"].options == {"task": "zoo"}
    assert held_out_specs(toy_stream) == {}


def _csv(path):
    with open(path) as f:
        return list(csv.reader(f))


@pytest.mark.slow  # ~16 s: two tiny runs trained, evaluated and reported
def test_eval_report_and_compare_on_a_tiny_task_stream(tmp_path, capsys):
    """Train two methods 1 iteration per step on the toy task stream, evaluate, report: the summary's
    curves are recomputed here from the matrix and static files; the table has the three columns with
    their chance levels, and the curve plot is written."""
    import torch
    from test_task_streams import toy_records

    from ticlip.cli import main
    from ticlip.config import TrainConfig
    from ticlip.data.task_stream import TaskBuildConfig, build_task_stream, group_tasks
    from ticlip.eval.runner import EvalConfig, evaluate_run
    from ticlip.train.run import train_run

    torch.set_num_threads(1)
    s = build_task_stream(group_tasks(toy_records(per_class=6)), tmp_path / "s",
                          TaskBuildConfig(held_out=["zoo"], eval_per_class=3), name="t", source="t")
    runs = []
    for method in ("sequential", "cumulative-all"):
        train_run(TrainConfig(stream=s.root, method=method, iterations_per_step=1, batch_size=8, lr=1e-4, warmup=0,
                              workers=0, logs=str(tmp_path / "runs"), name=method, progress=False))
        runs.append(str(tmp_path / "runs" / method))
        out = evaluate_run(runs[-1], EvalConfig(tasks=["task-accuracy", "held-out:zoo"], batch_size=64), log=lambda m: None)
    summary = out.summary["task_stream"]
    E = np.array([[float(v) for v in row[1:]] for row in _csv(os.path.join(runs[-1], "matrix_task-accuracy.csv"))[1:]])
    static = _csv(os.path.join(runs[-1], "static_scores.csv"))
    S = np.array([[float(row[static[0].index("held-out:zoo")])] for row in static[1:]])
    assert E.shape == (3, 3) and S.shape == (3, 1)
    assert np.allclose(summary["knowledge_accumulation"]["curve"], [E[0, 0], E[1, :2].mean(), E[2].mean()], atol=1e-6)
    assert np.allclose(summary["zero_shot_retention"]["curve"], S[:, 0], atol=1e-6)
    assert summary["zero_shot_retention"]["chance"] == 0.5 and summary["knowledge_accumulation"]["chance"] == [0.5] * 3
    assert main(["report", *runs, "--out", str(tmp_path / "rep")]) == 0
    table = _csv(tmp_path / "rep" / "table.csv")
    header = table[0]
    for key in ("task_ka", "task_zr", "task_geo"):
        assert key in header, header
    row = next(r for r in table if r[0] == "cumulative-all")
    ka = float(row[header.index("task_ka")])
    zr = float(row[header.index("task_zr")])
    assert ka == pytest.approx(E[2].mean(), abs=1e-4) and zr == pytest.approx(S[2, 0], abs=1e-4)
    assert float(row[header.index("task_geo")]) == pytest.approx(math.sqrt(ka * zr), abs=1e-4)
    assert os.path.isfile(tmp_path / "rep" / "plots" / "steps_task_stream.png")
    capsys.readouterr()
    assert main(["compare", *runs]) == 0
    out = capsys.readouterr().out
    assert "Task stream: Knowledge acc." in out and "Task stream: Zero-shot ret." in out and "Geo. mean" in out
