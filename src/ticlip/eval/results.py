"""The result files of an evaluation, and the one reader and writer of each:

- ``eval.jsonl`` (append-only, one line per (model step, task, eval step); resumable):
  ``append_result``, ``read_results``, ``latest_results``; under torchrun each rank appends to its
  part file (``part_path``) and rank 0 merges them (``merge_parts``);
- ``matrix_<task>.csv`` (E: rows = model steps, columns = eval steps, step labels as header and index)
  and ``static_scores.csv`` (rows = model steps, columns = static tasks): ``write_table_csv``,
  ``read_table`` (and ``read_matrix`` for any E as CSV, ``read_static_scores``);
- ``eval_summary.json`` (summaries of every table): ``write_summary``, ``read_summary``;
- ``write_result_tables``: all tables and the summary of a run from its eval.jsonl records.

The evaluator, ``ticlip metrics``, the report and the tests all read and write through this module.
Report outputs (``table.md``, ``table.csv``, ``summary.json``, ``report.html``) are named here too.

A line of eval.jsonl::

    {"model_step": {"index": 0, "label": "2016"}, "task": "retrieval", "kind": "dynamic_retrieval",
     "eval_step": {"index": 2, "label": "2018"},          # null for static tasks
     "metric": "mean_recall@1", "metrics": {...means...}, "std": {...}, "seeds": [0, 1, 2],
     "n": 1000, "settings": {...}, "time": 1.2, "model": "ViT-B-16", "checkpoint": "...", "created": "..."}

When a key appears more than once (a re-run with other settings) the last line wins.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import os
import sys
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from ticlip.atomic import write_text_atomic
from ticlip.eval.metrics import MatrixError, as_matrix, json_safe, static_summary, transfer_metrics

EVAL_LOG = "eval.jsonl"
STATIC_SCORES = "static_scores.csv"
SUMMARY = "eval_summary.json"
MATRIX_PREFIX, MATRIX_SUFFIX = "matrix_", ".csv"
MATRIX_GLOB = f"{MATRIX_PREFIX}*{MATRIX_SUFFIX}"
CORNER = "model_step"
# what `ticlip report` writes next to them
REPORT_HTML = "report.html"
REPORT_TABLE_MD = "table.md"
REPORT_TABLE_CSV = "table.csv"
REPORT_SUMMARY = "summary.json"


# ------------------------------------------------------------------------------ file names
def matrix_filename(task: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in task)
    return f"{MATRIX_PREFIX}{safe}{MATRIX_SUFFIX}"


def matrix_files(directory: str) -> list[str]:
    """Paths of every ``matrix_<task>.csv`` in ``directory``, sorted by name."""
    return sorted(glob.glob(os.path.join(glob.escape(directory), MATRIX_GLOB)))


def task_of_matrix_file(path: str, names: dict[str, str] | None = None) -> str:
    """The task a matrix file holds: from ``names`` (file name -> task, see ``task_names``), else
    the file name between ``matrix_`` and ``.csv``."""
    base = os.path.basename(path)
    return (names or {}).get(base, base[len(MATRIX_PREFIX):-len(MATRIX_SUFFIX)])


# ------------------------------------------------------------------------------ eval.jsonl
def result_key(record: dict) -> tuple:
    ev = record.get("eval_step")
    return (int(record["model_step"]["index"]), str(record["task"]), None if ev is None else int(ev["index"]))


def read_results(path: str, warn: Callable[[str], None] | None = None, *, keyed: bool = True) -> list[dict]:
    """Every parseable line of an eval.jsonl (none if the file is absent). A broken line (e.g. the
    tail of an interrupted write) is reported through ``warn`` with its number, never silently
    dropped. ``keyed=False`` also keeps records that lack a (model step, task, eval step) key."""
    if not os.path.exists(path):
        return []
    out, bad = [], []
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if keyed:
                    result_key(rec)
                elif not isinstance(rec, dict):
                    raise TypeError("not a mapping")
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                bad.append(no)
                continue
            out.append(rec)
    if bad:
        msg = f"{path}: ignored {len(bad)} unreadable line(s) ({', '.join(map(str, bad[:5]))}{', ...' if len(bad) > 5 else ''}); those pairs are evaluated again"
        (warn or (lambda m: print(m, file=sys.stderr)))(msg)
    return out


def latest_results(records: Iterable[dict]) -> dict[tuple, dict]:
    """The last record of each (model step, task, eval step)."""
    latest: dict[tuple, dict] = {}
    for rec in records:
        latest[result_key(rec)] = rec
    return latest


def append_result(path: str, record: dict) -> None:
    """Append one JSON line and flush it to disk (a crash loses at most the line being written)."""
    line = json.dumps(record, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        # A previous writer killed mid-line leaves no newline: start ours on a fresh line.
        if f.tell() > 0:
            with open(path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    f.write("\n")
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


PART_SUFFIX = ".part"  # eval.jsonl.rank<r>.part: one rank's results under torchrun (ticlip.eval.dist)


def part_path(path: str, rank: int) -> str:
    """Where rank ``rank`` of a distributed evaluation appends its results (``append_result``)."""
    return f"{path}.rank{int(rank)}{PART_SUFFIX}"


def part_paths(path: str) -> list[str]:
    """The part files of ``path`` left by the ranks of a distributed evaluation."""
    return sorted(glob.glob(f"{glob.escape(path)}.rank*{PART_SUFFIX}"))


def merge_parts(path: str, order: dict[tuple, int] | None = None,
                warn: Callable[[str], None] | None = None) -> int:
    """Move the part files' records into ``path`` (eval.jsonl) in one atomic rewrite, ordered by
    ``order`` (result key → position; records it lacks go last, in part-file order), then remove the
    part files. Returns how many records were merged. Interrupted after the rewrite, a re-run merges
    the same records again: the last line of a key wins, and they are equal."""
    parts = part_paths(path)
    records = [rec for p in parts for rec in read_results(p, warn)]
    if records:
        order = order or {}
        records.sort(key=lambda rec: order.get(result_key(rec), len(order)))  # stable
        old = ""
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                old = f.read()
            if old and not old.endswith("\n"):  # a writer killed mid-line: ours start on a fresh line
                old += "\n"
        lines = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n"
                        for r in records)
        write_text_atomic(path, old + lines)
    for p in parts:
        os.remove(p)
    return len(records)


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def task_names(run_dir: str) -> tuple[dict[str, str], dict[str, str]]:
    """(matrix file name -> task name, task -> main metric) from a run's eval.jsonl (empty when absent)."""
    files, metrics = {}, {}
    for rec in read_results(os.path.join(run_dir, EVAL_LOG), warn=lambda m: None, keyed=False):
        task = rec.get("task")
        if isinstance(task, str):
            files[matrix_filename(task)] = task
            if rec.get("metric"):
                metrics[task] = str(rec["metric"])
    return files, metrics


