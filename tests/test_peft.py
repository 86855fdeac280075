"""Parameter-efficient updates (TrainConfig.update, ticlip.train.updates): which parameters train, LoRA
through peft merged into plain open_clip weights at each step's end, with const-cosine's trunk, LwF,
EWC and the merge family; the settings validated up front and part of the step cache's key."""

import json
import os

import open_clip
import pytest
import torch
from train_helpers import one_thread  # noqa: F401  (one_thread: autouse fixture)

from ticlip.config import ConfigError, TrainConfig
from ticlip.errors import TiclipError
from ticlip.models import create_model
from ticlip.train.loop import make_optimizer
from ticlip.train.run import train_run
from ticlip.train.updates import UpdateSettings, apply_update, merge_update


def tiny():
    return create_model("ticlip-tiny-32", seed=0).model


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_each_update_trains_its_parameters_and_the_optimizer_gets_only_those():
    every = {n for n, _ in tiny().named_parameters()}
    expect = {
        "bitfit": {n for n in every if n.endswith("bias")},
        "layernorm": {n for n in every if ".ln_" in n or n.startswith("ln_") or n.startswith("visual.ln_")},
        "lock-image": {n for n in every if not n.startswith("visual.")},
        "lock-text": {n for n in every if n.startswith("visual.") or n == "logit_scale"},
    }
    for kind, names in expect.items():
        model = tiny()
        apply_update(model, UpdateSettings(update=kind))
        assert trainable(model) == names and names, kind
        opt = make_optimizer(model, lr=1e-3)
        in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
        assert in_opt == {id(p) for p in model.parameters() if p.requires_grad}, kind
    model = tiny()
    apply_update(model, UpdateSettings(update="lora", lora_rank=2))
    names = trainable(model)
    # attention (peft's MultiheadAttention: in_proj and out_proj) and both MLP linears of every block
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert any(n.endswith("attn.lora_A.default.weight") for n in names)
    assert any("attn.base_layer.out_proj.lora_B" in n for n in names)
    assert any("mlp.c_fc.lora_A" in n for n in names) and any("mlp.c_proj.lora_B" in n for n in names)


def test_a_merged_lora_is_the_adapted_model_in_plain_open_clip_keys():
    model = tiny()
    plain = {k: v.clone() for k, v in model.state_dict().items()}
    tuner = apply_update(model, UpdateSettings(update="lora", lora_rank=2, lora_alpha=6.0))
    fc = model.visual.transformer.resblocks[0].mlp.c_fc
    a, b = fc.lora_A["default"].weight, fc.lora_B["default"].weight
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.linspace(-0.1, 0.1, p.numel()).view_as(p))
    expected_fc = plain["visual.transformer.resblocks.0.mlp.c_fc.weight"] + 6.0 / 2 * (b @ a).detach()  # alpha / r
    images, texts = torch.rand(2, 3, 32, 32), torch.randint(0, 100, (2, model.context_length))
    model.eval()
    with torch.no_grad():
        adapted = model(images, texts)["image_features"]
    merge_update(model, tuner)
    state = model.state_dict()
    assert state.keys() == plain.keys()
    assert torch.allclose(state["visual.transformer.resblocks.0.mlp.c_fc.weight"], expected_fc, atol=1e-6)  # W + a/r BA
    assert not torch.equal(state["visual.transformer.resblocks.0.attn.in_proj_weight"],
                           plain["visual.transformer.resblocks.0.attn.in_proj_weight"])  # attention adapted too
    assert torch.equal(state["visual.proj"], plain["visual.proj"])  # a bare parameter: no adapter
    with torch.no_grad():
        assert torch.allclose(model(images, texts)["image_features"], adapted, atol=1e-5)
    assert all(p.requires_grad for p in model.parameters())


def config(stream, logs, name, **kw):
    base = dict(stream=stream.root, logs=str(logs), name=name, batch_size=8, workers=0, warmup=1, steps="0:1",
                chunk_iterations=2, save_every_s=0.0, progress=False, method="sequential", iterations_per_step=4)
    base.update(kw)
    return TrainConfig(**base)


def load_checkpoint_with_open_clip(path) -> dict:
    model, _, _ = open_clip.create_model_and_transforms("ticlip-tiny-32", pretrained=str(path))
    return model.state_dict()


