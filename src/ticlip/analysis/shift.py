"""Distribution shift between the steps of a stream, as pure functions (TiC-CLIP §2.4 and App. C.6:
FID between steps' image embeddings and the total-variation distance between their distributions of
WordNet nouns), and the concepts that are new or grow most at each step.

FID is the Fréchet distance between Gaussians fitted to two sets of embeddings (Heusel et al., 2017):

    d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2})

We compute the trace term from eigenvalues instead of ``scipy.linalg.sqrtm(Σ₁ Σ₂)``: with
A = Σ₁^{1/2} (symmetric, from ``eigh``), Σ₁ Σ₂ is similar to A Σ₂ A, which is symmetric positive
semi-definite, so Tr((Σ₁ Σ₂)^{1/2}) = Σ √λᵢ(A Σ₂ A). ``sqrtm`` works on the non-symmetric product
and, when a covariance is singular (fewer samples per step than embedding dimensions, the usual case
for small eval sets), returns complex values or loses accuracy; the symmetric form needs only
``eigh``, clips round-off negatives to 0 and stays real.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np


# ------------------------------------------------------------------------------ FID
def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance with ddof=1) of an (n, d) array of embeddings; n ≥ 2."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need an (n, d) array with n >= 2 to fit a Gaussian, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(S: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh((S + S.T) / 2)
    return (V * np.sqrt(np.clip(w, 0, None))) @ V.T


def frechet_distance(mu1, S1, mu2, S2) -> float:
    """Fréchet distance (squared, as FID reports it) between N(mu1, S1) and N(mu2, S2)."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    S1, S2 = np.asarray(S1, dtype=np.float64), np.asarray(S2, dtype=np.float64)
    A = _psd_sqrt(S1)
    lam = np.linalg.eigvalsh((A @ S2 @ A + (A @ S2 @ A).T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(lam, 0, None)).sum())
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(S1) + np.trace(S2) - 2 * trace_sqrt)
    return max(d, 0.0)  # round-off can leave -1e-15 for identical Gaussians


def fid(features_a, features_b) -> float:
    """FID between two sets of embeddings ((n, d) arrays)."""
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b))


# ------------------------------------------------------------------------------- TV
def tv_distance(p, q) -> float:
    """Total-variation distance ½ Σ|pᵢ − qᵢ| between two distributions over the same outcomes
    (counts are normalised first; an all-zero vector has no distribution: NaN)."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"distributions over different outcomes: shapes {p.shape} and {q.shape}")
    if (p < 0).any() or (q < 0).any():
        raise ValueError("counts must be non-negative")
    if p.sum() == 0 or q.sum() == 0:
        return float("nan")
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def top_nouns(step_counts: Sequence[Counter], k: int) -> list[str]:
    """The ``k`` nouns mentioned most over all steps together (ties broken alphabetically)."""
    total: Counter = Counter()
    for c in step_counts:
        total.update(c)
    return [w for w, _ in sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def noun_distribution(counts: Counter, vocabulary: Sequence[str]) -> np.ndarray:
    """Counts of ``vocabulary``'s nouns (in its order) as a distribution over the vocabulary; all
    zeros when the step mentions none of them."""
    v = np.array([counts.get(w, 0) for w in vocabulary], dtype=np.float64)
    return v / v.sum() if v.sum() > 0 else v


def pairwise(items: Sequence, distance: Callable[[object, object], float]) -> np.ndarray:
    """The symmetric matrix of ``distance`` between every pair of items, with a zero diagonal
    (each pair computed once)."""
    n = len(items)
    D = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            D[i, j] = D[j, i] = distance(items[i], items[j])
    return D


# ---------------------------------------------------------------------------- drift
@dataclass
class ConceptChange:
    """A noun at one step: its share of the step's captions against its share in all earlier steps."""

    noun: str
    n: int  # captions of this step mentioning it
    share: float  # n / captions of this step
    previous_share: float  # captions of earlier steps mentioning it / their captions (0 at the first step)
    new: bool  # no earlier step mentions it
    examples: list[int] = field(default_factory=list)  # indices of captions of this step mentioning it

    @property
    def growth(self) -> float:
        return self.share - self.previous_share


def concept_drift(step_nouns: Sequence[Sequence[Sequence[str]]], *, top: int = 5, min_count: int = 3,
                  examples: int = 3) -> list[list[ConceptChange]]:
    """Per step, the ``top`` concepts that are new or grew most.

    ``step_nouns[t][i]`` lists the nouns of caption i of step t. A noun's share at a step is the
    fraction of the step's captions mentioning it; its previous share pools all earlier steps.
    Nouns mentioned by fewer than ``min_count`` captions of the step are left out (too noisy).
    Ranked new nouns first (by share), then by growth. At the first step every noun is new, so the
    list is its most frequent nouns.
    """
    out: list[list[ConceptChange]] = []
    before: Counter = Counter()
    captions_before = 0
    for caps in step_nouns:
        here: Counter = Counter()
        where: dict[str, list[int]] = {}
        for i, nouns in enumerate(caps):
            for w in set(nouns):
                here[w] += 1
                where.setdefault(w, []).append(i)
        n_caps = len(caps)
        changes = [
            ConceptChange(w, c, c / n_caps, before[w] / captions_before if captions_before else 0.0,
                          before[w] == 0, where[w][:examples])
            for w, c in here.items() if c >= min_count
        ]
        changes.sort(key=lambda ch: (not ch.new, -(ch.share if ch.new else ch.growth), ch.noun))
        out.append([ch for ch in changes if ch.new or ch.growth > 0][:top])
        before.update(here)
        captions_before += n_caps
    return out


__all__ = ["ConceptChange", "concept_drift", "fid", "frechet_distance", "gaussian_stats", "noun_distribution",
           "pairwise", "top_nouns", "tv_distance"]
