"""Replay buffers only discard, with exact counts; every step writes buffer.json; training never hangs.

TiC-CLIP's Cumulative-Exp/-Equal keep "at most D old pairs" in a buffer that only discards: what
step t keeps of step j is a subset of what step t-1 kept of j, even when later steps grow."""

import json
import logging
import os
import random
import tarfile

import pytest
from train_helpers import one_thread  # noqa: F401  (autouse fixture)

from ticlip.data.stream import ShardSet, TimeStream, stable_fraction
from ticlip.errors import TiclipError
from ticlip.methods import get_method
from ticlip.methods.replay import equal_buffer, exp_buffer, make_plan

GROWING = [1000, 1000, 1000, 3000]  # the example: the last step is three times larger


def pairs(plan):
    return {s.step: s.pairs for s in plan.sources}


@pytest.mark.parametrize("name", ["cumulative-exp", "cumulative-equal"])
def test_a_growing_step_does_not_bring_discarded_pairs_back(name):
    m = get_method(name)
    assert pairs(m.plan(2, GROWING))[0] == 500  # half of step 0 kept at t=2
    # t=3 wants 750 (-exp) or 1000 (-equal) of step 0; the buffer already discarded down to 500
    assert pairs(m.plan(3, GROWING)) == {0: 500, 1: 500, 2: 1000, 3: 3000}


@pytest.mark.parametrize("rule", [exp_buffer, equal_buffer])
def test_kept_counts_are_exact_and_never_grow(rule):
    from ticlip.methods.replay import kept_counts

    rng = random.Random(0)
    for _ in range(200):
        sizes = [rng.choice([0, 1, 3, 10, 100, 999, 5000]) for _ in range(rng.randint(2, 9))]
        for t in range(2, len(sizes)):
            now, before = kept_counts(t, sizes, rule), kept_counts(t - 1, sizes, rule)
            for j, k in now.items():
                assert isinstance(k, int) and 0 <= k <= sizes[j]
                if j < t - 1:
                    assert k <= before[j], (sizes, t, j)
            assert sum(now.values()) <= sizes[t] + len(now)  # at most D old pairs (up to rounding)


def test_a_source_with_no_pairs_is_left_out_with_a_log_line(caplog):
    with caplog.at_level(logging.WARNING, logger="ticlip.methods.replay"):
        plan = make_plan(3, [7, 0, 40, 40], {0: 0.2, 1: 0.0, 2: 20.0}, init="previous")
    assert pairs(plan) == {2: 20, 3: 40}
    said = caplog.text
    assert "leaving step 0 out" in said and "keeps no pairs" in said
    assert "leaving step 1 out" in said and "no train pairs" in said
    # -exp over many small steps: the oldest shares round to 0 and are left out, not planned empty
    plan = get_method("cumulative-exp").plan(9, [64] * 10)
    assert all(s.pairs > 0 for s in plan.sources) and 0 not in pairs(plan)


# --------------------------------------------------------------------------- a stream whose steps grow
@pytest.fixture(scope="module")
def growing_stream(tmp_path_factory):
    """Steps of 32, 32, 32 and 96 pairs (the toy stream's steps cut to one 32-pair shard, but the last)."""
    from ticlip.data.toy import make_toy_stream

    stream = make_toy_stream(str(tmp_path_factory.mktemp("growing")), steps=4, train_per_step=96)
    for st in stream.steps[:3]:
        st.train = ShardSet(st.train.shards[:1], 32)
    stream.save()
    return TimeStream.load(stream.root)


def test_buffer_json_of_exp_over_growing_steps_only_discards(growing_stream, tmp_path):
    from ticlip.train.buffers import with_run_seed, write_buffer_json

    sizes = [s.train.count for s in growing_stream.steps]
    assert sizes == [32, 32, 32, 96]
    method = get_method("cumulative-exp")
    before: dict = {}
    for t in range(len(sizes)):
        plan = with_run_seed(method.plan(t, sizes), 5)
        assert plan.subset_seed == 5
        step_dir = tmp_path / str(t)
        step_dir.mkdir()
        with open(write_buffer_json(str(step_dir), growing_stream, plan), encoding="utf-8") as f:
            got = json.load(f)
        planned = {growing_stream.steps[s.step].label: s.pairs for s in plan.sources if s.step < t}
        assert {label: len(uids) for label, uids in got.items()} == planned  # exactly the plan's counts
        for label, uids in got.items():
            assert len(set(uids)) == len(uids)
            if label in before:
                assert set(uids) <= set(before[label]), (t, label)  # the buffer only discards
        before = got
    # step 0 kept 16 at t=2 and still 16 at t=3, though t=3 (D=96) wants 24 of it
    assert len(before["2019"]) == 16 and len(before["2021"]) == 32


