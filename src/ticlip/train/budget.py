"""Compute budgets in MACs, with the TiC-CLIP paper's convention.

Convention (TiC-CLIP, App. C.4): budget = forward-pass MACs of one image-text pair × pairs seen.
Backward passes are not counted separately: a training pair costs one forward. The total is split
evenly over the steps; step t gets C = total × budget_scale / steps, i.e.
``iterations_per_step = floor(C / (macs_per_pair × global_batch_size))``.

- Oracle retrains from scratch at every step and gets (t + 1)·C at 0-based step t.
- A method's extra compute is its ``StepCost`` (``method.estimate_cost(t, stream)``): extra forward
  passes per training pair (LwF: the frozen previous model) and pairs forwarded outside training
  (EWC's Fisher pass, patching's coefficient search); the const-cosine schedule adds its
  constant-LR trunk when the next step continues from it (not after the stream's last step, nor
  for Oracle and Restart, whose next step starts from the initial weights, nor for patching). Those methods keep C's iterations and report the overrun (the paper's starred rows).
- ``budget_scale`` > 1 gives "Cumulative-All*" (a little extra compute).

The paper's TiC-YFCC row: ViT-B-16 (20.5 GMACs per pair measured here), 3.4e18 MACs, global batch
8192, 4 steps -> 5,051 iterations per step, 20,204 in total ("about 20,000"). docs/METHODS.md checks
the other rows.

MACs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (no memory,
no arithmetic: ViT-B-16 takes a fraction of a second) in train mode, where attention runs through
countable matmuls. On CPU, torch's fused flash-attention kernel is not in FlopCounterMode's table,
and under ``no_grad`` in eval mode nn.MultiheadAttention takes a fused fast path that is not counted
either; we register the CPU kernel with torch's own SDPA formula so real-device counts agree.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ticlip.errors import TiclipError
from ticlip.methods.base import StepCost


class BudgetError(TiclipError, ValueError):
    """A budget that cannot be met or does not make sense (non-positive numbers, < 1 iteration)."""


# ------------------------------------------------------------------------------- MAC counting
def _flop_counter():
    import torch
    from torch.utils import flop_counter

    custom = {}
    cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    sdpa = flop_counter.flop_registry.get(torch.ops.aten._scaled_dot_product_flash_attention)
    if cpu_flash is not None and sdpa is not None:
        # The registry holds torch's SDPA formula already wrapped to take raw arguments.
        def cpu_flash_flops(*args, **kwargs):
            return sdpa(*args, **kwargs)

        cpu_flash_flops._get_raw = True
        custom[cpu_flash] = cpu_flash_flops
    custom[torch.ops.aten.convolution_backward] = conv_backward_flops
    return flop_counter.FlopCounterMode(display=False, custom_mapping=custom)


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """FLOPs of a convolution's backward pass (a FlopCounterMode formula, called with shapes): the input
    gradient and the weight gradient each cost what the forward convolution costs (every output
    position meets every weight of its group once). Written here because torch's own formula (2.14)
    ignores ``groups`` for the weight gradient and counts a depthwise convolution's as if every channel
    met every other, i.e. channels x too many: 41x the forward on EfficientNet-Lite0."""
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _image_size(model) -> int | tuple[int, int]:
    size = getattr(getattr(model, "visual", None), "image_size", None)
    if size is None:
        raise BudgetError("cannot tell the model's image size: pass image_size=")
    return tuple(size) if isinstance(size, (tuple, list)) else int(size)


def needs_values(error: BaseException) -> bool:
    """Whether counting on the meta device failed because the forward pass reads a tensor's value:
    Hugging Face text towers check their padding mask (``mask.all()``) to pick an attention kernel,
    which a meta tensor cannot answer. Such models are counted on the CPU instead (zeros, batch of 2 for
    MACs; one batch for a training cost): slower and allocating, but the same operations."""
    return "meta tensors" in str(error) or "data-dependent" in str(error)


def count_on_meta_or_cpu(count):
    """``count("meta")``, or ``count("cpu")`` when the meta device cannot answer (``needs_values``)."""
    try:
        return count("meta")
    except RuntimeError as e:
        if not needs_values(e):
            raise
        return count("cpu")


def count_forward_macs(model, image_size=None, context_length: int | None = None, batch: int = 1) -> float:
    """Forward MACs of ``model`` (an open_clip CLIP) on ``batch`` image-text pairs, counted on the
    meta device in train mode. The model itself is not run, changed or moved: its parameters and
    buffers are swapped for meta tensors through ``torch.func.functional_call``."""
    import torch

    image_size = image_size if image_size is not None else _image_size(model)
    context_length = int(context_length if context_length is not None else getattr(model, "context_length", 77))
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    # Batch norm in train mode refuses one sample at 1x1 spatial size (ResNet towers at 32 px): count
    # on at least two pairs; forward MACs are linear in the batch.
    run_batch = max(2, batch)
    was_training = model.training
    model.train()

    def count(device: str) -> float:
        make = torch.empty_like if device == "meta" else torch.zeros_like
        tensors = {k: make(v, device=device) for k, v in model.named_parameters()}
        tensors.update({k: make(v, device=device) for k, v in model.named_buffers()})
        images = torch.zeros(run_batch, 3, h, w, device=device)
        texts = torch.zeros(run_batch, context_length, dtype=torch.long, device=device)
        counter = _flop_counter()
        with counter, torch.enable_grad():
            torch.func.functional_call(model, tensors, (images, texts), strict=False)
        return counter.get_total_flops()

    try:
        flops = count_on_meta_or_cpu(count)
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as e:
        raise BudgetError(
            f"cannot count MACs of this model at image size {image_size} and context length "
            f"{context_length}: {str(e)[:300]}"
        ) from None
    finally:
        model.train(was_training)
    return flops / 2.0 * batch / run_batch  # a multiply-accumulate is two FLOPs


@functools.lru_cache(maxsize=64)
def _macs_per_pair_by_name(name: str, image_size, context_length) -> float:
    import open_clip
    import torch

    from ticlip.models import model_config, quiet_open_clip

    model_config(name)  # a clear TiclipError for unknown names
    try:
        # open_clip warns for every model created without pretrained weights: not news here.
        with quiet_open_clip(), torch.device("meta"):  # build without allocating or initialising weights
            model = open_clip.create_model(
                name, pretrained=None, device="meta", output_dict=True,
                force_image_size=image_size, force_context_length=context_length,
                pretrained_text=False,  # a Hugging Face text tower from its config: no weights read onto meta
            )
    except Exception as e:  # any construction failure is a user-facing "this model cannot be built"
        raise BudgetError(f"cannot build model {name!r} to count its MACs: {str(e)[:300]}") from None
    if context_length is None:
        from ticlip.models import text_context_length

        context_length = text_context_length(name)
    return count_forward_macs(model, image_size, context_length)


def macs_per_pair(model: Any, image_size: int | None = None, context_length: int | None = None) -> float:
    """Forward-pass MACs of ONE image-text pair for an open_clip model name (cached per
    (name, image_size, context_length)) or a model object; sizes default to the model's own."""
    for label, value in (("image_size", image_size), ("context_length", context_length)):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise BudgetError(f"{label} must be a positive integer, got {value!r}")
    if isinstance(model, str):
        from ticlip.models import register_tiny_models

        register_tiny_models()
        return _macs_per_pair_by_name(model, image_size, context_length)
    from ticlip.models import unwrap

    return count_forward_macs(unwrap(model), image_size, context_length)


