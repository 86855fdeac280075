"""The monthly path end to end at small size: the synthetic-monthly preset (ticlip/presets) builds a stream by
month, trains, evaluates every model on every month and writes the report."""

import csv
import json
import os

import pytest

from ticlip.cli import main
from ticlip.data.stream import TimeStream
from ticlip.experiment import expand, load_experiment, preset_path


def test_monthly_preset_loads():
    exp = load_experiment(preset_path("synthetic-monthly"))
    assert exp.stream.build["granularity"] == "month" and exp.stream.source == "synthetic"
    assert expand(exp)


@pytest.mark.slow
def test_monthly_preset_end_to_end(tmp_path, capsys):
    stream_dir, logs = str(tmp_path / "stream"), str(tmp_path / "runs")
    overrides = [f"stream.path={stream_dir}", f"logs={logs}", "stream.options.num_pairs=200",
                 "stream.options.start_year=2021", "stream.options.end_year=2021",
                 "stream.build.step_ends=[2021-01, 2021-02, 2021-03, 2021-04]", "stream.build.eval_size=8",
                 "methods=[sequential]", "train.iterations_per_step=3", "train.batch_size=8",
                 "eval.subsample=6", "parallel=1"]
    assert main(["run", "synthetic-monthly", *sum((["--set", o] for o in overrides), [])]) == 0
    out = capsys.readouterr().out
    stream = TimeStream.load(stream_dir)
    assert stream.granularity == "month"
    assert stream.labels == ["≤2021-01", "2021-02", "2021-03", "2021-04"]
    assert stream.provenance["counts"]["dropped_out_of_range"] > 0  # May-December left out by step_ends
    run_dir = os.path.join(logs, "synthetic-monthly", "sequential-s0")
    info = json.load(open(os.path.join(run_dir, "run.json")))
    assert [s["finished"] for s in info["steps"]] == [True] * 4
    with open(os.path.join(run_dir, "matrix_retrieval.csv"), newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == stream.labels and len(rows) == 5
    assert all(cell != "" for row in rows[1:] for cell in row[1:])  # every model on every month
    assert os.path.exists(os.path.join(logs, "synthetic-monthly", "report.html")) and "report: " in out
