"""One step's training as a library function: the TiC-CLIP / open_clip recipe.

- AdamW (betas 0.9/0.98, eps 1e-6, weight decay 0.2) with open_clip's weight-decay rule: no decay on
  parameters with fewer than 2 dimensions or named "bn", "ln", "bias" or "logit_scale" (gains,
  biases, the class embedding, the logit scale); token and positional embeddings ARE decayed;
- open_clip's ``ClipLoss`` (local loss + gather-with-grad under DDP, see ``ticlip.train.dist``);
- precision fp32, bf16 (autocast, CPU and GPU) or fp16 (autocast + GradScaler, GPU only);
- gradient accumulation as open_clip does it: the contrastive loss of the accumulated batch is exactly
  the loss of one big batch (features of the other micro-batches are cached without gradients);
- optional gradient clipping; the logit scale is clamped to ln(100) after every update.

``train_loop`` consumes an iterator of micro-batches ``(images, texts)`` and knows nothing about
streams, files or budgets beyond the numbers it is given: the benchmark feeds it in-memory batches,
``ticlip.train.run`` feeds it the webdataset mixture.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator

from ticlip.errors import TiclipError

LOGIT_SCALE_MAX = math.log(100.0)


# --------------------------------------------------------------------------- optimizer
def no_decay(name: str, param) -> bool:
    """open_clip's exclusion rule (``open_clip_train/main.py``): ``p.ndim < 2 or "bn" in n or "ln" in n
    or "bias" in n or "logit_scale" in n``. Nothing else is excluded: open_clip decays the token and
    positional embeddings (2-d) and ignores the model's ``no_weight_decay()``, which is for timm's
    optimizers."""
    return param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def param_groups(model, wd: float) -> list[dict]:
    """open_clip's two AdamW groups, in its order: gains and biases (weight decay 0), then the rest
    (weight decay ``wd``); parameters that do not require gradients are left out."""
    decay, rest = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (rest if no_decay(name, p) else decay).append(p)
    return [{"params": rest, "weight_decay": 0.0}, {"params": decay, "weight_decay": wd}]


def make_optimizer(model, *, lr: float, wd: float = 0.2, betas=(0.9, 0.98), eps: float = 1e-6, kind: str = "adamw"):
    """AdamW over ``param_groups`` (pass the bare model, not the DDP wrapper).

    ``kind="schedule-free-adamw"``: schedule-free AdamW (Defazio et al. 2024, "The Road Less Scheduled";
    PyPI ``schedulefree``) over the same groups. The LR the loop sets each iteration is its ``lr``: a
    constant schedule, whose warmup equals the optimizer's own ``warmup_steps`` (left at 0). Its
    parameters hold the training sequence y in train mode and the evaluated average x in eval mode:
    ``train_loop`` switches it (``schedule_free_mode``), so checkpoints after the loop are x."""
    import torch

    if kind == "schedule-free-adamw":
        import schedulefree

        return schedulefree.AdamWScheduleFree(param_groups(model, wd), lr=lr, betas=tuple(betas), eps=eps,
                                              weight_decay=wd, warmup_steps=0)
    if kind != "adamw":
        raise TiclipError(f"unknown optimizer {kind!r}: choose adamw or schedule-free-adamw")
    kwargs: dict[str, Any] = {}
    # The fused kernel is the fastest AdamW on both CPU and GPU in torch >= 2.4.
    if all(p.device.type in ("cpu", "cuda") for p in model.parameters()):
        kwargs["fused"] = True
    return torch.optim.AdamW(param_groups(model, wd), lr=lr, betas=tuple(betas), eps=eps, **kwargs)


def schedule_free_mode(optimizer, train: bool) -> None:
    """Put a schedule-free optimizer in train mode (parameters = y, before optimizer steps) or eval mode
    (parameters = x, the weights to evaluate and save); other optimizers have no modes."""
    switch = getattr(optimizer, "train" if train else "eval", None)
    if callable(switch):
        switch()


# --------------------------------------------------------------------------- precision
def autocast_context(precision: str, device: str):
    """A context manager running the forward pass in ``precision``."""
    import torch

    dev_type = "cuda" if str(device).startswith("cuda") else "cpu"
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        autocast = torch.autocast(device_type=dev_type, dtype=torch.bfloat16)
        return _CpuBf16(autocast) if dev_type == "cpu" else autocast
    if precision == "fp16":
        if dev_type != "cuda":
            raise TiclipError("precision fp16 needs a CUDA GPU (it uses a gradient scaler); use bf16 or fp32 on CPU")
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    raise TiclipError(f"unknown precision {precision!r}; use fp32, bf16 or fp16")


class _CpuBf16:
    """bf16 autocast on CPU with the math attention kernel: on CPU in bf16, PyTorch's default (flash)
    attention kernel is slow in the backward pass for short sequences. Measured on a 2-core x86 machine
    (torch 2.14, one thread, batch 128, one training iteration): ticlip-tiny-rn32 167 -> 128 ms,
    ticlip-tiny-32 204 -> 156 ms; in fp32 the default kernel is faster, so fp32 keeps it. Re-enterable,
    like the autocast object it wraps."""

    def __init__(self, autocast):
        self.autocast = autocast
        self._stack: list = []

    def __enter__(self):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        stack = contextlib.ExitStack()
        stack.enter_context(self.autocast)
        stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        self._stack.append(stack)
        return self

    def __exit__(self, *exc):
        return self._stack.pop().__exit__(*exc)


def use_fast_layout(model, device: str) -> None:
    """Convolutional image towers on CPU train faster in channels-last memory layout (ResNet towers:
    one training iteration of ticlip-tiny-rn32 in bf16, 128 -> 108 ms on the machine above; a ViT's
    single patch convolution gains nothing, 158 -> 171 ms, so ViTs are left as they are). Converts the
    parameters in place (the same Parameter objects), before an optimizer is made over them; the
    values, and so checkpoints, are unchanged."""
    import torch

    if str(device).startswith("cuda"):
        return
    visual = getattr(model, "visual", None)
    if visual is not None and any(isinstance(m, torch.nn.BatchNorm2d) for m in visual.modules()):
        visual.to(memory_format=torch.channels_last)


def make_scaler(precision: str, device: str):
    """A GradScaler for fp16 (GPU only); None otherwise."""
    import torch

    if precision != "fp16":
        return None
    if not str(device).startswith("cuda"):
        raise TiclipError("precision fp16 needs a CUDA GPU (it uses a gradient scaler); use bf16 or fp32 on CPU")
    return torch.amp.GradScaler("cuda")


# --------------------------------------------------------------------------- state
@dataclass
class LoopOptions:
    """What one step's loop needs besides the model, data and optimizer."""

    iterations: int
    accum_freq: int = 1
    precision: str = "fp32"
    grad_clip_norm: float | None = None
    device: str = "cpu"
    log_every: int = 1
    world_size: int = 1
    macs_per_pair: float = 0.0  # forward MACs of one pair (budget accounting)
    extra_forward_passes: float = 0.0  # charged per pair when extra_loss is not None (LwF: 1)
    budget_macs: float | None = None  # this step's budget, for the progress bar's "budget used"
    progress: bool = True
    desc: str = ""


