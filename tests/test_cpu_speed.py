"""The CPU speed choices of ticlip.train.loop (math attention under bf16, channels-last ResNet towers) and
the longest-first start order of ``ticlip run``: what they change and what they must not."""

import torch

from ticlip.experiment import ExperimentConfig, _expected_macs, expand
from ticlip.models import create_model
from ticlip.train.loop import autocast_context, make_optimizer, use_fast_layout


def _visual_convs(model):
    return [m.weight for m in model.visual.modules() if isinstance(m, torch.nn.Conv2d)]


def test_resnet_towers_go_channels_last_in_place_and_vits_stay():
    rn = create_model("ticlip-tiny-rn32", seed=0).model
    before = {k: v.clone() for k, v in rn.state_dict().items()}
    params = [id(p) for p in rn.parameters()]
    use_fast_layout(rn, "cpu")
    convs = _visual_convs(rn)
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert any(not w.is_contiguous() for w in convs)  # (1x1 kernels are both layouts at once)
    assert [id(p) for p in rn.parameters()] == params  # an optimizer made before still updates the model
    assert all(torch.equal(before[k], v) for k, v in rn.state_dict().items())  # values unchanged
    vit = create_model("ticlip-tiny-32", seed=0).model
    use_fast_layout(vit, "cpu")
    assert all(w.is_contiguous() for w in _visual_convs(vit))


def test_cpu_bf16_context_is_reenterable_and_trains():
    bundle = create_model("ticlip-tiny-rn32", seed=0)
    model = bundle.model
    use_fast_layout(model, "cpu")
    opt = make_optimizer(model, lr=1e-3)
    ctx = autocast_context("bf16", "cpu")
    images = torch.randn(4, 3, bundle.image_size, bundle.image_size)
    texts = bundle.tokenizer(["a", "b", "c", "d"])
    losses = []
    for _ in range(2):  # the same object entered twice, as the training loop does
        with ctx:
            out = model(images, texts)
            assert out["image_features"].dtype == torch.bfloat16
            logits = out["logit_scale"] * out["image_features"] @ out["text_features"].T
            loss = torch.nn.functional.cross_entropy(logits.float(), torch.arange(4))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert not torch.is_autocast_enabled("cpu")  # left cleanly


def test_runs_start_longest_first_by_planned_macs(toy_stream, tmp_path):
    exp = ExperimentConfig.from_dict({
        "name": "order", "logs": str(tmp_path),
        "stream": {"path": toy_stream.root, "source": None},
        "train": {"iterations_per_step": 2, "batch_size": 8, "warmup": 1, "workers": 0},
        "methods": ["sequential", "lwf", "oracle", "restart"], "seeds": [0],
    })
    streams: dict = {}
    ranked = sorted(expand(exp), key=lambda r: -_expected_macs(r, streams))
    # Oracle's larger later steps first, then LwF (its teacher's forward passes are charged), then the rest
    assert [r.config.method for r in ranked][:2] == ["oracle", "lwf"]
    macs = {r.config.method: _expected_macs(r, streams) for r in ranked}
    assert macs["sequential"] == macs["restart"] < macs["lwf"] < macs["oracle"]
