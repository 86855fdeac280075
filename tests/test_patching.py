"""Patching's coefficient search on models whose ranking is known: one is fitted to the validation
pairs of the earlier step (what patching scores), the other is a fresh random init. Scores come from
the evaluator's shared scorer (``ticlip.eval.scorers.score_retrieval``), handed over in the context.
The search sees validation pairs only, never an eval set, and records what it scored."""

import functools

import pytest
import torch

from ticlip.eval.scorers import score_retrieval
from ticlip.methods import MethodContext, StepBudgetFacts, StepCost, get_method
from ticlip.methods.patching import interpolate


@pytest.fixture(scope="module")
def models(toy_stream):
    """(bundle, good state, random state, validation tensors of step 0)."""
    from open_clip.loss import ClipLoss

    from ticlip.models import create_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest on a shared 2-core machine
    try:
        bundle = create_model("ticlip-tiny-32", seed=0)
        es = toy_stream.validation_set(0)
        images = torch.stack([bundle.preprocess_val(im) for im in es.images])
        texts = bundle.tokenizer(list(es.captions))
        captions = list(es.captions)
        model = bundle.model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        loss_fn = ClipLoss()
        for _ in range(40):  # overfit the validation pairs of step 0
            out = model(images, texts)
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        good = {k: v.detach().clone() for k, v in model.state_dict().items()}
        bad = {k: v.detach().clone() for k, v in create_model("ticlip-tiny-32", seed=1).model.state_dict().items()}
        yield bundle, good, bad, (images, captions)
    finally:
        torch.set_num_threads(threads)


def score(bundle, state, held_out):
    bundle.model.load_state_dict(state)
    pixels, captions = held_out
    return score_retrieval(bundle.model, pixels, captions, bundle.tokenizer)["mean_recall@1"]


def context(toy_stream, bundle, step=1, scorer=None):
    return MethodContext(step=step, stream=toy_stream, model=bundle.model, tokenizer=bundle.tokenizer,
                         eval_transform=bundle.preprocess_val, budget=StepBudgetFacts(macs_per_pair=1e6),
                         score_retrieval=scorer or functools.partial(score_retrieval, tokenizer=bundle.tokenizer))


def run_patching(toy_stream, bundle, prev, new, scorer=None, **params):
    method = get_method("patching", **params)
    ctx = context(toy_stream, bundle, scorer=scorer)
    bundle.model.load_state_dict(prev)
    method.begin_step(ctx)  # remembers prev as the last patched model
    bundle.model.load_state_dict(new)  # "training" produced new
    return method, method.end_step(ctx)


def test_the_known_ranking_holds(models):
    bundle, good, bad, held_out = models
    assert score(bundle, good, held_out) > score(bundle, bad, held_out) + 0.2


@pytest.mark.parametrize("good_is_new", [False, True])
def test_search_picks_the_better_model(toy_stream, models, good_is_new):
    bundle, good, bad, held_out = models
    prev, new = (bad, good) if good_is_new else (good, bad)
    _, out = run_patching(toy_stream, bundle, prev, new, alphas="0,1")
    assert out.facts["alpha"] == (1.0 if good_is_new else 0.0)
    final = bundle.model.state_dict()
    assert all(torch.equal(final[k], good[k]) for k in good)  # the model in place is the chosen one
    assert out.cost == StepCost(extra_pairs=2 * toy_stream.validation_count(0))


def test_grid_search_interpolates_and_charges(toy_stream, models):
    bundle, good, bad, held_out = models
    method, out = run_patching(toy_stream, bundle, good, bad, alphas="0,0.25,0.5,0.75,1")
    scores = {float(a): s for a, s in out.facts["alpha_scores"].items()}
    assert len(scores) == 5 and scores[out.facts["alpha"]] == max(scores.values())
    assert scores[0.0] > scores[1.0]
    expected = interpolate(good, bad, out.facts["alpha"])
    final = bundle.model.state_dict()
    assert all(torch.allclose(final[k], expected[k]) for k in expected)
    # 5 coefficients x the validation pairs of step 0, one forward each; the estimate counts the same
    n = toy_stream.validation_count(0)
    assert n > 0
    assert out.cost == StepCost(extra_pairs=5 * n) == method.estimate_cost(1, toy_stream)
    assert method.estimate_cost(3, toy_stream) == StepCost(
        extra_pairs=5 * sum(toy_stream.validation_count(j) for j in range(3)))
    assert method.estimate_cost(0, toy_stream) == StepCost()  # step 0 is not patched
    assert method.estimate_cost(1).note and method.estimate_cost(1).extra_pairs == 0  # no stream: says so


def test_the_scorer_in_the_context_is_what_picks_alpha(toy_stream, models):
    """Patching ranks coefficients by the context's scorer's mean_recall@1 and nothing else."""
    bundle, good, bad, _ = models
    marker = next(k for k, v in good.items() if v.is_floating_point() and v.numel() > 1)
    calls = []

    def scorer(model, pixels, captions, *, batch_size):
        # a made-up metric: prefer the model whose marker entry is closest to 0.3 good + 0.7 bad
        target = interpolate(good, bad, 0.7)[marker]
        calls.append((len(pixels), len(captions), batch_size))
        return {"mean_recall@1": -float((model.state_dict()[marker] - target).abs().sum())}

    _, out = run_patching(toy_stream, bundle, good, bad, scorer=scorer, alphas="0,0.3,0.7,1", eval_batch_size=5)
    assert out.facts["alpha"] == 0.7
    n = toy_stream.validation_count(0)
    assert calls == [(n, n, 5)] * 4  # each coefficient scored once on step 0's validation set


