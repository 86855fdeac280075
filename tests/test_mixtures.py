"""Data mixtures (ticlip.methods.mixture) and the fixed-size buffer policies (reservoir, FIFO): the plan
arithmetic, the validation of their parameters, the pairs each data path draws from each source (replayed
exactly from the path's own seeded draws, matching the ratios), pools on the memory path, and step.json."""

import collections
import json
import os

import numpy as np
import pytest
import torch
from scipy import stats
from train_helpers import Crash, one_error_line, one_thread  # noqa: F401  (one_thread: autouse fixture)

from ticlip.methods import BufferSource, PoolSource, StepPlan, StepSource, check_method_params, get_method
from ticlip.methods.mixture import buffer_counts, redistribute
from ticlip.methods.replay import PlanError, fifo_counts, reservoir_counts
from ticlip.schema import ConfigError
from ticlip.train.batches import Mixture, derive_seed
from ticlip.train.memory import memory_drawn, memory_mixture

OLD_SHAPES = {"square", "circle", "triangle"}  # the toy stream's step 0; step 3 draws cross, bar, ring
SIZES = [30, 50, 20, 80, 40]


# --------------------------------------------------------------------------- reservoir and FIFO arithmetic
def test_fifo_keeps_the_newest_pairs_up_to_the_limit():
    # hand-computed with limit 60: walk back from step t-1, whole steps while they fit, then a part
    assert fifo_counts(0, SIZES, 60) == {}
    assert fifo_counts(1, SIZES, 60) == {0: 30}
    assert fifo_counts(2, SIZES, 60) == {0: 10, 1: 50}
    assert fifo_counts(3, SIZES, 60) == {1: 40, 2: 20}
    assert fifo_counts(4, SIZES, 60) == {3: 60}  # the newest step alone fills it
    assert fifo_counts(4, SIZES, 500) == {0: 30, 1: 50, 2: 20, 3: 80}
    with pytest.raises(PlanError, match="limit"):
        fifo_counts(2, SIZES, 0)


def test_the_reservoir_keeps_everything_while_it_fits_then_exactly_limit_pairs_and_only_discards():
    assert reservoir_counts(2, SIZES, 80, seed=3) == {0: 30, 1: 50}  # 80 pairs fit a reservoir of 80
    for seed in range(20):
        before = {}
        for t in range(len(SIZES)):
            kept = reservoir_counts(t, SIZES, 60, seed)
            assert kept == reservoir_counts(t, SIZES, 60, seed)  # a pure function of (sizes, seed, limit)
            assert sum(kept.values()) == min(60, sum(SIZES[:t]))
            assert all(0 <= kept[j] <= SIZES[j] for j in kept)
            assert all(kept.get(j, 0) <= before[j] for j in before)  # an old step's count only shrinks
            before = kept
    assert len({tuple(reservoir_counts(4, SIZES, 60, s).values()) for s in range(20)}) > 5  # the seed matters
    with pytest.raises(PlanError, match="limit"):
        reservoir_counts(2, SIZES, -5)


def test_the_reservoir_is_a_uniform_sample_of_the_pairs_so_far():
    """Algorithm R leaves a uniform ``limit``-subset of the N pairs seen: each step's count is
    hypergeometric, mean limit·n/N and variance limit·(n/N)(1-n/N)(N-limit)/(N-1)."""
    t, limit, runs = 4, 60, 3000
    n = np.array(SIZES[:t], dtype=float)
    big_n = n.sum()
    counts = np.array([[reservoir_counts(t, SIZES, limit, seed).get(j, 0) for j in range(t)] for seed in range(runs)])
    expected = runs * limit * n / big_n
    assert stats.chisquare(counts.sum(0), expected).pvalue > 0.01  # every pair equally likely to be kept
    p = n / big_n
    var = limit * p * (1 - p) * (big_n - limit) / (big_n - 1)
    assert counts.var(0) == pytest.approx(var, rel=0.12)  # and the counts spread like a uniform subset's
    # the law does not depend on the order the steps came in: a later step is not favoured
    assert counts.mean(0)[3] / 80 == pytest.approx(counts.mean(0)[0] / 30, rel=0.05)