@dataclass
class LoopState:
    """Progress within one step; saved with resumable state."""

    iteration: int = 0  # completed iterations
    pairs_seen: int = 0  # over all ranks
    macs: float = 0.0
    loss_sum: float = 0.0  # over logged iterations
    loss_count: int = 0
    first_loss: float | None = None
    last_loss: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LoopState":
        return cls(**d)


def _to_device(batch, device: str):
    images, texts = batch
    non_blocking = str(device).startswith("cuda")
    return images.to(device, non_blocking=non_blocking), texts.to(device, non_blocking=non_blocking)


def _loss_inputs(out: dict) -> dict:
    d = {"image_features": out["image_features"], "text_features": out["text_features"],
         "logit_scale": out["logit_scale"]}
    if out.get("logit_bias") is not None:
        d["logit_bias"] = out["logit_bias"]
    return d


# --------------------------------------------------------------------------- the loop
def train_loop(
    model,
    batches: Iterable,
    optimizer,
    schedule,
    loss_fn,
    opts: LoopOptions,
    *,
    state: LoopState | None = None,
    method=None,
    scaler=None,
    log: Callable[[dict], None] | None = None,
    after_iteration: Callable[[LoopState], None] | None = None,
) -> LoopState:
    """Train ``model`` for ``opts.iterations`` iterations (from ``state.iteration`` on).

    ``batches`` yields micro-batches ``(images, texts)``; one iteration consumes ``accum_freq`` of
    them. ``schedule(i)`` or ``schedule.lr(i)`` gives the learning rate of iteration ``i`` (0-based
    within the step). ``method.extra_loss(bare_model, images, texts, outputs)`` may add a loss term. ``log(record)`` is
    called every ``log_every`` iterations and on the last one; ``after_iteration(state)`` after each.
    """
    import torch
    from tqdm import tqdm

    from ticlip.models import unwrap

    state = state or LoopState()
    bare = unwrap(model)
    device = opts.device
    autocast = autocast_context(opts.precision, device)
    if opts.precision == "fp16" and scaler is None:
        scaler = make_scaler(opts.precision, device)
    lr_at = schedule if callable(schedule) else schedule.lr
    it: Iterator = iter(batches)
    # samples the data pipeline skipped (truncated shards, corrupt images): each record carries the new ones
    skip_counter = getattr(getattr(batches, "dataset", batches), "skipped", None)
    skipped_before = skip_counter.as_dict() if skip_counter is not None else {}
    per_rank_pairs = 0
    t0 = time.perf_counter()
    pbar = tqdm(total=opts.iterations, initial=state.iteration, disable=not opts.progress, desc=opts.desc,
                unit="it", dynamic_ncols=True, leave=False)
    try:
        schedule_free_mode(optimizer, train=True)
        while state.iteration < opts.iterations:
            i = state.iteration
            lr = lr_at(i)
            for group in optimizer.param_groups:
                group["lr"] = lr
            micro = []
            for _ in range(opts.accum_freq):
                try:
                    micro.append(_to_device(next(it), device))
                except StopIteration:
                    raise TiclipError(
                        f"the training data ran out after {i} of {opts.iterations} iterations "
                        "(training pipelines must be infinite/resampled)"
                    ) from None
            optimizer.zero_grad(set_to_none=True)
            loss, extra = _forward_backward(model, bare, micro, loss_fn, autocast, scaler, method)
            if scaler is not None:
                if opts.grad_clip_norm is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(bare.parameters(), opts.grad_clip_norm)
                scaler.step(optimizer)
                scaler.update()
            else:
                if opts.grad_clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(bare.parameters(), opts.grad_clip_norm)
                optimizer.step()
            with torch.no_grad():
                bare.logit_scale.clamp_(0, LOGIT_SCALE_MAX)

            n_local = sum(int(m[0].shape[0]) for m in micro)
            per_rank_pairs += n_local
            pairs = n_local * opts.world_size
            state.iteration = i + 1
            state.pairs_seen += pairs
            # a method's extra forward passes are charged when it actually ran them (LwF: from step 1)
            state.macs += pairs * opts.macs_per_pair * (1.0 + (opts.extra_forward_passes if extra is not None else 0.0))
            pbar.update(1)

            if state.iteration % opts.log_every == 0 or state.iteration == opts.iterations:
                loss_value = float(loss.detach())  # the only host sync of the loop
                state.last_loss = loss_value
                if state.first_loss is None:
                    state.first_loss = loss_value
                state.loss_sum += loss_value
                state.loss_count += 1
                elapsed = time.perf_counter() - t0
                rate = per_rank_pairs * opts.world_size / elapsed if elapsed > 0 else 0.0
                record = {
                    "iteration": state.iteration, "loss": loss_value, "lr": lr,
                    "logit_scale": float(bare.logit_scale.detach().exp()),
                    "pairs_seen": state.pairs_seen, "macs": state.macs, "pairs_per_s": rate,
                    "elapsed_s": elapsed,
                }
                if extra is not None:
                    record["extra_loss"] = float(extra.detach())
                if skip_counter is not None:
                    skipped_now = skip_counter.as_dict()
                    new = {k: n - skipped_before.get(k, 0) for k, n in skipped_now.items() if n > skipped_before.get(k, 0)}
                    skipped_before = skipped_now
                    if new:
                        record["skipped"] = new
                if opts.budget_macs:
                    record["budget_used"] = state.macs / opts.budget_macs
                if log is not None:
                    log(record)
                if opts.progress:
                    post = {"loss": f"{loss_value:.3f}", "lr": f"{lr:.2e}", "pairs/s": f"{rate:.0f}"}
                    if opts.budget_macs:
                        post["budget"] = f"{100 * state.macs / opts.budget_macs:.0f}%"
                    pbar.set_postfix(post, refresh=False)
            if after_iteration is not None:
                after_iteration(state)
        schedule_free_mode(optimizer, train=False)  # the weights it would evaluate, for end_step and saving
    finally:
        pbar.close()
    return state


