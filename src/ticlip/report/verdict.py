"""The report's verdict and the facts a reader checks before trusting it (sections of report.html):

- ``verdict_html``: at the top, the best method per score column of the summary table, with the
  paired-test mark of its difference to the reference method (``SummaryTable`` rows' ``diffs``, from
  ``ticlip.eval.stats.paired_difference``; the runner-up's too, so a lead within noise shows) and each
  method's compute as a ratio to Oracle's; runs that stayed at chance are named;
- ``runs_at_chance``: runs whose every evaluated cell of a dynamic task is not above chance (the
  one-sided binomial test of ``ticlip.eval.stats.above_chance``, as the heatmaps' hatching);
- ``stream_section``: the stream's per-step train / validation / eval sizes (the run's stream.json)
  and a contact sheet of a few train pairs per step (``ticlip.data.show.contact_sheet``);
- ``training_section``: training loss and learning rate against the global iteration (every step's
  train_log.jsonl) and the wall time of each run (training: run.json ``extra.seconds``; evaluation:
  eval.jsonl ``seconds``);
- ``plan_section``: the compute planner's fitted curves when the runs hold a budget sweep
  (``ticlip.report.compute_planner``).
"""

from __future__ import annotations

import html
import json
import math
import os

import numpy as np

from ticlip.report.html import Figure, Section
from ticlip.report.results import MethodGroup, RunResults
from ticlip.report.tables import SummaryTable, format_diff
from ticlip.run_layout import log_records, step_dir

ORACLE = "oracle"
SHEET_PAIRS = 8  # pairs per step's contact sheet


def _e(text) -> str:
    return html.escape(str(text))


# ------------------------------------------------------------------------------ chance
def run_at_chance(run: RunResults) -> list[str]:
    """The dynamic tasks on which every evaluated cell of ``run`` is not above chance (empty when the
    run learnt something, or chance is unknown)."""
    out = []
    for task in run.matrices:
        at = MethodGroup(run.name, [run]).at_chance(task)
        E = run.matrices[task]
        C = MethodGroup(run.name, [run]).chance_matrix(task)
        known = ~np.isnan(E) & ~np.isnan(C)
        if known.any() and at[known].all():
            out.append(task)
    return out


def runs_at_chance(runs: list[RunResults]) -> dict[str, list[str]]:
    """run name -> the dynamic tasks it stayed at chance on (runs that learnt are left out)."""
    return {r.name: tasks for r in runs if (tasks := run_at_chance(r))}


# ------------------------------------------------------------------------------ verdict
def compute_ratios(groups: list[MethodGroup]) -> dict[str, float]:
    """Each method's mean training compute divided by Oracle's (empty without an oracle run)."""
    oracle = [g for g in groups if g.label == ORACLE or g.runs[0].info.method == ORACLE]
    if not oracle:
        return {}
    base, _ = oracle[0].compute()
    if not base or math.isnan(base):
        return {}
    return {g.label: g.compute()[0] / base for g in groups}


def verdict_rows(table: SummaryTable) -> list[dict]:
    """Per score column: the best method (highest mean), its score, its difference to the reference
    with the mark, and the runner-up likewise."""
    out = []
    for k, c in enumerate(table.columns):
        if c.kind != "score":
            continue
        ranked = sorted((r for r in table.rows if not math.isnan(r.cells[k][0])), key=lambda r: -r.cells[k][0])
        if not ranked:
            continue
        entry = {"column": c.header if c.group in ("", c.header) else f"{c.group}: {c.header}", "key": c.key}
        for name, r in (("best", ranked[0]), ("runner_up", ranked[1] if len(ranked) > 1 else None)):
            if r is None:
                continue
            entry[name] = {"method": r.method, "mean": r.cells[k][0],
                           "vs_reference": format_diff(r.diffs[k], reference=(r.method == table.reference))}
        out.append(entry)
    return out


