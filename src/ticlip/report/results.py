"""Reading finished runs for reports, and grouping runs of one method over seeds.

A run directory holds (see ticlip.run_layout; the result files are read through ticlip.eval.results):

    run.json             RunInfo: name, stream, model, method, seed, steps (labels, MACs)
    matrix_<task>.csv    E for a dynamic task, step labels as header and index
    static_scores.csv    rows = model steps, columns = static tasks (optional)
    eval.jsonl           one line per (model step, task, eval step): the task kind and metric name

Only run.json is required; a run without any matrix or static score is an error (evaluate it first).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from ticlip.errors import TiclipError
from ticlip.eval.metrics import MatrixError, as_matrix, static_summary, transfer_metrics
from ticlip.eval.results import (
    MATRIX_GLOB,
    STATIC_SCORES,
    SUMMARY,
    CellStats,
    matrix_files,
    read_cell_stats,
    static_chance,
    read_static_scores,
    read_summary,
    read_table,
    task_names,
    task_of_matrix_file,
)
from ticlip.run_layout import RunInfo


class ReportError(TiclipError):
    """A run cannot be reported (missing or malformed results)."""


@dataclass
class RunResults:
    """What a report needs from one run."""

    run_dir: str
    info: RunInfo
    matrices: dict[str, np.ndarray] = field(default_factory=dict)  # task -> E (T×T, NaN = missing)
    labels: list[str] = field(default_factory=list)  # eval step labels (columns of E)
    static: dict[str, np.ndarray] = field(default_factory=dict)  # task -> score per model step
    metric_names: dict[str, str] = field(default_factory=dict)  # task -> main metric ("acc1", ...)
    cells: dict[str, CellStats] = field(default_factory=dict)  # dynamic task -> chance, subsample std, ... per cell
    static_chance: dict[str, float] = field(default_factory=dict)  # static task -> chance level
    warnings: list[str] = field(default_factory=list)

    def subsample_values(self, task: str, key: str) -> np.ndarray:
        """Transfer metric ``key`` of ``task`` recomputed on each eval subsample (empty when the run's
        eval.jsonl kept no per-subsample values)."""
        stats = self.cells.get(task)
        if stats is None or stats.per_seed is None or stats.per_seed.shape[1:] != self.matrices[task].shape:
            return np.array([])
        vals = [transfer_metrics(E)[key] for E in stats.per_seed]
        return np.array([math.nan if v is None else float(v) for v in vals])

    def subsample_std(self, task: str, key: str) -> float:
        """Std (ddof=1) of ``key`` over eval subsamples (NaN when not recorded or fewer than two)."""
        v = self.subsample_values(task, key)
        v = v[~np.isnan(v)]
        return float(v.std(ddof=1)) if v.size > 1 else math.nan

    @property
    def name(self) -> str:
        return self.info.name

    def cumulative_macs(self) -> np.ndarray:
        """Cumulative training MACs after each step (NaN where the run has no record)."""
        by_index = {s.index: s.cumulative_macs for s in self.info.steps}
        return np.array([float(by_index.get(i, math.nan)) for i in range(len(self.labels))])

    def total_macs(self) -> float:
        done = [s.cumulative_macs for s in self.info.steps]
        return float(max(done)) if done else math.nan


def read_matrix_csv(path: str) -> tuple[np.ndarray, list[str]]:
    """E from ``matrix_<task>.csv``, made square over the eval steps: model steps not evaluated yet
    (a run still training) become NaN rows. Rows must be a subset of the columns' step labels."""
    try:
        values, rows, cols = read_table(path)
    except MatrixError as e:
        raise ReportError(str(e)) from None
    if len(set(cols)) != len(cols):
        raise ReportError(f"{path}: repeated step labels in the header")
    if rows == cols:
        E = values
    else:
        unknown = [r for r in rows if r not in cols]
        if unknown:
            raise ReportError(
                f"{path}: model steps {unknown} are not among the eval steps {cols}; "
                "E must have one row per model step and one column per eval step, labelled alike"
            )
        E = np.full((len(cols), len(cols)), np.nan)
        for i, r in enumerate(rows):
            E[cols.index(r)] = values[i]
    try:
        return as_matrix(E), cols
    except MatrixError as e:
        raise ReportError(f"{path}: {e}") from None


