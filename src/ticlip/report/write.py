"""`write_report(run_dirs, out_dir)`: tables, figures and report.html for one or more runs.

Output (all written atomically; see docs/REPORTS.md):

    OUT/report.html      self-contained page (figures embedded)
    OUT/table.md         the Table 2-style summary in Markdown
    OUT/table.csv        the same numbers as fractions, with *_std columns
    OUT/summary.json     per method: runs, seeds, compute and every metric (mean, std)
    OUT/plots/*.png      heatmap_<task>_<method>.png, compute_<task>.png, steps_<task>.png,
                         compute_static_<task>.png, steps_static.png, sheet_<stream>_<step>.png,
                         training_loss_lr.png, plan_fit.png (ticlip.report.verdict)
"""

from __future__ import annotations

import html
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np

from ticlip.atomic import write_text_atomic
from ticlip.eval.metrics import json_safe
from ticlip.eval.results import REPORT_HTML, REPORT_SUMMARY, REPORT_TABLE_CSV, REPORT_TABLE_MD, write_summary
from ticlip.report import plots
from ticlip.report.drift import analysis_sections
from ticlip.report.task_columns import has_task_scores, mean_curves
from ticlip.report.html import Figure, Section, render_page
from ticlip.report.results import MethodGroup, ReportError, group_runs, load_runs, metric_name
from ticlip.report.verdict import verdict_html
from ticlip.report.tables import (
    DEFAULT_REFERENCE,
    TRANSFER_COLUMNS,
    SummaryTable,
    common_static_tasks,
    ordered_dynamic_tasks,
    summary_table,
)


@dataclass
class ReportFiles:
    out_dir: str
    html: str
    markdown: str
    csv: str
    summary: str
    plots: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def default_out_dir(run_dirs: list[str]) -> str:
    """A single run reports into its own directory; several into ``<common parent>/report``."""
    if len(run_dirs) == 1:
        return run_dirs[0]
    parent = os.path.commonpath([os.path.abspath(os.path.dirname(os.path.abspath(d))) for d in run_dirs])
    return os.path.join(parent, "report")


def _summary_json(groups: list[MethodGroup], dynamic: list[str], static: list[str], table: SummaryTable) -> dict:
    """Per method: runs, seeds, compute, and per metric mean / std over training seeds /
    subsample_std (over eval subsamples) / chance, and ``vs_reference`` (the paired difference to the
    reference method) for the table's columns."""
    diffs = {r.method: {c.key: d for c, d in zip(table.columns, r.diffs)} for r in table.rows}
    out = {}
    for g in groups:
        m, s = g.compute()
        d = {"runs": [r.name for r in g.runs], "seeds": g.seeds, "compute_macs": {"mean": m, "std": s},
             "reference": table.reference, "dynamic": {}, "static": {}}
        for t in dynamic:
            d["dynamic"][t] = {"subsample_pairs": g.subsample_sizes(t)}
            for key in ("in_domain", "backward", "forward", "backward_normalised", "forward_normalised"):
                mean, std = g.transfer(t, key)
                entry = {"mean": mean, "std": std, "subsample_std": g.subsample_std(t, key),
                         "chance": g.chance(t, key) if key in ("in_domain", "backward", "forward") else None}
                diff = diffs.get(g.label, {}).get(f"{t}_{key}")
                if diff is not None:
                    entry["vs_reference"] = diff.as_dict()
                d["dynamic"][t][key] = entry
        for t in static:
            mean, std = g.static_last(t)
            entry = {"mean": mean, "std": std, "chance": g.runs[0].static_chance.get(t)}
            diff = diffs.get(g.label, {}).get(f"static_{t}_last")
            if diff is not None:
                entry["vs_reference"] = diff.as_dict()
            d["static"][t] = {"last": entry}
        out[g.label] = d
    return json_safe(out)