def test_cumulative_reservoir_and_fifo_plans():
    fifo = get_method("cumulative-fifo", limit=60, seed=2)
    plan = fifo.plan(3, SIZES)
    got = {s.step: (type(s).__name__, s.pairs) for s in plan.sources}
    assert got == {1: ("BufferSource", 40), 2: ("StepSource", 20), 3: ("StepSource", 80)}
    assert sum(s.weight for s in plan.sources) == pytest.approx(1.0)
    assert all(s.weight == pytest.approx(s.pairs / 140) for s in plan.sources)  # uniform over the pairs
    assert plan.init == "previous" and plan.subset_seed == 2
    res = get_method("cumulative-reservoir", limit=60, seed=1)
    assert {s.step: s.pairs for s in res.plan(4, SIZES).sources if s.step < 4} == reservoir_counts(4, SIZES, 60, 1)
    # no limit: the first step's size
    assert {s.step: s.pairs for s in get_method("cumulative-fifo").plan(3, SIZES).sources if s.step < 3} == \
        fifo_counts(3, SIZES, 30)


# --------------------------------------------------------------------------- the mixture's plan
def test_missing_sources_give_their_ratio_to_the_others():
    asked = {"new": 0.34, "buffer": 0.33, "pool": 0.33}
    assert redistribute(asked, {"new": True, "buffer": True, "pool": True}) == pytest.approx(asked)
    assert redistribute(asked, {"new": True, "buffer": False, "pool": True}) == pytest.approx(
        {"new": 0.34 / 0.67, "buffer": 0.0, "pool": 0.33 / 0.67})
    assert redistribute(asked, {"new": True, "buffer": False, "pool": False}) == {"new": 1.0, "buffer": 0.0,
                                                                                "pool": 0.0}
    assert redistribute({"new": 0.0, "buffer": 1.0, "pool": 0.0}, {"new": True, "buffer": False, "pool": True}) == {}


def test_the_mixture_plan_weights_sources_by_ratio_then_by_pairs():
    m = get_method("mixture", pool_stream="/data/pool", pool_steps="0,2", policy="fifo", limit=60)
    plan0 = m.plan(0, SIZES)  # no buffer at step 0: its 0.33 goes to new and pool in proportion
    assert [(s.kind, round(s.weight, 6)) for s in plan0.sources] == [("step", round(0.34 / 0.67, 6)),
                                                                     ("pool", round(0.33 / 0.67, 6))]
    plan = m.plan(3, SIZES)
    kinds = [(s.kind, getattr(s, "step", None), s.pairs) for s in plan.sources]
    assert kinds == [("step", 3, 80), ("buffer", 1, 40), ("step", 2, 20), ("pool", None, None)]
    w = [s.weight for s in plan.sources]
    assert w == pytest.approx([0.34, 0.33 * 40 / 60, 0.33 * 20 / 60, 0.33])
    assert plan.sources[-1] == PoolSource(weight=0.33, stream="/data/pool", steps=(0, 2))
    facts = m.ratios(0, SIZES)
    assert facts["missing"] == ["buffer"] and facts["asked"]["buffer"] == 0.33
    # defaults, no pool: step 0 is Sequential's plan (the step cache shares it), step 2 replays all
    d = get_method("mixture")
    assert d.plan(0, SIZES).to_dict() == get_method("sequential").plan(0, SIZES).to_dict()
    assert [s.pairs for s in d.plan(2, SIZES).sources] == [20, 30, 50]
    # TiC-CLIP's exp buffer at D = 80 wants 20, 20, 40; step 2 holds 20 and steps 0, 1 keep the 10 step 2 kept
    assert buffer_counts("exp", 3, SIZES) == {0: 10, 1: 10, 2: 20}
    only_buffer = get_method("mixture", new=0, buffer=1, pool=0)
    with pytest.raises(PlanError, match="nothing to draw"):
        only_buffer.plan(0, SIZES)