def load_run(run_dir: str) -> RunResults:
    """Read one run's results (see the module docstring)."""
    if not os.path.isdir(run_dir):
        raise ReportError(f"no run directory {run_dir}")
    info = RunInfo.load(run_dir)
    res = RunResults(run_dir=run_dir, info=info)
    names, res.metric_names = task_names(run_dir)
    for path in matrix_files(run_dir):
        task = task_of_matrix_file(path, names)
        E, labels = read_matrix_csv(path)
        if res.labels and labels != res.labels:
            raise ReportError(f"{path}: step labels {labels} differ from the run's other matrices {res.labels}")
        res.labels = labels
        res.matrices[task] = E
        res.cells[task] = read_cell_stats(run_dir, task, labels)
    static_path = os.path.join(run_dir, STATIC_SCORES)
    if os.path.exists(static_path):
        try:
            values, rows, tasks = read_static_scores(static_path)
        except MatrixError as e:
            raise ReportError(str(e)) from None
        order = res.labels or [s.label for s in sorted(info.steps, key=lambda s: s.index)]
        if not res.labels:
            res.labels = list(order)
        for k, task in enumerate(tasks):
            col = np.full(len(order), np.nan)
            for i, r in enumerate(rows):
                if r in order:
                    col[order.index(r)] = values[i, k]
                else:
                    res.warnings.append(f"{static_path}: model step {r!r} is not a step of the run; ignored")
            res.static[task] = col
    res.static_chance = static_chance(run_dir)
    if not res.matrices and not res.static:
        raise ReportError(
            f"run {info.name} ({run_dir}) has no evaluation results (no {MATRIX_GLOB} nor {STATIC_SCORES}); "
            f"run `ticlip eval {run_dir}` first"
        )
    if info.steps and len(info.steps) < len(res.labels):
        res.warnings.append(f"run {info.name} has trained {len(info.steps)} of {len(res.labels)} steps")
    skipped = _skipped_samples(run_dir)
    if skipped:
        res.warnings.append(f"run {info.name} skipped unreadable samples (truncated shards, corrupt images): {skipped}")
    return res


def _skipped_samples(run_dir: str) -> str:
    """Samples training (step.json) and evaluation (eval_summary.json) skipped as unreadable, in words."""
    import glob
    import json

    train = 0
    for path in glob.glob(os.path.join(run_dir, "steps", "*", "step.json")):
        try:
            with open(path, encoding="utf-8") as f:
                train += sum(int(n) for n in (json.load(f).get("skipped_samples") or {}).values())
        except (OSError, ValueError, AttributeError):
            continue
    try:
        evaluated = sum(int(n) for counts in (read_summary(os.path.join(run_dir, SUMMARY)).get("skipped_samples")
                                              or {}).values() for n in counts.values())
    except Exception:  # noqa: BLE001 - a missing or old summary has no counts
        evaluated = 0
    parts = [f"{train} while training"] * bool(train) + [f"{evaluated} in eval sets"] * bool(evaluated)
    return ", ".join(parts)


