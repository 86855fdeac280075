"""The report's shift and drift sections, from the files ``ticlip analyze`` writes (docs/ANALYSIS.md):

- *Distribution shift* (per stream of the runs): FID and TV heatmaps from ``STREAM/analysis/shift_*.csv``
  and, per step, the concepts that are new or grew most, with sample images (``shift.json``);
- *Forgetting by concept* (per run): the concepts whose retrieval dropped most between the model that
  introduced them and the last model, with n and example images (``RUN/analysis/forgetting.*``).

The report computes nothing here: both need a pass over the stream's images (and the forgetting a model
per step), which `ticlip report` should not start on its own. Absent files give a note naming the
command that makes them; unreadable ones a warning.
"""

from __future__ import annotations

import csv
import html
import os
import re

from ticlip.analysis.files import (ANALYSIS_DIR, FORGETTING_CSV, FORGETTING_JSON, SHIFT_FID, SHIFT_JSON, SHIFT_TV,
                                   AnalysisFileError, read_json, read_square_csv, shift_heatmap)
from ticlip.report.html import Figure, Section, png_data_uri

_THUMB_PX = 64


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def _stream_root(run) -> str | None:
    path = run.info.stream
    if "://" in path:
        return None
    if not os.path.isabs(path):
        here = os.path.join(run.run_dir, path)
        path = here if os.path.exists(here) else path
    return os.path.dirname(path) if path.endswith(".json") else path


def _thumbs(base: str, examples: list[dict]) -> str:
    e = html.escape
    out = []
    for ex in examples:
        p = os.path.join(base, ex["path"])
        if os.path.exists(p):
            cap = e(ex.get("caption", ""))
            out.append(f'<img src="{png_data_uri(p)}" alt="{cap}" title="{cap}" width="{_THUMB_PX}" '
                       f'style="margin:1px;image-rendering:pixelated">')
    return "".join(out)


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def shift_section(root: str, plot_dir: str) -> tuple[list[Section], list[str], list[str]]:
    """The distribution-shift section of one stream root (heatmaps re-drawn into ``plot_dir``) and,
    when the analysis exists, its concept-drift section."""
    e = html.escape
    base = os.path.join(root, ANALYSIS_DIR)
    name = os.path.basename(os.path.normpath(root))
    sec = Section(f"Distribution shift: {name}")
    meta_path = os.path.join(base, SHIFT_JSON)
    if not os.path.exists(meta_path):
        sec.html = (f'<p class="note">No shift analysis for this stream yet: <code>ticlip analyze shift {e(root)} '
                    "--checkpoint CKPT --model NAME</code> (or <code>--run RUN --step LABEL</code>; "
                    "<code>--no-fid</code> for the noun part only) writes it where this report looks.</p>")
        return [sec], [], []
    sections = [sec]
    files, warnings = [], []
    try:
        meta = read_json(meta_path)
        settings = meta.get("settings", {})
        model = meta.get("model") or {}
        pairs = meta.get("pairs", {})
        used = ", ".join(f"{e(k)}: {v['used']}/{v['total']}" for k, v in pairs.items())
        sec.html = (
            f'<p class="note">Between every pair of steps (TiC-CLIP §2.4, App. C.6), on each step\'s '
            f"{e(str(settings.get('split', 'eval')))} pairs (used/available: {used}). FID: Fréchet distance of "
            f"Gaussians fitted to the image embeddings of {e(model.get('source', 'no model (not computed)'))}. "
            f"TV: total-variation distance between the steps' distributions over the "
            f"{meta.get('tv', {}).get('top_k', '?')} WordNet nouns mentioned most in the stream's captions "
            "(0 = same distribution, 1 = disjoint). Written by <code>ticlip analyze shift</code> on "
            f"{e(str(meta.get('created', '?')))}.</p>")
        for fname, what, unit in ((SHIFT_FID, "FID of image embeddings", "FID"),
                                  (SHIFT_TV, "TV distance of noun distributions", "TV distance")):
            p = os.path.join(base, fname)
            if not os.path.exists(p):
                continue
            labels, D = read_square_csv(p)
            out = shift_heatmap(D, labels, os.path.join(plot_dir, f"{os.path.splitext(fname)[0]}_{_slug(name)}.png"),
                                title=f"{name}: {what}", unit=unit)
            sec.figures.append(Figure(out, f"{name}: {what} between steps (symmetric, zero diagonal)"))
            files.append(out)
        sections.append(Section(f"Concept drift: {name}", html=_drift_table(base, meta.get("drift", []), settings)))
    except (AnalysisFileError, KeyError, TypeError, ValueError) as err:
        warnings.append(f"stream {name}: shift analysis in {base} is unreadable ({err}); rerun `ticlip analyze shift`")
    return sections, files, warnings


