"""Scorers: one function per task kind, shared by the evaluator and by methods that tune on held-out
data (Patching's coefficient), so a method tunes on exactly the metric the report shows.

``score_retrieval`` encodes a held-out set with a model and returns ``recall_at_k`` (ties count
against the model; one caption per image, aligned by index), with the model's train/eval mode
restored afterwards.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ticlip.eval.encode import encode_pixels, encode_texts
from ticlip.eval.retrieval import DEFAULT_KS, recall_at_k


def score_retrieval(
    model,
    pixels: torch.Tensor,
    captions: Sequence[str],
    tokenizer: Callable,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 256,
    device: str = "cpu",
) -> dict[str, float]:
    """Recall@k both ways of ``model`` on preprocessed ``pixels`` and their ``captions``."""
    was_training = model.training
    try:
        img = encode_pixels(model, pixels, batch_size=batch_size, device=str(device))
        txt = encode_texts(model, tokenizer, list(captions), batch_size=batch_size, device=str(device))
    finally:
        model.train(was_training)
    return recall_at_k(img, txt, ks)


__all__ = ["score_retrieval"]