# ---------------------------------------------------------------------------- grouping
@dataclass
class MethodGroup:
    """Runs of one method (one per seed); a report row."""

    label: str
    runs: list[RunResults]

    @property
    def seeds(self) -> list[int]:
        return [r.info.seed for r in self.runs]

    @property
    def labels(self) -> list[str]:
        return self.runs[0].labels

    def dynamic_tasks(self) -> list[str]:
        return [t for t in self.runs[0].matrices if all(t in r.matrices for r in self.runs)]

    def static_tasks(self) -> list[str]:
        return [t for t in self.runs[0].static if all(t in r.static for r in self.runs)]

    def mean_matrix(self, task: str) -> np.ndarray:
        with np.errstate(all="ignore"):
            stack = np.stack([r.matrices[task] for r in self.runs])
            out = np.full(stack.shape[1:], np.nan)
            ok = ~np.all(np.isnan(stack), axis=0)
            out[ok] = np.nanmean(stack[:, ok], axis=0)
            return out

    def metric(self, fn) -> tuple[float, float]:
        """(mean, sample std over seeds; NaN for one seed) of ``fn(run)`` over the group's runs."""
        return mean_std([fn(r) for r in self.runs])

    def transfer(self, task: str, key: str) -> tuple[float, float]:
        return self.metric(lambda r: transfer_metrics(r.matrices[task])[key])

    def static_last(self, task: str) -> tuple[float, float]:
        return self.metric(lambda r: static_summary(r.static[task])["last"])

    def subsample_std(self, task: str, key: str) -> float:
        """Std over eval subsamples of a transfer metric, averaged over the group's runs (NaN when no
        run kept per-subsample values)."""
        v = np.array([r.subsample_std(task, key) for r in self.runs])
        v = v[~np.isnan(v)]
        return float(v.mean()) if v.size else math.nan

    def chance_matrix(self, task: str) -> np.ndarray:
        """Chance level of each cell of E (the first run's; every run of a group has the same stream)."""
        stats = self.runs[0].cells.get(task)
        return stats.chance if stats is not None else np.full_like(self.runs[0].matrices[task], np.nan)

    def chance(self, task: str, key: str) -> float:
        """Chance level of a transfer metric: the same mean over cells as ``key`` takes of E."""
        C = self.chance_matrix(task)
        if np.isnan(C).all():
            return math.nan
        v = transfer_metrics(C).get(key)
        return math.nan if v is None else float(v)

    def subsample_sizes(self, task: str) -> list[int]:
        sizes = set()
        for r in self.runs:
            if task in r.cells:
                sizes.update(r.cells[task].subsample_sizes())
        return sorted(sizes)

    def at_chance(self, task: str) -> np.ndarray:
        """Cells of the mean E not above chance (one-sided binomial test at α = 0.05 on the cell's
        trials); False where the chance level is unknown or the cell is missing."""
        from ticlip.eval.stats import above_chance

        E, C = self.mean_matrix(task), self.chance_matrix(task)
        stats = self.runs[0].cells.get(task)
        trials = stats.trials if stats is not None else np.full_like(E, np.nan)
        out = np.zeros(E.shape, dtype=bool)
        for (i, j), v in np.ndenumerate(E):
            t = trials[i, j]
            verdict = above_chance(v, C[i, j], 0 if math.isnan(t) else int(t))
            out[i, j] = verdict is False
        return out

    def compute(self) -> tuple[float, float]:
        return self.metric(lambda r: r.total_macs())

    def cumulative_macs(self) -> np.ndarray:
        return _nanmean_rows(np.stack([r.cumulative_macs() for r in self.runs]))

    def static_per_step(self, task: str) -> np.ndarray:
        return _nanmean_rows(np.stack([r.static[task] for r in self.runs]))


def _nanmean_rows(stack: np.ndarray) -> np.ndarray:
    out = np.full(stack.shape[1], np.nan)
    for j in range(stack.shape[1]):
        col = stack[:, j][~np.isnan(stack[:, j])]
        if col.size:
            out[j] = col.mean()
    return out


def metric_name(groups: list[MethodGroup], task: str) -> str:
    """The metric a task's results were scored with (the first run that records it), else "score"."""
    for g in groups:
        for r in g.runs:
            if task in r.metric_names:
                return r.metric_names[task]
    return "score"


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of the non-NaN values; std is NaN for fewer than two."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else math.nan)


def group_runs(runs: list[RunResults]) -> list[MethodGroup]:
    """One group per method (or per label: an experiment's variant), in first-seen order. Runs of one
    method with distinct seeds are repeats (reported as mean ± std); when a method has two runs with the
    same seed they are different configurations, so each gets its own row named "method (run name)"."""
    by_method: dict[str, list[RunResults]] = {}
    for r in runs:
        by_method.setdefault(r.info.label or r.info.method, []).append(r)
    groups: list[MethodGroup] = []
    for method, rs in by_method.items():
        seeds = [r.info.seed for r in rs]
        if len(set(seeds)) == len(seeds):
            groups.append(MethodGroup(method, rs))
        else:
            groups += [MethodGroup(f"{method} ({r.name})", [r]) for r in rs]
    for g in groups:
        first = g.runs[0]
        for r in g.runs[1:]:
            if r.labels != first.labels:
                raise ReportError(
                    f"runs {first.name} and {r.name} of method {g.label} have different steps "
                    f"({first.labels} vs {r.labels}); seeds can only be averaged over the same stream"
                )
    return groups


def load_runs(run_dirs: list[str]) -> list[RunResults]:
    if not run_dirs:
        raise ReportError("give at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    names = [r.name for r in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup and len({os.path.abspath(r.run_dir) for r in runs}) < len(runs):
        raise ReportError(f"run directories given twice: {', '.join(dup)}")
    return runs