def score(record: dict) -> float:
    """The record's main metric (NaN when absent, e.g. no images of a subtree in that step)."""
    v = record.get("metrics", {}).get(record.get("metric", ""))
    return math.nan if v is None else float(v)


def build_matrix(records: Iterable[dict], task: str, rows: Sequence[int], cols: Sequence[int]) -> np.ndarray:
    """E for ``task``: rows are model step indices, columns eval step indices; NaN where missing."""
    r_at = {r: i for i, r in enumerate(rows)}
    c_at = {c: j for j, c in enumerate(cols)}
    E = np.full((len(rows), len(cols)), np.nan)
    for (m, t, e), rec in latest_results(records).items():
        if t == task and e is not None and m in r_at and e in c_at:
            E[r_at[m], c_at[e]] = score(rec)
    return E


def static_table(records: Iterable[dict], tasks: Sequence[str], rows: Sequence[int]) -> np.ndarray:
    """Static scores: rows are model step indices, columns ``tasks``; NaN where missing."""
    r_at = {r: i for i, r in enumerate(rows)}
    c_at = {t: j for j, t in enumerate(tasks)}
    S = np.full((len(rows), len(tasks)), np.nan)
    for (m, t, e), rec in latest_results(records).items():
        if e is None and m in r_at and t in c_at:
            S[r_at[m], c_at[t]] = score(rec)
    return S