def test_buffer_json_of_methods_without_replay_and_of_cumulative_all(growing_stream):
    from ticlip.train.buffers import buffer_contents, with_run_seed

    sizes = [s.train.count for s in growing_stream.steps]
    assert buffer_contents(growing_stream, with_run_seed(get_method("sequential").plan(3, sizes), 0)) == {}
    full = buffer_contents(growing_stream, with_run_seed(get_method("cumulative-all").plan(3, sizes), 0))
    assert list(full) == ["2019", "2020", "2021"]
    for t, label in enumerate(full):
        assert sorted(full[label]) == sorted(p.uid for p in growing_stream.train_index(t))
        assert all(uid.startswith(f"toy-{t}-train-") for uid in full[label])  # uids from the shards' json


def test_the_subset_seed_follows_the_run_seed_unless_the_method_sets_it():
    from ticlip.train.buffers import with_run_seed

    sizes = [100, 100]
    assert get_method("cumulative-exp").plan(1, sizes).subset_seed is None  # not fixed by the method
    assert with_run_seed(get_method("cumulative-exp").plan(1, sizes), 7).subset_seed == 7
    assert with_run_seed(get_method("cumulative-exp", seed=3).plan(1, sizes), 7).subset_seed == 3


def test_the_pipeline_keeps_exactly_the_buffer_and_smaller_buffers_are_subsets(toy_stream):
    def captions(n):
        return [c for _, c in toy_stream.train_pipeline([0], counts=[n], resampled=False, subset_seed=4)]

    for n in (1, 7, 30, 64, 500):
        assert len(captions(n)) == min(n, 64)
    keys = {n: toy_stream.buffer_keys(0, n, 4) for n in (5, 20)}
    assert set(keys[5]) <= set(keys[20]) and keys[20][:5] == keys[5]


# --------------------------------------------------------------------------- training never hangs
def _seed_that_keeps_nothing(stream, fraction):
    """A subset seed for which the old per-pair threshold (stable_fraction < fraction) kept no pair of step 0."""
    keys = [sample["__key__"] for sample in stream.iter_samples(stream.train_urls(0))]
    label = stream.steps[0].label
    for seed in range(1000):
        if all(stable_fraction(f"{seed}/{label}", k) >= fraction for k in keys):
            return seed
    raise AssertionError("no such seed")


@pytest.mark.timeout(30)
def test_a_one_pair_buffer_yields_its_pair(toy_stream):
    """The old hash threshold kept each pair with probability 1/64 here and, for this seed, kept none:
    the resampled pipeline behind its select never yielded (training hung). Now the buffer holds
    exactly round(64 / 64) = 1 pair, drawn over and over."""
    seed = _seed_that_keeps_nothing(toy_stream, 1 / 64)
    mixed = iter(toy_stream.train_pipeline([0, 1], weights=[0.5, 0.5], fractions=[1 / 64, 1.0], resampled=True,
                                           seed=0, subset_seed=seed, shuffle=0))
    assert len([next(mixed) for _ in range(60)]) == 60
    once = list(toy_stream.train_pipeline([0], fractions=[1 / 64], resampled=False, subset_seed=seed))
    assert len(once) == 1
    alone = iter(toy_stream.train_pipeline([0], fractions=[1 / 64], resampled=True, seed=1, subset_seed=seed))
    assert {(im.tobytes(), c) for im, c in (next(alone) for _ in range(20))} == {(once[0][0].tobytes(), once[0][1])}


def _empty_tar(path):
    with tarfile.open(path, "w"):
        pass


