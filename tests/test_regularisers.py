"""LwF and EWC penalties: zero when the model equals the previous one, positive otherwise."""

import pytest
import torch

from ticlip.methods import MethodContext, StepCost, get_method


@pytest.fixture()
def bundle():
    from ticlip.models import create_model

    return create_model("ticlip-tiny-32", seed=0)


@pytest.fixture()
def batch(toy_stream, bundle):
    es = toy_stream.eval_set(1)
    return torch.stack([bundle.preprocess_val(im) for im in es.images]), bundle.tokenizer(list(es.captions))


def nudge(model, scale=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def ctx_for(step, toy_stream, bundle):
    return MethodContext(step=step, stream=toy_stream, model=bundle.model, tokenizer=bundle.tokenizer,
                       eval_transform=bundle.preprocess_val, seed=0)


# ---------------------------------------------------------------------------------------- LwF
def test_lwf_zero_at_the_previous_model_positive_after_change(toy_stream, bundle, batch):
    model = bundle.model.train()
    lwf = get_method("lwf", lam=2.0)
    lwf.begin_step(ctx_for(1, toy_stream, bundle))
    images, texts = batch
    loss = lwf.extra_loss(model, images, texts, model(images, texts))
    assert loss is not None and abs(loss.item()) < 1e-6
    nudge(model)
    loss = lwf.extra_loss(model, images, texts, model(images, texts))
    assert loss.item() > 1e-4
    loss.backward()  # gradients reach the model being trained, never the frozen copy
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert all(p.grad is None for p in lwf._old.parameters())
    # λ scales it
    lwf1 = get_method("lwf", lam=1.0)
    lwf1.load_state_dict(lwf.state_dict())
    with torch.no_grad():
        out = model(images, texts)
        assert lwf1.extra_loss(model, images, texts, out).item() == pytest.approx(
            lwf.extra_loss(model, images, texts, out).item() / 2, rel=1e-5)


def test_lwf_does_nothing_on_the_first_step(toy_stream, bundle, batch):
    lwf = get_method("lwf")
    lwf.begin_step(ctx_for(0, toy_stream, bundle))
    images, texts = batch
    assert lwf.extra_loss(bundle.model, images, texts, bundle.model(images, texts)) is None
    assert lwf.estimate_cost(0) == StepCost()
    assert lwf.estimate_cost(1) == StepCost(extra_forward_passes_per_pair=1.0)
    assert lwf.estimate_cost(1).extra_macs(1e9, 1e3) == 1e9  # one more forward per training pair


def test_symmetric_kl_is_both_directions():
    from ticlip.methods.lwf import symmetric_kl

    old = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    new = torch.tensor([[2.0, 0.0], [2.0, 0.0]])  # rows differ in row 2; columns in both
    assert symmetric_kl(old, old).item() == pytest.approx(0.0, abs=1e-7)
    p = torch.softmax(old, 1)
    q = torch.softmax(new, 1)
    i2t = (p * (p.log() - q.log())).sum(1).mean()
    pt, qt = torch.softmax(old.T, 1), torch.softmax(new.T, 1)
    t2i = (pt * (pt.log() - qt.log())).sum(1).mean()
    assert symmetric_kl(old, new).item() == pytest.approx(((i2t + t2i) / 2).item(), rel=1e-5)


# ---------------------------------------------------------------------------------------- EWC
def test_ewc_penalty_zero_at_anchor_positive_after_change(toy_stream, bundle, batch):
    model = bundle.model
    ewc = get_method("ewc", lam=10.0, fisher_batches=2, fisher_batch_size=16)
    ctx = ctx_for(0, toy_stream, bundle)
    images, texts = batch
    assert ewc.extra_loss(model, images, texts, {}) is None  # nothing consolidated yet
    out = ewc.end_step(ctx)
    assert out.facts["fisher_pairs"] == 32
    assert out.cost == StepCost(extra_pairs=32) == ewc.estimate_cost(0)
    assert out.cost.end_macs(1e3) == 32e3
    assert all(p.grad is None for p in model.parameters())  # the Fisher pass leaves no gradients behind
    assert all((f >= 0).all() for f in ewc.fisher.values()) and sum(f.sum() for f in ewc.fisher.values()) > 0
    assert ewc.extra_loss(model, images, texts, {}).item() == 0.0
    nudge(model)
    pen = ewc.penalty(model)
    assert pen.item() > 0
    assert ewc.extra_loss(model, images, texts, {}).item() == pytest.approx(5.0 * pen.item())
    ewc.extra_loss(model, images, texts, {}).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    # a resumed run restores Fisher and anchor
    again = get_method("ewc", lam=10.0)
    again.load_state_dict(ewc.state_dict())
    assert again.penalty(model).item() == pytest.approx(pen.item())


def test_ewc_accumulates_online(toy_stream, bundle):
    ewc = get_method("ewc", gamma=0.5, fisher_batches=1, fisher_batch_size=16)
    ctx = ctx_for(0, toy_stream, bundle)
    ewc.end_step(ctx)
    first = {k: v.clone() for k, v in ewc.fisher.items()}
    ewc.end_step(ctx)  # same model, same seeded sample: F_new == first
    for k, v in ewc.fisher.items():
        assert torch.allclose(v, 1.5 * first[k], rtol=1e-4, atol=1e-12)
