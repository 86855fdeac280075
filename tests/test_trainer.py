"""The training loop's recipe: weight-decay groups (open_clip's rule), precision, accumulation, clipping, logit-scale clamp,
and one step on the toy stream lowering the held-out contrastive loss."""

import math

import pytest
import torch
from train_helpers import held_out_loss, one_thread  # noqa: F401  (autouse fixture)

from ticlip.errors import TiclipError
from ticlip.models import create_model
from ticlip.train.loop import LoopOptions, LoopState, make_optimizer, param_groups, train_loop


@pytest.fixture(scope="module")
def tiny():
    return create_model("ticlip-tiny-32", seed=0)


def _batches(bundle, n=4, batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, batch, 3, 32, 32, generator=g)
    words = ["red", "green", "blue", "square", "circle", "bar", "ring", "cross"]
    texts = [bundle.tokenizer([f"a {words[(i + j) % 8]} {words[(2 * i + j) % 8]}" for j in range(batch)])
             for i in range(n)]
    return [(images[i], texts[i]) for i in range(n)]


def _fresh(bundle):
    model = create_model("ticlip-tiny-32", seed=0).model
    model.load_state_dict(bundle.model.state_dict())
    return model


def test_weight_decay_follows_open_clips_rule(tiny):
    """open_clip_train/main.py: no decay where ``p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or
    "logit_scale" in n``; everything else, token and positional embeddings included, is decayed."""
    groups = param_groups(tiny.model, 0.2)
    assert groups[0]["weight_decay"] == 0.0 and groups[1]["weight_decay"] == 0.2
    no_decay = {id(p) for p in groups[0]["params"]}
    decay = {id(p) for p in groups[1]["params"]}
    names = dict(tiny.model.named_parameters())

    def exclude(n, p):  # open_clip's rule, verbatim
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n

    assert no_decay == {id(p) for n, p in names.items() if exclude(n, p)}
    assert decay == {id(p) for n, p in names.items() if not exclude(n, p)}
    for name in ("token_embedding.weight", "positional_embedding", "visual.positional_embedding",
                 "text_projection", "visual.conv1.weight"):
        assert id(names[name]) in decay, name  # 2-d embeddings and projections are decayed
    for name in ("logit_scale", "visual.class_embedding", "ln_final.weight", "ln_final.bias"):
        assert id(names[name]) in no_decay, name
    assert any("attn.in_proj_weight" in n and id(p) in decay for n, p in names.items())
    assert len(no_decay) + len(decay) == len(names)
    opt = make_optimizer(tiny.model, lr=1e-3)
    assert [len(g["params"]) for g in opt.param_groups] == [len(no_decay), len(decay)]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.2]
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-6


def test_fp16_on_cpu_is_a_clear_error(tiny):
    model = _fresh(tiny)
    opt = make_optimizer(model, lr=1e-3)
    with pytest.raises(TiclipError, match="fp16 needs a CUDA GPU"):
        train_loop(model, _batches(tiny, 1), opt, lambda i: 1e-3, _loss(), LoopOptions(1, precision="fp16",
                                                                                          progress=False))


def _loss():
    from open_clip.loss import ClipLoss

    return ClipLoss()


def test_bf16_autocast_runs_on_cpu(tiny):
    model = _fresh(tiny)
    opt = make_optimizer(model, lr=1e-3)
    logs = []
    state = train_loop(model, _batches(tiny, 2), opt, lambda i: 1e-3, _loss(),
                       LoopOptions(2, precision="bf16", progress=False), log=logs.append)
    assert state.iteration == 2 and len(logs) == 2 and all(math.isfinite(r["loss"]) for r in logs)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, not bf16 weights


def test_accumulation_equals_one_big_batch(tiny):
    """open_clip's accumulation: 2 micro-batches of 8 give the gradient of one batch of 16."""
    from ticlip.train.loop import _forward_backward, autocast_context

    data = _batches(tiny, 2, 8)
    big = (torch.cat([data[0][0], data[1][0]]), torch.cat([data[0][1], data[1][1]]))
    grads = []
    for micro in ([big], data):
        model = _fresh(tiny)
        model.zero_grad()
        _forward_backward(model, model, micro, _loss(), autocast_context("fp32", "cpu"), None, None)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-6, msg=n)
    # and it is not the naive average of two small batches' losses
    model = _fresh(tiny)
    model.zero_grad()
    for m in data:
        _forward_backward(model, model, [m], _loss(), autocast_context("fp32", "cpu"), None, None)
    assert not torch.allclose(model.logit_scale.grad, grads[0]["logit_scale"])


