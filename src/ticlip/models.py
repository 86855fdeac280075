"""Model factory on top of open_clip: any open_clip model by name, plus tiny configs shipped with
ticlip (registered with open_clip's model registry), checkpoint load/save in open_clip's format.

Checkpoints written here load with ``open_clip.create_model_and_transforms(name, pretrained=path)``
and with ``open_clip.load_checkpoint``: ``{"state_dict": ..., "epoch": ..., "name": ...}`` as
open_clip's trainer writes them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable

from ticlip.atomic import torch_save_atomic
from ticlip.errors import TiclipError

TINY_MODELS = ("ticlip-tiny-32", "ticlip-tiny-64")
_registered = False


class _NoRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


_NOTICE_FILTER = _NoRandomInitNotice()


@contextlib.contextmanager
def quiet_open_clip():
    """Hide open_clip's "No pretrained weights loaded" warning while models are made: ticlip loads
    its own checkpoints right after (or starts from random weights on purpose). The one way ticlip
    silences open_clip: open_clip logs it through the root logger, so a filter there drops that
    one message while every other warning still shows."""
    root = logging.getLogger()
    root.addFilter(_NOTICE_FILTER)
    try:
        yield
    finally:
        root.removeFilter(_NOTICE_FILTER)


def register_tiny_models() -> None:
    """Add ticlip's tiny model configs to open_clip's registry (idempotent)."""
    global _registered
    if _registered:
        return
    import open_clip

    cfg_dir = resources.files("ticlip") / "model_configs"
    with resources.as_file(cfg_dir) as path:
        open_clip.add_model_config(str(path))
    _registered = True


def model_config(name: str) -> dict:
    register_tiny_models()
    import open_clip

    cfg = open_clip.get_model_config(name)
    if cfg is None:
        known = ", ".join(sorted(open_clip.list_models())[:8])
        raise TiclipError(
            f"unknown model {name!r}; use an open_clip model name ({known}, ... see "
            f"`python -c 'import open_clip; print(open_clip.list_models())'`) or one of {', '.join(TINY_MODELS)}"
        )
    return cfg


@dataclass
class ModelBundle:
    """A model with its train/eval image transforms and its tokenizer."""

    name: str
    model: Any
    preprocess_train: Callable
    preprocess_val: Callable
    tokenizer: Callable

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def context_length(self) -> int:
        return int(self.model.context_length)


def create_model(
    name: str,
    init: str | None = None,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    seed: int | None = None,
) -> ModelBundle:
    """Create an open_clip model by name; ``init`` is an OpenCLIP checkpoint path to start from.

    ``init`` may hold a bare state dict or ``{"state_dict": ...}``, with or without the
    ``module.`` prefix DDP adds; open_clip's loader handles both (and old text-tower layouts).
    """
    import open_clip
    import torch

    model_config(name)  # clear error for unknown names
    if init is not None and not os.path.exists(init):
        raise TiclipError(f"checkpoint {init} does not exist")
    if seed is not None:
        torch.manual_seed(seed)
    model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
        name, pretrained=None, precision=precision, device=device, output_dict=True
    )
    if init is not None:
        try:
            open_clip.load_checkpoint(model, init, weights_only=False)
        except RuntimeError as e:
            raise TiclipError(f"checkpoint {init} does not fit model {name!r}: {str(e)[:500]}") from None
    tokenizer = open_clip.get_tokenizer(name)
    return ModelBundle(name, model, preprocess_train, preprocess_val, tokenizer)


def unwrap(model):
    """The bare model under DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(model, path: str, *, name: str | None = None, extra: dict | None = None) -> str:
    """Save ``model`` in open_clip's checkpoint format, atomically (temp file, then rename)."""
    payload = {"state_dict": unwrap(model).state_dict(), "name": name or ""}
    if extra:
        payload.update(extra)
    return torch_save_atomic(payload, path)


def describe(name: str) -> str:
    return json.dumps(model_config(name), indent=2)
