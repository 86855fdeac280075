"""EWC (elastic weight consolidation), online, with the diagonal Fisher of the CLIP loss.

Trains on step t only, from the last checkpoint. After step t (``end_step``) it estimates the
diagonal (empirical) Fisher F_new = mean over ``fisher_batches`` batches of (∂ CLIP loss / ∂θ)², on
batches of ``fisher_batch_size`` pairs of step t's train data (eval transform, seeded sample), and
accumulates it online: F ← γ·F + F_new, θ* ← θ. The CLIP loss is contrastive over a batch, so the
squared gradients are per batch, not per pair. During later steps the loss gains
λ/2 · Σ F (θ − θ*)². The Fisher pass (forward + backward over the sample) is charged like training
pairs: ``StepCost(extra_pairs = fisher_batches × fisher_batch_size)``, estimated and reported.
"""

from __future__ import annotations

import itertools

from ticlip.errors import TiclipError
from ticlip.methods.base import MethodContext, StepCost, StepOutcome
from ticlip.methods.sequential import Sequential
from ticlip.schema import Field, Schema


class EWC(Sequential):
    name = "ewc"
    expensive_end_step = True  # the Fisher pass

    class Params(Schema):
        lam: float = Field(100.0, ge=0, description="weight λ of the penalty λ/2 · Σ F (θ − θ*)²")
        gamma: float = Field(1.0, ge=0, le=1, description="decay of the accumulated Fisher per step")
        fisher_batches: int = Field(8, ge=1, description="batches of the Fisher estimate")
        fisher_batch_size: int = Field(64, ge=2, description="pairs per Fisher batch (contrastive: at least 2)")

    def __init__(self, **params):
        super().__init__(**params)
        self.lam = self.params["lam"]
        self.gamma = self.params["gamma"]
        self.fisher_batches = self.params["fisher_batches"]
        self.fisher_batch_size = self.params["fisher_batch_size"]
        self.fisher: dict | None = None  # parameter name -> diagonal Fisher
        self.anchor: dict | None = None  # parameter name -> θ* (weights after the last step)

    @property
    def fisher_pairs(self) -> int:
        return self.fisher_batches * self.fisher_batch_size

    def estimate_cost(self, t: int, stream=None) -> StepCost:
        return StepCost(extra_pairs=self.fisher_pairs)

    # ----------------------------------------------------------------------------- Fisher
    def _batches(self, ctx: MethodContext):
        import torch

        if ctx.eval_transform is None or ctx.tokenizer is None:
            raise TiclipError("ewc needs the trainer to pass eval_transform and tokenizer in the MethodContext")
        pipe = ctx.stream.train_pipeline([ctx.step], transform=ctx.eval_transform, tokenizer=ctx.tokenizer,
                                         resampled=True, seed=ctx.seed + 104729)
        it = iter(pipe)
        for _ in range(self.fisher_batches):
            pairs = list(itertools.islice(it, self.fisher_batch_size))
            if len(pairs) < 2:
                raise TiclipError(f"ewc: step {ctx.step} yielded too few train pairs for a Fisher batch")
            yield torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def compute_fisher(self, ctx: MethodContext) -> tuple[dict, int]:
        """Diagonal Fisher of the CLIP loss for ``ctx.model`` on step t's data; (F, pairs used)."""
        import torch
        from open_clip.loss import ClipLoss

        model = ctx.model
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
        saved_grads = {n: p.grad for n, p in params.items()}
        loss_fn = ClipLoss()
        was_training = model.training
        model.eval()
        pairs = 0
        try:
            for images, texts in self._batches(ctx):
                for p in params.values():
                    p.grad = None
                with torch.enable_grad():
                    out = model(images.to(ctx.device), texts.to(ctx.device))
                    loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
                    loss.backward()
                for n, p in params.items():
                    if p.grad is not None:
                        fisher[n] += p.grad.detach().float() ** 2
                pairs += len(texts)
        finally:
            model.train(was_training)
            for n, p in params.items():
                p.grad = saved_grads[n]
        return {n: f / self.fisher_batches for n, f in fisher.items()}, pairs

    def end_step(self, ctx: MethodContext) -> StepOutcome:
        new, pairs = self.compute_fisher(ctx)
        if self.fisher is None:
            self.fisher = new
        else:
            self.fisher = {n: self.gamma * self.fisher[n].to(f.device) + f for n, f in new.items()}
        self.anchor = {n: p.detach().clone() for n, p in ctx.model.named_parameters() if n in new}
        facts = {"fisher_pairs": pairs, "fisher_mean": float(sum(f.sum() for f in new.values()) /
                                                          max(1, sum(f.numel() for f in new.values())))}
        return StepOutcome(facts, StepCost(extra_pairs=pairs))

    # ----------------------------------------------------------------------------- penalty
    def penalty(self, model):
        """Σ F (θ − θ*)² over the parameters with a Fisher (a scalar tensor), or None."""
        from ticlip.models import unwrap

        if not self.fisher or not self.anchor:
            return None
        total = None
        for n, p in unwrap(model).named_parameters():
            f = self.fisher.get(n)
            if f is None:
                continue
            if f.device != p.device:  # after load_state_dict the tensors sit on the CPU
                self.fisher[n] = f = f.to(p.device)
                self.anchor[n] = self.anchor[n].to(p.device)
            term = (f * (p.float() - self.anchor[n].float()) ** 2).sum()
            total = term if total is None else total + term
        return total

    def training_key(self, t: int) -> dict | None:
        # The penalty exists once a Fisher was accumulated (after the first step this run trained);
        # before that EWC trains like Sequential.
        if not self.fisher or not self.anchor:
            return None
        return {"method": self.name, "penalty": {"lam": self.lam}, "fisher": self.fisher, "anchor": self.anchor}

    def extra_loss(self, model, images, texts, outputs: dict):
        pen = self.penalty(model)
        return None if pen is None else self.lam / 2 * pen

    def state_dict(self) -> dict:
        cpu = lambda d: None if d is None else {k: v.detach().cpu() for k, v in d.items()}  # noqa: E731
        return {"fisher": cpu(self.fisher), "anchor": cpu(self.anchor)}

    def load_state_dict(self, state: dict) -> None:
        self.fisher, self.anchor = state.get("fisher"), state.get("anchor")
