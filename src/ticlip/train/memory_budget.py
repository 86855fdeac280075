"""Memory-adjusted compute (FoMo-in-Flux, Roth et al. 2024, "A Practitioner's Guide to
Continual Multimodal Pretraining": "memory-adjusted FLOPs", MAFs).

FoMo-in-Flux budgets an update by its training FLOPs weighted by the memory it needs, so that an
update which trains fewer parameters (LoRA, a locked tower) gets more iterations for the same budget.
Its code was not released when this was written (ExplainableML/fomo_in_flux holds a README only) and
/work/shared/PAPER.md names the unit without its formula, so ticlip's definition is written out here
and in docs/METHODS.md:

    MAF per iteration (update u) = training FLOPs(u) x peak training memory(u) / peak training memory(full)

- training FLOPs: forward + backward of one batch, counted (``FlopCounterMode``, meta device) with
  exactly the parameters the update trains requiring gradients: a frozen tower before every trainable
  parameter runs no backward; LoRA's frozen weights get no weight gradients but pass input gradients.
- peak training memory (bytes, counted, not measured): all parameters + the trainable parameters'
  gradients + AdamW's two moments of them + the activations autograd saves for the backward pass
  (summed through ``torch.autograd.graph.saved_tensors_hooks`` during the counted forward; tensors that
  are parameters, or views of them, are not counted twice).

ticlip's budgets stay in MACs: ``memory_adjusted_macs_per_pair`` = forward MACs per pair x MAF(u) /
MAF(full), i.e. the memory-adjusted cost in full fine-tuning's MACs. Full fine-tuning costs exactly
its MACs (ratio 1.0), so a ``--total-macs`` budget buys the same iterations for it under either unit
(``TrainConfig.budget_unit``) and proportionally more for cheaper updates.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

from ticlip.train.budget import BudgetError, count_on_meta_or_cpu
from ticlip.train.updates import UpdateSettings, apply_update, meta_model


@dataclass(frozen=True)
class TrainingCost:
    """One training iteration of ``batch`` pairs under one update: FLOPs and memory (bytes)."""

    update: str
    batch: int
    train_flops: float  # forward + backward
    param_bytes: int
    grad_bytes: int
    optimizer_bytes: int
    activation_bytes: int
    trainable_params: int
    params: int

    @property
    def memory_bytes(self) -> int:
        return self.param_bytes + self.grad_bytes + self.optimizer_bytes + self.activation_bytes

    @property
    def maf(self) -> float:
        """Unnormalised memory-adjusted FLOPs: FLOPs x bytes (divide by full fine-tuning's bytes)."""
        return self.train_flops * self.memory_bytes

    def to_dict(self) -> dict:
        d = asdict(self)
        d["memory_bytes"] = self.memory_bytes
        return d


def training_cost(name: str, settings: UpdateSettings, batch: int, *, image_size=None,
                  context_length: int | None = None) -> TrainingCost:
    """Count one training iteration of the open_clip model ``name`` under ``settings`` on the meta device
    (no memory, no arithmetic)."""
    import torch
    from ticlip.train.budget import _flop_counter, _image_size

    if not isinstance(batch, int) or batch < 1:
        raise BudgetError(f"batch must be a positive integer, got {batch!r}")
    if context_length is None:
        from ticlip.models import text_context_length

        context_length = text_context_length(name)

    def count(device: str):
        model = meta_model(name, image_size, context_length)
        apply_update(model, settings, seed=0)
        if device != "meta":
            model.to_empty(device=device)
            with torch.no_grad():
                for t in [*model.parameters(), *model.buffers()]:
                    t.zero_()
        params = list(model.parameters())
        param_ids = {id(p) for p in params}
        saved = [0]

        def pack(x):
            if id(x) not in param_ids and not (x._base is not None and id(x._base) in param_ids):
                saved[0] += x.numel() * x.element_size()
            return x

        size = image_size if image_size is not None else _image_size(model)
        h, w = (size, size) if isinstance(size, int) else size
        images = torch.zeros(batch, 3, h, w, device=device)
        texts = torch.zeros(batch, int(context_length), dtype=torch.long, device=device)
        model.train()
        counter = _flop_counter()  # with the CPU attention kernel and grouped convolutions' backward
        with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            out = model(images, texts)
            logits = out["logit_scale"] * out["image_features"] @ out["text_features"].T
            labels = torch.arange(batch, device=device)
            loss = (torch.nn.functional.cross_entropy(logits, labels)
                    + torch.nn.functional.cross_entropy(logits.T, labels)) / 2
            loss.backward()
        return params, float(counter.get_total_flops()), saved[0]

    try:
        params, flops, activation_bytes = count_on_meta_or_cpu(count)
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as e:
        raise BudgetError(f"cannot count the training cost of {name!r} under update {settings.update}: "
                          f"{str(e)[:300]}") from None
    trainable = [p for p in params if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    trainable_bytes = sum(p.numel() * p.element_size() for p in trainable)
    return TrainingCost(
        update=settings.update, batch=batch, train_flops=flops,
        param_bytes=sum(p.numel() * p.element_size() for p in params), grad_bytes=trainable_bytes,
        optimizer_bytes=2 * trainable_bytes, activation_bytes=activation_bytes, trainable_params=n_trainable,
        params=sum(p.numel() for p in params),
    )


@functools.lru_cache(maxsize=64)
def memory_adjusted_ratio(name: str, settings: UpdateSettings, batch: int, *, image_size=None,
                          context_length: int | None = None) -> float:
    """MAF(update) / MAF(full) for one iteration of ``batch`` pairs per device (exactly 1.0 for full)."""
    if settings.update == "full":
        return 1.0
    full = training_cost(name, UpdateSettings(), batch, image_size=image_size, context_length=context_length)
    this = training_cost(name, settings, batch, image_size=image_size, context_length=context_length)
    return this.maf / full.maf


def memory_adjusted_macs_per_pair(name: str, settings: UpdateSettings, batch: int, *, image_size=None,
                                  context_length: int | None = None) -> float:
    """A pair's memory-adjusted cost in full fine-tuning's forward MACs (see the module docstring)."""
    from ticlip.train.budget import macs_per_pair

    mpp = macs_per_pair(name, image_size, context_length)
    return mpp * memory_adjusted_ratio(name, settings, batch, image_size=image_size, context_length=context_length)


__all__ = ["TrainingCost", "memory_adjusted_macs_per_pair", "memory_adjusted_ratio", "training_cost"]
