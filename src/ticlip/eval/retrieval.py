"""Image-text retrieval metrics on precomputed, normalised features (CLIP_benchmark-style standalone
functions; result names as DataComp writes them).

- ``image_retrieval_recall@k``: text → image (a caption finds its image among all images);
- ``text_retrieval_recall@k``: image → text (an image finds one of its captions among all captions);
- ``mean_recall@k``: their mean; ``mean_recall@1`` is the main dynamic metric.

Ties count against the model: a query's rank is the number of wrong candidates scoring at least as
high as the best right one. (Arbitrary tie-breaking would give a collapsed model, whose features
are all equal, perfect recall.)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

DEFAULT_KS = (1, 5, 10)
_CHUNK = 2048  # query rows scored at once: bounds memory at _CHUNK × candidates


def _as_tensor(x) -> torch.Tensor:
    t = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
    return t.detach().float().cpu()


def _ranks_one_positive(queries: torch.Tensor, candidates: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Rank of each query's single right candidate ``positive[q]``."""
    ranks = []
    for s in range(0, len(queries), _CHUNK):
        sims = queries[s : s + _CHUNK] @ candidates.T
        rows = torch.arange(sims.shape[0])
        right = sims[rows, positive[s : s + _CHUNK]]
        ranks.append((sims >= right[:, None]).sum(dim=1) - 1)  # minus the right one itself
    return torch.cat(ranks)


def _ranks_many_positives(queries: torch.Tensor, candidates: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """Rank of each query's best right candidate, where candidate c belongs to query ``owner[c]``."""
    ranks = []
    for s in range(0, len(queries), _CHUNK):
        sims = queries[s : s + _CHUNK] @ candidates.T
        q = torch.arange(s, s + sims.shape[0])
        mine = owner[None, :] == q[:, None]
        best = sims.masked_fill(~mine, float("-inf")).max(dim=1).values
        ranks.append(((sims >= best[:, None]) & ~mine).sum(dim=1))
    return torch.cat(ranks)


def recall_at_k(image_features, text_features, ks: Sequence[int] = DEFAULT_KS, text_to_image=None) -> dict[str, float]:
    """Recall@k both ways on normalised features.

    By default pairs are aligned by index (text i describes image i). For sets with several
    captions per image (Flickr30k) pass ``text_to_image[i]`` = index of caption i's image.
    """
    img = _as_tensor(image_features)
    txt = _as_tensor(text_features)
    if img.ndim != 2 or txt.ndim != 2 or img.shape[1] != txt.shape[1]:
        raise ValueError(f"feature shapes do not match: images {tuple(img.shape)}, texts {tuple(txt.shape)}")
    if text_to_image is None:
        if len(img) != len(txt):
            raise ValueError(f"{len(img)} images and {len(txt)} texts: pass text_to_image for unaligned sets")
        owner = torch.arange(len(txt))
    else:
        owner = torch.as_tensor(np.asarray(text_to_image), dtype=torch.long)
        if len(owner) != len(txt) or (len(owner) and (owner.min() < 0 or owner.max() >= len(img))):
            raise ValueError("text_to_image must give an image index for every text")
    if len(img) == 0:
        raise ValueError("no pairs to score")
    t2i = _ranks_one_positive(txt, img, owner)
    i2t = _ranks_many_positives(img, txt, owner)
    has_caption = torch.zeros(len(img), dtype=torch.bool)
    has_caption[owner] = True
    i2t = i2t[has_caption]
    out: dict[str, float] = {}
    for k in ks:
        ir = float((t2i < k).float().mean())
        tr = float((i2t < k).float().mean())
        out[f"image_retrieval_recall@{k}"] = ir
        out[f"text_retrieval_recall@{k}"] = tr
        out[f"mean_recall@{k}"] = (ir + tr) / 2
    return out


def subsample_indices(n: int, size: int, seed: int, key: int = 0) -> np.ndarray:
    """``size`` distinct indices of ``range(n)`` (sorted), fixed by (seed, key): every model sees
    the same subsample of a step (``key``, e.g. the step index) for a seed. All of them if size ≥ n."""
    if size >= n:
        return np.arange(n)
    rng = np.random.default_rng([int(seed), int(key)])
    return np.sort(rng.choice(n, size=size, replace=False))


def subsample_recalls(
    image_features,
    text_features,
    *,
    size: int,
    seeds: Sequence[int] = (0, 1, 2),
    key: int = 0,
    ks: Sequence[int] = DEFAULT_KS,
) -> tuple[list[dict[str, float]], int]:
    """``recall_at_k`` on each seed's subsample of ``size`` aligned pairs: (one dict per seed, pairs
    scored). A set no larger than ``size`` is scored whole, once (every seed would draw all of it)."""
    img = _as_tensor(image_features)
    txt = _as_tensor(text_features)
    n = len(img)
    if size <= 0:
        raise ValueError(f"subsample size must be positive, got {size}")
    if n <= size:
        seeds = list(seeds)[:1]  # every seed would draw all pairs
    runs = []
    for seed in seeds:
        idx = torch.as_tensor(subsample_indices(n, size, seed, key))
        runs.append(recall_at_k(img[idx], txt[idx], ks))
    return runs, min(n, size)


def subsampled_recall(
    image_features,
    text_features,
    *,
    size: int,
    seeds: Sequence[int] = (0, 1, 2),
    key: int = 0,
    ks: Sequence[int] = DEFAULT_KS,
) -> tuple[dict[str, float], dict[str, float], int]:
    """``recall_at_k`` on a random subsample of ``size`` aligned pairs, once per seed.

    Returns (mean over seeds, standard deviation over seeds (ddof=1; 0 for one seed or when the
    set is no larger than ``size``, since every seed then draws the whole set), pairs scored).
    """
    runs, n = subsample_recalls(image_features, text_features, size=size, seeds=seeds, key=key, ks=ks)
    keys = list(runs[0])
    values = {k: np.array([r[k] for r in runs]) for k in keys}
    mean = {k: float(v.mean()) for k, v in values.items()}
    std = {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()}
    return mean, std, n


__all__ = ["DEFAULT_KS", "recall_at_k", "subsample_indices", "subsample_recalls", "subsampled_recall"]