def verdict_html(groups: list[MethodGroup], table: SummaryTable, runs: list[RunResults]) -> str:
    rows = verdict_rows(table)
    ratios = compute_ratios(groups)
    parts = ['<section id="verdict"><h2>Verdict</h2>']
    if rows:
        ref = table.reference
        head = ("<tr><th>metric</th><th>best method</th><th>score (%)</th>"
                + (f"<th>vs {_e(ref)}</th>" if ref else "") + "<th>runner-up</th><th>score (%)</th>"
                + (f"<th>vs {_e(ref)}</th>" if ref else "") + "</tr>")
        body = ""
        for v in rows:
            cells = f"<td>{_e(v['column'])}</td>"
            for name in ("best", "runner_up"):
                b = v.get(name)
                if b is None:
                    cells += "<td>–</td><td>–</td>" + ("<td>–</td>" if ref else "")
                    continue
                cells += f'<td class="{name}">{_e(b["method"])}</td><td>{100 * b["mean"]:.1f}</td>'
                if ref:
                    cells += f"<td>{_e(b['vs_reference'])}</td>"
            body += f"<tr>{cells}</tr>"
        parts.append(f'<table class="verdict"><thead>{head}</thead><tbody>{body}</tbody></table>')
        parts.append('<p class="note">' + (_e(" ".join(table.comparison_footer())) if ref else
                     "No reference method among the runs: differences are not tested.") + "</p>")
    if ratios:
        cells = "".join(f"<tr><td>{_e(m)}</td><td>{x:.2f}×</td></tr>" for m, x in ratios.items())
        parts.append("<h3>Compute relative to Oracle</h3><table class=\"compute-ratio\"><thead><tr><th>method</th>"
                     f"<th>training MACs / Oracle's</th></tr></thead><tbody>{cells}</tbody></table>")
    else:
        parts.append('<p class="note">No Oracle run among the runs: compute is not shown as a ratio to Oracle\'s.</p>')
    for name, tasks in runs_at_chance(runs).items():
        parts.append(f'<p class="warn at-chance">run {_e(name)} stayed at chance on {_e(", ".join(tasks))}: '
                     "no evaluated cell is above chance (one-sided binomial test, α = 0.05); it did not learn</p>")
    parts.append("</section>")
    return "".join(parts)


