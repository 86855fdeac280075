"""The summary table, laid out like TiC-CLIP's Table 2: method, compute (MACs), static scores (the
last model's), then backward transfer, in-domain and forward transfer of each dynamic task.

Scores are fractions in the data (CSV) and percentages in Markdown/HTML. A cell is "mean ± std over
training seeds [± std over eval subsamples]"; a *chance* row gives each column's chance level (the
retrieval subsample size and the formula are in the footer); a second table gives each method's
paired per-seed difference to a reference method (default ``cumulative-all``) with a marker saying
whether it is within noise (``ticlip.eval.stats.paired_difference``).
"""

from __future__ import annotations

import csv
import html
import io
import math
from dataclasses import dataclass, field

import numpy as np

from ticlip.eval.stats import ALPHA, UNTESTED, PairedResult, paired_difference, tests_used
from ticlip.report.results import MethodGroup, ReportError, mean_std, metric_name
from ticlip.report.task_columns import TASK_COLUMNS, TASK_GROUP, has_task_scores, task_chance, task_value

TRANSFER_COLUMNS = (("backward", "Backward"), ("in_domain", "ID"), ("forward", "Forward"))
DEFAULT_REFERENCE = "cumulative-all"
SIGNIFICANT, WITHIN_NOISE, NOT_TESTED = "*", "≈", "?"


@dataclass
class Column:
    group: str  # "Static tasks", "Dynamic retrieval", ...
    header: str  # "fashion-mnist", "ID", ...
    key: str  # CSV column name
    kind: str  # "score" | "macs"
    task: str | None = None  # the task the column scores
    metric: str | None = None  # transfer key ("backward", ...), "last" (static) or "average"


@dataclass
class Row:
    """One method: per column (mean, std over training seeds), std over eval subsamples, and the
    paired difference to the reference (None: not compared, e.g. compute or the reference itself)."""

    method: str
    seeds: int
    cells: list[tuple[float, float]]
    subsample_std: list[float]
    diffs: list[PairedResult | None]