def _forward_backward(model, bare, micro, loss_fn, autocast, scaler, method):
    """Forward and backward for one iteration; returns (contrastive loss, extra loss or None)."""
    import torch

    def backward(t):
        (scaler.scale(t) if scaler is not None else t).backward()

    if len(micro) == 1:
        images, texts = micro[0]
        with autocast:
            out = model(images, texts)
            loss = loss_fn(**_loss_inputs(out))
            extra = method.extra_loss(bare, images, texts, out) if method is not None else None
            total = loss if extra is None else loss + extra
        backward(total)
        return loss, extra

    # Gradient accumulation, open_clip's way: cache every micro-batch's features without gradients,
    # then re-run each micro-batch with gradients, splicing its features into the cached ones, so the
    # contrastive loss sees the whole accumulated batch as negatives (summed gradients = big batch).
    with torch.no_grad(), autocast:
        cached = [model(images, texts) for images, texts in micro]
    img_feats = [c["image_features"] for c in cached]
    txt_feats = [c["text_features"] for c in cached]
    no_sync = getattr(model, "no_sync", None)
    extra_sum = None
    loss = None
    for j, (images, texts) in enumerate(micro):
        sync_ctx = no_sync() if (no_sync is not None and j < len(micro) - 1) else contextlib.nullcontext()
        with sync_ctx:
            with autocast:
                out = model(images, texts)
                inputs = _loss_inputs(out)
                inputs["image_features"] = torch.cat(img_feats[:j] + [out["image_features"]] + img_feats[j + 1:])
                inputs["text_features"] = torch.cat(txt_feats[:j] + [out["text_features"]] + txt_feats[j + 1:])
                # Every pass sees the whole loss through the logit scale (and bias): scale their gradient
                # by 1/accum so that the passes sum to the big batch's gradient (open_clip's loop counts
                # it accum times). Value unchanged; every pass still reaches the parameter (DDP needs that).
                for key in ("logit_scale", "logit_bias"):
                    if key in inputs:
                        v = inputs[key]
                        inputs[key] = v.detach() + (v - v.detach()) / len(micro)
                loss = loss_fn(**inputs)
                extra = method.extra_loss(bare, images, texts, out) if method is not None else None
                total = loss
                if extra is not None:
                    extra = extra / len(micro)
                    total = loss + extra
                    extra_sum = extra.detach() if extra_sum is None else extra_sum + extra.detach()
            backward(total)
    return loss, extra_sum


