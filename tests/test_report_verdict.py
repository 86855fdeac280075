"""The report's verdict pieces on small hand-made inputs: static tasks drawn against their chance
level, the stream's per-step sizes, training curves across steps, the compute planner's section."""

import json
import os

import numpy as np
import pytest

from test_report import LABELS, fabricate_run, seq_matrix


def test_static_curves_draw_each_tasks_chance_level(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ticlip.report import plots

    seen = []
    orig = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: seen.append(
        [[ln.get_label() for ln in ax.lines] for ax in fig.axes]) or orig(fig))
    curves = {"digits": {"m": np.array([0.5, 0.6, 0.7])}, "pets": {"m": np.array([0.2, 0.3, 0.3])}}
    plots.step_curves(curves, LABELS, str(tmp_path / "s.png"), title="t", ylabel="acc",
                      chance={"digits": 0.1, "pets": None})
    digits, pets = seen[-1]
    assert "chance (10.0%)" in digits and not any(label.startswith("chance") for label in pets)


def test_stream_sizes_per_step():
    from ticlip.report.verdict import stream_sizes

    manifest = {"steps": [
        {"label": "2015", "train": {"count": 100}, "validation": {"count": 10},
         "eval": {"retrieval": {"count": 20}, "classification": {"count": 30}}},
        {"label": "2016", "train": {"count": 120}, "eval": {"retrieval": {"count": 25}}}]}
    header, rows = stream_sizes(manifest)
    assert header == ["step", "train", "validation", "eval: classification", "eval: retrieval"]
    assert rows == [["2015", 100, 10, 30, 20], ["2016", 120, "–", "–", 25]]


def test_training_curves_count_iterations_across_steps_and_skip_the_trunk(tmp_path):
    from ticlip.report.results import load_run
    from ticlip.report.verdict import training_curves

    run_dir = fabricate_run(tmp_path, "r", "sequential", 0, seq_matrix())
    logs = {0: [("main", 1, 2.0), ("main", 2, 1.8), ("trunk", 2, 9.9)], 1: [("main", 1, 1.7)],
            2: [("main", 1, 1.6), ("branch", 2, 1.5)]}
    for t, recs in logs.items():
        os.makedirs(os.path.join(run_dir, "steps", str(t)), exist_ok=True)
        with open(os.path.join(run_dir, "steps", str(t), "train_log.jsonl"), "w", encoding="utf-8") as f:
            for phase, it, loss in recs:
                f.write(json.dumps({"phase": phase, "iteration": it, "loss": loss, "lr": 0.1}) + "\n")
    x, loss, lr = training_curves(load_run(run_dir))
    assert list(x) == [1, 2, 3, 4, 5] and list(loss) == [2.0, 1.8, 1.7, 1.6, 1.5]


def test_report_shows_the_planner_for_a_budget_sweep(tmp_path):
    from test_compute_planner import BUDGETS, backward_matrix, sweep

    from ticlip.report import write_report

    oracle = [fabricate_run(tmp_path, f"oracle-{m:.0e}", "oracle", 0, backward_matrix(0.30),
                            macs_per_step=m / 3) for m in BUDGETS[1:]]
    runs = oracle + sweep(tmp_path, "sequential", -0.45, 0.05)
    files = write_report(runs, str(tmp_path / "report"))
    page = open(files.html, encoding="utf-8").read()
    assert "Compute planner: fitted curves over the budget sweep" in page
    assert "plan_fit.png" in {os.path.basename(p) for p in files.plots}
    assert "| sequential | 3 |" in page
