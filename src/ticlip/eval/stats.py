"""Chance levels and the statistics a comparison needs (NumPy + SciPy; no torch).

Chance levels (what a model that ranks at random scores):

- retrieval ``*_recall@k`` on ``n`` aligned pairs (one right answer per query): ``min(1, k / n)``;
  ``mean_recall@k`` is the mean of the image→text and text→image recalls, each ``k / n`` at chance,
  so it is ``k / n`` too (with several captions per image, image→text with ``c_i`` right captions
  among ``N`` texts has chance ``c_i / N``, whose mean over images is ``1 / images``: the same
  ``k / images``);
- classification top-k accuracy and mean per-class recall over ``C`` classes: ``min(1, k / C)``.

Above chance (heatmap cells): a one-sided binomial test of the cell's score against its chance level
at α = 0.05, counting ``trials`` Bernoulli trials (retrieval: 2n, both directions; classification:
the images).

Paired comparison of a method with a reference (per-seed differences of one metric, the runs paired
by training seed), ``paired_difference``:

- 3 or more paired seeds: a two-sided paired t-test (``scipy.stats.ttest_rel``; α = 0.05);
- 2 paired seeds: a paired bootstrap over training seeds and eval subsamples (seeds resampled with
  replacement; for each drawn seed one of its eval subsamples, when the per-subsample values are
  known), two-sided percentile interval at 95 %: within noise when it contains 0;
- 1 paired seed: not tested (``test="untested"``): one run cannot tell a difference from seed noise.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

ALPHA = 0.05
BOOTSTRAP_SAMPLES = 10_000
T_TEST = "paired t-test over training seeds"
BOOTSTRAP = "paired bootstrap over training seeds and eval subsamples"
UNTESTED = "untested"

_AT_K = re.compile(r"(?:@|acc)(\d+)$")


def metric_k(metric: str) -> int:
    """The k of a top-k metric name (``mean_recall@5`` → 5, ``acc1`` → 1); 1 for others
    (``mean_per_class_recall``)."""
    m = _AT_K.search(metric or "")
    return int(m.group(1)) if m else 1


def retrieval_chance(n: int, metric: str = "mean_recall@1") -> float:
    """Recall@k of a random ranking of ``n`` pairs with one right answer per query: min(1, k/n)."""
    if not n or n <= 0:
        return math.nan
    return min(1.0, metric_k(metric) / float(n))


def classification_chance(classes: int, metric: str = "acc1") -> float:
    """Top-k accuracy (or mean per-class recall) of a random guess among ``classes``: min(1, k/C)."""
    if not classes or classes <= 0:
        return math.nan
    return min(1.0, metric_k(metric) / float(classes))


def above_chance(score: float, chance: float, trials: int, alpha: float = ALPHA) -> bool | None:
    """Whether ``score`` (a fraction of ``trials`` successes) is above ``chance`` by a one-sided
    binomial test at ``alpha``; None when it cannot be told (NaN score or chance, no trials)."""
    if score is None or chance is None or math.isnan(score) or math.isnan(chance) or not trials or trials <= 0:
        return None
    from scipy.stats import binom

    successes = int(round(score * trials))
    if successes <= chance * trials:
        return False
    p = float(binom.sf(successes - 1, int(trials), min(1.0, max(0.0, chance))))
    return p < alpha


@dataclass
class PairedResult:
    """A method minus the reference, paired by training seed."""

    diff: float  # mean over paired seeds of (method − reference)
    std: float  # sample std of the per-seed differences (NaN for one seed)
    seeds: int  # paired seeds
    test: str  # T_TEST, BOOTSTRAP or UNTESTED
    p: float  # two-sided p-value (t-test), NaN otherwise
    low: float  # 95 % interval of the mean difference (t or bootstrap); NaN when untested
    high: float
    within_noise: bool | None  # None: untested

    def as_dict(self) -> dict:
        return dict(diff=self.diff, std=self.std, seeds=self.seeds, test=self.test, p=self.p, low=self.low,
                    high=self.high, within_noise=self.within_noise)


def paired_difference(
    method: Sequence[float],
    reference: Sequence[float],
    *,
    method_subsamples: Sequence[Sequence[float]] | None = None,
    reference_subsamples: Sequence[Sequence[float]] | None = None,
    alpha: float = ALPHA,
    bootstrap_samples: int = BOOTSTRAP_SAMPLES,
    rng_seed: int = 0,
) -> PairedResult:
    """Compare per-seed values of a metric (``method[s]`` and ``reference[s]`` from the same training
    seed s; NaN pairs are dropped). ``*_subsamples[s]``: the metric per eval subsample of seed s's run
    (used by the bootstrap; optional). See the module docstring for the test chosen."""
    a = np.asarray(method, dtype=float)
    b = np.asarray(reference, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.shape} vs {b.shape}")
    ok = ~(np.isnan(a) | np.isnan(b))
    d = a[ok] - b[ok]
    n = int(d.size)
    if n == 0:
        return PairedResult(math.nan, math.nan, 0, UNTESTED, math.nan, math.nan, math.nan, None)
    mean = float(d.mean())
    std = float(d.std(ddof=1)) if n > 1 else math.nan
    if n == 1:
        return PairedResult(mean, std, 1, UNTESTED, math.nan, math.nan, math.nan, None)
    if n >= 3:
        if std == 0.0:  # every seed differs by the same amount: exact
            p = 1.0 if mean == 0.0 else 0.0
            return PairedResult(mean, std, n, T_TEST, p, mean, mean, p >= alpha)
        from scipy import stats

        p = float(stats.ttest_rel(a[ok], b[ok]).pvalue)
        half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * std / math.sqrt(n)
        return PairedResult(mean, std, n, T_TEST, p, mean - half, mean + half, not p < alpha)
    # two seeds: bootstrap over seeds (and subsamples, when known)
    idx = np.flatnonzero(ok)
    subs = None
    if method_subsamples is not None and reference_subsamples is not None:
        subs = []
        for s in idx:
            ma = np.asarray(method_subsamples[s], dtype=float)
            rb = np.asarray(reference_subsamples[s], dtype=float)
            if ma.size == 0 or ma.shape != rb.shape:
                subs = None
                break
            subs.append(ma - rb)  # the same subsamples for both methods: paired
    rng = np.random.default_rng(rng_seed)
    draws = rng.integers(0, n, size=(bootstrap_samples, n))
    if subs is None:
        boot = d[draws].mean(axis=1)
    else:
        per = np.empty((bootstrap_samples, n))
        for k in range(n):
            seed_pick = draws[:, k]
            vals = np.empty(bootstrap_samples)
            for s in range(n):
                mask = seed_pick == s
                vals[mask] = subs[s][rng.integers(0, subs[s].size, size=int(mask.sum()))]
            per[:, k] = vals
        boot = per.mean(axis=1)
    low, high = (float(x) for x in np.quantile(boot, [alpha / 2, 1 - alpha / 2]))
    within = not (low > 0 or high < 0)
    return PairedResult(mean, std, n, BOOTSTRAP, math.nan, low, high, within)


def tests_used(results: Sequence[PairedResult]) -> str:
    """The tests used in ``results``, for a table footer."""
    names = sorted({r.test for r in results if r.test != UNTESTED})
    return "; ".join(names) if names else UNTESTED


__all__ = [
    "ALPHA", "BOOTSTRAP", "PairedResult", "T_TEST", "UNTESTED", "above_chance", "classification_chance",
    "metric_k", "paired_difference", "retrieval_chance", "tests_used",
]