@dataclass
class SummaryTable:
    columns: list[Column]
    rows: list[Row]
    chance: list[float] = field(default_factory=list)  # per column (NaN: none / unknown)
    subsample: dict[str, tuple[list[int], int]] = field(default_factory=dict)  # task -> (pairs, subsample seeds)
    metrics: dict[str, str] = field(default_factory=dict)  # task -> main metric
    reference: str | None = None  # the reference method's row label (None: no comparison)
    reference_note: str = ""  # why there is no comparison

    # ------------------------------------------------------------------ output
    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        head = ["method", "seeds", "reference"]
        for c in self.columns:
            head += [c.key, f"{c.key}_std"]
            if c.kind == "score":
                head += [f"{c.key}_subsample_std", f"{c.key}_chance", f"{c.key}_diff", f"{c.key}_diff_p",
                         f"{c.key}_diff_within_noise"]
        w.writerow(head)
        for r in self.rows:
            row = [r.method, r.seeds, self.reference or ""]
            for k, (c, (mean, std)) in enumerate(zip(self.columns, r.cells)):
                row += [_raw(mean), _raw(std)]
                if c.kind == "score":
                    d = r.diffs[k]
                    row += [_raw(r.subsample_std[k]), _raw(self.chance[k] if self.chance else math.nan),
                            "" if d is None else _raw(d.diff), "" if d is None else _raw(d.p),
                            "" if d is None or d.within_noise is None else str(d.within_noise).lower()]
            w.writerow(row)
        return buf.getvalue()

    def _cells(self, r: Row) -> list[str]:
        return [format_cell(m, s, c.kind, r.subsample_std[k]) for k, (c, (m, s)) in enumerate(zip(self.columns, r.cells))]

    def _chance_cells(self) -> list[str]:
        return [("–" if c.kind != "score" or math.isnan(x) else f"{100 * x:.1f}") for c, x in zip(self.columns, self.chance)]

    def has_chance(self) -> bool:
        return any(not math.isnan(x) for x in self.chance)

    def _diff_cells(self, r: Row) -> list[str]:
        return [format_diff(d, reference=(r.method == self.reference)) for c, d in zip(self.columns, r.diffs)
                if c.kind == "score"]

    def headers(self) -> list[str]:
        return ["Method"] + [c.header if c.group in ("", c.header) else f"{c.group}: {c.header}" for c in self.columns]

    def footer(self) -> list[str]:
        """The notes under the table: units, what ± means, subsample sizes, chance formulas, the test."""
        notes = ["Scores in %; compute is training MACs up to the last step. A cell is mean ± sample std over "
                 "training seeds (where a method has several) [± std over eval subsamples, mean over the "
                 "method's runs, where recorded]."]
        for task, (sizes, seeds) in self.subsample.items():
            if sizes:
                n = sizes[0] if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
                notes.append(f"{task}: retrieval subsamples of n = {n} pairs per step, {seeds} subsample seed(s); "
                             f"chance of {self.metrics.get(task, 'mean_recall@1')} = k/n (Recall@k with one right "
                             "answer among n, the same for both directions and so for their mean).")
        if any(t not in self.subsample for t in self.metrics) or any(c.metric == "last" for c in self.columns):
            notes.append("Chance of classification = k/C for top-k accuracy over C classes (1/C for acc1); "
                         "'–' where the eval records do not say.")
        return notes

    def comparison_footer(self) -> list[str]:
        if self.reference is None:
            return [self.reference_note] if self.reference_note else []
        tested = [d for r in self.rows for d in r.diffs if d is not None]
        return [f"Difference to {self.reference} in percentage points (method − reference, paired by training seed, "
                f"mean over paired seeds). {SIGNIFICANT} differs at α = {ALPHA}; {WITHIN_NOISE} within noise; "
                f"{NOT_TESTED} cannot be tested (one paired seed). Test: {tests_used(tested)} "
                "(a paired t-test over training seeds with 3 or more seeds; a paired bootstrap over training "
                "seeds and eval subsamples with 2)."]

    def to_markdown(self) -> str:
        head = self.headers()
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(self.columns)) + "|"]
        for r in self.rows:
            lines.append("| " + " | ".join([r.method] + self._cells(r)) + " |")
        if self.has_chance():
            lines.append("| " + " | ".join(["*chance*"] + self._chance_cells()) + " |")
        lines.append("")
        lines += self.footer()
        scores = [c for c in self.columns if c.kind == "score"]
        if self.reference is not None and scores:
            lines.append("")
            lines.append(f"Difference to {self.reference}:")
            lines.append("")
            lines.append("| " + " | ".join(["Method"] + [h for c, h in zip(self.columns, head[1:]) if c.kind == "score"]) + " |")
            lines.append("|" + "|".join(["---"] + ["---:"] * len(scores)) + "|")
            for r in self.rows:
                lines.append("| " + " | ".join([r.method] + self._diff_cells(r)) + " |")
            lines.append("")
        lines += self.comparison_footer()
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        groups: list[tuple[str, int]] = []
        for c in self.columns:
            if groups and groups[-1][0] == c.group:
                groups[-1] = (c.group, groups[-1][1] + 1)
            else:
                groups.append((c.group, 1))
        e = html.escape
        top = '<th rowspan="2">Method</th>' + "".join(
            f'<th colspan="{n}">{e(g)}</th>' if g else f'<th rowspan="2">{e(self.columns[sum(k for _, k in groups[:i])].header)}</th>'
            for i, (g, n) in enumerate(groups)
        )
        sub = "".join(f"<th>{e(c.header)}</th>" for c in self.columns if c.group)
        body = "".join(
            "<tr><td>" + e(r.method) + "</td>" + "".join(f"<td>{e(x)}</td>" for x in self._cells(r)) + "</tr>"
            for r in self.rows
        )
        if self.has_chance():
            body += ('<tr class="chance"><td><em>chance</em></td>'
                     + "".join(f"<td><em>{e(x)}</em></td>" for x in self._chance_cells()) + "</tr>")
        out = f'<table class="summary"><thead><tr>{top}</tr><tr>{sub}</tr></thead><tbody>{body}</tbody></table>'
        out += "".join(f'<p class="note">{e(n)}</p>' for n in self.footer())
        scores = [c for c in self.columns if c.kind == "score"]
        if self.reference is not None and scores:
            heads = "".join(f"<th>{e(h)}</th>" for c, h in zip(self.columns, self.headers()[1:]) if c.kind == "score")
            rows = "".join("<tr><td>" + e(r.method) + "</td>" + "".join(f"<td>{e(x)}</td>" for x in self._diff_cells(r))
                           + "</tr>" for r in self.rows)
            out += (f"<h3>Difference to {e(self.reference)}</h3>"
                    f'<table class="diff"><thead><tr><th>Method</th>{heads}</tr></thead><tbody>{rows}</tbody></table>')
        out += "".join(f'<p class="note">{e(n)}</p>' for n in self.comparison_footer())
        return out


def _raw(x: float) -> str:
    return "" if x is None or math.isnan(x) else repr(float(x))


def format_macs(x: float) -> str:
    if x is None or math.isnan(x):
        return "–"
    return f"{x:.2e}".replace("e+", "e")