# ------------------------------------------------------------------------------ stream
def _stream_manifest(run: RunResults) -> dict | None:
    path = os.path.join(run.run_dir, "stream.json")
    if not os.path.exists(path):
        path = os.path.join(run.info.stream, "stream.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def stream_sizes(manifest: dict) -> tuple[list[str], list[list]]:
    """(header, rows): per step its label, train pairs, validation pairs, and each eval task's pairs."""
    tasks = sorted({t for s in manifest.get("steps", []) for t in (s.get("eval") or {})})
    header = ["step", "train", "validation"] + [f"eval: {t}" for t in tasks]
    rows = []
    for s in manifest.get("steps", []):
        val = (s.get("validation") or {}).get("count")
        rows.append([s.get("label"), (s.get("train") or {}).get("count", 0), "–" if val is None else val]
                    + [(s.get("eval") or {}).get(t, {}).get("count", "–") for t in tasks])
    return header, rows


def stream_section(runs: list[RunResults], plot_dir: str) -> Section | None:
    """Per-step sizes of each stream the runs trained on, with a contact sheet per step."""
    seen, sec = set(), Section("Stream: sizes and samples per step")
    for r in runs:
        manifest = _stream_manifest(r)
        key = r.info.stream
        if manifest is None or key in seen:
            continue
        seen.add(key)
        header, rows = stream_sizes(manifest)
        sec.html += (f"<p>stream <code>{_e(manifest.get('name') or key)}</code> ({_e(key)}), pairs per step:</p>"
                     '<table class="stream-sizes"><thead><tr>' + "".join(f"<th>{_e(h)}</th>" for h in header)
                     + "</tr></thead><tbody>" + "".join("<tr>" + "".join(f"<td>{_e(x)}</td>" for x in row) + "</tr>"
                                                        for row in rows) + "</tbody></table>")
        missing = []
        for s in manifest.get("steps", []):
            path = os.path.join(plot_dir, f"sheet_{len(seen)}_{s.get('index')}.png")
            try:
                _contact_sheet(key, s.get("index"), path)
            except Exception as e:  # noqa: BLE001 - a stream moved or deleted since training: say so, go on
                missing.append(f"{s.get('label')}: {' '.join(str(e).split())[:160]}")
                continue
            sec.figures.append(Figure(path, f"step {s.get('label')}: {SHEET_PAIRS} random train pairs"))
        if missing:
            sec.html += '<p class="note">no contact sheet for ' + _e("; ".join(missing)) + "</p>"
    return sec if seen else None


def _contact_sheet(stream_root: str, index: int, path: str) -> str:
    from ticlip.data.show import SheetLayout, contact_sheet

    return contact_sheet(stream_root, index, path, n=SHEET_PAIRS, split="train",
                         layout=SheetLayout(columns=SHEET_PAIRS, thumb=72, caption_lines=2, font_size=9, line_height=12))


# ------------------------------------------------------------------------------ training
def training_curves(run: RunResults) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(global iteration, loss, lr) over every step's train_log.jsonl, in step order (the branch phase
    of const-cosine continues the step's count; the trunk, not carried forward, is left out)."""
    xs, loss, lr, offset = [], [], [], 0
    for s in sorted(run.info.steps, key=lambda s: s.index):
        last = 0
        for rec in log_records(os.path.join(step_dir(run.run_dir, s.index), "train_log.jsonl")):
            if rec.get("phase", "main") == "trunk" or "iteration" not in rec:
                continue
            xs.append(offset + int(rec["iteration"]))
            loss.append(float(rec.get("loss", math.nan)))
            lr.append(float(rec.get("lr", math.nan)))
            last = max(last, int(rec["iteration"]))
        offset += last
    return np.array(xs), np.array(loss), np.array(lr)


def wall_times(run: RunResults) -> tuple[float, float]:
    """(training seconds: run.json extra.seconds summed over steps; evaluation seconds: eval.jsonl's
    per-record ``seconds``); NaN where not recorded."""
    from ticlip.eval.results import EVAL_LOG, read_results

    secs = run.info.extra.get("seconds") or {}
    train = float(sum(float(v) for v in secs.values())) if secs else math.nan
    path = os.path.join(run.run_dir, EVAL_LOG)
    evals = [float(r["seconds"]) for r in (read_results(path) if os.path.exists(path) else []) if "seconds" in r]
    return train, (float(sum(evals)) if evals else math.nan)


def _duration(s: float) -> str:
    if math.isnan(s):
        return "–"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def training_section(runs: list[RunResults], plot_dir: str) -> Section:
    from ticlip.report.plots import training_plot

    sec = Section("Training: loss, learning rate and wall time")
    curves = {r.name: training_curves(r) for r in runs}
    rows = ""
    for r in runs:
        train, evaluation = wall_times(r)
        rows += f"<tr><td>{_e(r.name)}</td><td>{_duration(train)}</td><td>{_duration(evaluation)}</td></tr>"
    sec.html = ('<table class="wall-time"><thead><tr><th>run</th><th>training wall time</th>'
                f"<th>evaluation wall time</th></tr></thead><tbody>{rows}</tbody></table>")
    if any(c[0].size for c in curves.values()):
        p = training_plot(curves, os.path.join(plot_dir, "training_loss_lr.png"))
        sec.figures.append(Figure(p, "training loss and learning rate of each run against the global iteration "
                                     "(iterations counted across steps)"))
    else:
        sec.html += '<p class="note">no train_log.jsonl in these runs</p>'
    return sec


# ------------------------------------------------------------------------------ compute planner
def plan_section(runs: list[RunResults], groups: list[MethodGroup], dynamic: list[str], reference: str | None,
                 plot_dir: str) -> Section | None:
    """When some method has runs at several compute budgets: the compute planner's fitted curves and
    table, matching Oracle (else the reference method) on the first dynamic task's backward transfer."""
    from ticlip.report.compute_planner import PlanError, has_budget_sweep, make_plan
    from ticlip.report.plots import compute_fit_plot

    if not has_budget_sweep(runs) or not dynamic:
        return None
    labels = {g.runs[0].info.label or g.runs[0].info.method for g in groups}
    target = ORACLE if ORACLE in labels else reference
    sec = Section("Compute planner: fitted curves over the budget sweep")
    if target is None or target not in labels:
        sec.html = '<p class="note">No Oracle or reference method among the runs: nothing to match.</p>'
        return sec
    try:
        plan = make_plan(runs, target=target, metric="backward", task=dynamic[0], samples=500)
    except PlanError as e:
        sec.html = f'<p class="note">No plan: {_e(e)}</p>'
        return sec
    sec.html = "<pre>" + _e(plan.to_markdown()) + "</pre>"
    sec.figures.append(Figure(compute_fit_plot(plan, os.path.join(plot_dir, "plan_fit.png")),
                              f"{plan.metric} against compute with each method's {plan.form} fit; `ticlip plan` "
                              "asks other questions (metric, tolerance, form)"))
    return sec


__all__ = ["compute_ratios", "plan_section", "run_at_chance", "runs_at_chance",
           "stream_section", "stream_sizes", "training_curves", "training_section", "verdict_html", "verdict_rows",
           "wall_times"]
