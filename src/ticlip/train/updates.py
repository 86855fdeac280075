"""Parameter-efficient updates: which parameters a step trains (``TrainConfig.update``).

Every method trains through these, so they are options of any method, not methods:

- ``full``: every parameter (the default; nothing changes).
- ``lora``: low-rank adapters (Hu et al. 2022, "LoRA", §4) through Hugging Face's ``peft`` library
  (``peft.LoraModel`` on open_clip's modules): ``lora_targets`` names the modules by suffix. In
  open_clip's transformer towers ``attn`` is an ``nn.MultiheadAttention`` (its q/k/v projection is a
  parameter ``in_proj_weight``, not an ``nn.Linear``); peft's ``lora.MultiheadAttention`` adapts it,
  in_proj and out_proj together (peft cannot adapt one without the other), by merging the adapter into
  the weights around each forward. ``c_fc`` / ``c_proj`` are the MLP's ``nn.Linear`` layers. peft also
  adapts ``nn.Conv2d`` (the patch embedding ``conv1``) and ``nn.Embedding`` (``token_embedding``) when
  named; it has no layer for bare parameters (``visual.proj``, ``text_projection``, the class and
  positional embeddings, the logit scale), which stay frozen. Only the adapters train (peft's
  ``bias="none"``).
- ``bitfit``: biases only (Ben Zaken et al., ACL 2022, "BitFit", §3).
- ``layernorm``: LayerNorm gains and biases only (the "LN-fit"/LayerNorm tuning of FoMo-in-Flux,
  Roth et al. 2024, its method study).
- ``lock-image`` / ``lock-text``: a frozen image or text tower, the other trained (LiT, Zhai et al.,
  CVPR 2022), through open_clip's own ``lock_image_tower`` / ``lock_text_tower``; batch-norm
  statistics of a locked ResNet tower still update in train mode (open_clip's ``freeze_bn_stats=False``,
  which keeps the checkpoint's keys).

LoRA adapters are merged into the plain weights at each step's end (``merge_update``), before the
method's ``end_step``, so methods, ``checkpoint.pt`` and every later step see an ordinary open_clip
model; the next step starts a fresh adapter on the merged weights. While a step trains, its resumable
states (and const-cosine's trunk) hold the adapter's weights under peft's names.
"""

from __future__ import annotations

from dataclasses import dataclass

from ticlip.errors import TiclipError

UPDATES = ("full", "lora", "bitfit", "layernorm", "lock-image", "lock-text")
DEFAULT_LORA_TARGETS = ("attn", "c_fc", "c_proj")


@dataclass(frozen=True)
class UpdateSettings:
    """The update settings of a TrainConfig (``UpdateSettings.of(cfg)``)."""

    update: str = "full"
    lora_rank: int = 4
    lora_alpha: float = 8.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS

    @classmethod
    def of(cls, cfg) -> "UpdateSettings":
        return cls(cfg.update, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, tuple(cfg.lora_targets))

    @property
    def adapts(self) -> bool:
        """Whether the update adds modules that are merged at the step's end (LoRA)."""
        return self.update == "lora"


def require_peft():
    try:
        import peft
    except ImportError:
        raise TiclipError("update lora needs the peft package: pip install peft (or pip install 'ticlip[peft]')") \
            from None
    return peft


def _is_layer_norm(module) -> bool:
    import torch

    return isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm)) or "LayerNorm" in type(module).__name__


def apply_update(model, settings: UpdateSettings, *, seed: int = 0):
    """Set which parameters of the open_clip ``model`` train, in place; for LoRA, inject peft's adapters
    (initialised from ``seed`` without touching the global RNG). Returns the peft ``LoraModel`` (to
    merge with ``merge_update``) or None."""
    import torch

    kind = settings.update
    if kind not in UPDATES:
        raise TiclipError(f"unknown update {kind!r}: choose one of {', '.join(UPDATES)}")
    if kind == "full":
        return None
    if kind == "lora":
        peft = require_peft()
        cfg = peft.LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha,
                              lora_dropout=settings.lora_dropout, target_modules=list(settings.lora_targets),
                              bias="none")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                tuner = peft.LoraModel(model, cfg, "default")  # freezes everything but the adapters
            except ValueError as e:  # no module matched lora_targets
                raise TiclipError(f"lora_targets {list(settings.lora_targets)}: {str(e).splitlines()[0][:200]}; "
                                  f"name module suffixes of the model, e.g. {', '.join(DEFAULT_LORA_TARGETS)}") \
                    from None
        return tuner
    for p in model.parameters():
        p.requires_grad_(False)
    if kind == "bitfit":
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.requires_grad_(True)
    elif kind == "layernorm":
        for module in model.modules():
            if _is_layer_norm(module):
                for p in module.parameters(recurse=False):
                    p.requires_grad_(True)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
        if kind == "lock-image":
            model.lock_image_tower(unlocked_groups=0, freeze_bn_stats=False)
        else:
            model.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)
    if not any(p.requires_grad for p in model.parameters()):
        raise TiclipError(f"update {kind}: this model has no parameter to train under it; choose another update")
    return None


def merge_update(model, tuner) -> None:
    """Merge LoRA adapters into the plain weights and remove peft's modules, in place (the model is an
    ordinary open_clip model again, all parameters trainable); nothing to do for other updates."""
    if tuner is None:
        return
    import torch

    with torch.no_grad():
        tuner.merge_and_unload()
    for p in model.parameters():
        p.requires_grad_(True)


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, all) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def meta_model(name: str, image_size=None, context_length: int | None = None):
    """The open_clip model ``name`` on the meta device (no memory, no initialisation)."""
    import open_clip
    import torch

    from ticlip.models import model_config, quiet_open_clip, register_tiny_models

    register_tiny_models()
    model_config(name)  # a clear TiclipError for unknown names
    try:
        with quiet_open_clip(), torch.device("meta"):
            return open_clip.create_model(name, pretrained=None, device="meta", output_dict=True,
                                          force_image_size=image_size, force_context_length=context_length,
                                          pretrained_text=False)  # a Hugging Face text tower from its config
    except Exception as e:  # any construction failure is a user-facing "this model cannot be built"
        raise TiclipError(f"cannot build model {name!r}: {str(e)[:300]}") from None


def check_update(settings: UpdateSettings, method, model_name: str | None = None) -> None:
    """Refuse, before any work, what cannot train (one line): an update that leaves ``model_name``
    nothing to train, LoRA targets that match no module, or EWC with LoRA (EWC penalises the model's
    own parameters, which LoRA freezes: the adapters carry the change, so it would have no effect)."""
    if settings.adapts and getattr(method, "name", "") == "ewc":
        raise TiclipError("method ewc with update lora: EWC penalises the model's own parameters, which LoRA "
                          "freezes; use update full, bitfit, layernorm, lock-image or lock-text")
    if model_name is not None and settings.update != "full":
        apply_update(meta_model(model_name), settings)


__all__ = ["DEFAULT_LORA_TARGETS", "UPDATES", "UpdateSettings", "apply_update", "check_update", "merge_update",
           "meta_model", "require_peft", "trainable_parameters"]