# --------------------------------------------------------------------------- logging
@dataclass
class JsonlLog:
    """Append-only JSON lines (one per logged iteration); flushed per line so a kill loses nothing."""

    path: str
    static: dict = field(default_factory=dict)
    _f: Any = None

    def __call__(self, record: dict) -> None:
        import json

        from ticlip.atomic import disk_full, is_disk_full

        try:
            if self._f is None:
                self._f = open(self.path, "a", encoding="utf-8")
            self._f.write(json.dumps({**self.static, **record}) + "\n")
            self._f.flush()
        except OSError as e:
            if is_disk_full(e):
                raise disk_full(self.path) from None
            raise

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def skipped_in_log(path: str) -> dict[str, int]:
    """The samples a step's data pipeline skipped, by reason: the sum of its log records' ``skipped``."""
    from ticlip.run_layout import log_records

    total: dict[str, int] = {}
    for record in log_records(path):
        for reason, n in (record.get("skipped") or {}).items():
            total[reason] = total.get(reason, 0) + int(n)
    return total


def truncate_jsonl(path: str, keep_record: Callable[[dict], bool]) -> None:
    """Keep only the log lines ``keep_record`` accepts (drop iterations a resume redoes), atomically."""
    import json
    import os

    from ticlip.atomic import write_text_atomic
    from ticlip.run_layout import log_records

    if not os.path.exists(path):
        return
    keep = [json.dumps(rec) + "\n" for rec in log_records(path) if keep_record(rec)]  # cut lines left out
    write_text_atomic(path, "".join(keep))


# The trackers (--report-to) live in ticlip.loggers, shared with evaluation; these names stay importable here.
from ticlip.loggers import TensorBoardLog, require_tensorboard  # noqa: E402,F401