def format_cell(mean: float, std: float, kind: str = "score", subsample_std: float = math.nan) -> str:
    """"mean ± std over seeds [± std over subsamples]" in % (MACs for compute); '–' when missing."""
    if mean is None or math.isnan(mean):
        return "–"
    if kind == "macs":
        return format_macs(mean) + ("" if std is None or math.isnan(std) or std == 0 else f" ± {format_macs(std)}")
    text = f"{100 * mean:.1f}"
    if std is not None and not math.isnan(std):
        text += f" ± {100 * std:.1f}"
    if subsample_std is not None and not math.isnan(subsample_std):
        text += f" [± {100 * subsample_std:.1f}]"
    return text


def format_diff(d: PairedResult | None, *, reference: bool = False) -> str:
    """A paired difference in percentage points with its marker (see ``SummaryTable.comparison_footer``)."""
    if reference:
        return "reference"
    if d is None or math.isnan(d.diff):
        return "–"
    text = f"{100 * d.diff:+.1f}".replace("-", "−")
    if d.test == UNTESTED:
        return f"{text} {NOT_TESTED}"
    return f"{text} {WITHIN_NOISE if d.within_noise else SIGNIFICANT}"


def ordered_dynamic_tasks(groups: list[MethodGroup]) -> list[str]:
    """Dynamic tasks present in every group; retrieval first, then classification, then the rest."""
    common = [t for t in groups[0].dynamic_tasks() if all(t in g.dynamic_tasks() for g in groups)]
    return sorted(common, key=lambda t: (0 if t == "retrieval" else 1 if t.startswith("classification") else 2, common.index(t)))


def common_static_tasks(groups: list[MethodGroup]) -> list[str]:
    return [t for t in groups[0].static_tasks() if all(t in g.static_tasks() for g in groups)]


def summary_table(groups: list[MethodGroup], reference: str | None = DEFAULT_REFERENCE, *,
                  require_reference: bool = False) -> SummaryTable:
    """The table over ``groups``; differences to the group labelled (or whose runs' method is)
    ``reference``. A reference that is absent is a ReportError when ``require_reference`` (a user
    asked for it), else the table says why there is no comparison."""
    static = common_static_tasks(groups)
    dynamic = ordered_dynamic_tasks(groups)
    columns = [Column("", "Compute (MACs)", "compute_macs", "macs")]
    columns += [Column("Static tasks", t, f"static_{t}_last", "score", t, "last") for t in static]
    if len(static) > 1:
        columns.append(Column("Static tasks", "Average", "static_average_last", "score", None, "average"))
    for t in dynamic:
        columns += [Column(f"Dynamic {t}", h, f"{t}_{k}", "score", t, k) for k, h in TRANSFER_COLUMNS]
    if all(has_task_scores(r) for g in groups for r in g.runs):  # task streams: A_KA, A_ZS, geometric mean
        columns += [Column(TASK_GROUP, h, f"task_{k}", "score", None, k) for k, h in TASK_COLUMNS]

    ref = _find_reference(groups, reference)
    note = ""
    if reference and ref is None:
        known = ", ".join(g.label for g in groups)
        if require_reference:
            raise ReportError(f"reference method {reference!r} is not among the compared methods ({known}); "
                              "pick one of them with --reference")
        note = f"No comparison: the reference method {reference} is not among the runs."
    rows = []
    for g in groups:
        cells, sub, diffs = [], [], []
        for c in columns:
            values = [_value(r, c, static) for r in g.runs]
            cells.append(mean_std(values))
            sub.append(g.subsample_std(c.task, c.metric) if c.task in dynamic and c.kind == "score" else math.nan)
            diffs.append(None if c.kind != "score" or ref is None or g is ref else _paired(g, ref, c, static))
        rows.append(Row(g.label, len(g.runs), cells, sub, diffs))
    chance = [_chance(groups[0], c) for c in columns]
    subsample = {}
    metrics = {}
    for t in dynamic:
        metrics[t] = metric_name(groups, t)
        sizes = sorted({n for g in groups for n in g.subsample_sizes(t)})
        if sizes and "recall" in metrics[t]:
            seeds = max((r.cells[t].per_seed.shape[0] for g in groups for r in g.runs
                         if t in r.cells and r.cells[t].per_seed is not None), default=1)
            subsample[t] = (sizes, seeds)
    return SummaryTable(columns, rows, chance, subsample, metrics, ref.label if ref is not None else None, note)


def _find_reference(groups: list[MethodGroup], reference: str | None) -> MethodGroup | None:
    if not reference:
        return None
    for g in groups:
        if g.label == reference:
            return g
    matches = [g for g in groups if g.runs[0].info.method == reference]
    return matches[0] if len(matches) == 1 else None


