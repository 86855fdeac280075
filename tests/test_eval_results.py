"""ticlip.eval.results, the one owner of the result files: what it writes, it (and the report) reads back."""

import json
import math
import os

import numpy as np
import pytest

from ticlip.eval import results
from ticlip.eval.metrics import MatrixError
from ticlip.run_layout import RunInfo, StepRecord

STEPS = [(0, "≤2014"), (1, "2015"), (2, "2016")]


def record(m, task, j, value, metric="mean_recall@1"):
    return {"model_step": {"index": m, "label": STEPS[m][1]}, "task": task,
            "eval_step": None if j is None else {"index": j, "label": STEPS[j][1]},
            "metric": metric, "metrics": {metric: value}}


def records():
    out = [record(m, "retrieval", j, 0.1 * m + 0.01 * j) for m in range(2) for j in range(3)]
    out += [record(m, "digits", None, 0.5 + 0.1 * m, "acc1") for m in range(2)]
    out.append(record(0, "retrieval", 0, 0.99))  # a re-run: the last line wins
    return out


def test_eval_log_round_trip(tmp_path):
    path = str(tmp_path / results.EVAL_LOG)
    for rec in records():
        results.append_result(path, rec)
    back = results.read_results(path)
    assert back == records()
    latest = results.latest_results(back)
    assert len(latest) == 8 and latest[(0, "retrieval", 0)]["metrics"]["mean_recall@1"] == 0.99


def test_tables_and_summary_round_trip(tmp_path):
    out = str(tmp_path)
    files, summary = results.write_result_tables(out, records(), STEPS, STEPS, task_order=["digits", "retrieval"],
                                                 skipped_tasks={"cifar10": "no data"})
    matrix = os.path.join(out, results.matrix_filename("retrieval"))
    assert files == [matrix, os.path.join(out, results.STATIC_SCORES), os.path.join(out, results.SUMMARY)]
    E, rows, cols = results.read_matrix(matrix)
    assert rows == cols == [label for _, label in STEPS]
    assert E[0].tolist() == [0.99, 0.01, 0.02] and E[1].tolist() == pytest.approx([0.1, 0.11, 0.12])
    assert np.isnan(E[2]).all()
    S, rows, tasks = results.read_static_scores(os.path.join(out, results.STATIC_SCORES))
    assert tasks == ["digits"] and rows == [label for _, label in STEPS]
    assert S[:2, 0].tolist() == pytest.approx([0.5, 0.6]) and math.isnan(S[2, 0])
    assert results.read_summary(os.path.join(out, results.SUMMARY)) == summary
    assert summary["skipped_tasks"] == {"cifar10": "no data"}
    assert summary["dynamic"]["retrieval"]["missing"] == 3 and summary["static"]["digits"]["last"] == pytest.approx(0.6)
    assert results.matrix_files(out) == [matrix]
    assert results.task_of_matrix_file(matrix) == "retrieval"


def test_the_report_reads_what_the_evaluator_writes(tmp_path):
    from ticlip.report.results import load_run

    run_dir = str(tmp_path / "run")
    steps = [StepRecord(i, label, f"steps/{i}/checkpoint.pt", finished=True) for i, label in STEPS[:2]]
    RunInfo("r", "stream", "ticlip-tiny-32", "sequential", steps=steps).save(run_dir)
    for rec in records():
        results.append_result(os.path.join(run_dir, results.EVAL_LOG), rec)
    results.write_result_tables(run_dir, results.read_results(os.path.join(run_dir, results.EVAL_LOG)), STEPS, STEPS)
    run = load_run(run_dir)
    assert run.labels == [label for _, label in STEPS]
    assert run.matrices["retrieval"][0].tolist() == [0.99, 0.01, 0.02]
    assert run.static["digits"][:2].tolist() == pytest.approx([0.5, 0.6])
    assert run.metric_names == {"retrieval": "mean_recall@1", "digits": "acc1"}


def test_a_task_name_that_is_not_a_file_name_round_trips_through_the_log(tmp_path):
    from ticlip.report.results import load_run

    run_dir = str(tmp_path / "run")
    RunInfo("r", "stream", "m", "sequential", steps=[StepRecord(0, "≤2014", "x", finished=True)]).save(run_dir)
    recs = [record(0, "a/b c", j, 0.5) for j in range(3)]
    for rec in recs:
        results.append_result(os.path.join(run_dir, results.EVAL_LOG), rec)
    results.write_result_tables(run_dir, recs, STEPS, STEPS)
    assert os.path.exists(os.path.join(run_dir, "matrix_a_b_c.csv"))
    assert list(load_run(run_dir).matrices) == ["a/b c"]


def test_labelled_tables_name_a_bad_cell(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("model_step,digits\n2015,0.5\n2016,abc\n", encoding="utf-8")
    with pytest.raises(MatrixError, match=r"row '2016', column 'digits' is not a number: 'abc'"):
        results.read_static_scores(str(path))
    path.write_text("model_step,digits\n2015,0.5,0.7\n", encoding="utf-8")
    with pytest.raises(MatrixError, match="2 values for 1 columns"):
        results.read_static_scores(str(path))


def test_summaries_are_strict_json(tmp_path):
    path = results.write_summary(str(tmp_path / "s.json"), {"a": math.nan, "b": [1.0, math.nan]})
    assert json.loads(open(path).read()) == {"a": None, "b": [1.0, None]}
