"""The compute planner (`ticlip plan`): how much training compute does each method need to match a
target method (e.g. Oracle)?

Input: runs of a sweep over budgets (the same methods at several compute budgets, e.g. an experiment
with ``sweep: {budget_scale: [0.25, 0.5, 1, 2]}``). Each run's compute is its cumulative training MACs
(run.json, the same number as the summary table's compute column) and its score one metric of the
reports: a transfer metric of a dynamic task (``backward``, ``in_domain``, ``forward``) or the last
model's score on a static task (``static:<task>``).

Per method, the metric is fitted against x = log10(compute) with ``scipy.optimize.curve_fit``:

- ``loglinear`` (default): y = a + b·x. Scores of CLIP models grow roughly linearly in log-compute over
  the budgets a sweep can afford (TiC-CLIP Figure 1/4 plot them on a log axis; scaling-law curves are
  straight there until they saturate), and a sweep has three or four budgets: two parameters is what
  such data can support, and the answer stays an explicit formula, x* = (y* − a) / b;
- ``logistic``: y = L / (1 + exp(−k (x − x0))), a curve that saturates at L, for sweeps that reach
  the flat part; it needs four or more budgets, and a target above L is unreachable.

The question: the target's score y_T is the mean over seeds of the target's runs at its budget (by
default its largest compute in the sweep, ``target_macs`` picks another); a method reaches it "within
the tolerance" at the smallest compute where its fitted curve reaches y_T − tolerance (tolerance in
percentage points). The answer is reported as MACs and as a ratio to the target's compute; an answer
outside the method's measured budgets is flagged as an extrapolation.

Uncertainty: a bootstrap (``samples`` draws): each budget point's runs (training seeds) are resampled
with replacement and, where eval.jsonl kept per-subsample values, each run's eval subsamples too; the
target's score is resampled the same way; the curve is refitted and the answer solved again; the
2.5 / 97.5 % quantiles of log-compute give the interval. Where there is nothing to resample (one seed,
no subsamples anywhere) the fit's covariance is used instead: parameters drawn from a normal with the
fit's covariance (``curve_fit``'s ``pcov``).
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from ticlip.errors import TiclipError

FORMS = ("loglinear", "logistic")
TRANSFER_KEYS = ("backward", "in_domain", "forward")
BOOTSTRAP = "bootstrap over training seeds and eval subsamples"
COVARIANCE = "normal draws from the fit's covariance"


class PlanError(TiclipError):
    """The runs cannot answer the question (one line saying why)."""


@dataclass
class BudgetPoint:
    """One method at one compute budget: the per-run values (one per training seed) and, per run, its
    per-eval-subsample values (empty when not recorded)."""

    macs: float
    values: list[float]
    subsamples: list[np.ndarray] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))


@dataclass
class PlanRow:
    method: str
    budgets: int  # distinct compute budgets fitted
    form: str
    params: dict[str, float]
    needed_macs: float  # inf: never reaches the target on the fitted curve
    low_macs: float
    high_macs: float
    ratio: float  # needed / target compute
    low_ratio: float
    high_ratio: float
    measured: tuple[float, float]  # smallest and largest compute of the method's runs
    extrapolated: bool
    uncertainty: str

    def curve(self, x: np.ndarray) -> np.ndarray:
        """The fitted curve at log10 compute ``x``."""
        return curve_values(self, x)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["measured"] = list(self.measured)
        return d


@dataclass
class Plan:
    target: str
    metric: str  # e.g. "retrieval backward"
    tolerance: float  # percentage points
    target_macs: float
    target_score: float  # fraction
    rows: list[PlanRow]
    points: dict[str, list[BudgetPoint]]  # method -> its budgets (for the figure)
    form: str

    def goal(self) -> float:
        return self.target_score - self.tolerance / 100.0

    def to_markdown(self) -> str:
        lines = [f"Compute to reach {self.target}'s {self.metric} ({100 * self.target_score:.1f} at "
                 f"{_macs(self.target_macs)} MACs) within {self.tolerance:g} points: fit {self.form} in log10(MACs)",
                 "", "| Method | budgets | needed MACs [95% interval] | × target compute [95% interval] | note |",
                 "|---|---:|---:|---:|---|"]
        for r in self.rows:
            lines.append(f"| {r.method} | {r.budgets} | {_macs(r.needed_macs)} [{_macs(r.low_macs)}, {_macs(r.high_macs)}] | "
                         f"{_ratio(r.ratio)} [{_ratio(r.low_ratio)}, {_ratio(r.high_ratio)}] | {_note(r)} |")
        lines += ["", "Interval: " + "; ".join(sorted({r.uncertainty for r in self.rows}))]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["method", "target", "metric", "tolerance_points", "target_macs", "target_score", "budgets", "form",
                    "needed_macs", "low_macs", "high_macs", "ratio", "low_ratio", "high_ratio", "measured_min_macs",
                    "measured_max_macs", "extrapolated", "uncertainty"])
        for r in self.rows:
            w.writerow([r.method, self.target, self.metric, self.tolerance] + [
                repr(float(v)) for v in (self.target_macs, self.target_score)] + [r.budgets, r.form] + [
                repr(float(v)) for v in (r.needed_macs, r.low_macs, r.high_macs, r.ratio, r.low_ratio, r.high_ratio,
                                         *r.measured)] + [str(r.extrapolated).lower(), r.uncertainty])
        return buf.getvalue()

    def to_json(self) -> dict:
        from ticlip.eval.metrics import json_safe

        return json_safe({"target": self.target, "metric": self.metric, "tolerance_points": self.tolerance,
                          "target_macs": self.target_macs, "target_score": self.target_score, "form": self.form,
                          "methods": {r.method: r.as_dict() for r in self.rows}})


def _macs(x: float) -> str:
    if x is None or math.isnan(x):
        return "–"
    if math.isinf(x):
        return "never"
    return f"{x:.2e}".replace("e+", "e")


def _ratio(x: float) -> str:
    if x is None or math.isnan(x):
        return "–"
    return "never" if math.isinf(x) else f"{x:.2f}×"


def _note(r: PlanRow) -> str:
    if math.isinf(r.needed_macs):
        return "does not reach the target on its fitted curve"
    return "extrapolated beyond the measured budgets" if r.extrapolated else "within the measured budgets"


# ----------------------------------------------------------------------------- reading the sweep
def metric_value(run, metric: str, task: str) -> tuple[float, np.ndarray]:
    """(value, per-eval-subsample values) of ``metric`` for one run (``ticlip.report.results.RunResults``)."""
    from ticlip.eval.metrics import static_summary, transfer_metrics

    if metric.startswith("static:"):
        name = metric.split(":", 1)[1]
        if name not in run.static:
            raise PlanError(f"run {run.name} has no static task {name!r} (it has: {', '.join(run.static) or 'none'})")
        return float(static_summary(run.static[name])["last"]), np.array([])
    if task not in run.matrices:
        raise PlanError(f"run {run.name} has no dynamic task {task!r} (it has: {', '.join(run.matrices) or 'none'}); "
                        "pick one with --task")
    v = transfer_metrics(run.matrices[task])[metric]
    subs = run.subsample_values(task, metric)
    return (math.nan if v is None else float(v)), subs[~np.isnan(subs)] if subs.size else subs


def budget_points(runs, metric: str, task: str) -> dict[str, list[BudgetPoint]]:
    """Runs grouped by method (the report row label), then by compute (runs within 1e-6 relative of
    each other are one budget, their seeds repeats)."""
    out: dict[str, list[BudgetPoint]] = {}
    for r in runs:
        label = r.info.label or r.info.method
        macs = r.total_macs()
        if not macs or math.isnan(macs) or macs <= 0:
            raise PlanError(f"run {r.name} records no training compute in run.json; it cannot be placed on the compute axis")
        value, subs = metric_value(r, metric, task)
        if math.isnan(value):
            raise PlanError(f"run {r.name}: {task} {metric} is undefined (too few steps evaluated)")
        points = out.setdefault(label, [])
        for p in points:
            if abs(p.macs - macs) <= 1e-6 * max(p.macs, macs):
                p.values.append(value)
                p.subsamples.append(subs)
                break
        else:
            points.append(BudgetPoint(macs, [value], [subs]))
    for points in out.values():
        points.sort(key=lambda p: p.macs)
    return out


# ----------------------------------------------------------------------------- fitting
def _loglinear(x, a, b):
    return a + b * x


def _logistic(x, top, k, x0):
    return top / (1.0 + np.exp(-k * (x - x0)))


def fit_curve(x: np.ndarray, y: np.ndarray, form: str) -> tuple[np.ndarray, np.ndarray]:
    """(parameters, covariance) of ``form`` fitted to (log10 compute, score) by least squares."""
    from scipy.optimize import curve_fit

    if form == "loglinear":
        if np.unique(x).size < 2:
            raise PlanError("a log-linear fit needs runs at two or more compute budgets")
        p, cov = curve_fit(_loglinear, x, y, p0=[float(np.mean(y)), 0.0])
    elif form == "logistic":
        if np.unique(x).size < 4:
            raise PlanError("a logistic fit needs runs at four or more compute budgets (use --form loglinear)")
        top0 = min(1.0, float(np.max(y)) * 1.2 + 1e-3)
        p, cov = curve_fit(_logistic, x, y, p0=[top0, 1.0, float(np.median(x))],
                           bounds=([float(np.max(y)), 1e-6, -np.inf], [1.0, np.inf, np.inf]), maxfev=20000)
    else:
        raise PlanError(f"form {form!r}: use one of {', '.join(FORMS)}")
    return p, np.nan_to_num(cov, nan=0.0, posinf=0.0)


def solve(params: np.ndarray, form: str, goal: float) -> float:
    """log10 compute at which the fitted curve reaches ``goal`` (inf when it never does)."""
    if form == "loglinear":
        a, b = params
        if b <= 0:
            return -math.inf if a >= goal else math.inf
        return (goal - a) / b
    top, k, x0 = params
    if goal >= top:
        return math.inf
    if goal <= 0:
        return -math.inf
    return x0 - math.log(top / goal - 1.0) / k


def _mean_over_points(points: list[BudgetPoint]) -> tuple[np.ndarray, np.ndarray]:
    x = np.log10([p.macs for p in points for _ in p.values])
    y = np.array([v for p in points for v in p.values])
    return x, y


def _resample_point(p: BudgetPoint, rng) -> list[float]:
    picks = rng.integers(0, len(p.values), size=len(p.values)) if len(p.values) > 1 else [0]
    out = []
    for i in picks:
        subs = p.subsamples[i] if i < len(p.subsamples) else np.array([])
        out.append(float(rng.choice(subs, size=subs.size).mean()) if subs.size > 1 else p.values[i])
    return out


def _resamplable(points: list[BudgetPoint]) -> bool:
    return any(len(p.values) > 1 or any(s.size > 1 for s in p.subsamples) for p in points)


def make_plan(runs, *, target: str, metric: str = "backward", task: str = "retrieval", tolerance: float = 1.0,
              form: str = "loglinear", target_macs: float | None = None, samples: int = 2000,
              seed: int = 0) -> Plan:
    """The compute each method of ``runs`` (``RunResults``) needs to reach ``target``'s ``metric`` within
    ``tolerance`` points (module docstring)."""
    if metric not in TRANSFER_KEYS and not metric.startswith("static:"):
        raise PlanError(f"metric {metric!r}: use one of {', '.join(TRANSFER_KEYS)} or static:<task>")
    if form not in FORMS:
        raise PlanError(f"form {form!r}: use one of {', '.join(FORMS)}")
    if tolerance < 0:
        raise PlanError(f"tolerance {tolerance}: must be >= 0 (percentage points)")
    if samples < 1:
        raise PlanError(f"samples {samples}: must be at least 1 (draws for the interval)")
    if target_macs is not None and not target_macs > 0:
        raise PlanError(f"target_macs {target_macs}: must be a positive number of MACs, e.g. 3.4e18")
    points = budget_points(runs, metric, task)
    if target not in points:
        matches = [m for m in points if m.split(" (")[0] == target]
        if len(matches) != 1:
            raise PlanError(f"target method {target!r} is not among the runs ({', '.join(points)}); pick one with --target")
        target = matches[0]
    tpoints = points[target]
    if target_macs is None:
        tpoint = tpoints[-1]
    else:
        tpoint = min(tpoints, key=lambda p: abs(math.log10(p.macs) - math.log10(target_macs)))
    rng = np.random.default_rng(seed)
    label = metric if metric.startswith("static:") else f"{task} {metric}"
    plan = Plan(target, label, tolerance, tpoint.macs, tpoint.mean, [], points, form)
    others = [m for m in points if m != target]
    if not others:
        raise PlanError(f"the runs hold only the target {target}; add runs of the methods to plan for")
    for m in others:
        pts = points[m]
        x, y = _mean_over_points(pts)
        params, cov = fit_curve(x, y, form)
        x_star = solve(params, form, plan.goal())
        draws = []
        if _resamplable(pts + [tpoint]):
            how = BOOTSTRAP
            for _ in range(samples):
                bx = np.log10([p.macs for p in pts for _ in range(len(p.values))])
                by = np.array([v for p in pts for v in _resample_point(p, rng)])
                goal = float(np.mean(_resample_point(tpoint, rng))) - tolerance / 100.0
                try:
                    bp, _ = fit_curve(bx, by, form)
                except (RuntimeError, ValueError):  # a resample the curve cannot fit: left out
                    continue
                draws.append(solve(bp, form, goal))
        else:
            how = COVARIANCE
            for bp in rng.multivariate_normal(params, cov, size=samples, check_valid="ignore"):
                draws.append(solve(bp, form, plan.goal()))
        lo_x, hi_x = (float(q) for q in np.quantile(np.array(draws), [0.025, 0.975],
                                                                            method="inverted_cdf")) if draws else (x_star, x_star)
        needed, lo, hi = (10.0 ** v if math.isfinite(v) else (math.inf if v > 0 else 0.0) for v in (x_star, lo_x, hi_x))
        measured = (pts[0].macs, pts[-1].macs)
        names = ("a", "b") if form == "loglinear" else ("top", "k", "x0")
        plan.rows.append(PlanRow(
            m, len(pts), form, {n: float(v) for n, v in zip(names, params)}, needed, lo, hi,
            needed / tpoint.macs, lo / tpoint.macs, hi / tpoint.macs, measured,
            bool(math.isfinite(needed) and not (measured[0] * (1 - 1e-9) <= needed <= measured[1] * (1 + 1e-9))),
            f"{how} ({len(draws)} draws)"))
    return plan


def curve_values(row: PlanRow, x: np.ndarray) -> np.ndarray:
    """The fitted curve of ``row`` at log10 compute ``x``."""
    p = list(row.params.values())
    return _loglinear(x, *p) if row.form == "loglinear" else _logistic(x, *p)


def has_budget_sweep(runs) -> bool:
    """Whether some method has runs at two or more compute budgets (the report then fits curves)."""
    seen: dict[str, set] = {}
    for r in runs:
        m = r.total_macs()
        if m and not math.isnan(m):
            seen.setdefault(r.info.label or r.info.method, set()).add(float(f"{m:.6e}"))
    return any(len(v) > 1 for v in seen.values())


def write_plan(plan: Plan, out_dir: str) -> list[str]:
    """plan.csv, plan.json, plan.md and plots/plan_fit.png in ``out_dir`` (atomic writes)."""
    from ticlip.atomic import write_text_atomic
    from ticlip.eval.results import write_summary
    from ticlip.report.plots import compute_fit_plot

    os.makedirs(os.path.join(out_dir, "plots"), exist_ok=True)
    files = [write_text_atomic(os.path.join(out_dir, "plan.csv"), plan.to_csv()),
             write_summary(os.path.join(out_dir, "plan.json"), plan.to_json()),
             write_text_atomic(os.path.join(out_dir, "plan.md"), plan.to_markdown())]
    files.append(compute_fit_plot(plan, os.path.join(out_dir, "plots", "plan_fit.png")))
    return files


__all__ = ["BOOTSTRAP", "COVARIANCE", "FORMS", "BudgetPoint", "Plan", "PlanError", "PlanRow", "budget_points",
           "curve_values", "fit_curve", "has_budget_sweep", "make_plan", "solve", "write_plan"]
