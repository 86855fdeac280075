"""Merge operators: pure functions on state dicts (name -> tensor), for the ``merge`` method family.

Every operator combines the floating-point entries of its models; any other entry (integer buffers,
masks) is taken from the **newest** model, the last one given. Inputs are never changed; the result
holds new tensors on the newest model's device and dtype.

- ``lerp(old, new, alpha)``: (1 − α)·old + α·new: linear interpolation; applied to the running merge
  and each new model it is an exponential moving average (EMA) of the models (Patching, Ilharco et al.
  2022; the EMA merge of FoMo-in-Flux, Roth et al. NeurIPS 2024, and of TIME, Dziadzio et al. CVPR 2025).
- ``slerp(old, new, alpha)``: spherical interpolation per tensor (Shoemake 1985, as used for model
  merging by FoMo-in-Flux and TIME); tensors that are near-parallel (or zero) fall back to ``lerp``.
- ``task_arithmetic(base, models, scaling)``: base + λ·Σ τ_i with task vectors τ_i = θ_i − base
  (Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023).
- ``ties(base, models, top_k, scaling)``: TIES-merging (Yadav et al., NeurIPS 2023, §3): trim each task
  vector to its top-k fraction by magnitude, elect a sign per entry by the summed mass, and average the
  entries that agree with it (the disjoint mean); base + λ·merged vector. Trimming is per tensor, as in
  mergekit's TIES: one global threshold would let tensors of large scale (logit_scale) crowd out the rest.
- ``dare_ties(base, models, drop_rate, scaling, seed)``: DARE (Yu et al., "Language Models are Super
  Mario", ICML 2024, §3): drop each task-vector entry with probability p and rescale the kept ones by
  1/(1 − p), then TIES's sign election and disjoint mean in place of its trimming; seeded.
- ``average(models, weights)``: Σ w_i·θ_i / Σ w_i (uniform without weights): offline merging of all
  checkpoints so far (model soups, Wortsman et al. ICML 2022; "offline merging" in TIME).

Written by hand on plain torch because each is a few tensor operations and the libraries that offer
them (mergekit, fusion_bench) work on whole model repositories, not on state dicts in memory.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

StateDict = Mapping[str, torch.Tensor]

# |cos| above this: the tensors are (anti)parallel and slerp's sin ω ≈ 0, so slerp falls back to lerp
SLERP_PARALLEL = 1.0 - 1e-6


def _floating(key: str, newest: torch.Tensor, others: Sequence[StateDict]) -> bool:
    """Whether entry ``key`` is merged: floating point, and present with the same shape in every model."""
    return newest.is_floating_point() and all(
        key in m and m[key].is_floating_point() and m[key].shape == newest.shape for m in others)


def _merge_each(models: Sequence[StateDict], fn) -> dict:
    """{key: fn(key, [tensors of the models, on the newest's device/dtype])} for the merged entries, a
    copy of the newest model's entry for the others."""
    newest = models[-1]
    out = {}
    for k, v in newest.items():
        if _floating(k, v, models[:-1]):
            out[k] = fn(k, [m[k].to(v.device, v.dtype) for m in models[:-1]] + [v])
        else:
            out[k] = v.clone()
    return out


# --------------------------------------------------------------------------- two models
def lerp(old: StateDict, new: StateDict, alpha: float) -> dict:
    """(1 − α)·old + α·new on the floating entries (``torch.lerp``); α = 1 gives copies of ``new``."""
    alpha = float(alpha)
    return _merge_each([old, new], lambda k, t: t[0].lerp(t[1], alpha) if alpha != 1.0 else t[1].clone())


def _slerp_tensor(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    a64, b64 = a.double().flatten(), b.double().flatten()
    na, nb = a64.norm(), b64.norm()
    if na == 0 or nb == 0:
        return a.lerp(b, alpha)
    cos = torch.clamp(torch.dot(a64, b64) / (na * nb), -1.0, 1.0)
    if cos.abs() > SLERP_PARALLEL:
        return a.lerp(b, alpha)
    omega = torch.arccos(cos)
    s = torch.sin(omega)
    out = (torch.sin((1.0 - alpha) * omega) / s) * a64 + (torch.sin(alpha * omega) / s) * b64
    return out.reshape(a.shape).to(a.dtype)


def slerp(old: StateDict, new: StateDict, alpha: float) -> dict:
    """Spherical interpolation per tensor, t = α towards ``new``: sin((1−α)ω)/sin ω·old + sin(αω)/sin ω·new,
    ω the angle between the flattened tensors (computed in float64); near-parallel or zero tensors
    (|cos ω| > ``SLERP_PARALLEL``) are interpolated linearly."""
    alpha = float(alpha)
    return _merge_each([old, new], lambda k, t: _slerp_tensor(t[0], t[1], alpha))


# --------------------------------------------------------------------------- task vectors
def task_arithmetic(base: StateDict, models: Sequence[StateDict], scaling: float) -> dict:
    """base + λ·Σ_i (θ_i − base) on the floating entries."""
    lam = float(scaling)

    def fn(k, t):
        b = t[0]
        total = torch.zeros_like(b)
        for x in t[1:]:
            total += x - b
        return b + lam * total

    return _merge_each([base, *models], fn)


def trim_top_k(tau: torch.Tensor, top_k: float) -> torch.Tensor:
    """``tau`` with all but its ``top_k`` fraction of entries of largest magnitude set to 0 (at least one
    entry kept; ties at the threshold are kept)."""
    if top_k >= 1.0:
        return tau.clone()
    keep = max(1, int(round(top_k * tau.numel())))
    threshold = tau.abs().flatten().kthvalue(tau.numel() - keep + 1).values
    return torch.where(tau.abs() >= threshold, tau, torch.zeros_like(tau))


def elect_and_merge(taus: Sequence[torch.Tensor]) -> torch.Tensor:
    """TIES's sign election and disjoint mean: per entry, the sign of Σ τ_i, then the mean of the τ_i
    entries that are non-zero and of that sign (0 where none is)."""
    stacked = torch.stack(list(taus))
    sign = torch.sign(stacked.sum(dim=0))
    agree = (torch.sign(stacked) == sign) & (stacked != 0)
    count = agree.sum(dim=0)
    total = torch.where(agree, stacked, torch.zeros_like(stacked)).sum(dim=0)
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))


def ties(base: StateDict, models: Sequence[StateDict], top_k: float, scaling: float) -> dict:
    """TIES-merging: base + λ·elect_and_merge([trim_top_k(θ_i − base, k)])."""
    lam, k = float(scaling), float(top_k)
    return _merge_each([base, *models],
                       lambda key, t: t[0] + lam * elect_and_merge([trim_top_k(x - t[0], k) for x in t[1:]]))


def dare(tau: torch.Tensor, drop_rate: float, generator: torch.Generator) -> torch.Tensor:
    """DARE: each entry dropped with probability p, the kept ones scaled by 1/(1 − p). The mask is drawn
    on the CPU from ``generator`` (so it does not depend on the device)."""
    p = float(drop_rate)
    if p <= 0.0:
        return tau.clone()
    keep = torch.rand(tau.shape, generator=generator, dtype=torch.float64) >= p
    return torch.where(keep.to(tau.device), tau / (1.0 - p), torch.zeros_like(tau))


def dare_ties(base: StateDict, models: Sequence[StateDict], drop_rate: float, scaling: float, seed: int) -> dict:
    """DARE with TIES: base + λ·elect_and_merge([dare(θ_i − base, p)]); masks drawn from one generator
    seeded with ``seed``, entries in sorted key order, models in the order given."""
    lam = float(scaling)
    gen = torch.Generator().manual_seed(int(seed))
    models = list(models)
    newest = models[-1]
    order = sorted(k for k, v in newest.items() if _floating(k, v, [base, *models[:-1]]))
    sparse = {k: [dare(m[k].to(newest[k].device, newest[k].dtype) - base[k].to(newest[k].device, newest[k].dtype),
                       drop_rate, gen) for m in models] for k in order}
    return _merge_each([base, *models], lambda k, t: t[0] + lam * elect_and_merge(sparse[k]))


# --------------------------------------------------------------------------- many models
def average(models: Sequence[StateDict], weights: Sequence[float] | None = None) -> dict:
    """Σ w_i·θ_i / Σ w_i (w_i = 1 without ``weights``), accumulated in the order given."""
    models = list(models)
    if not models:
        raise ValueError("average needs at least one model")
    w = [1.0] * len(models) if weights is None else [float(x) for x in weights]
    if len(w) != len(models) or any(x < 0 for x in w) or not sum(w) > 0:
        raise ValueError(f"average needs one weight >= 0 per model with a positive sum, got {list(w)}")

    def fn(k, t):
        acc = t[0] * w[0]
        for x, wi in zip(t[1:], w[1:]):
            acc = acc + x * wi
        return acc / sum(w)

    return _merge_each(models, fn)


__all__ = ["SLERP_PARALLEL", "average", "dare", "dare_ties", "elect_and_merge", "lerp", "slerp", "task_arithmetic",
           "ties", "trim_top_k"]