@dataclass
class CellStats:
    """What eval.jsonl knows about each cell of a dynamic task's E besides its score (T×T arrays
    over the same rows and columns as E, NaN where unknown): the cell's chance level, the pairs it was
    scored on (``n``), the Bernoulli ``trials`` behind it (the above-chance test), the std of the main
    metric over retrieval subsamples, and the main metric per subsample (S×T×T; a cell scored whole,
    once, repeats its value; None when no record kept them)."""

    chance: np.ndarray
    n: np.ndarray
    trials: np.ndarray
    std: np.ndarray
    per_seed: np.ndarray | None

    def subsample_sizes(self) -> list[int]:
        return sorted({int(v) for v in self.n.ravel() if not math.isnan(v)})

    def chance_levels(self) -> list[float]:
        return sorted({round(float(v), 12) for v in self.chance.ravel() if not math.isnan(v)})

    def transfer_subsample_std(self) -> dict[str, float]:
        """Std (ddof=1) over subsample seeds of each transfer metric, E recomputed per seed; NaN per key
        when fewer than two subsamples were kept."""
        if self.per_seed is None or self.per_seed.shape[0] < 2 or self.per_seed.shape[1] != self.per_seed.shape[2]:
            return {}
        per = [transfer_metrics(E) for E in self.per_seed]
        out = {}
        for key, v in per[0].items():
            if isinstance(v, float) or v is None:
                vals = np.array([math.nan if p[key] is None else float(p[key]) for p in per])
                vals = vals[~np.isnan(vals)]
                out[key] = float(vals.std(ddof=1)) if vals.size > 1 else math.nan
        return out


def cell_stats(records: Iterable[dict], task: str, rows: Sequence, cols: Sequence, *, by: str = "index") -> CellStats:
    """``CellStats`` of ``task`` from eval.jsonl records; rows/cols are model/eval step indices
    (``by="index"``) or labels (``by="label"``). Old records without ``chance`` get it from ``n``
    for retrieval metrics (1/n at k=1); ``trials`` likewise (2n)."""
    from ticlip.eval.stats import retrieval_chance

    r_at = {r: i for i, r in enumerate(rows)}
    c_at = {c: j for j, c in enumerate(cols)}
    shape = (len(rows), len(cols))
    chance, n, trials, std = (np.full(shape, np.nan) for _ in range(4))
    seeds: dict[tuple[int, int], list[float]] = {}
    for (m, t, e), rec in latest_results(records).items():
        if t != task or e is None:
            continue
        mi = m if by == "index" else rec["model_step"].get("label")
        ej = e if by == "index" else rec["eval_step"].get("label")
        if mi not in r_at or ej not in c_at:
            continue
        i, j = r_at[mi], c_at[ej]
        metric = rec.get("metric", "")
        if rec.get("n") is not None:
            n[i, j] = float(rec["n"])
        c = rec.get("chance")
        if c is None and "recall@" in metric and rec.get("n"):
            c = retrieval_chance(int(rec["n"]), metric)
        chance[i, j] = math.nan if c is None else float(c)
        tr = rec.get("trials")
        if tr is None and "recall@" in metric and rec.get("n"):
            tr = 2 * int(rec["n"])
        trials[i, j] = math.nan if tr is None else float(tr)
        sd = (rec.get("std") or {}).get(metric)
        std[i, j] = math.nan if sd is None else float(sd)
        vals = (rec.get("per_seed") or {}).get(metric)
        if vals:
            seeds[(i, j)] = [math.nan if v is None else float(v) for v in vals]
    per_seed = None
    if seeds:
        S = max(len(v) for v in seeds.values())
        per_seed = np.full((S, *shape), np.nan)
        for (i, j), vals in seeds.items():
            per_seed[:, i, j] = vals if len(vals) == S else vals[0] if len(vals) == 1 else np.nan
    return CellStats(chance, n, trials, std, per_seed)