def test_brace_patterns_and_lists_of_shards():
    m = get_method("mixture", pool_shards="/p/a-{000..002}.tar,https://h/b-{0,1}.tar")
    assert m.plan(1, SIZES).sources[-1].shards == ("/p/a-000.tar", "/p/a-001.tar", "/p/a-002.tar",
                                                   "https://h/b-0.tar", "https://h/b-1.tar")
    assert get_method("mixture", pool_shards=["x-{1..2}.tar", "y.tar"]).pool_shards == ("x-1.tar", "x-2.tar", "y.tar")


@pytest.mark.parametrize("params, match", [
    ({"new": -0.1}, "new.*greater than or equal to 0"),
    ({"new": 0, "buffer": 0, "pool": 0}, "all 0"),
    ({"policy": "lru"}, "policy"),
    ({"policy": "reservoir", "limit": 0}, "limit.*greater than 0"),
    ({"policy": "all", "limit": 10}, "limit applies to the reservoir and fifo"),
    ({"pool_shards": "pipe:curl http://x/a.tar"}, "pipe: URL"),
    ({"pool_stream": "/a", "pool_shards": ["b.tar"]}, "not both"),
    ({"pool_steps": "0,1"}, "pool_steps needs pool_stream"),
])
def test_parameters_are_checked_with_one_line(params, match):
    with pytest.raises(ConfigError, match=match) as e:
        check_method_params("mixture", params, source="exp.yaml: method_params.mixture")
    assert "\n" not in str(e.value) and str(e.value).startswith("exp.yaml: method_params.mixture: ")
    with pytest.raises(ConfigError, match="limit"):
        check_method_params("cumulative-reservoir", {"limit": -1}, source="x")


def test_a_missing_pool_or_a_bad_url_stops_the_run_before_any_work(toy_stream, tmp_path, capsys):
    from ticlip.cli import main

    base = ["train", "--stream", toy_stream.root, "--logs", str(tmp_path), "--method", "mixture", "--workers", "0",
            "--iterations-per-step", "2", "--batch-size", "8", "--warmup", "0", "--no-progress", "--name", "r"]
    assert main(base + ["--method-param", f"pool_stream={tmp_path / 'nowhere'}"]) == 2
    line = one_error_line(capsys, "train")
    assert "pool_stream" in line and "nowhere" in line
    assert main(base + ["--method-param", "pool_shards=[gopher://h/a.tar]"]) == 2
    assert "pool_shards" in one_error_line(capsys, "train")
    assert not (tmp_path / "r" / "steps").exists()  # nothing trained, nothing written


