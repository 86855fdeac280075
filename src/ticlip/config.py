"""The training configuration: one schema (``TrainConfig``) from which YAML, flags and overrides derive.

``TrainConfig`` holds everything a training run depends on; a run writes it resolved to
``runs/<name>/config.yaml`` and ``ticlip train --resume`` reads it back from there, so a resumed run
trains with exactly the settings it started with. ``ticlip train --config FILE`` reads the same format
(keys are the field names below; command-line flags, derived from the same fields, override the file).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from ticlip.schema import ConfigError, Schema, parse_kv, read_yaml_mapping

__all__ = ["ANNEALS", "ConfigError", "OPTIMIZERS", "PRECISIONS", "SCHEDULES", "TrainConfig", "parse_param", "read_yaml_mapping"]

PRECISIONS = ("fp32", "bf16", "fp16")
# open_clip's names for the same modes (its --precision flag), accepted as aliases.
PRECISION_ALIASES = {"amp": "fp16", "amp_bf16": "bf16", "amp_bfloat16": "bf16", "float32": "fp32"}
SCHEDULES = ("cosine", "const-cosine", "constant", "wsd", "rsqrt", "cosine-decaying-peak", "global-cosine")
ANNEALS = ("linear", "cosine", "1-sqrt")  # wsd/rsqrt anneal branch shapes (ticlip.train.schedule)
OPTIMIZERS = ("adamw", "schedule-free-adamw")


class TrainConfig(Schema):
    """One training run: which stream, model and method; the optimisation recipe; the budget.

    The defaults are the TiC-CLIP / open_clip recipe (AdamW 0.9/0.98, eps 1e-6, wd 0.2, cosine per
    step; warmup on every step that starts from the initial weights, none on warm-started steps) sized
    for the tiny CPU model.
    """

    # what to train
    stream: str = Field("", description="stream directory (holding stream.json) or its URL")
    method: str = Field("cumulative-all", description="continual method (docs/METHODS.md)")
    method_params: dict[str, Any] = Field(default_factory=dict, description="the method's parameters")
    model: str = Field("ticlip-tiny-32", description="open_clip model name")
    init: str | None = Field(None, description="OpenCLIP checkpoint the first trained step starts from: a file "
                                               "(e.g. a released TiC-CLIP 2016.pt), hf-hub:ORG/REPO[/FILE] or an "
                                               "open_clip MODEL:TAG (docs/TRAINING.md, hub checkpoints)")
    steps: str | None = Field(None, description="steps to train, inclusive, by label or index: 2016:2019, 2:3, "
                                                "2017: (default all)")

    # budget: either total MACs split evenly over the stream's steps, or iterations per step
    total_macs: float | None = Field(None, gt=0, description="total budget in MACs over all steps, e.g. 3.4e18")
    iterations_per_step: int | None = Field(None, gt=0, description="instead of total-macs: iterations per step")
    budget_scale: float = Field(1.0, gt=0, description="multiply the budget (Cumulative-All*)")
    budget_unit: Literal["macs", "memory-adjusted"] = Field(
        "macs", description="what a budget counts: macs (forward MACs per pair, TiC-CLIP) or memory-adjusted "
                            "(FoMo-in-Flux's memory-adjusted FLOPs in full fine-tuning's MACs: a cheaper --update "
                            "gets more iterations; docs/METHODS.md)")

    # parameter-efficient updates (ticlip.train.updates), for any method
    update: Literal["full", "lora", "bitfit", "layernorm", "lock-image", "lock-text"] = Field(
        "full", description="which parameters train: full; lora (peft adapters, merged at each step's end); bitfit "
                            "(biases); layernorm (LayerNorm gains and biases); lock-image / lock-text (a frozen tower)")
    lora_rank: int = Field(4, gt=0, description="update lora: the adapters' rank r")
    lora_alpha: float = Field(8.0, gt=0, description="update lora: scaling alpha (the update is alpha / r x B A)")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="update lora: dropout on the adapters' input")
    lora_targets: list[str] = Field(default_factory=lambda: ["attn", "c_fc", "c_proj"],
                                    description="update lora: module name suffixes to adapt (open_clip's attention "
                                                "attn, MLP c_fc and c_proj; also conv1, token_embedding)")

    # optimisation (per device batch; global batch = batch_size × world size × accum_freq)
    batch_size: int = Field(128, gt=0, description="batch size per process")
    accum_freq: int = Field(1, gt=0, description="gradient accumulation micro-batches per iteration")
    lr: float = Field(1e-3, ge=0, description="peak learning rate")
    wd: float = Field(0.2, ge=0, description="AdamW weight decay")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1")
    beta2: float = Field(0.98, ge=0, lt=1, description="AdamW beta2")
    eps: float = Field(1e-6, ge=0, description="AdamW epsilon")
    warmup: int = Field(20, ge=0, description="linear warmup iterations of every step that starts from the run's "
                                              "initial weights (random or --init): step 0, and every step of "
                                              "oracle and restart")
    warmup_later: int = Field(0, ge=0, description="linear warmup iterations of steps warm-started from the previous "
                                                   "step (0: the paper's main recipe; TiC-DataComp XL: 2000)")
    schedule: Literal["cosine", "const-cosine", "constant", "wsd", "rsqrt", "cosine-decaying-peak", "global-cosine"] = Field(
        "cosine", description="learning-rate schedule (docs/METHODS.md): cosine per step; const-cosine; constant; "
                              "wsd (constant trunk + anneal branch); rsqrt (decay over the run's iterations + "
                              "cooldown branch); cosine-decaying-peak (cosine per step, peak x peak_decay per "
                              "warm-started step); global-cosine (one cosine over all steps)")
    warmup_every_step: bool = Field(False, description="ablation: warm-started steps warm up with --warmup too "
                                                       "(the same as --warmup-later = --warmup)")
    decay_fraction: float = Field(0.2, gt=0, le=1, description="const-cosine, wsd, rsqrt: the deployable "
                                                               "anneal branch spans this last fraction of a step")
    anneal: Literal["linear", "cosine", "1-sqrt"] = Field(
        "cosine", description="wsd, rsqrt: shape of the anneal/cooldown branch over the last decay_fraction of a step")
    rsqrt_timescale: int = Field(0, ge=0, description="rsqrt: timescale in iterations, lr x sqrt(timescale / "
                                                      "max(n, timescale)) at the n-th iteration (0: --warmup)")
    peak_decay: float = Field(0.5, gt=0, le=1, description="cosine-decaying-peak: the peak LR is multiplied by this "
                                                           "per warm-started step")
    optimizer: Literal["adamw", "schedule-free-adamw"] = Field(
        "adamw", description="adamw (torch) or schedule-free-adamw (Defazio et al. 2024, PyPI schedulefree; takes "
                             "--schedule constant, i.e. warmup only)")
    grad_clip_norm: float | None = Field(None, gt=0, description="clip the gradient norm to this value")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="fp32, bf16 (CPU or GPU) or fp16 (GPU); open_clip's amp, amp_bf16 are accepted")

    # execution
    workers: int = Field(1, ge=0, description="DataLoader workers per process")
    seed: int = Field(0, description="seed of init, data order and replay subsets")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    threads: int | None = Field(None, ge=1, description="torch CPU threads per process (1 is fastest on a busy "
                                                        "machine; default torch's)")
    shuffle_buffer: int = Field(1000, ge=0, description="samples in the shuffle buffer")
    memory_limit_mb: float = Field(1024.0, ge=0, description="train from memory (images decoded once, tensor "
                                                             "augmentation) when a step's pairs fit in this many "
                                                             "MB per process; 0: always read the webdataset "
                                                             "shards (docs/TRAINING.md)")
    chunk_iterations: int = Field(50, gt=0, description="iterations per seeded data chunk, i.e. between resume "
                                                        "points")
    save_every_s: float = Field(120.0, ge=0, description="write resumable state at most this often, in seconds")
    step_cache: str | None = Field(None, description="directory of a cache of step trainings shared by runs: a "
                                                     "step whose result is fully determined by the same inputs "
                                                     "is trained once and reused (docs/TRAINING.md); none: off")

    # outputs
    name: str | None = Field(None, description="run name (default <stream>-<method>-<model>-seed<seed>)")
    label: str | None = Field(None, description="the row this run is reported under, e.g. an experiment's variant "
                                                "name (default: the method)")
    logs: str = Field("runs", description="directory holding runs")
    report_to: Literal["", "tensorboard", "wandb"] = Field(
        "", description="also log to 'tensorboard' (needs the tensorboard package) or 'wandb' (Weights & Biases, "
                        "offline unless WANDB_MODE says otherwise; needs the wandb package); evaluation logs "
                        "its matrices and summary there too")
    log_every: int = Field(1, gt=0, description="JSONL log line every N iterations (the last is always logged)")
    progress: bool = Field(True, description="show a progress bar")

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_alias(cls, value):
        return PRECISION_ALIASES.get(value, value) if isinstance(value, str) else value

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_to_none(cls, value):
        return "" if value in (None, "none") else value

    def validate(self) -> "TrainConfig":  # type: ignore[override]  # pydantic's deprecated classmethod
        """Raise ConfigError for what a run needs beyond well-formed values; returns self."""
        if not self.stream:
            raise ConfigError("no stream given: pass --stream DIR (a directory holding stream.json)")
        if self.total_macs is None and self.iterations_per_step is None:
            raise ConfigError("no budget: pass --total-macs X (split evenly over steps) or --iterations-per-step N")
        if self.total_macs is not None and self.iterations_per_step is not None:
            raise ConfigError("pass either --total-macs or --iterations-per-step, not both")
        lora_given = {k for k in ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets")
                      if k in self.model_fields_set and getattr(self, k) != type(self).model_fields[k].get_default(
                          call_default_factory=True)}
        if lora_given and self.update != "lora":
            key = sorted(lora_given)[0]
            raise ConfigError(f"{key} = {getattr(self, key)!r} applies to update lora only, but update is "
                              f"{self.update!r}: pass --update lora or drop {key}")
        if self.update == "lora" and not self.lora_targets:
            raise ConfigError("lora_targets is empty: name at least one module suffix, e.g. attn")
        if self.optimizer == "schedule-free-adamw" and self.schedule != "constant":
            raise ConfigError(f"optimizer schedule-free-adamw takes no LR schedule but warmup, got schedule "
                              f"{self.schedule!r}: pass --schedule constant")
        return self


def parse_param(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--method-param`` (the one KEY=VALUE parser, ``ticlip.schema.parse_kv``)."""
    return parse_kv(text, flag="--method-param")
