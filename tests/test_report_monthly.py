"""The report of a monthly stream (~100 steps) stays readable: heatmaps with thinned ticks plus a
year-level heatmap, and per-year ID / backward / forward (report.plots, report.tables, report.write).
The run is fabricated through the results writers of ticlip.eval.results."""

import json
import os
import re

import numpy as np
import pytest

from ticlip.eval.results import matrix_filename, write_table_csv
from ticlip.report.plots import MAX_HEATMAP_STEPS, aggregate_by_year, thinned_ticks, year_of_label
from ticlip.report.tables import per_year_transfer
from ticlip.run_layout import RunInfo, StepRecord

YEARS = list(range(2015, 2023))  # 8 years x 12 months = 96 steps
LABELS = [f"{y}-{m:02d}" for y in YEARS for m in range(1, 13)]


def monthly_matrix():
    """E[i, j] = 0.1 a + 0.01 b + 0.001 + 0.0001 (month(j) - 6.5), a/b = the years' indices of i/j: the
    month term averages to 0 over a year, so E averaged to years is exactly 0.1 a + 0.01 b + 0.001."""
    T = len(LABELS)
    E = np.empty((T, T))
    for i in range(T):
        for j in range(T):
            E[i, j] = 0.1 * (i // 12) + 0.01 * (j // 12) + 0.001 + 0.0001 * (j % 12 + 1 - 6.5)
    return E


def fabricate(root, name, method, E):
    run_dir = os.path.join(root, name)
    steps = [StepRecord(i, LABELS[i], f"steps/{i}/checkpoint.pt", macs=1e12, cumulative_macs=1e12 * (i + 1),
                        finished=True) for i in range(len(LABELS))]
    RunInfo(name=name, stream="data/monthly", model="ticlip-tiny-32", method=method, seed=0, steps=steps).save(run_dir)
    write_table_csv(os.path.join(run_dir, matrix_filename("retrieval")), E, LABELS, LABELS)
    with open(os.path.join(run_dir, "eval.jsonl"), "w", encoding="utf-8") as f:
        f.write(json.dumps({"task": "retrieval", "metric": "mean_recall@1"}) + "\n")
    return run_dir


def expected_year_matrix():
    Y = len(YEARS)
    return np.array([[0.1 * a + 0.01 * b + 0.001 for b in range(Y)] for a in range(Y)])


def test_year_labels_and_ticks():
    assert year_of_label("2016-03") == "2016" and year_of_label("≤2014-06") == "2014"
    assert year_of_label("2016-01–2017-03") == "2017" and year_of_label("cars") is None
    assert thinned_ticks(LABELS[:20]) == list(range(20))  # up to MAX_HEATMAP_STEPS: every step
    ticks = thinned_ticks(LABELS)
    assert ticks == [12 * k for k in range(8)] and len(ticks) <= MAX_HEATMAP_STEPS  # January of each year
    many = [f"s{i}" for i in range(100)]  # no years: every k-th, first and last kept
    t = thinned_ticks(many)
    assert t[0] == 0 and t[-1] == 99 and len(t) <= MAX_HEATMAP_STEPS + 1


def test_aggregate_and_per_year_hand_computed():
    A, years = aggregate_by_year(monthly_matrix(), LABELS)
    assert years == [str(y) for y in YEARS]
    np.testing.assert_allclose(A, expected_year_matrix(), atol=1e-12)
    years, v = per_year_transfer(monthly_matrix(), LABELS)
    Y = len(YEARS)
    np.testing.assert_allclose(v["in_domain"], [0.11 * a + 0.001 for a in range(Y)], atol=1e-12)
    # backward of year a: mean over b < a of 0.1 a + 0.01 b + 0.001; forward over b > a
    assert np.isnan(v["backward"][0]) and np.isnan(v["forward"][-1])
    np.testing.assert_allclose(v["backward"][1:], [0.1 * a + 0.01 * (a - 1) / 2 + 0.001 for a in range(1, Y)])
    np.testing.assert_allclose(v["forward"][:-1], [0.1 * a + 0.01 * (a + Y) / 2 + 0.001 for a in range(Y - 1)])


def test_report_of_96_monthly_steps(tmp_path):
    from PIL import Image

    from ticlip.report import write_report

    E = monthly_matrix()
    E[50:, :] = np.nan  # a run still training: later model steps not evaluated yet
    runs = [fabricate(tmp_path, "seq", "sequential", E),
            fabricate(tmp_path, "cum", "cumulative-all", monthly_matrix())]
    files = write_report(runs, str(tmp_path / "report"))
    names = {os.path.basename(p) for p in files.plots}
    assert {"heatmap_retrieval_sequential.png", "heatmap_years_retrieval_sequential.png",
            "heatmap_years_retrieval_cumulative-all.png"} <= names
    with Image.open(os.path.join(tmp_path, "report", "plots", "heatmap_retrieval_sequential.png")) as im:
        assert max(im.size) < 1400  # a fixed size, not 0.75 inch per step (76 inches at 96 steps)
    page = open(files.html, encoding="utf-8").read()
    assert "96 steps, 2015-01 … 2022-12" in page and "Per year" in page
    rows = re.findall(r"<tr><td>cumulative-all</td><td>(\d{4})</td><td>(\d+)</td><td>([^<]+)</td>"
                      r"<td>([^<]+)</td><td>([^<]+)</td></tr>", page)
    assert [r[0] for r in rows] == [str(y) for y in YEARS] and {r[1] for r in rows} == {"12"}
    a = 2  # 2017: backward 0.2 + 0.005 + 0.001, ID 0.22 + 0.001, forward 0.2 + 0.05 + 0.001 (in %)
    assert rows[a][2:] == ("20.6", "22.1", "25.1")
    seq = re.findall(r"<tr><td>sequential</td><td>(\d{4})</td><td>\d+</td><td>([^<]+)</td>", page)
    assert seq[-1] == ("2022", "–")  # models of 2022 not evaluated: no backward
