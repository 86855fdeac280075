"""Statistics in reports: chance levels, spread over eval subsamples, paired differences to a
reference method, at-chance heatmap cells, and eval pools larger than the subsample in presets."""

import csv
import json
import os

import numpy as np
import pytest

from ticlip.eval.results import EVAL_LOG, matrix_filename, write_table_csv
from ticlip.run_layout import RunInfo, StepRecord

LABELS = ["2019", "2020", "2021"]
N = 50  # pairs per retrieval subsample: chance of Recall@1 = 1/50 = 2 %


def fabricate(root, name, method, seed, per_subsample, *, n=N, static=None, label=""):
    """A run whose eval.jsonl holds one retrieval record per cell with its per-subsample values
    (``per_subsample``: S × T × T), as the evaluator writes them; matrix_retrieval.csv is their mean."""
    run_dir = os.path.join(root, name)
    T = len(LABELS)
    steps = [StepRecord(i, LABELS[i], f"steps/{i}/checkpoint.pt", macs=1e12, cumulative_macs=1e12 * (i + 1),
                        finished=True) for i in range(T)]
    RunInfo(name=name, stream="data/s", model="ticlip-tiny-32", method=method, seed=seed, steps=steps,
            label=label).save(run_dir)
    per = np.asarray(per_subsample, dtype=float)
    E = per.mean(axis=0)
    write_table_csv(os.path.join(run_dir, matrix_filename("retrieval")), E, LABELS, LABELS)
    with open(os.path.join(run_dir, EVAL_LOG), "w", encoding="utf-8") as f:
        for i in range(T):
            for j in range(T):
                vals = [float(v) for v in per[:, i, j]]
                f.write(json.dumps({
                    "model_step": {"index": i, "label": LABELS[i]}, "task": "retrieval", "kind": "dynamic_retrieval",
                    "eval_step": {"index": j, "label": LABELS[j]}, "metric": "mean_recall@1",
                    "metrics": {"mean_recall@1": float(np.mean(vals))},
                    "std": {"mean_recall@1": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0},
                    "seeds": list(range(len(vals))), "n": n, "chance": 1 / n, "trials": 2 * n,
                    "per_seed": {"mean_recall@1": vals}}) + "\n")
    return run_dir


def base(shift=0.0, seed=0, S=3, noise=0.01):
    rng = np.random.default_rng(seed)
    E = np.array([[0.30, 0.10, 0.05], [0.20, 0.35, 0.10], [0.15, 0.25, 0.40]]) + shift
    return E[None] + noise * rng.standard_normal((S, 3, 3))


# ------------------------------------------------------------------------------ the paired test
def test_paired_test_identical_runs_are_within_noise():
    from ticlip.eval.stats import T_TEST, paired_difference

    a = [0.31, 0.29, 0.35, 0.30]
    r = paired_difference(a, list(a))
    assert r.test == T_TEST and r.within_noise is True and r.diff == 0.0 and r.p == 1.0
    # the same runs up to seed noise that does not favour either
    noisy = paired_difference([0.31, 0.29, 0.35, 0.30], [0.30, 0.30, 0.34, 0.31])
    assert noisy.within_noise is True and noisy.p > 0.05


def test_paired_test_a_large_constant_shift_is_significant():
    from ticlip.eval.stats import T_TEST, paired_difference

    rng = np.random.default_rng(1)
    ref = 0.3 + 0.03 * rng.standard_normal(5)  # seeds differ a lot from each other ...
    method = ref + 0.05 + 0.002 * rng.standard_normal(5)  # ... but the method is always 5 points better
    r = paired_difference(method, ref)
    assert r.test == T_TEST and r.within_noise is False and r.p < 0.001
    assert r.diff == pytest.approx(0.05, abs=0.003) and r.low > 0