def test_grad_clipping_bounds_the_update(tiny):
    # with plain SGD (lr 1) the update is the clipped gradient itself
    for clip in (None, 1e-3):
        model = _fresh(tiny)
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        train_loop(model, _batches(tiny, 1), opt, lambda i: 1.0, _loss(),
                   LoopOptions(1, grad_clip_norm=clip, progress=False))
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        moved = float((after - before).norm())
        if clip is None:
            assert moved > 1e-2
        else:
            assert moved <= clip * 1.01


def test_logit_scale_is_clamped_to_ln_100(tiny):
    model = _fresh(tiny)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    opt = make_optimizer(model, lr=1e-6)
    train_loop(model, _batches(tiny, 1), opt, lambda i: 1e-6, _loss(), LoopOptions(1, progress=False))
    assert float(model.logit_scale.detach()) == pytest.approx(math.log(100.0))


def test_loop_logs_accounting_and_resumes_from_state(tiny):
    model = _fresh(tiny)
    opt = make_optimizer(model, lr=1e-3)
    logs, seen = [], []
    opts = LoopOptions(4, log_every=3, macs_per_pair=10.0, budget_macs=320.0, world_size=1, progress=False)
    state = train_loop(model, _batches(tiny, 2), opt, lambda i: 1e-3, _loss(), opts,
                       state=LoopState(iteration=2, pairs_seen=16, macs=160.0), log=logs.append,
                       after_iteration=lambda s: seen.append(s.iteration))
    assert seen == [3, 4] and [r["iteration"] for r in logs] == [3, 4]  # every 3rd and the last
    assert state.pairs_seen == 32 and state.macs == 320.0 and logs[-1]["budget_used"] == 1.0
    with pytest.raises(TiclipError, match="ran out"):
        train_loop(model, _batches(tiny, 1), opt, lambda i: 1e-3, _loss(), LoopOptions(3, progress=False))


def test_one_step_on_the_toy_stream_lowers_the_held_out_loss(toy_stream, tmp_path):
    from ticlip.config import TrainConfig
    from ticlip.train.run import train_run

    cfg = TrainConfig(stream=toy_stream.root, method="sequential", iterations_per_step=40, batch_size=16,
                      lr=1e-3, warmup=2, workers=0, steps="0", logs=str(tmp_path), name="lower", progress=False)
    train_run(cfg)
    before = held_out_loss(toy_stream, 0, None)  # the run starts from this seed's random init
    after = held_out_loss(toy_stream, 0, str(tmp_path / "lower" / "steps" / "0" / "checkpoint.pt"))
    assert after < before - 0.5, (before, after)  # measured: 2.88 -> 1.27


def _have_emoji_font() -> bool:
    try:
        from ticlip.data.sources import emoji as emoji_source

        emoji_source.find_font()
        return True
    except (ImportError, TiclipError):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _have_emoji_font(), reason="no colour emoji font (fonts-noto-color-emoji)")
def test_one_step_on_the_emoji_stream_lowers_the_held_out_loss(tmp_path):
    from ticlip.cli import main
    from ticlip.data.stream import TimeStream

    assert main(["data", "build", "emoji", "--out", str(tmp_path / "emoji")]) == 0
    stream = TimeStream.load(str(tmp_path / "emoji"))
    assert main(["train", "--stream", stream.root, "--logs", str(tmp_path), "--name", "e", "--method", "sequential",
                 "--iterations-per-step", "40", "--batch-size", "64", "--workers", "0", "--warmup", "4",
                 "--steps", "0", "--no-progress"]) == 0
    before = held_out_loss(stream, 0, None)
    after = held_out_loss(stream, 0, str(tmp_path / "e" / "steps" / "0" / "checkpoint.pt"))
    assert after < before - 0.1, (before, after)


def test_data_chunks_split_evenly_over_workers():
    from ticlip.train.batches import chunk_iterations, derive_seed

    assert chunk_iterations(50, 1, 1) == 50 and chunk_iterations(3, 1, 2) == 4 and chunk_iterations(5, 1, 3) == 6
    assert chunk_iterations(3, 2, 4) == 4  # 4 iterations x 2 micro-batches = 8 batches = 2 per worker
    for req, accum, workers in [(1, 1, 3), (7, 3, 6), (50, 2, 8)]:
        k = chunk_iterations(req, accum, workers)
        assert k >= req and (k * accum) % workers == 0
    assert derive_seed(0, 1, "main") == derive_seed(0, 1, "main") != derive_seed(0, 1, "tail")