@pytest.mark.slow
def test_lora_with_const_cosine_and_lwf_writes_open_clip_checkpoints(toy_stream, tmp_path):
    cfg = config(toy_stream, tmp_path, "lora", update="lora", method="lwf", schedule="const-cosine",
                 iterations_per_step=5, decay_fraction=0.4)
    train_run(cfg)
    start = tiny().state_dict()
    step0 = tmp_path / "lora" / "steps" / "0"
    assert (step0 / "continue.pt").exists()  # the trunk continued its adapter and was merged too
    for path in (step0 / "checkpoint.pt", step0 / "continue.pt", tmp_path / "lora" / "steps" / "1" / "checkpoint.pt"):
        got = load_checkpoint_with_open_clip(path)
        assert got.keys() == start.keys()
        assert torch.equal(got["visual.proj"], start["visual.proj"])  # frozen under LoRA
        assert torch.equal(got["logit_scale"], start["logit_scale"])
        assert not torch.equal(got["transformer.resblocks.0.mlp.c_fc.weight"],
                               start["transformer.resblocks.0.mlp.c_fc.weight"])
    branch, trunk = (load_checkpoint_with_open_clip(step0 / f) for f in ("checkpoint.pt", "continue.pt"))
    assert not torch.equal(branch["transformer.resblocks.0.mlp.c_fc.weight"],
                           trunk["transformer.resblocks.0.mlp.c_fc.weight"])  # two trainings from one branch point
    summary = json.load(open(tmp_path / "lora" / "steps" / "1" / "step.json"))
    assert summary["init"] == "step 0's constant-LR trunk"
    assert summary["budget"]["extra_macs_estimate"] > 0  # LwF's teacher and the trunk are charged


@pytest.mark.slow
def test_ewc_with_bitfit_and_a_merge_with_lora(toy_stream, tmp_path):
    train_run(config(toy_stream, tmp_path, "ewc", update="bitfit", method="ewc"))
    start = tiny().state_dict()
    got = load_checkpoint_with_open_clip(tmp_path / "ewc" / "steps" / "1" / "checkpoint.pt")
    changed = {k for k in start if not torch.equal(start[k], got[k])}
    assert changed and all(k.endswith("bias") for k in changed)
    train_run(config(toy_stream, tmp_path, "merge", update="lora", method="ema-merge"))
    for t in ("0", "1"):
        got = load_checkpoint_with_open_clip(tmp_path / "merge" / "steps" / t / "checkpoint.pt")
        assert torch.equal(got["visual.proj"], start["visual.proj"])
    assert not torch.equal(got["transformer.resblocks.0.mlp.c_fc.weight"],
                           start["transformer.resblocks.0.mlp.c_fc.weight"])
    with pytest.raises(TiclipError, match="method ewc with update lora"):
        train_run(config(toy_stream, tmp_path, "ewc-lora", update="lora", method="ewc"))
    assert not os.path.exists(tmp_path / "ewc-lora" / "steps")


def test_update_settings_are_checked_before_any_work(toy_stream, tmp_path):
    with pytest.raises(ConfigError, match=r"lora_rank = 8 applies to update lora only.*--update lora"):
        config(toy_stream, tmp_path, "x", lora_rank=8).validate()
    base = config(toy_stream, tmp_path, "x").to_dict()
    with pytest.raises(ConfigError, match="update"):
        TrainConfig.load({**base, "update": "adapters"})
    with pytest.raises(ConfigError, match="lora_rank"):
        TrainConfig.load({**base, "update": "lora", "lora_rank": 0})
    with pytest.raises(TiclipError, match=r"lora_targets \['qkv'\].*attn"):
        train_run(config(toy_stream, tmp_path, "bad-targets", update="lora", lora_targets=["qkv"]))
    assert not os.path.exists(tmp_path / "bad-targets" / "steps")


def test_the_step_cache_keys_on_the_update_settings():
    from ticlip.train.reuse import IGNORED_SETTINGS

    names = {"update", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets"}
    assert names <= set(TrainConfig.model_fields) and not names & IGNORED_SETTINGS


@pytest.mark.slow
def test_a_lora_step_is_reused_from_the_step_cache(toy_stream, tmp_path):
    cache = str(tmp_path / "cache")
    train_run(config(toy_stream, tmp_path, "a", update="lora", steps="0", step_cache=cache))
    train_run(config(toy_stream, tmp_path, "b", update="lora", steps="0", step_cache=cache))
    train_run(config(toy_stream, tmp_path, "c", update="bitfit", steps="0", step_cache=cache))
    summary = {n: json.load(open(tmp_path / n / "steps" / "0" / "step.json")) for n in "abc"}
    assert "reused_from" not in summary["a"] and summary["b"]["reused_from"].startswith("a ")
    assert "reused_from" not in summary["c"]  # another update: another key
    a, b = (load_checkpoint_with_open_clip(tmp_path / n / "steps" / "0" / "checkpoint.pt") for n in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