def test_two_seeds_use_the_bootstrap_and_one_seed_is_not_tested():
    from ticlip.eval.stats import BOOTSTRAP, UNTESTED, paired_difference

    same = paired_difference([0.3, 0.32], [0.3, 0.32], method_subsamples=[[0.29, 0.31], [0.31, 0.33]],
                             reference_subsamples=[[0.29, 0.31], [0.31, 0.33]])
    assert same.test == BOOTSTRAP and same.within_noise is True
    shifted = paired_difference([0.4, 0.42], [0.3, 0.32], method_subsamples=[[0.39, 0.41], [0.41, 0.43]],
                                reference_subsamples=[[0.29, 0.31], [0.31, 0.33]])
    assert shifted.test == BOOTSTRAP and shifted.within_noise is False and shifted.low > 0
    one = paired_difference([0.9], [0.1])
    assert one.test == UNTESTED and one.within_noise is None and one.diff == pytest.approx(0.8)


def test_chance_levels():
    from ticlip.eval.stats import above_chance, classification_chance, retrieval_chance

    assert retrieval_chance(37) == pytest.approx(1 / 37)
    assert retrieval_chance(1000, "mean_recall@5") == pytest.approx(5 / 1000)
    assert classification_chance(4, "acc1") == 0.25 and classification_chance(4, "acc5") == 1.0
    assert above_chance(0.03, 1 / 37, 74) is False  # 2 hits of 74 at chance 2.7 %
    assert above_chance(0.30, 1 / 37, 74) is True


# ------------------------------------------------------------------------------ tables and report
@pytest.fixture
def runs(tmp_path):
    out = []
    for s in range(3):
        out.append(fabricate(tmp_path, f"cum-s{s}", "cumulative-all", s, base(0.0, seed=s)))
        out.append(fabricate(tmp_path, f"seq-s{s}", "sequential", s, base(-0.1, seed=10 + s)))  # 10 points worse
        out.append(fabricate(tmp_path, f"oracle-s{s}", "oracle", s, base(0.0, seed=20 + s)))  # as good
    return out


def test_table_carries_chance_subsample_std_and_the_paired_difference(runs, tmp_path):
    from ticlip.eval.metrics import transfer_metrics
    from ticlip.report import write_report

    files = write_report(runs, str(tmp_path / "report"))
    with open(files.csv, newline="", encoding="utf-8") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    for r in rows.values():
        assert float(r["retrieval_in_domain_chance"]) == pytest.approx(1 / N)
        assert float(r["retrieval_backward_chance"]) == pytest.approx(1 / N)
        assert r["reference"] == "cumulative-all"
    # std over eval subsamples: ID recomputed on each subsample, std over subsamples, mean over seeds
    expected = np.mean([np.std([transfer_metrics(E)["in_domain"] for E in base(0.0, seed=s)], ddof=1) for s in range(3)])
    assert float(rows["cumulative-all"]["retrieval_in_domain_subsample_std"]) == pytest.approx(expected)
    # paired differences: sequential is 10 points worse (significant), oracle is not different
    assert float(rows["sequential"]["retrieval_in_domain_diff"]) == pytest.approx(-0.1, abs=0.02)
    assert rows["sequential"]["retrieval_in_domain_diff_within_noise"] == "false"
    assert rows["oracle"]["retrieval_in_domain_diff_within_noise"] == "true"
    assert rows["cumulative-all"]["retrieval_in_domain_diff"] == ""  # the reference itself
    md = open(files.markdown, encoding="utf-8").read()
    assert "| *chance* |" in md and "n = 50 pairs" in md and "k/n" in md
    assert "paired t-test over training seeds" in md and "Difference to cumulative-all" in md
    assert f"[± {100 * expected:.1f}]" in md
    summary = json.load(open(files.summary, encoding="utf-8"))
    cell = summary["sequential"]["dynamic"]["retrieval"]["in_domain"]
    assert cell["chance"] == pytest.approx(1 / N) and cell["vs_reference"]["within_noise"] is False
    assert summary["sequential"]["dynamic"]["retrieval"]["subsample_pairs"] == [N]
    assert "chance" in open(files.html, encoding="utf-8").read()