def test_interpolation_formula(models):
    _, good, bad, _ = models
    k = next(k for k, v in good.items() if v.is_floating_point() and v.numel() > 1)
    mixed = interpolate(good, bad, 0.3)
    assert torch.allclose(mixed[k], 0.7 * good[k] + 0.3 * bad[k], atol=1e-6)
    assert torch.equal(interpolate(good, bad, 0.0)[k], good[k])


def test_step_zero_is_not_patched_and_state_survives_a_resume(toy_stream, models):
    bundle, good, bad, _ = models
    method = get_method("patching")
    ctx = context(toy_stream, bundle, step=0)
    bundle.model.load_state_dict(bad)
    method.begin_step(ctx)
    assert method.end_step(ctx).facts["alpha"] == 1.0
    assert all(torch.equal(bundle.model.state_dict()[k], bad[k]) for k in bad)
    # resume mid-step 1: a fresh method object restored from state_dict patches the same way
    m1, info1 = run_patching(toy_stream, bundle, good, bad, alphas="0,1")
    saved = m1.state_dict()
    m2 = get_method("patching", alphas="0,1")
    m2.load_state_dict(saved)
    bundle.model.load_state_dict(bad)
    ctx.step = 1
    assert m2.end_step(ctx).facts["alpha"] == info1.facts["alpha"] == 0.0


def test_ema_merge_uses_a_fixed_coefficient(toy_stream, models):
    bundle, good, bad, _ = models
    method = get_method("ema-merge", alpha=0.25)
    ctx = MethodContext(step=2, stream=toy_stream, model=bundle.model)  # no scorer needed
    bundle.model.load_state_dict(good)
    method.begin_step(ctx)
    bundle.model.load_state_dict(bad)
    out = method.end_step(ctx)
    assert out.facts == {"alpha": 0.25, "alpha_scores": {}} and out.cost == StepCost()
    assert method.estimate_cost(2, toy_stream) == StepCost()
    expected = interpolate(good, bad, 0.25)
    assert all(torch.allclose(bundle.model.state_dict()[k], expected[k]) for k in expected)


# ------------------------------------------------------------------ what the search is tuned on
@pytest.fixture(scope="module")
def built_stream(tmp_path_factory):
    """A 3-step stream from the builder whose captions are all distinct (unlike the toy stream's), so
    a caption tells which set a pair comes from."""
    from test_build import build, image_rows, write_csv

    d = tmp_path_factory.mktemp("built")
    rows = image_rows(d, 72, ["2015", "2016", "2017"])
    table = write_csv(d / "t.csv", rows, ("uid", "image", "caption", "timestamp"))
    return build(table, d / "s", eval_size=8, validation_size=1000, validation_ratio=0.5)


def test_the_search_sees_validation_pairs_only_and_records_them(built_stream, models):
    bundle, good, bad, _ = models
    stream = built_stream
    seen = []

    def scorer(model, pixels, captions, *, batch_size):
        seen.append(list(captions))
        return {"mean_recall@1": 0.1 * len(seen)}  # a made-up score: later calls score higher

    method = get_method("patching", alphas="0,0.5,1")
    ctx = context(stream, bundle, step=2, scorer=scorer)
    bundle.model.load_state_dict(good)
    method.begin_step(ctx)
    bundle.model.load_state_dict(bad)
    out = method.end_step(ctx)

    validation = [list(stream.validation_set(j).captions) for j in (0, 1)]
    eval_captions = {c for st in stream.steps for c in stream.eval_set(st).captions}
    assert all(len(v) == 4 for v in validation)  # round(0.5 x 8) per step
    assert seen == validation * 3  # each coefficient scores steps 0 and 1's validation sets, nothing else
    assert not {c for s in seen for c in s} & eval_captions
    # step.json's facts: the set used and every coefficient with its score (the mean over the two sets)
    assert out.facts["tuned_on"] == {"set": "validation", "steps": ["2015", "2016"], "pairs": 8, "skipped_steps": []}
    assert out.facts["alpha_scores"] == pytest.approx({"0.0": 0.15, "0.5": 0.35, "1.0": 0.55})
    assert out.facts["alpha"] == 1.0 and out.cost == StepCost(extra_pairs=3 * 8)
    assert method.estimate_cost(2, stream) == out.cost  # the estimate counts validation pairs


def test_a_stream_without_validation_sets_is_refused_before_training(tmp_path, models):
    from ticlip.data.toy import make_toy_stream
    from ticlip.errors import TiclipError

    bundle, good, _, _ = models
    old = make_toy_stream(str(tmp_path / "old"), steps=2, train_per_step=8, eval_per_step=4, validation_per_step=0)
    assert not old.has_validation
    method = get_method("patching", alphas="0,1")
    with pytest.raises(TiclipError, match="has none.*--validation-size"):
        method.estimate_cost(1, old)  # what `ticlip run` / `ticlip train` check before step 0
    bundle.model.load_state_dict(good)
    with pytest.raises(TiclipError, match="validation sets of earlier steps"):
        method.begin_step(context(old, bundle, step=1))
    # no search, no tuning data needed: one coefficient still works on such a stream
    assert get_method("patching", alphas="0.5").estimate_cost(1, old) == StepCost()
    assert get_method("ema-merge").estimate_cost(1, old) == StepCost()
