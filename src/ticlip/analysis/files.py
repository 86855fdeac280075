"""The files ``ticlip analyze`` writes and the report reads (docs/ANALYSIS.md):

    STREAM/analysis/  shift_fid.csv  shift_tv.csv   square, labelled by step, zero diagonal, symmetric
                      shift.json      settings, sample counts, the top-k nouns, per-step concept drift
                      shift_fid.png  shift_tv.png  thumbs/<step>/*.png (sample images of drifting concepts)
    RUN/analysis/     forgetting.csv  per concept: introducing step, n, recall then and now, drop
                      forgetting.json settings and example thumbnails; thumbs/*.png
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Sequence

import numpy as np

from ticlip.atomic import atomic_path, write_text_atomic
from ticlip.errors import TiclipError

ANALYSIS_DIR = "analysis"
SHIFT_FID = "shift_fid.csv"
SHIFT_TV = "shift_tv.csv"
SHIFT_JSON = "shift.json"
FORGETTING_CSV = "forgetting.csv"
FORGETTING_JSON = "forgetting.json"
THUMB_SIZE = 96


class AnalysisFileError(TiclipError):
    """An analysis file is missing or malformed."""


def write_square_csv(path: str, labels: Sequence[str], M: np.ndarray) -> str:
    """A labelled square matrix: header ``step,<labels>``, then one row per label."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step"] + list(labels))
    for lab, row in zip(labels, M):
        w.writerow([lab] + ["" if math.isnan(v) else f"{v:.6g}" for v in row])
    return write_text_atomic(path, buf.getvalue())


def read_square_csv(path: str) -> tuple[list[str], np.ndarray]:
    """(labels, matrix) of a file ``write_square_csv`` wrote; a file that is not square, labelled
    the same way on both axes, is an error naming the file."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        labels = rows[0][1:]
        if [r[0] for r in rows[1:]] != labels or any(len(r) != len(labels) + 1 for r in rows[1:]):
            raise ValueError("rows and columns are not labelled by the same steps")
        M = np.array([[float(v) if v else math.nan for v in r[1:]] for r in rows[1:]], dtype=float)
    except (OSError, IndexError, ValueError) as e:
        raise AnalysisFileError(f"{path} is not a square step-by-step matrix ({e}); rerun `ticlip analyze shift`") from None
    return labels, M.reshape(len(labels), len(labels))


def write_json(path: str, obj: dict) -> str:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise AnalysisFileError(f"cannot read {path} ({e})") from None


def write_thumbnail(image, path: str, size: int = THUMB_SIZE) -> str:
    """A PIL image as a PNG thumbnail (longest side ``size``), written atomically."""
    img = image.convert("RGB").copy()
    img.thumbnail((size, size))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        img.save(tmp, format="PNG")
    return path


def shift_heatmap(D: np.ndarray, labels: Sequence[str], path: str, *, title: str, unit: str) -> str:
    """A step-by-step distance matrix as a heatmap with the value in each cell (matplotlib, PNG)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    T = len(labels)
    size = max(3.5, 0.75 * T + 1.5)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    im = ax.imshow(np.ma.masked_invalid(D), cmap="magma_r", aspect="equal")
    lo, hi = im.get_clim()
    for i in range(T):
        for j in range(T):
            v = D[i, j]
            text = "–" if math.isnan(v) else f"{v:.3g}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if not math.isnan(v) and v > (lo + hi) / 2 else "black")
    ax.set_xticks(range(T), labels, rotation=45, ha="right")
    ax.set_yticks(range(T), labels)
    ax.set_xlabel("step")
    ax.set_ylabel("step")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=unit)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


__all__ = ["ANALYSIS_DIR", "AnalysisFileError", "FORGETTING_CSV", "FORGETTING_JSON", "SHIFT_FID", "SHIFT_JSON",
           "SHIFT_TV", "THUMB_SIZE", "read_json", "read_square_csv", "shift_heatmap", "write_json",
           "write_square_csv", "write_thumbnail"]