def write_report(run_dirs: list[str], out_dir: str | None = None, *, title: str | None = None,
                 reference: str | None = DEFAULT_REFERENCE, require_reference: bool = False) -> ReportFiles:
    """Tables, figures and report.html over ``run_dirs``; each method is compared with ``reference``
    (a method name; None: no comparison). An absent reference is an error only when
    ``require_reference`` (the user named it)."""
    runs = load_runs(list(run_dirs))
    groups = group_runs(runs)
    out_dir = out_dir or default_out_dir(list(run_dirs))
    plot_dir = os.path.join(out_dir, "plots")
    os.makedirs(plot_dir, exist_ok=True)
    warnings = [w for r in runs for w in r.warnings]
    streams = sorted({os.path.basename(os.path.normpath(r.info.stream)) or r.info.stream for r in runs})
    if len(streams) > 1:
        warnings.append(f"the runs come from different streams ({', '.join(streams)}); compare with care")

    dynamic = ordered_dynamic_tasks(groups)
    static = common_static_tasks(groups)
    for g in groups:
        missing = [t for t in g.dynamic_tasks() if t not in dynamic] + [t for t in g.static_tasks() if t not in static]
        if missing:
            warnings.append(f"{g.label}: tasks {', '.join(missing)} are not in every run and are left out of the comparison")

    table = summary_table(groups, reference, require_reference=require_reference)
    md_path = write_text_atomic(os.path.join(out_dir, REPORT_TABLE_MD), table.to_markdown())
    csv_path = write_text_atomic(os.path.join(out_dir, REPORT_TABLE_CSV), table.to_csv())
    summary_path = write_summary(os.path.join(out_dir, REPORT_SUMMARY), _summary_json(groups, dynamic, static, table))

    sections: list[Section] = []
    files: list[str] = []
    labels = groups[0].labels
    for task in dynamic:
        metric = metric_name(groups, task)
        sec = Section(f"Dynamic task: {task} ({metric})")
        vrange = _finite_range([g.mean_matrix(task) for g in groups])
        for g in groups:
            E = g.mean_matrix(task)
            seeds = f", mean of {len(g.runs)} seeds" if len(g.runs) > 1 else ""
            if len(g.labels) > plots.MAX_HEATMAP_STEPS:  # monthly streams: readable at ~100 steps
                files += _many_steps_heatmaps(sec, g, task, E, plot_dir, seeds, metric, vrange)
                continue
            p = plots.heatmap(E, g.labels, os.path.join(plot_dir, f"heatmap_{_slug(task)}_{_slug(g.label)}.png"),
                              title=f"{g.label}: {task}{seeds}", metric=metric, vrange=vrange,
                              at_chance=g.at_chance(task))
            sec.figures.append(Figure(p, f"E for {g.label} on {task}: row i = model after step i, column j = step j's data"))
            files.append(p)
        if len(labels) > plots.MAX_HEATMAP_STEPS:
            sec.html += _per_year_html(groups, task)
        series = {}
        for g in groups:
            E = g.mean_matrix(task)
            with np.errstate(all="ignore"):
                row_mean = np.array([np.nanmean(r) if (~np.isnan(r)).any() else math.nan for r in E])
            series[g.label] = (g.cumulative_macs(), row_mean)
        chance = _typical_chance(groups[0].chance_matrix(task))
        p = plots.compute_plot(series, os.path.join(plot_dir, f"compute_{_slug(task)}.png"),
                               title=f"{task}: mean over all steps' data vs compute", ylabel=metric, chance=chance)
        sec.figures.append(Figure(p, f"{task}: the model after each step, scored on every step's data (mean of E's row), against cumulative training MACs"))
        files.append(p)
        curves = {
            "in-domain E[i, i]": {g.label: np.diag(g.mean_matrix(task)) for g in groups},
            "last model on each step's data E[T-1, j]": {g.label: _last_row(g.mean_matrix(task)) for g in groups},
        }
        p = plots.step_curves(curves, labels, os.path.join(plot_dir, f"steps_{_slug(task)}.png"),
                              title=task, ylabel=metric, chance=chance)
        sec.figures.append(Figure(p, f"{task} per step"))
        files.append(p)
        sections.append(sec)
    if groups and all(has_task_scores(r) for g in groups for r in g.runs):
        sec = Section("Task stream: knowledge accumulation and zero-shot retention")
        means = {g.label: mean_curves(g) for g in groups}
        curves = {name: {label: m[key] for label, m in means.items()}
                  for key, name in (("ka", "knowledge accumulation (seen tasks)"),
                                    ("zr", "zero-shot retention (held-out tasks)"), ("geo", "geometric mean"))}
        p = plots.step_curves(curves, labels, os.path.join(plot_dir, "steps_task_stream.png"),
                              title="task stream scores per step", ylabel="top-1")
        sec.figures.append(Figure(p, "the model after each step: mean top-1 on the adaptation tasks seen so far, "
                                     "on the held-out tasks, and their geometric mean"))
        files.append(p)
        sections.append(sec)
    if static:
        sec = Section("Static tasks")
        static_chance = {t: groups[0].runs[0].static_chance.get(t) for t in static}
        for task in static:
            metric = metric_name(groups, task)
            series = {g.label: (g.cumulative_macs(), g.static_per_step(task)) for g in groups}
            p = plots.compute_plot(series, os.path.join(plot_dir, f"compute_static_{_slug(task)}.png"),
                                   title=f"{task} vs compute", ylabel=metric, chance=static_chance.get(task))
            sec.figures.append(Figure(p, f"{task}: the model after each step against cumulative training MACs"))
            files.append(p)
        curves = {t: {g.label: g.static_per_step(t) for g in groups} for t in static}
        p = plots.step_curves(curves, labels, os.path.join(plot_dir, "steps_static.png"),
                              title="static tasks per model step", ylabel="score", chance=static_chance)
        sec.figures.append(Figure(p, "static tasks: the model after each step; dashed: the task's chance level"))
        files.append(p)
        sections.append(sec)
    shift_sections, shift_files, shift_warnings = analysis_sections(runs, plot_dir)  # ticlip analyze's files
    sections += shift_sections
    files += shift_files
    warnings += shift_warnings

    sections += verdict_sections(runs, groups, dynamic, table.reference, plot_dir)
    files += [f.path for sec in sections for f in sec.figures if f.path not in files]

    e = html.escape
    run_rows = "".join(
        f"<tr><td>{e(r.name)}</td><td>{e(r.info.method)}</td><td>{r.info.seed}</td><td>{e(r.info.model)}</td>"
        f"<td>{e(r.info.stream)}</td><td>{sum(s.finished for s in r.info.steps)}/{len(r.labels)}</td></tr>"
        for r in runs
    )
    intro = (
        verdict_html(groups, table, runs) +
        f'<p class="note">{len(runs)} run(s), {len(groups)} method(s); steps: {e(_steps_text(labels))}. '
        "Scores in %. Backward = mean of E below the diagonal (older data), ID = diagonal, "
        "Forward = above the diagonal (data not yet seen). Static tasks: the last model's score. "
        "± is the sample standard deviation over training seeds, [± …] over eval subsamples; the "
        "chance row and the footer give each column's chance level and the retrieval subsample size; "
        "hatched heatmap cells are not above chance.</p>"
        + "".join(f'<p class="warn">warning: {e(w)}</p>' for w in warnings)
        + "<h2>Summary (TiC-CLIP Table 2 layout)</h2>" + table.to_html()
        + f'<p class="note">Also as <a href="{REPORT_TABLE_MD}">{REPORT_TABLE_MD}</a> and '
        f'<a href="{REPORT_TABLE_CSV}">{REPORT_TABLE_CSV}</a>.</p>'
        + "<h2>Runs</h2><table><thead><tr><th>run</th><th>method</th><th>seed</th><th>model</th><th>stream</th>"
        + f"<th>steps trained</th></tr></thead><tbody>{run_rows}</tbody></table>"
    )
    page = render_page(title or f"ticlip report: {', '.join(g.label for g in groups)}", intro, sections)
    html_path = write_text_atomic(os.path.join(out_dir, REPORT_HTML), page)
    return ReportFiles(out_dir, html_path, md_path, csv_path, summary_path, files, warnings)


