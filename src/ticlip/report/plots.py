"""Report figures (matplotlib, Agg backend, PNG):

- ``heatmap``: E of one method and task with the value in each cell (TiC-CLIP Figure 4, right),
  cells not above chance grey and hatched (``heatmap_figure`` builds the figure);
- ``compute_plot``: a score against cumulative training MACs, one line per method, one point per
  model step (Figure 1 right / Figure 4 left): dynamic tasks use the mean of E's row (the model
  after step i on every step's data), static tasks the score of the model after step i;
- ``step_curves``: per model step, in-domain score E[i, i] and the last model's score on each
  step's data E[T−1, j], one line per method.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ticlip.atomic import atomic_path

_MARKERS = "osD^vP*Xh<>"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> str:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return path


def heatmap_figure(E: np.ndarray, labels: Sequence[str], *, title: str, metric: str = "score",
                   vrange: tuple[float, float] | None = None, at_chance: np.ndarray | None = None):
    """The heatmap's matplotlib Figure (see ``heatmap``); cells where ``at_chance`` is True get a grey
    hatched overlay (a Rectangle with ``gid="at-chance"``) and their value in grey, with a legend."""
    plt = _plt()
    from matplotlib.patches import Patch, Rectangle

    T = len(labels)
    size = max(3.5, 0.75 * T + 1.5)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    data = np.ma.masked_invalid(100 * np.asarray(E, dtype=float))
    vmin, vmax = (100 * vrange[0], 100 * vrange[1]) if vrange else (None, None)
    im = ax.imshow(data, cmap="viridis", aspect="equal", vmin=vmin, vmax=vmax)
    lo, hi = im.get_clim()
    mid = (lo + hi) / 2
    marked = np.zeros((T, T), dtype=bool) if at_chance is None else np.asarray(at_chance, dtype=bool)
    for i in range(T):
        for j in range(T):
            v = E[i, j]
            if math.isnan(v):
                ax.text(j, i, "–", ha="center", va="center", color="grey", fontsize=9)
                continue
            if marked[i, j]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="lightgrey", alpha=0.85,
                                       edgecolor="dimgrey", hatch="///", linewidth=0, gid="at-chance"))
                ax.text(j, i, f"{100 * v:.1f}", ha="center", va="center", fontsize=9, color="dimgrey")
            else:
                ax.text(j, i, f"{100 * v:.1f}", ha="center", va="center", fontsize=9,
                        color="black" if 100 * v > mid else "white")
    if marked.any():
        ax.legend(handles=[Patch(facecolor="lightgrey", edgecolor="dimgrey", hatch="///", label="not above chance")],
                  loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=8, frameon=False)
    ax.set_xticks(range(T), labels, rotation=45, ha="right")
    ax.set_yticks(range(T), labels)
    ax.set_xlabel("evaluation step")
    ax.set_ylabel("model after training step")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=f"{metric} (%)")
    return fig


def heatmap(E: np.ndarray, labels: Sequence[str], path: str, *, title: str, metric: str = "score",
            vrange: tuple[float, float] | None = None, at_chance: np.ndarray | None = None) -> str:
    """E as a heatmap, rows = model after step i, columns = eval data of step j, values in %.

    ``vrange`` (fractions) fixes the colour scale, so heatmaps of several methods compare by colour.
    ``at_chance`` (T×T booleans) marks the cells not above chance: grey, hatched, with a legend.
    """
    plt = _plt()
    fig = heatmap_figure(E, labels, title=title, metric=metric, vrange=vrange, at_chance=at_chance)
    out = _save(fig, path)
    plt.close(fig)
    return out


def _chance_line(ax, chance: float | None) -> None:
    if chance is not None and not math.isnan(chance):
        ax.axhline(100 * chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({100 * chance:.1f}%)")


def compute_plot(series: dict[str, tuple[np.ndarray, np.ndarray]], path: str, *, title: str, ylabel: str,
                 chance: float | None = None) -> str:
    """One line per method: ``series[method] = (cumulative MACs per step, score per step)``; a dashed
    line at ``chance`` (a fraction) when given."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    xs_all = []
    for k, (method, (x, y)) in enumerate(series.items()):
        ok = ~(np.isnan(x) | np.isnan(y))
        if not ok.any():
            continue
        xs_all += list(x[ok])
        ax.plot(x[ok], 100 * y[ok], marker=_MARKERS[k % len(_MARKERS)], label=method)
    positive = [v for v in xs_all if v > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_xscale("log")
    _chance_line(ax, chance)
    ax.set_xlabel("cumulative training compute (MACs)")
    ax.set_ylabel(f"{ylabel} (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    out = _save(fig, path)
    plt.close(fig)
    return out


def step_curves(curves: dict[str, dict[str, np.ndarray]], labels: Sequence[str], path: str, *, title: str,
                ylabel: str, chance: float | dict[str, float | None] | None = None) -> str:
    """Panels side by side, one per curve kind (e.g. "in-domain", "last model"); one line per method.

    ``curves[panel][method]`` is a score per step (NaN where missing); ``chance``: one level for every
    panel, or a level per panel (e.g. per static task).
    """
    plt = _plt()
    panels = list(curves)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    x = np.arange(len(labels))
    ticks = thinned_ticks(labels)  # every step up to MAX_HEATMAP_STEPS steps
    for ax, panel in zip(axes[0], panels):
        for k, (method, y) in enumerate(curves[panel].items()):
            ok = ~np.isnan(y)
            ax.plot(x[ok], 100 * y[ok], marker=_MARKERS[k % len(_MARKERS)], label=method)
        _chance_line(ax, chance.get(panel) if isinstance(chance, dict) else chance)
        ax.set_xticks(x[ticks], [labels[i] for i in ticks], rotation=45, ha="right")
        ax.set_title(panel)
        ax.set_xlabel("step")
        ax.set_ylabel(f"{ylabel} (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    out = _save(fig, path)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------- many steps (monthly streams)
MAX_HEATMAP_STEPS = 24  # above this, heatmaps thin their tick labels and the report adds year-level views


def year_of_label(label: str) -> str | None:
    """The year a step label belongs to: ``"2016-03"`` → ``"2016"``, ``"≤2014-06"`` → ``"2014"``, a range
    ``"2016-01–2016-03"`` → the year of its end; None for labels without a year (task names)."""
    import re

    years = re.findall(r"(?<!\d)(\d{4})(?:-\d{2})?(?!\d)", str(label))
    return years[-1] if years else None


def year_groups(labels: Sequence[str]) -> list[tuple[str, list[int]]] | None:
    """(year, step indices) in step order; None when a label has no year."""
    groups: list[tuple[str, list[int]]] = []
    for i, label in enumerate(labels):
        y = year_of_label(label)
        if y is None:
            return None
        if groups and groups[-1][0] == y:
            groups[-1][1].append(i)
        else:
            groups.append((y, [i]))
    return groups


def aggregate_by_year(E: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """E with its steps grouped by year: cell [a, b] is the mean of E[i, j] over the model steps i of
    year a and the data steps j of year b (NaN cells left out; NaN when all are). Labels without a
    year: E unchanged."""
    groups = year_groups(labels)
    E = np.asarray(E, dtype=float)
    if groups is None:
        return E, list(labels)
    Y = len(groups)
    out = np.full((Y, Y), math.nan)
    for a, (_, rows) in enumerate(groups):
        for b, (_, cols) in enumerate(groups):
            block = E[np.ix_(rows, cols)]
            if (~np.isnan(block)).any():
                out[a, b] = float(np.nanmean(block))
    return out, [y for y, _ in groups]


def thinned_ticks(labels: Sequence[str], max_ticks: int = MAX_HEATMAP_STEPS) -> list[int]:
    """Indices of the labels to show on an axis of many steps: the first step of each year when that
    gives at most ``max_ticks``, else every k-th step (always the first and the last)."""
    T = len(labels)
    if T <= max_ticks:
        return list(range(T))
    groups = year_groups(labels)
    if groups is not None and len(groups) <= max_ticks:
        return [idx[0] for _, idx in groups]
    k = math.ceil(T / max_ticks)
    ticks = list(range(0, T, k))
    return ticks if ticks[-1] == T - 1 else ticks + [T - 1]


def heatmap_many_steps(E: np.ndarray, labels: Sequence[str], path: str, *, title: str, metric: str = "score",
                       vrange: tuple[float, float] | None = None) -> str:
    """E of many steps (more than ``MAX_HEATMAP_STEPS``): colours only, no values in the cells, a
    fixed figure size, and tick labels thinned (``thinned_ticks``), with year boundaries drawn."""
    plt = _plt()
    T = len(labels)
    fig, ax = plt.subplots(figsize=(9.0, 8.0))
    data = np.ma.masked_invalid(100 * np.asarray(E, dtype=float))
    vmin, vmax = (100 * vrange[0], 100 * vrange[1]) if vrange else (None, None)
    im = ax.imshow(data, cmap="viridis", aspect="equal", vmin=vmin, vmax=vmax, interpolation="nearest")
    ticks = thinned_ticks(labels)
    ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=7)
    groups = year_groups(labels) or []
    for _, idx in groups[1:]:
        ax.axhline(idx[0] - 0.5, color="white", linewidth=0.6, alpha=0.7)
        ax.axvline(idx[0] - 0.5, color="white", linewidth=0.6, alpha=0.7)
    ax.set_xlabel(f"evaluation step ({T} steps)")
    ax.set_ylabel("model after training step")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=f"{metric} (%)")
    out = _save(fig, path)
    plt.close(fig)
    return out


def compute_fit_plot(plan, path: str) -> str:
    """The compute planner's figure (``ticlip.report.compute_planner.Plan``): each method's runs (mean ±
    std over seeds at each budget) and its fitted curve against compute (log axis), the target's score
    minus the tolerance as a dashed line, and where each curve reaches it (a dotted vertical line)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    rows = {r.method: r for r in plan.rows}
    all_x = [p.macs for pts in plan.points.values() for p in pts]
    all_x += [r.needed_macs for r in plan.rows if math.isfinite(r.needed_macs) and r.needed_macs > 0]
    lo, hi = math.log10(min(all_x)) - 0.3, math.log10(max(all_x)) + 0.3
    grid = np.linspace(lo, hi, 200)
    for k, (method, pts) in enumerate(plan.points.items()):
        xs = [p.macs for p in pts]
        ys = [100 * p.mean for p in pts]
        err = [100 * float(np.std(p.values, ddof=1)) if len(p.values) > 1 else 0.0 for p in pts]
        line = ax.errorbar(xs, ys, yerr=err, fmt=_MARKERS[k % len(_MARKERS)], capsize=3,
                           label=method + (" (target)" if method == plan.target else ""))
        if method in rows:
            r = rows[method]
            ax.plot(10 ** grid, 100 * r.curve(grid), color=line[0].get_color(), linewidth=1.2)
            if math.isfinite(r.needed_macs) and r.needed_macs > 0:
                ax.axvline(r.needed_macs, color=line[0].get_color(), linestyle=":", linewidth=1)
    ax.axhline(100 * plan.goal(), color="grey", linestyle="--", linewidth=1,
               label=f"{plan.target} − {plan.tolerance:g} pt")
    ax.set_xscale("log")
    ax.set_xlabel("training compute (MACs)")
    ax.set_ylabel(f"{plan.metric} (%)")
    ax.set_title(f"compute to match {plan.target} ({plan.form} fit in log-compute)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out = _save(fig, path)
    plt.close(fig)
    return out


def training_plot(curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: str) -> str:
    """Two panels, training loss and learning rate against the global iteration (counted across
    steps), one line per run: ``curves[run] = (iteration, loss, lr)``."""
    plt = _plt()
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(11.0, 4.0))
    for k, (name, (x, loss, lr)) in enumerate(curves.items()):
        if not x.size:
            continue
        ax_loss.plot(x, loss, linewidth=1, label=name)
        ax_lr.plot(x, lr, linewidth=1, label=name)
    for ax, what in ((ax_loss, "training loss"), (ax_lr, "learning rate")):
        ax.set_xlabel("global iteration (across steps)")
        ax.set_ylabel(what)
        ax.set_title(what)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    out = _save(fig, path)
    plt.close(fig)
    return out
