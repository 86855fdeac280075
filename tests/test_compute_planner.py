"""`ticlip plan` on fabricated budget sweeps whose metric is exactly a + b·log10(compute): the
compute each method needs to match the target has a closed form."""

import csv
import json
import math
import os

import numpy as np
import pytest

from test_report import fabricate_run

from ticlip.cli import main
from ticlip.report.compute_planner import BOOTSTRAP, COVARIANCE, PlanError, make_plan
from ticlip.report.results import load_runs

BUDGETS = (1e12, 1e13, 1e14)  # total training MACs of the three runs of each method


def backward_matrix(v):
    """E whose backward transfer (mean below the diagonal) is exactly ``v``."""
    return np.array([[0.5, 0.1, 0.1], [v, 0.5, 0.1], [v, v, 0.5]])


def sweep(root, method, a, b, seeds=(0,), noise=0.0):
    """Runs of ``method`` at every budget with backward = a + b·log10(MACs) (+ ``noise`` for seed 0,
    − ``noise`` for seed 1: the mean over seeds stays on the line)."""
    dirs = []
    for macs in BUDGETS:
        for k, s in enumerate(seeds):
            v = a + b * math.log10(macs) + (noise if k == 0 else -noise)
            dirs.append(fabricate_run(root, f"{method}-{macs:.0e}-s{s}", method, s, backward_matrix(v),
                                      macs_per_step=macs / 3))
    return dirs


@pytest.fixture
def runs(tmp_path):
    oracle = [fabricate_run(tmp_path, f"oracle-{m:.0e}", "oracle", 0, backward_matrix(0.30 + 0.05 * i),
                            macs_per_step=m / 3) for i, m in enumerate(BUDGETS[1:])]  # 0.35 at 1e14: the target
    slow = sweep(tmp_path, "sequential", -0.45, 0.05)  # 0.15, 0.20, 0.25: needs to extrapolate
    fast = sweep(tmp_path, "cumulative-all", -1.0, 0.10, seeds=(0, 1), noise=0.01)  # 0.2, 0.3, 0.4
    return oracle + slow + fast


def test_known_answer_and_interval(runs):
    plan = make_plan(load_runs(runs), target="oracle", metric="backward", tolerance=1.0, samples=500)
    assert plan.target_macs == pytest.approx(1e14) and plan.target_score == pytest.approx(0.35)
    rows = {r.method: r for r in plan.rows}
    assert set(rows) == {"sequential", "cumulative-all"}
    # sequential: 0.35 − 0.01 = −0.45 + 0.05·x  →  x = 15.8
    seq = rows["sequential"]
    assert seq.params["a"] == pytest.approx(-0.45, abs=1e-9) and seq.params["b"] == pytest.approx(0.05, abs=1e-9)
    assert seq.needed_macs == pytest.approx(10 ** 15.8, rel=1e-6)
    assert seq.ratio == pytest.approx(10 ** 1.8, rel=1e-6)
    assert seq.extrapolated and seq.uncertainty.startswith(COVARIANCE)
    # exact points on a line: the fit's covariance is zero, so is the interval (target: one seed)
    assert seq.low_macs == pytest.approx(seq.needed_macs, rel=1e-4)
    assert seq.high_macs == pytest.approx(seq.needed_macs, rel=1e-4)
    # cumulative-all: 0.34 = −1.0 + 0.1·x  →  x = 13.4, inside the measured budgets; two seeds ± 1 point
    cum = rows["cumulative-all"]
    assert cum.needed_macs == pytest.approx(10 ** 13.4, rel=1e-6) and not cum.extrapolated
    assert cum.uncertainty.startswith(BOOTSTRAP)
    assert cum.low_macs < cum.needed_macs < cum.high_macs
    assert cum.high_macs / cum.low_macs < 10  # ± 1 point on a 10-points-per-decade slope: well under a decade


def test_a_method_that_does_not_improve_never_reaches_the_target(tmp_path, runs):
    flat = sweep(tmp_path, "frozen", 0.10, 0.0)
    plan = make_plan(load_runs(runs + flat), target="oracle", samples=100)
    row = next(r for r in plan.rows if r.method == "frozen")
    assert math.isinf(row.needed_macs) and "never" in plan.to_markdown()


def test_bad_questions_are_one_line_errors(runs):
    with pytest.raises(PlanError, match="target method 'nope' is not among the runs"):
        make_plan(load_runs(runs), target="nope")
    with pytest.raises(PlanError, match="metric 'sideways'"):
        make_plan(load_runs(runs), target="oracle", metric="sideways")
    with pytest.raises(PlanError, match="samples 0: must be at least 1"):
        make_plan(load_runs(runs), target="oracle", samples=0)
    with pytest.raises(PlanError, match="target_macs -1"):
        make_plan(load_runs(runs), target="oracle", target_macs=-1)
    with pytest.raises(PlanError, match="four or more compute budgets"):
        make_plan(load_runs(runs), target="oracle", form="logistic")


@pytest.mark.slow  # the CLI end to end with the figure (about 7 s on a loaded machine)
def test_plan_cli_writes_table_json_and_figure(runs, tmp_path, capsys):
    out = tmp_path / "plan"
    assert main(["plan", *runs, "--target", "oracle", "--metric", "backward", "--tolerance", "1.0",
                 "--samples", "200", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| sequential | 3 |" in printed and "extrapolated" in printed
    with open(out / "plan.csv", newline="", encoding="utf-8") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert float(rows["cumulative-all"]["needed_macs"]) == pytest.approx(10 ** 13.4, rel=1e-6)
    assert json.load(open(out / "plan.json"))["methods"]["sequential"]["extrapolated"] is True
    with open(out / "plots" / "plan_fit.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert main(["plan", *runs, "--target", "nope"]) == 2
    err = capsys.readouterr().err
    assert "target method 'nope'" in err and "Traceback" not in err


def test_logistic_fit_recovers_a_saturating_curve(tmp_path):
    """y = L / (1 + exp(−k (x − x0))) with L = 0.5, k = 1, x0 = 13 at four budgets; the target's 0.40
    minus 1 point is reached at x = x0 − ln(L / 0.39 − 1) / k."""
    L, k, x0 = 0.5, 1.0, 13.0
    dirs = [fabricate_run(tmp_path, "oracle", "oracle", 0, backward_matrix(0.40), macs_per_step=1e15 / 3)]
    for x in (11.0, 12.0, 13.0, 14.0, 15.0):
        dirs.append(fabricate_run(tmp_path, f"seq-{x:g}", "sequential", 0,
                                  backward_matrix(L / (1 + math.exp(-k * (x - x0)))), macs_per_step=10 ** x / 3))
    plan = make_plan(load_runs(dirs), target="oracle", form="logistic", samples=200)
    row = plan.rows[0]
    assert row.params["top"] == pytest.approx(L, abs=1e-4) and row.params["x0"] == pytest.approx(x0, abs=1e-3)
    assert math.log10(row.needed_macs) == pytest.approx(x0 - math.log(L / 0.39 - 1) / k, abs=1e-3)
    # a target above the plateau (0.60 − 1 point > L) is never reached
    dirs[0] = fabricate_run(tmp_path, "oracle-hi", "oracle", 0, backward_matrix(0.60), macs_per_step=1e15 / 3)
    never = make_plan(load_runs(dirs), target="oracle", form="logistic", samples=50)
    assert math.isinf(never.rows[0].needed_macs)