def _value(run, c: Column, static: list[str]) -> float:
    from ticlip.eval.metrics import static_summary, transfer_metrics

    if c.kind == "macs":
        return run.total_macs()
    if c.metric == "last":
        return static_summary(run.static[c.task])["last"]
    if c.metric == "average":
        return float(np.mean([_last(run.static[t]) for t in static]))
    if c.group == TASK_GROUP:
        return task_value(run, c.metric)
    v = transfer_metrics(run.matrices[c.task])[c.metric]
    return math.nan if v is None else float(v)


def _paired(g: MethodGroup, ref: MethodGroup, c: Column, static: list[str]) -> PairedResult:
    """``g`` − ``ref`` on column ``c``, the runs paired by training seed."""
    seeds = [s for s in g.seeds if s in ref.seeds]
    mine = {r.info.seed: r for r in g.runs}
    theirs = {r.info.seed: r for r in ref.runs}
    a = [_value(mine[s], c, static) for s in seeds]
    b = [_value(theirs[s], c, static) for s in seeds]
    subs_a = subs_b = None
    if c.metric not in ("last", "average", None) and c.group != TASK_GROUP:
        subs_a = [mine[s].subsample_values(c.task, c.metric) for s in seeds]
        subs_b = [theirs[s].subsample_values(c.task, c.metric) for s in seeds]
    return paired_difference(a, b, method_subsamples=subs_a, reference_subsamples=subs_b)


def _chance(g: MethodGroup, c: Column) -> float:
    if c.kind != "score":
        return math.nan
    if c.metric == "last":
        return g.runs[0].static_chance.get(c.task, math.nan)
    if c.metric == "average":
        return math.nan
    if c.group == TASK_GROUP:
        return task_chance(g, c.metric)
    return g.chance(c.task, c.metric)


def _last(scores: np.ndarray) -> float:
    present = scores[~np.isnan(scores)]
    return float(present[-1]) if present.size else math.nan


__all__ = ["DEFAULT_REFERENCE", "Column", "Row", "SummaryTable", "format_cell", "format_diff", "format_macs", "mean_std",
           "summary_table"]


# --------------------------------------------------------------------------- per-year summaries (many steps)
def per_year_transfer(E: np.ndarray, labels: list[str]) -> tuple[list[str], dict[str, np.ndarray]] | None:
    """Per year: ID, backward and forward of the year-level matrix A (E averaged over the steps of each
    year, ``report.plots.aggregate_by_year``): ID[y] = A[y, y] (models of year y on data of year y),
    backward[y] = mean of A[y, earlier years], forward[y] = mean of A[y, later years] (NaN where there
    is none). None when the step labels carry no years."""
    from ticlip.report.plots import aggregate_by_year, year_groups

    if year_groups(labels) is None:
        return None
    A, years = aggregate_by_year(E, labels)
    Y = len(years)

    def mean(values):
        v = np.asarray(values, dtype=float)
        v = v[~np.isnan(v)]
        return float(v.mean()) if v.size else math.nan

    out = {"in_domain": np.array([A[y, y] for y in range(Y)]),
           "backward": np.array([mean(A[y, :y]) for y in range(Y)]),
           "forward": np.array([mean(A[y, y + 1:]) for y in range(Y)])}
    return years, out


def per_year_html(groups: list[MethodGroup], task: str) -> str:
    """An HTML table per task: one row per (method, year) with the year's number of steps and its ID,
    backward and forward in % (see ``per_year_transfer``); empty when labels carry no years."""
    from ticlip.report.plots import year_groups

    labels = groups[0].labels
    years = year_groups(labels)
    if years is None:
        return ""
    e = html.escape
    head = "".join(f"<th>{e(name)}</th>" for _, name in TRANSFER_COLUMNS)
    rows = []
    for g in groups:
        got = per_year_transfer(g.mean_matrix(task), g.labels)
        if got is None:
            continue
        ys, values = got
        for k, y in enumerate(ys):
            n = len(years[k][1]) if k < len(years) else 0
            cells = "".join(f"<td>{_pct(values[key][k])}</td>" for key, _ in TRANSFER_COLUMNS)
            rows.append(f"<tr><td>{e(g.label)}</td><td>{e(y)}</td><td>{n}</td>{cells}</tr>")
    return (f'<table class="per-year"><thead><tr><th>method</th><th>year</th><th>steps</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _pct(v: float) -> str:
    return "–" if v is None or math.isnan(v) else f"{100 * v:.1f}"
