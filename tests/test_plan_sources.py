"""Typed plan sources: a step of this stream, a replay buffer of one, a pretraining pool (another
stream or a list of shards), each with a weight; Mixture.from_plan draws from all three kinds."""

import collections

import pytest

from ticlip.methods import BufferSource, PoolSource, StepPlan, StepSource
from ticlip.methods.base import source_to_dict
from ticlip.schema import ConfigError
from ticlip.train.batches import Mixture

OLD_SHAPES = {"square", "circle", "triangle"}  # the toy stream's step 0; step 3 draws cross, bar, ring


@pytest.fixture(scope="module")
def pool_stream(tmp_path_factory):
    """A second small stream whose 24-px images tell its pairs apart from the toy stream's 32-px ones."""
    from ticlip.data.toy import make_toy_stream

    return make_toy_stream(str(tmp_path_factory.mktemp("pool")), steps=2, image_size=24, seed=5)


def draw(mixture, n, seed=0):
    it = iter(mixture.pipeline(seed))
    return [next(it) for _ in range(n)]


def kinds(samples):
    """Where each (PIL image, caption) sample came from: pool (24 px), old step 0 or new step 3."""
    out = collections.Counter()
    for image, caption in samples:
        if image.size[0] == 24:
            out["pool"] += 1
        else:
            out["buffer" if caption.split()[-1] in OLD_SHAPES else "new"] += 1
    return out


def fomo_plan(pool: PoolSource) -> StepPlan:
    """FoMo-in-Flux's mixture: new data / replay buffer / pretraining pool, 0.34 / 0.33 / 0.33."""
    return StepPlan(step=3, init="previous", sources=[
        StepSource(step=3, weight=0.34, pairs=64),
        BufferSource(step=0, fraction=0.5, weight=0.33, pairs=32),
        pool,
    ], subset_seed=1)


@pytest.mark.parametrize("by", ["stream", "shards"])
def test_a_fomo_mixture_is_just_a_plan(toy_stream, pool_stream, by):
    if by == "stream":
        pool = PoolSource(weight=0.33, stream=pool_stream.root, steps=(0, 1))
    else:
        pool = PoolSource(weight=0.33, shards=tuple(pool_stream.train_urls(0) + pool_stream.train_urls(1)), pairs=128)
    mixture = Mixture.from_plan(toy_stream, fomo_plan(pool), None, None, subset_seed=1, shuffle=20)
    assert list(mixture.steps) == [3, 0] and list(mixture.counts) == [None, 32] and len(mixture.pools) == 1
    n = 900
    got = kinds(draw(mixture, n))
    assert sum(got.values()) == n
    for kind, weight in (("new", 0.34), ("buffer", 0.33), ("pool", 0.33)):
        assert got[kind] / n == pytest.approx(weight, abs=0.06), got
    # the same seed gives the same draws (resume needs it); another seed does not
    assert [c for _, c in draw(mixture, 50)] == [c for _, c in draw(mixture, 50)]
    assert [c for _, c in draw(mixture, 50)] != [c for _, c in draw(mixture, 50, seed=1)]


@pytest.mark.parametrize("subset_seed", [0, 3, 11])
def test_the_buffer_keeps_exactly_its_pairs_of_the_step(toy_stream, subset_seed):
    plan = StepPlan(step=1, init="previous", sources=[BufferSource(step=0, fraction=0.25, weight=1.0, pairs=16)])
    mixture = Mixture.from_plan(toy_stream, plan, None, None, subset_seed=subset_seed, shuffle=0)
    assert list(mixture.counts) == [16]
    # read once, the buffer is exactly the plan's 16 of step 0's 64 pairs (not 16 in expectation)
    once = list(toy_stream.train_pipeline([0], counts=[16], resampled=False, subset_seed=subset_seed))
    assert len(once) == 16
    # drawn over and over, the mixture draws those pairs and no others
    seen = {(im.tobytes(), c) for im, c in draw(mixture, 600)}
    assert seen == {(im.tobytes(), c) for im, c in once}


def test_a_plan_without_pools_is_the_stream_pipeline(toy_stream):
    plan = StepPlan(step=1, init="previous", sources=[StepSource(step=1, weight=0.5, pairs=64),
                                                      BufferSource(step=0, fraction=0.5, weight=0.5, pairs=32)])
    mixture = Mixture.from_plan(toy_stream, plan, None, None, subset_seed=2)
    direct = toy_stream.train_pipeline([1, 0], weights=[0.5, 0.5], fractions=[1.0, 0.5], resampled=True, seed=9,
                                       subset_seed=2)
    it = iter(direct)
    assert [c for _, c in draw(mixture, 40, seed=9)] == [next(it)[1] for _ in range(40)]


def test_sources_are_checked_and_recorded_with_their_kind():
    with pytest.raises(ConfigError, match="either a stream"):
        PoolSource(weight=0.3)
    with pytest.raises(ConfigError, match="either a stream"):
        PoolSource(weight=0.3, stream="s", shards=("a.tar",))
    with pytest.raises(ConfigError, match="fraction"):
        BufferSource(step=0, fraction=0.0, weight=1.0, pairs=0)
    with pytest.raises(ConfigError, match="init"):
        StepPlan(step=0, init="random", sources=[StepSource(step=0, weight=1.0, pairs=1)])
    with pytest.raises(ConfigError, match="weights"):
        StepPlan(step=0, init="initial", sources=[StepSource(step=0, weight=0.0, pairs=1)])
    plan = fomo_plan(PoolSource(weight=0.33, stream="/data/pool", steps=(2,)))
    assert plan.total_pairs == 96  # the pool's size is unknown
    assert [d["kind"] for d in plan.to_dict()["sources"]] == ["step", "buffer", "pool"]
    assert source_to_dict(plan.sources[2]) == {"kind": "pool", "weight": 0.33, "stream": "/data/pool",
                                               "steps": [2], "shards": [], "pairs": None}