def test_compare_reference_is_selectable_and_one_seed_is_untested(tmp_path, capsys):
    from ticlip.cli import main

    a = fabricate(tmp_path, "cum", "cumulative-all", 0, base(0.0))
    b = fabricate(tmp_path, "orc", "oracle", 0, base(0.2))
    assert main(["compare", a, b, "--reference", "oracle", "--format", "csv"]) == 0
    rows = {r["method"]: r for r in csv.DictReader(capsys.readouterr().out.splitlines())}
    assert rows["cumulative-all"]["reference"] == "oracle"
    assert float(rows["cumulative-all"]["retrieval_in_domain_diff"]) == pytest.approx(-0.2, abs=0.03)
    assert rows["cumulative-all"]["retrieval_in_domain_diff_within_noise"] == ""  # one seed: not tested
    assert main(["compare", a, b, "--reference", "oracle"]) == 0
    md = capsys.readouterr().out
    assert "?" in md and "cannot be tested" in md
    assert main(["compare", a, b, "--reference", "lwf"]) == 2
    assert "lwf" in capsys.readouterr().err


def test_variants_of_one_method_are_separate_rows_over_seeds(tmp_path):
    """Runs labelled with an experiment's variant name group by that label: two variants of one method,
    two seeds each, give two rows of two seeds (not one row of four, nor four single-seed rows)."""
    from ticlip.report.results import group_runs, load_runs

    runs = [fabricate(tmp_path, f"{v}-s{s}", "merge", s, base(0.1 * s), label=v) for v in ("ties", "slerp")
            for s in (0, 1)]
    groups = group_runs(load_runs(runs))
    assert [(g.label, g.seeds) for g in groups] == [("ties", [0, 1]), ("slerp", [0, 1])]


def test_heatmap_marks_cells_not_above_chance(tmp_path):
    from ticlip.report import plots
    from ticlip.report.results import group_runs, load_runs

    per = base(0.0, S=3, noise=0.0)
    per[:, 0, 2] = 0.02  # at chance (1/50)
    per[:, 1, 2] = 0.03  # 3 hits of 100 at chance 2 %: not above chance either
    run = fabricate(tmp_path, "r", "sequential", 0, per)
    (group,) = group_runs(load_runs([run]))
    mask = group.at_chance("retrieval")
    assert mask[0, 2] and mask[1, 2] and mask.sum() == 2
    fig = plots.heatmap_figure(group.mean_matrix("retrieval"), LABELS, title="t", at_chance=mask)
    ax = fig.axes[0]
    marked = sorted((p.get_y() + 0.5, p.get_x() + 0.5) for p in ax.patches if p.get_gid() == "at-chance")
    assert marked == [(0.0, 2.0), (1.0, 2.0)] and all(p.get_hatch() for p in ax.patches if p.get_gid() == "at-chance")
    assert ax.get_legend() is not None and "chance" in ax.get_legend().get_texts()[0].get_text()
    import matplotlib.pyplot as plt

    plt.close(fig)


# ------------------------------------------------------------------------------ presets
def _presets():
    from ticlip.experiment import preset_path

    root = os.path.dirname(preset_path("emoji-cpu"))
    return sorted(os.path.join(root, f) for f in os.listdir(root) if f.endswith(".yaml"))


@pytest.mark.parametrize("path", _presets(), ids=os.path.basename)
def test_presets_hold_out_more_pairs_than_they_subsample(path):
    """The eval pool of every step (the build's eval_size, with the source's defaults) is larger than
    the retrieval subsample, so the subsample seeds draw different pairs."""
    from ticlip.data.build.config import BuildConfig
    from ticlip.data.sources import get_source
    from ticlip.eval.config import EvalConfig
    from ticlip.experiment import load_experiment

    exp = load_experiment(path, [])
    if exp.stream.source and get_source(exp.stream.source).kind == "tasks":
        pytest.skip("a task stream scores classification over whole eval sets: no retrieval subsample")
    ev = EvalConfig(**{k: v for k, v in exp.eval.items() if k != "enabled"})
    defaults = get_source(exp.stream.source).default_build if exp.stream.source else {}
    build = BuildConfig(**{**(defaults or {}), **exp.stream.build})
    assert ev.subsample is not None, "a preset fixes its subsample size (the paper's protocol)"
    assert build.eval_size > ev.subsample
