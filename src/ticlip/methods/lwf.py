"""LwF (learning without forgetting) for CLIP: distil the previous model's image-text similarity.

Trains on step t only, from the last checkpoint. ``begin_step`` freezes a copy of the model it
starts from (the previous step's result); on every batch the loss gains

    λ · ( KL(p_old ‖ p_new) over texts for each image  +  KL(p_old ‖ p_new) over images for each text ) / 2

where p = softmax(logit_scale · cosine similarity / temperature) over the batch, the old model's
own logit scale and features giving the targets. Under DDP the KL uses the local batch. One extra
forward pass (the old model's, without gradients) per training pair is charged from step 1 on.
"""

from __future__ import annotations

import copy

from ticlip.methods.base import MethodContext, StepCost
from ticlip.methods.sequential import Sequential
from ticlip.schema import Field, Schema


def similarity_logits(image_features, text_features, logit_scale):
    """Image→text logits (rows: images) of L2-normalised features, in float32."""
    import torch.nn.functional as F

    img = F.normalize(image_features.float(), dim=-1)
    txt = F.normalize(text_features.float(), dim=-1)
    return logit_scale.float() * img @ txt.T


def symmetric_kl(old_logits, new_logits, temperature: float = 1.0):
    """(KL(p_old‖p_new) image→text + KL text→image) / 2, each averaged over the batch."""
    import torch.nn.functional as F

    def kl(target, pred):
        return F.kl_div(F.log_softmax(pred / temperature, dim=1), F.log_softmax(target / temperature, dim=1),
                        log_target=True, reduction="batchmean")

    return (kl(old_logits, new_logits) + kl(old_logits.T, new_logits.T)) / 2


class LwF(Sequential):
    name = "lwf"

    class Params(Schema):
        lam: float = Field(1.0, ge=0, description="weight λ of the distillation term")
        temperature: float = Field(1.0, gt=0, description="softmax temperature of both models' similarities")

    def __init__(self, **params):
        super().__init__(**params)
        self.lam = self.params["lam"]
        self.temperature = self.params["temperature"]
        self._old = None
        self._old_state: dict | None = None

    def estimate_cost(self, t: int, stream=None) -> StepCost:
        # the frozen previous model's forward, on every training pair from step 1 on
        return StepCost(extra_forward_passes_per_pair=1.0 if t > 0 else 0.0)

    def training_key(self, t: int) -> dict | None:
        # From step 1 on the loss distils the model the step starts from (its weights are part of the
        # reuse key already); step 0 has no teacher and trains like Sequential.
        if t == 0:
            return None
        return {"method": self.name, "distill": {"lam": self.lam, "temperature": self.temperature}}

    def _freeze(self, model):
        old = _without_adapters(copy.deepcopy(model))
        old.eval()
        for p in old.parameters():
            p.requires_grad_(False)
        return old

    def begin_step(self, ctx: MethodContext) -> None:
        self._old = self._freeze(ctx.model) if ctx.step > 0 else None
        self._old_state = None

    def extra_loss(self, model, images, texts, outputs: dict):
        import torch

        from ticlip.models import unwrap

        if self._old is None and self._old_state is not None:  # restored from a resume checkpoint
            self._old = self._freeze(unwrap(model))
            self._old.load_state_dict(self._old_state)
            self._old_state = None
        if self._old is None:
            return None
        with torch.no_grad():
            out = self._old(images, texts)
            old_logits = similarity_logits(out["image_features"], out["text_features"], out["logit_scale"])
        new_logits = similarity_logits(outputs["image_features"], outputs["text_features"], outputs["logit_scale"])
        return self.lam * symmetric_kl(old_logits, new_logits, self.temperature)

    def state_dict(self) -> dict:
        if self._old is not None:
            return {"old": {k: v.detach().cpu() for k, v in self._old.state_dict().items()}}
        return {"old": self._old_state}

    def load_state_dict(self, state: dict) -> None:
        self._old, self._old_state = None, state.get("old")


def _without_adapters(model):
    """``model`` with adapter layers (peft's LoRA layers, which hold their wrapped module as ``base_layer``)
    replaced by the modules they wrap, in place: the plain architecture a saved teacher state loads into
    when the model being trained carries adapters (``TrainConfig.update`` lora). Values are not merged:
    the caller loads the teacher's weights."""
    while True:
        wrapped = next(((name, m) for name, m in model.named_modules()
                        if name and hasattr(m, "base_layer") and hasattr(m, "get_base_layer")), None)
        if wrapped is None:
            return model
        name, module = wrapped
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, module.get_base_layer())