def _drift_table(base: str, drift: list[dict], settings: dict) -> str:
    e = html.escape
    rows = []
    for st in drift:
        for k, c in enumerate(st.get("concepts", [])):
            label = e(st["step"]) if k == 0 else ""
            kind = "first step" if st.get("index") == 0 else ("new" if c["new"] else f"+{100 * c['growth']:.1f} pts")
            rows.append(f"<tr><td>{label}</td><td>{e(c['noun'])}</td><td>{kind}</td><td>{c['n']}</td>"
                        f"<td>{_pct(c['share'])}</td><td>{_pct(c['previous_share'])}</td>"
                        f"<td>{_thumbs(base, c.get('examples', []))}</td></tr>")
    if not rows:
        return '<p class="note">No concept reached the minimum count at any step.</p>'
    return ('<p class="note">Per step, the concepts (WordNet nouns of the captions) that are new or grew most. Share = captions of the step mentioning the noun; earlier = the same over all earlier '
            f"steps pooled. Nouns mentioned by fewer than {settings.get('min_count', '?')} captions of a step are "
            "left out (n is the count); new ones first, then by growth.</p>"
            "<table><thead><tr><th>step</th><th>concept</th><th>change</th><th>n</th><th>share %</th>"
            f"<th>earlier %</th><th>examples</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def forgetting_section(runs: list) -> tuple[Section | None, list[str]]:
    """Per run with a forgetting analysis: the concepts that dropped most, with n and examples."""
    e = html.escape
    parts, missing, warnings = [], [], []
    for r in runs:
        base = os.path.join(r.run_dir, ANALYSIS_DIR)
        if not os.path.exists(os.path.join(base, FORGETTING_JSON)):
            missing.append(r.name)
            continue
        try:
            meta = read_json(os.path.join(base, FORGETTING_JSON))
            with open(os.path.join(base, FORGETTING_CSV), newline="", encoding="utf-8") as f:
                scored = list(csv.DictReader(f))
            shown = meta["dropped_most"]
            rows = "".join(
                f"<tr><td>{e(c['concept'])}</td><td>{e(c['step'])}</td><td>{c['n']}</td><td>{_pct(c['recall_intro'])}"
                f"</td><td>{_pct(c['recall_last'])}</td><td>{100 * c['drop']:.1f}</td>"
                f"<td>{_thumbs(base, c.get('examples', []))}</td></tr>" for c in shown)
            table = ("<table><thead><tr><th>concept</th><th>introduced</th><th>n</th><th>then %</th>"
                     "<th>last model %</th><th>drop (pts)</th><th>lost examples</th></tr></thead>"
                     f"<tbody>{rows}</tbody></table>" if shown else '<p class="note">No concept dropped.</p>')
            parts.append(
                f"<h3>{e(r.name)} ({e(meta.get('method', r.info.method))})</h3>"
                f'<p class="note">{len(scored)} concepts with at least {meta["settings"]["min_count"]} eval pairs '
                f"at the step that introduced them; last model: step {e(meta['last_step'])}. Examples: pairs the "
                "introducing model retrieved and the last model did not.</p>" + table)
        except (OSError, AnalysisFileError, KeyError, TypeError, ValueError) as err:
            warnings.append(f"run {r.name}: forgetting analysis in {base} is unreadable ({err}); rerun "
                            "`ticlip analyze forgetting`")
    if missing:
        parts.append(f'<p class="note">No forgetting analysis for {e(", ".join(missing))}: '
                     "<code>ticlip analyze forgetting RUN</code> writes it.</p>")
    intro = ('<p class="note">Per concept (a WordNet noun of the eval captions): image→text recall@1 on the eval '
             "pairs mentioning it, under the model of the step that introduced it (its first step with enough "
             "pairs) and under the last model. Concepts with few pairs are noisy: read n.</p>")
    return Section("Forgetting by concept", html=intro + "".join(parts)), warnings


def analysis_sections(runs: list, plot_dir: str) -> tuple[list[Section], list[str], list[str]]:
    """(sections, figure files, warnings) for the report: one shift section per stream, one forgetting section."""
    sections, files, warnings = [], [], []
    roots = []
    for r in runs:
        root = _stream_root(r)
        if root is not None and root not in roots:
            roots.append(root)
    for root in roots:
        secs, f, w = shift_section(root, plot_dir)
        sections += secs
        files += f
        warnings += w
    sec, w = forgetting_section(runs)
    sections.append(sec)
    warnings += w
    return sections, files, warnings


__all__ = ["analysis_sections", "forgetting_section", "shift_section"]