def read_cell_stats(run_dir: str, task: str, labels: Sequence[str]) -> CellStats:
    """``cell_stats`` of a run's eval.jsonl, rows and columns being the step ``labels``."""
    records = read_results(os.path.join(run_dir, EVAL_LOG), warn=lambda m: None)
    return cell_stats(records, task, list(labels), list(labels), by="label")


def static_chance(run_dir: str) -> dict[str, float]:
    """Static task -> chance level of its main metric, from the last model step's record that has one."""
    out: dict[str, tuple[int, float]] = {}
    for (m, t, e), rec in latest_results(read_results(os.path.join(run_dir, EVAL_LOG), warn=lambda m: None)).items():
        if e is None and rec.get("chance") is not None and (t not in out or m >= out[t][0]):
            out[t] = (m, float(rec["chance"]))
    return {t: c for t, (_, c) in out.items()}


# ------------------------------------------------------------------------------ labelled tables (CSV)
def _fmt(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.6g}"


def write_table_csv(path: str, values: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], corner: str = CORNER) -> str:
    """Write a labelled table atomically (temp file, then rename); empty cells for NaN."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([corner, *col_labels])
    for label, row in zip(row_labels, values):
        w.writerow([label, *(_fmt(float(v)) for v in row)])
    write_text_atomic(path, buf.getvalue())
    return path


def _numeric(cell: str) -> bool:
    c = cell.strip()
    if c == "":
        return True
    try:
        float(c)
        return True
    except ValueError:
        return False


def read_table(path: str, *, labelled: bool | None = True) -> tuple[np.ndarray, list[str], list[str]]:
    """(values, row labels, column labels) of a CSV table; empty cells are NaN, any other non-number
    is a MatrixError naming its row and column.

    ``labelled=True`` (the files ticlip writes): a header row of column labels and an index column.
    ``labelled=None``: labels are recognised by text ("2016", "≤2014" and "model_step" alike can be
    labels): a non-numeric cell in the first row / column, or pandas' layout with an empty corner
    cell; a file of numbers only has no labels (numeric labels need a corner cell: empty or a word)."""
    values, row_labels, col_labels, _ = _read_table(path, labelled)
    return values, row_labels, col_labels


def _read_table(path: str, labelled: bool | None):
    """``read_table``, and whether both a header row and an index column were found."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except FileNotFoundError:
        raise MatrixError(f"no matrix file {path}") from None
    except UnicodeDecodeError:
        raise MatrixError(f"{path} is not a UTF-8 CSV file") from None
    if not rows:
        raise MatrixError(f"{path} is empty")
    if labelled:
        if len(rows) < 2 or len(rows[0]) < 2:
            raise MatrixError(f"{path}: expected a header row of labels and one labelled row per model step")
        ncols = len(rows[0]) - 1
        for r in rows[1:]:
            if len(r) - 1 > ncols:
                raise MatrixError(f"{path}: row {r[0]!r} has {len(r) - 1} values for {ncols} columns")
        has_header = has_index = True
        width = ncols + 1
    else:
        width = max(len(r) for r in rows)
        first_col = [r[0] for r in rows[1:]]
        has_header = any(not _numeric(c) for c in rows[0])
        has_index = any(not _numeric(c) for c in first_col) or (has_header and rows[0][0].strip() == "")
        if not has_header and not has_index:
            corner_empty = rows[0][0].strip() == ""
            if corner_empty and all(c.strip() for c in rows[0][1:]) and all(c.strip() for c in first_col):
                has_header = has_index = True
        elif has_header and not has_index and width == len(rows):
            has_index = True  # "step,2016,2017" over rows "2016,…": labels on both sides
    rows = [r + [""] * (width - len(r)) for r in rows]
    header = rows[0] if has_header else None
    body = rows[1:] if has_header else rows
    row_labels = [r[0].strip() for r in body] if has_index else [str(i) for i in range(len(body))]
    cells = [r[1:] if has_index else r for r in body]
    ncols = width - 1 if has_index else width
    col_labels = [c.strip() for c in header[1:]] if (header and has_index) else (
        [c.strip() for c in header] if header else [str(j) for j in range(ncols)]
    )
    values = np.full((len(cells), ncols), np.nan)
    for i, r in enumerate(cells):
        for j, c in enumerate(r):
            c = c.strip()
            if c == "":
                continue
            try:
                values[i, j] = float(c)
            except ValueError:
                raise MatrixError(
                    f"{path}: cell at row {row_labels[i]!r}, column {col_labels[j]!r} is not a number: {c!r}"
                ) from None
    return values, row_labels, col_labels, has_header and has_index