@pytest.mark.timeout(30)
def test_a_source_that_never_yields_raises_naming_it(toy_stream, tmp_path):
    """A step whose shards hold no pairs (its manifest says 64) looped forever in ResampledShards; now
    the source gives up after a bounded number of shard reads, naming the step."""
    d = tmp_path / "broken"
    (d / "steps").mkdir(parents=True)
    _empty_tar(str(d / "steps" / "empty.tar"))
    data = toy_stream.to_dict()
    data["steps"][1]["train"] = {"shards": ["steps/empty.tar"], "count": 64}
    for st in data["steps"]:
        if st["index"] != 1:
            st["train"]["shards"] = [os.path.join(toy_stream.root, s) for s in st["train"]["shards"]]
        for held_out in [*st["eval"].values(), st.get("validation") or {"shards": []}]:  # loading checks files
            held_out["shards"] = [os.path.join(toy_stream.root, s) for s in held_out["shards"]]
    (d / "stream.json").write_text(json.dumps(data), encoding="utf-8")
    stream = TimeStream.load(str(d))
    pipe = iter(stream.train_pipeline([1], resampled=True, seed=0, shuffle=0))
    with pytest.raises(TiclipError, match=r"step '2020'.*no train pair") as e:
        next(pipe)
    assert type(e.value).__name__ == "SourceStarved" and "empty.tar" in str(e.value)


def test_a_buffer_that_keeps_nothing_is_left_out_of_the_pipeline(toy_stream, caplog):
    with caplog.at_level(logging.WARNING, logger="ticlip.data.stream"):
        pipe = toy_stream.train_pipeline([0, 1], counts=[0, None], resampled=False)
        caps = [c for _, c in pipe]
    assert len(caps) == 64 and "leaving step '2019' out" in caplog.text
    with pytest.raises(TiclipError, match="nothing to train on"):
        toy_stream.train_pipeline([0], counts=[0])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_every_step_writes_buffer_json(growing_stream, tmp_path):
    """Through the trainer: steps/<t>/buffer.json of a cumulative-exp run follows the plan in step.json,
    with the run's seed as the subset seed."""
    from ticlip.config import TrainConfig
    from ticlip.train.run import train_run

    cfg = TrainConfig(stream=growing_stream.root, logs=str(tmp_path), name="exp", batch_size=8, workers=0, warmup=1,
                      steps="0:3", chunk_iterations=1, save_every_s=0.0, progress=False, method="cumulative-exp",
                      iterations_per_step=2, seed=2)
    train_run(cfg)
    for t in range(4):
        sd = tmp_path / "exp" / "steps" / str(t)
        plan = json.loads((sd / "step.json").read_text())["plan"]
        buf = json.loads((sd / "buffer.json").read_text())
        assert plan["subset_seed"] == 2
        want = {growing_stream.steps[s["step"]].label: s["pairs"] for s in plan["sources"] if s["step"] < t}
        assert {label: len(uids) for label, uids in buf.items()} == want


@pytest.mark.slow
def test_resume_with_replay_buffers_and_workers_is_bit_exact(toy_stream, tmp_path, capsys):
    """Buffers selected by key in DataLoader workers: a crashed and resumed cumulative-exp run ends with
    the uninterrupted run's weights and buffer.json."""
    from test_resume import Crash, assert_same_weights, config, crashing

    from ticlip.train.run import train_run

    changes = {"workers": 2, "accum_freq": 2, "method": "cumulative-exp", "steps": "0:2"}
    train_run(config(toy_stream, tmp_path, "ref", **changes))
    cfg = config(toy_stream, tmp_path, "crashed", **changes)
    with pytest.raises(Crash):
        train_run(cfg, method=crashing(cfg.method, 2 * 4 * 2 + 2 * 3))  # inside step 2
    train_run(cfg, resume=True)
    assert "step 2021: resuming main phase" in capsys.readouterr().err
    assert_same_weights(tmp_path / "ref", tmp_path / "crashed")
    for t in "012":
        buf = (tmp_path / "crashed" / "steps" / t / "buffer.json").read_text()
        assert buf == (tmp_path / "ref" / "steps" / t / "buffer.json").read_text()
