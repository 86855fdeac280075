"""Summaries of an evaluation matrix E (T×T): E[i, j] is the score of the model after training step i
on the eval data of step j (TiC-CLIP's convention; avalanche calls the same table an accuracy matrix).

- in-domain (ID): mean of the diagonal E[i, i];
- backward transfer: mean of the strict lower triangle (j < i: old data, newer model);
- forward transfer: mean of the strict upper triangle (j > i: data the model has not seen yet);
- the TiC-CLIP appendix variants, each entry minus its row's in-domain score:
  backward_normalised = Σ_i Σ_{j<i} (E[i, j] − E[i, i]) / (T(T−1)/2), forward_normalised likewise
  over j > i.

Missing entries (NaN, e.g. a run still being evaluated) are left out of every mean and counted in
``missing``; with none missing every number is exactly the formula above.
Static tasks have one score per model step: ``static_summary`` gives the last step's and the mean.
Reading E from a CSV file is :mod:`ticlip.eval.results`' job (``read_matrix``, ``matrix_metrics``).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ticlip.errors import TiclipError


class MatrixError(TiclipError, ValueError):
    """An evaluation matrix that is not square or not numeric."""


def as_matrix(E) -> np.ndarray:
    """``E`` as a float T×T array; a clear error when it is not square or not numeric."""
    try:
        a = np.asarray(E, dtype=float)
    except (TypeError, ValueError) as e:
        raise MatrixError(f"evaluation matrix is not numeric: {e}") from None
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise MatrixError(
            f"evaluation matrix must be square (T×T: rows = model steps, columns = eval steps); got shape "
            f"{'×'.join(map(str, a.shape))}"
        )
    if np.isinf(a).any():
        raise MatrixError("evaluation matrix holds infinite values")
    return a


def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def in_domain(E) -> float:
    """Mean of E[i, i]."""
    return _mean(np.diag(as_matrix(E)))


def backward_transfer(E) -> float:
    """Mean of E[i, j] over j < i (NaN for T = 1: nothing lies below the diagonal)."""
    a = as_matrix(E)
    return _mean(a[np.tril_indices_from(a, k=-1)])


def forward_transfer(E) -> float:
    """Mean of E[i, j] over j > i (NaN for T = 1)."""
    a = as_matrix(E)
    return _mean(a[np.triu_indices_from(a, k=1)])


def _normalised(E, lower: bool) -> float:
    a = as_matrix(E)
    rows, cols = np.tril_indices_from(a, k=-1) if lower else np.triu_indices_from(a, k=1)
    # E[i, j] − E[i, i]: the diagonal entry of the same row.
    return _mean(a[rows, cols] - a[rows, rows])


def backward_transfer_normalised(E) -> float:
    """Σ_i Σ_{j<i} (E[i, j] − E[i, i]) / (T(T−1)/2)."""
    return _normalised(E, lower=True)


def forward_transfer_normalised(E) -> float:
    """Σ_i Σ_{j>i} (E[i, j] − E[i, i]) / (T(T−1)/2)."""
    return _normalised(E, lower=False)


def transfer_metrics(E) -> dict:
    """All summaries of E as a dict (NaN where undefined, e.g. transfer for T = 1)."""
    a = as_matrix(E)
    return {
        "steps": int(a.shape[0]),
        "in_domain": in_domain(a),
        "backward": backward_transfer(a),
        "forward": forward_transfer(a),
        "backward_normalised": backward_transfer_normalised(a),
        "forward_normalised": forward_transfer_normalised(a),
        "missing": int(np.isnan(a).sum()),
    }


def static_summary(scores: Sequence[float]) -> dict:
    """A static task's scores per model step (in step order): the last step's score and the mean.

    ``last`` is the last step that has a score (NaN entries are skipped and counted).
    """
    s = np.asarray(list(scores), dtype=float)
    present = s[~np.isnan(s)]
    return {
        "last": float(present[-1]) if present.size else math.nan,
        "mean": float(present.mean()) if present.size else math.nan,
        "steps": int(s.size),
        "missing": int(s.size - present.size),
    }


def json_safe(obj):
    """NaN → None, recursively, so results print as strict JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


__all__ = [
    "MatrixError",
    "as_matrix",
    "backward_transfer",
    "backward_transfer_normalised",
    "forward_transfer",
    "forward_transfer_normalised",
    "in_domain",
    "json_safe",
    "static_summary",
    "transfer_metrics",
]