def read_matrix(path: str) -> tuple[np.ndarray, list[str], list[str]]:
    """E (square) from a CSV: plain numbers, or with step labels as header row and/or index column
    (see ``read_table(labelled=None)``). Returns (E, row labels, column labels)."""
    values, row_labels, col_labels, both_labels = _read_table(path, None)
    try:
        as_matrix(values)
    except MatrixError as e:
        hint = ""
        if not both_labels:
            hint = (" (step labels need both a header row and an index column, with an empty or "
                    "non-numeric corner cell, e.g. 'model_step,2016,2017')")
        raise MatrixError(f"{path}: {e}{hint}") from None
    return values, row_labels, col_labels


def matrix_metrics(path: str) -> dict:
    """``transfer_metrics`` of the matrix in a CSV, with its step labels (what `ticlip metrics` prints)."""
    E, rows, cols = read_matrix(path)
    out = transfer_metrics(E)
    out["labels"] = cols
    if rows != cols and all(not r.isdigit() for r in rows):
        out["row_labels"] = rows
    return out


def read_static_scores(path: str) -> tuple[np.ndarray, list[str], list[str]]:
    """static_scores.csv: (scores: model steps × tasks, model step labels, task names)."""
    return read_table(path, labelled=True)


# ------------------------------------------------------------------------------ summaries (JSON)
def write_summary(path: str, summary: dict) -> str:
    """A summary as strict JSON (NaN written as null), atomically."""
    return write_text_atomic(path, json.dumps(json_safe(summary), indent=2, ensure_ascii=False) + "\n")