@pytest.mark.parametrize("params, message", [
    ({"pool_stream": "MISSING"}, "run mixture-s0: method mixture pool_stream: no stream manifest"),
    ({"policy": "fifo", "limit": 0}, "method_params.mixture: .*limit"),
])
def test_an_experiment_checks_the_mixture_before_writing_anything(toy_stream, tmp_path, capsys, params, message):
    import re

    import yaml

    from ticlip.cli import main

    params = {k: (str(tmp_path / "nowhere") if v == "MISSING" else v) for k, v in params.items()}
    logs = tmp_path / "runs"
    exp = {"name": "exp", "stream": {"path": toy_stream.root, "source": None}, "logs": str(logs),
           "train": {"iterations_per_step": 2, "batch_size": 8, "warmup": 0, "workers": 0, "progress": False},
           "methods": ["sequential", "mixture"], "seeds": [0], "eval": {"tasks": ["retrieval"], "seeds": 1},
           "method_params": {"mixture": params}}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    assert main(["run", str(tmp_path / "e.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert re.search(message, err) and len(err.splitlines()) == 1, err
    assert not logs.exists()


# --------------------------------------------------------------------------- what the data paths draw
@pytest.fixture(scope="module")
def pool_stream(tmp_path_factory):
    """A second toy stream (24-px images: its pairs are told apart from the toy stream's 32-px ones)."""
    from ticlip.data.toy import make_toy_stream

    return make_toy_stream(str(tmp_path_factory.mktemp("pool")), steps=2, image_size=24, seed=5)


def fomo_mixture(toy_stream, pool_stream, tokenizer=None, pool=True) -> Mixture:
    plan = StepPlan(step=3, init="previous", subset_seed=1, sources=[
        StepSource(step=3, weight=0.34, pairs=64), BufferSource(step=0, fraction=0.5, weight=0.33, pairs=32),
        *([PoolSource(weight=0.33, stream=pool_stream.root)] if pool else [])])
    return Mixture.from_plan(toy_stream, plan, None, tokenizer, subset_seed=1, shuffle=20)


def which(image, caption) -> int:
    """The mixture source a (PIL image, caption) sample came from: 0 new (step 3), 1 buffer (step 0), 2 pool."""
    if image.size[0] == 24:
        return 2
    return 1 if caption.split()[-1] in OLD_SHAPES else 0


@pytest.mark.parametrize("pool", [True, False])
def test_the_webdataset_paths_draws_are_counted_exactly(toy_stream, pool_stream, monkeypatch, pool):
    mixture = fomo_mixture(toy_stream, pool_stream, pool=pool)
    seed, chunk_batches, batch, micro = 7, 4, 5, 10  # 3 chunks: 4 + 4 + 2 batches
    for workers in (1, 2):
        seen = collections.Counter()
        for chunk in range(3):
            taken = min(chunk_batches, micro - chunk * chunk_batches)
            for worker in range(workers):  # what each DataLoader worker's pipeline yields
                monkeypatch.setenv("WORKER", str(worker))
                monkeypatch.setenv("NUM_WORKERS", str(workers))
                it = iter(mixture.pipeline(derive_seed(seed, "data", chunk)))
                for _ in range(len(range(worker, taken, workers)) * batch):
                    seen[which(*next(it))] += 1
        monkeypatch.delenv("WORKER")
        monkeypatch.delenv("NUM_WORKERS")
        drawn = mixture.drawn(seed, micro, chunk_batches=chunk_batches, batch_size=batch, workers=workers)
        assert drawn == [seen[0], seen[1], seen[2]][:len(drawn)] and sum(drawn) == micro * batch
        assert list(mixture.origins) == ([0, 1, 2] if pool else [0, 1])


@pytest.fixture(scope="module")
def tokenizer():
    from ticlip.models import create_model, quiet_open_clip

    with quiet_open_clip():
        return create_model("ticlip-tiny-32", seed=0).tokenizer


def test_both_paths_draw_the_ratios(toy_stream, pool_stream, tokenizer):
    mixture = fomo_mixture(toy_stream, pool_stream, tokenizer)
    micro, batch = 400, 32
    for drawn in (mixture.drawn(3, micro, chunk_batches=8, batch_size=batch, workers=2),
                  memory_drawn(mixture, 3, micro, chunk_batches=8, global_batch=batch)):
        assert sum(drawn) == micro * batch
        shares = np.array(drawn) / (micro * batch)
        assert shares == pytest.approx([0.34, 0.33, 0.33], abs=0.015)


def test_the_memory_path_loads_a_small_pool_and_counts_its_own_draws(toy_stream, pool_stream, tokenizer):
    from ticlip.train.memory import bytes_per_pair, clear_store

    clear_store()
    mixture = fomo_mixture(toy_stream, pool_stream, tokenizer)
    memory, why = memory_mixture(mixture, image_size=32, mean=None, std=None, limit_mb=1024)
    assert memory is not None, why
    # new step, buffer, then each pool step: all of its pairs, the pool's weight split by their counts
    assert [len(s.rows) for s in memory.sources] == [64, 32, 64, 64]
    assert [s.origin for s in memory.sources] == [0, 1, 2, 2]
    assert memory.probs.tolist() == pytest.approx([0.34, 0.33, 0.165, 0.165])
    src, _ = memory.chunk_plan(5, 1, 6, 16)  # the replayed counts are the real chunk plan's
    real = [0, 0, 0]
    for k, n in enumerate(torch.bincount(src.flatten(), minlength=4).tolist()):
        real[memory.sources[k].origin] += n
    first = memory_drawn(mixture, 5, 6, chunk_batches=6, global_batch=16)
    assert memory_drawn(mixture, 5, 12, chunk_batches=6, global_batch=16) == [a + b for a, b in zip(first, real)]
    # a pool that does not fit sends the whole step to the webdataset path, saying why
    need = (64 + 32) * bytes_per_pair(32, 32) / 2**20
    memory, why = memory_mixture(mixture, image_size=32, mean=None, std=None, limit_mb=1.5 * need)
    assert memory is None and "with its pools" in why


# --------------------------------------------------------------------------- training: step.json, budget, resume
def mixture_config(toy_stream, pool_stream, logs, name, **kw):
    from ticlip.config import TrainConfig

    base = dict(stream=toy_stream.root, logs=str(logs), name=name, batch_size=8, workers=0, warmup=1, steps="0:1",
                chunk_iterations=2, save_every_s=0.0, progress=False, method="mixture", iterations_per_step=6,
                method_params={"pool_stream": pool_stream.root, "policy": "reservoir", "limit": 40})
    base.update(kw)
    return TrainConfig(**base)


def crashing_mixture(params: dict, after: int):
    method, calls = get_method("mixture", **params), [0]

    def extra_loss(*args, **kwargs):
        calls[0] += 1
        if calls[0] > after:
            raise Crash(f"crash after {after} batches")

    method.extra_loss = extra_loss
    return method


@pytest.mark.slow
@pytest.mark.parametrize("limit_mb, path", [(1024, "memory"), (0, "webdataset")])
def test_step_json_records_ratios_and_drawn_pairs_once_across_a_resume(toy_stream, pool_stream, tmp_path, capsys,
                                                                       limit_mb, path):
    from test_resume import assert_same_weights

    from ticlip.train.run import train_run

    ref = mixture_config(toy_stream, pool_stream, tmp_path, "ref", memory_limit_mb=limit_mb)
    train_run(ref)
    cfg = mixture_config(toy_stream, pool_stream, tmp_path, "crashed", memory_limit_mb=limit_mb)
    with pytest.raises(Crash):
        train_run(cfg, method=crashing_mixture(cfg.method_params, 6 + 2))  # in step 1, after its first chunk
    capsys.readouterr()
    train_run(cfg, resume=True)
    assert "step 2020: resuming main phase at iteration 2/6" in capsys.readouterr().err
    assert_same_weights(tmp_path / "ref", tmp_path / "crashed")
    for t, ratios in (("0", {"new": 0.34 / 0.67, "pool": 0.33 / 0.67}), ("1", {"new": 0.34, "buffer": 0.33,
                                                                                "pool": 0.33})):
        step = json.load(open(tmp_path / "ref" / "steps" / t / "step.json"))
        mix = step["mixture"]
        assert mix["data_path"] == path and mix["ratios"] == pytest.approx(ratios)
        # every pair of every batch counted once, whatever its source; the pool's pairs are charged like any
        assert sum(mix["pairs_drawn"].values()) == step["pairs_seen"] == 6 * 8
        assert step["train_macs"] == pytest.approx(step["pairs_seen"] * step["budget"]["macs"] / (6 * 8))
        assert mix["pairs_drawn"]["pool"] > 0 and step["facts"]["mixture_ratios"]["used"]["pool"] > 0
        assert json.load(open(tmp_path / "crashed" / "steps" / t / "step.json"))["mixture"] == mix
    assert os.path.exists(tmp_path / "crashed" / "steps" / "1" / "checkpoint.pt")