def _many_steps_heatmaps(sec: Section, g: MethodGroup, task: str, E: np.ndarray, plot_dir: str, seeds: str,
                         metric: str, vrange) -> list[str]:
    """A stream of many steps: E with thinned tick labels, and E averaged to years with its values."""
    p = plots.heatmap_many_steps(E, g.labels, os.path.join(plot_dir, f"heatmap_{_slug(task)}_{_slug(g.label)}.png"),
                                 title=f"{g.label}: {task}{seeds}", metric=metric, vrange=vrange)
    sec.figures.append(Figure(p, f"E for {g.label} on {task} ({len(g.labels)} steps): row i = model after step i, "
                                 "column j = step j's data; lines mark years"))
    A, years = plots.aggregate_by_year(E, g.labels)
    out = [p]
    if len(years) < len(g.labels):
        q = plots.heatmap(A, years, os.path.join(plot_dir, f"heatmap_years_{_slug(task)}_{_slug(g.label)}.png"),
                          title=f"{g.label}: {task} by year{seeds}", metric=metric, vrange=vrange)
        sec.figures.append(Figure(q, f"E for {g.label} on {task} averaged to years: cell = mean over the model steps "
                                     "of the row's year and the data steps of the column's year"))
        out.append(q)
    return out


def _per_year_html(groups: list[MethodGroup], task: str) -> str:
    from ticlip.report.tables import per_year_html

    table = per_year_html(groups, task)
    return ("<h3>Per year</h3><p class=\"note\">ID, backward and forward of E averaged to years: the models of "
            "each year on the data of that year, of earlier years and of later years (%).</p>" + table) if table else ""