def read_summary(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ------------------------------------------------------------------------------ a run's tables
def write_result_tables(
    out_dir: str,
    records: list[dict],
    rows: Sequence[tuple[int, str]],
    steps: Sequence[tuple[int, str]],
    *,
    task_order: Sequence[str] = (),
    skipped_tasks: dict[str, str] | None = None,
) -> tuple[list[str], dict]:
    """matrix_<task>.csv per dynamic task, static_scores.csv and eval_summary.json (atomic writes) in
    ``out_dir``, over every task in ``records``. ``rows``: (model step index, label) of the table
    rows; ``steps``: (eval step index, label) of the matrix columns; tasks sorted by ``task_order``
    (the task table's order), others after them by name. Returns (files written, summary)."""
    row_idx = [i for i, _ in rows]
    row_labels = [label for _, label in rows]
    cols = [i for i, _ in steps]
    col_labels = [label for _, label in steps]
    metric, dynamic, static = {}, [], []
    for (m, task, j), rec in latest_results(records).items():
        metric.setdefault(task, rec.get("metric"))
        group = static if j is None else dynamic
        if task not in group:
            group.append(task)
    order = {name: k for k, name in enumerate(task_order)}
    dynamic.sort(key=lambda t: (order.get(t, len(order)), t))
    static.sort(key=lambda t: (order.get(t, len(order)), t))
    files, summary = [], {"dynamic": {}, "static": {}, "skipped_tasks": dict(skipped_tasks or {})}
    for task in dynamic:
        E = build_matrix(records, task, row_idx, cols)
        if all(math.isnan(v) for v in E.ravel()):
            continue
        files.append(write_table_csv(os.path.join(out_dir, matrix_filename(task)), E, row_labels, col_labels))
        if E.shape[0] == E.shape[1]:
            summary["dynamic"][task] = {"metric": metric[task], **transfer_metrics(E)}
        else:
            summary["dynamic"][task] = {"metric": metric[task], "mean": _nanmean(E)}
        stats = cell_stats(records, task, row_idx, cols)
        summary["dynamic"][task].update(
            subsample_pairs=stats.subsample_sizes(), chance=stats.chance_levels(),
            subsample_std=stats.transfer_subsample_std() if E.shape[0] == E.shape[1] else {})
    if static:
        S = static_table(records, static, row_idx)
        keep = [k for k in range(len(static)) if not all(math.isnan(v) for v in S[:, k])]
        if keep:
            names = [static[k] for k in keep]
            files.append(write_table_csv(os.path.join(out_dir, STATIC_SCORES), S[:, keep], row_labels, names))
            for k, name in zip(keep, names):
                summary["static"][name] = {"metric": metric[name], **static_summary(S[:, k])}
    held = [t for t in static if t.startswith("held-out:")]
    if "task-accuracy" in dynamic and held:  # a task stream: knowledge accumulation / zero-shot retention
        from ticlip.eval.task_scores import task_stream_summary

        E = build_matrix(records, "task-accuracy", row_idx, cols)
        chance = cell_stats(records, "task-accuracy", row_idx, cols).chance
        latest = latest_results(records)
        summary["task_stream"] = task_stream_summary(
            E, static_table(records, held, row_idx),
            chance_adapt=[float(np.nanmax(chance[:, j])) if not np.isnan(chance[:, j]).all() else math.nan
                          for j in range(chance.shape[1])],
            chance_held=[next((float(r["chance"]) for (m, t, j), r in latest.items() if t == h and "chance" in r),
                              math.nan) for h in held])
        summary["task_stream"]["held_out_tasks"] = held
    skipped: dict[str, dict] = {}  # eval sets that held unreadable samples (left out, counted)
    for (_, task, j), rec in sorted(latest_results(records).items(), key=lambda kv: str(kv[0])):
        if rec.get("skipped_samples") and rec.get("eval_step"):
            skipped.setdefault(f"{task} {rec['eval_step']['label']}", rec["skipped_samples"])
    if skipped:
        summary["skipped_samples"] = skipped
    summary = json_safe(summary)
    files.append(write_summary(os.path.join(out_dir, SUMMARY), summary))
    return files, summary


def _nanmean(E: np.ndarray) -> float:
    v = E[~np.isnan(E)]
    return float(v.mean()) if v.size else math.nan


__all__ = [
    "CORNER", "CellStats", "EVAL_LOG", "cell_stats", "read_cell_stats", "static_chance", "MATRIX_GLOB", "REPORT_HTML", "REPORT_SUMMARY", "REPORT_TABLE_CSV", "REPORT_TABLE_MD",
    "STATIC_SCORES", "SUMMARY", "append_result", "merge_parts", "part_path", "part_paths", "build_matrix", "latest_results", "matrix_filename",
    "matrix_files", "matrix_metrics", "read_matrix", "read_results", "read_static_scores", "read_summary",
    "read_table", "result_key", "score", "static_table", "task_names", "task_of_matrix_file",
    "write_result_tables", "write_summary", "write_table_csv",
]
