"""Turning images and texts into normalised CLIP features, in large batches, once.

Everything the evaluator scores is computed on these features: retrieval subsamples and zero-shot
logits are cheap matrix products, so the expensive part (the forward pass) runs once per model and
eval set. Images are preprocessed separately (``images_to_pixels``) so that pixel tensors can be
kept across models of one run: every checkpoint of a run shares the model name and so the transform.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F


def eval_transform(bundle) -> Callable:
    """The image transform for evaluation: ticlip's (alpha composited onto a background, as training
    sees it) when ``ticlip.data.transforms`` provides one, else the model's own ``preprocess_val``."""
    try:
        from ticlip.data.transforms import make_eval_transform
    except ImportError:
        return bundle.preprocess_val
    try:
        return _call_make_eval_transform(make_eval_transform, bundle)
    except TypeError:
        return bundle.preprocess_val


def _call_make_eval_transform(make, bundle):
    import inspect

    cfg = getattr(getattr(bundle.model, "visual", None), "preprocess_cfg", None) or {}
    params = inspect.signature(make).parameters
    kwargs = {}
    for key in ("mean", "std", "interpolation", "resize_mode"):
        if key in params and key in cfg:
            kwargs[key] = cfg[key]
    return make(bundle.image_size, **kwargs)


class _Mapped(torch.utils.data.Dataset):
    """A sequence of images (or (image, label) pairs) with the transform applied on access."""

    def __init__(self, items: Sequence, transform: Callable):
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        item = self.items[i]
        if isinstance(item, tuple):
            return (self.transform(item[0]),) + tuple(item[1:])
        return self.transform(item)


def _loader(dataset, batch_size: int, workers: int):
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, persistent_workers=False
    )


def images_to_pixels(images: Sequence, transform: Callable, *, batch_size: int = 256, workers: int = 0) -> torch.Tensor:
    """Preprocess a sequence of PIL images into one (N, 3, H, W) tensor (in order)."""
    if len(images) == 0:
        raise ValueError("no images to preprocess")
    parts = [b for b in _loader(_Mapped(images, transform), batch_size, workers)]
    return torch.cat(parts)


def pixel_bytes(images: Sequence, transform: Callable) -> int:
    """Bytes that ``images_to_pixels`` would take (transforms one image to find the shape)."""
    if len(images) == 0:
        return 0
    first = images[0][0] if isinstance(images[0], tuple) else images[0]
    t = transform(first)
    return int(t.numel() * t.element_size() * len(images))


def _autocast(device: str):
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext()


@torch.inference_mode()
def encode_pixels(model, pixels: torch.Tensor, *, batch_size: int = 256, device: str = "cpu",
                  on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """Normalised image features (float32, on CPU) of preprocessed pixels, in batches
    (``on_batch(n)`` after each batch of ``n``: progress)."""
    model.eval()
    out = []
    with _autocast(device):
        for i in range(0, len(pixels), batch_size):
            x = pixels[i : i + batch_size].to(device, non_blocking=True)
            out.append(F.normalize(model.encode_image(x).float(), dim=-1).cpu())
            if on_batch is not None:
                on_batch(len(x))
    return torch.cat(out)


@torch.inference_mode()
def encode_image_dataset(
    model, dataset: Iterable, transform: Callable | None, *, batch_size: int = 256, device: str = "cpu", workers: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, list[Any] | None]:
    """Features of a (map-style or iterable) dataset yielding images or (image, label) pairs,
    streamed through a DataLoader (``workers`` processes decode and transform). Returns
    (features, labels or None) in the dataset's order (per worker for iterable datasets)."""
    model.eval()
    ds = _Mapped(dataset, transform) if (transform is not None and hasattr(dataset, "__getitem__")) else dataset
    feats, labels = [], []
    with _autocast(device):
        for batch in _loader(ds, batch_size, workers):
            if isinstance(batch, (list, tuple)):
                x, y = batch[0], batch[1]
                labels.extend(y.tolist() if torch.is_tensor(y) else list(y))
            else:
                x = batch
            feats.append(F.normalize(model.encode_image(x.to(device)).float(), dim=-1).cpu())
            if on_batch is not None:
                on_batch(len(x))
    if not feats:
        raise ValueError("the dataset yielded no images")
    return torch.cat(feats), (labels or None)


@torch.inference_mode()
def encode_texts(model, tokenizer: Callable, texts: Sequence[str], *, batch_size: int = 256, device: str = "cpu",
                 on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """Normalised text features (float32, on CPU), in batches (``on_batch(n)`` after each)."""
    model.eval()
    out = []
    with _autocast(device):
        for i in range(0, len(texts), batch_size):
            tokens = tokenizer(list(texts[i : i + batch_size])).to(device)
            out.append(F.normalize(model.encode_text(tokens).float(), dim=-1).cpu())
            if on_batch is not None:
                on_batch(len(tokens))
    return torch.cat(out)


__all__ = ["encode_image_dataset", "encode_pixels", "encode_texts", "eval_transform", "images_to_pixels", "pixel_bytes"]