def _steps_text(labels: list[str]) -> str:
    if len(labels) <= plots.MAX_HEATMAP_STEPS:
        return ", ".join(labels)
    return f"{len(labels)} steps, {labels[0]} … {labels[-1]}"


def verdict_sections(runs, groups: list[MethodGroup], dynamic: list[str], reference: str | None,
                     plot_dir: str) -> list[Section]:
    """The sections that back the verdict (ticlip.report.verdict): the stream's sizes and samples,
    training curves and wall time, and the compute planner's curves over a budget sweep."""
    from ticlip.report.verdict import plan_section, stream_section, training_section

    made = [stream_section(runs, plot_dir), training_section(runs, plot_dir),
            plan_section(runs, groups, dynamic, reference, plot_dir)]
    return [s for s in made if s is not None]


def _finite_range(mats: list[np.ndarray]) -> tuple[float, float] | None:
    """One colour scale for every method's heatmap of a task."""
    vals = np.concatenate([m[~np.isnan(m)] for m in mats]) if mats else np.array([])
    return (float(vals.min()), float(vals.max())) if vals.size else None


def _typical_chance(C: np.ndarray) -> float | None:
    """The chance level to draw as a line: the mean over cells (one value when every step's subsample
    has the same size); None when unknown."""
    v = C[~np.isnan(C)]
    return float(v.mean()) if v.size else None


def _last_row(E: np.ndarray) -> np.ndarray:
    """The last model step that has any score (a run still training has NaN rows at the end)."""
    for i in range(E.shape[0] - 1, -1, -1):
        if (~np.isnan(E[i])).any():
            return E[i]
    return E[-1]


__all__ = ["ReportError", "ReportFiles", "TRANSFER_COLUMNS", "default_out_dir", "write_report"]