# ------------------------------------------------------------------------------------ budget
@dataclass(frozen=True)
class StepBudget:
    """What one step may spend and what it will spend.

    ``iterations``: optimizer steps of ``global_batch_size`` pairs; ``macs``: their forward MACs;
    ``extra_macs_estimate``: what the method's estimated ``cost`` (and the schedule) adds on top;
    ``allotted_macs``: the step's share (C × compute multiplier); ``overrun``: fraction by which
    macs + extra exceed it (0.0 when within budget; LwF: about 1.0, i.e. +100%).
    """

    step: int
    iterations: int
    macs: float
    extra_macs_estimate: float
    allotted_macs: float
    overrun: float
    cost: StepCost = field(default_factory=StepCost)

    @property
    def total_macs(self) -> float:
        return self.macs + self.extra_macs_estimate

    def to_dict(self) -> dict:
        return asdict(self)


def _positive(name: str, value, integer: bool = False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if integer:
        ok = ok and float(value).is_integer()
    if not ok:
        kind = "a positive integer" if integer else "a positive finite number"
        raise BudgetError(f"{name} must be {kind}, got {value!r}")


@dataclass(frozen=True)
class Budget:
    """A total compute budget split evenly over ``steps`` (see the module docstring)."""

    total_macs: float
    steps: int
    macs_per_pair: float
    global_batch_size: int
    budget_scale: float = 1.0

    def __post_init__(self):
        _positive("total MACs", self.total_macs)
        _positive("steps", self.steps, integer=True)
        _positive("MACs per pair", self.macs_per_pair)
        _positive("global batch size", self.global_batch_size, integer=True)
        _positive("budget scale", self.budget_scale)
        if self.iterations_per_step < 1:
            need = self.macs_per_iteration * self.steps / self.budget_scale
            raise BudgetError(
                f"a budget of {self.total_macs:.3g} MACs over {self.steps} steps buys less than one "
                f"iteration per step at batch {self.global_batch_size} ({self.macs_per_iteration:.3g} "
                f"MACs per iteration): give at least {need:.3g} total MACs or a smaller batch"
            )

    @classmethod
    def for_model(
        cls, model: Any, total_macs: float, steps: int, global_batch_size: int, *,
        image_size: int | None = None, context_length: int | None = None, budget_scale: float = 1.0,
    ) -> "Budget":
        return cls(total_macs, steps, macs_per_pair(model, image_size, context_length), global_batch_size, budget_scale)

    @classmethod
    def from_iterations(
        cls, iterations_per_step: int, steps: int, macs_per_pair: float, global_batch_size: int
    ) -> "Budget":
        """The budget that buys exactly ``iterations_per_step`` per step (small demo runs)."""
        _positive("iterations per step", iterations_per_step, integer=True)
        _positive("global batch size", global_batch_size, integer=True)
        _positive("steps", steps, integer=True)
        total = float(iterations_per_step) * global_batch_size * macs_per_pair * steps
        return cls(total, steps, macs_per_pair, global_batch_size)

    # -------------------------------------------------------------------- derived figures
    @property
    def per_step_macs(self) -> float:
        """C: the compute of one ordinary step."""
        return self.total_macs * self.budget_scale / self.steps

    @property
    def macs_per_iteration(self) -> float:
        return self.macs_per_pair * self.global_batch_size

    def iterations_for(self, macs: float) -> int:
        # floor, never over budget; the relative epsilon absorbs float error when the budget was
        # computed from an iteration count (150 must stay 150, not become 149).
        return int(math.floor(macs / self.macs_per_iteration * (1 + 1e-9)))

    @property
    def iterations_per_step(self) -> int:
        return self.iterations_for(self.per_step_macs)

    @property
    def pairs_per_step(self) -> int:
        return self.iterations_per_step * self.global_batch_size

    @property
    def total_iterations(self) -> int:
        """Iterations over all steps of an ordinary (multiplier 1) method."""
        return self.iterations_per_step * self.steps

    # ------------------------------------------------------------------------- per step
    def plan_step(self, method, t: int, *, schedule=None, stream=None) -> StepBudget:
        """The budget of 0-based step ``t`` for ``method`` (a ticlip.methods Method).

        ``schedule``: a ``ScheduleConfig`` (const-cosine's constant-LR trunk is charged as extra when
        the next step continues from it, ``next_step_continues``); ``stream``: the TimeStream
        trained on, for methods whose cost depends on its data (patching scores held-out pairs); None
        when unknown (the cost's ``note`` then says what is missing).
        """
        if not isinstance(t, int) or not 0 <= t < self.steps:
            raise BudgetError(f"step index {t!r} out of range for a {self.steps}-step budget")
        multiplier = float(method.compute_multiplier(t))
        allotted = self.per_step_macs * multiplier
        iterations = self.iterations_for(allotted)
        macs = iterations * self.macs_per_iteration
        cost = method.estimate_cost(t, stream)
        extra = float(cost.extra_macs(macs, self.macs_per_pair))
        if schedule is not None:
            continues = self.next_step_continues(method, t, stream)
            extra += schedule.extra_iterations(iterations, continues) * self.macs_per_iteration
        overrun = max(0.0, (macs + extra) / allotted - 1.0)
        return StepBudget(t, iterations, macs, extra, allotted, overrun, cost)

    def next_step_continues(self, method, t: int, stream=None) -> bool:
        """Whether step t + 1 starts from step t's weights (``ticlip.train.schedule.next_step_continues``)."""
        from ticlip.train.schedule import next_step_continues

        # Without the stream, ask the plan with large equal step sizes (every buffer non-empty): where a
        # plan's weights start does not depend on the sizes. A next step that cannot be planned is
        # assumed to continue (charged).
        sizes = stream.step_sizes if stream is not None else [1 << 62] * self.steps
        try:
            return next_step_continues(method, t, sizes)
        except TiclipError:
            return t + 1 < len(sizes)

    def plan(self, method, *, schedule=None, stream=None) -> list[StepBudget]:
        """``plan_step`` for every step."""
        return [self.plan_step(method, t, schedule=schedule, stream=stream) for t in range(self.steps)]

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(
            per_step_macs=self.per_step_macs,
            iterations_per_step=self.iterations_per_step,
            pairs_per_step=self.pairs_per_step,
            total_iterations=self.total_iterations,
        )
        return d


__all__ = ["Budget", "BudgetError", "StepBudget", "count_forward_macs", "macs_per_pair"]
