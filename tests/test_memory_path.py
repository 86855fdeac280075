"""The memory path (ticlip.train.memory): the pairs it keeps are the webdataset path's, its batches are a
function of (seed, chunk, rank, world size), a resumed run equals an uninterrupted one bit for bit, and
streams over the limit (with their pools) stay on the webdataset path, which step.json records (pools on
the memory path: tests/test_mixtures.py)."""

import json

import pytest
import torch
from test_resume import CASES, Crash, assert_same_weights, config, crashing
from train_helpers import one_thread  # noqa: F401  (autouse fixture)

from ticlip.data.tensor_augment import ImageCache
from ticlip.train.batches import Mixture, Pool, make_loader
from ticlip.train.memory import MemoryBatches, _STORE, bytes_per_pair, clear_store, memory_mixture
from ticlip.train.run import train_run


@pytest.fixture(scope="module")
def tokenizer():
    from ticlip.models import create_model, quiet_open_clip

    with quiet_open_clip():
        return create_model("ticlip-tiny-32", seed=0).tokenizer


def mixture(stream, tokenizer, steps=(0, 1), weights=(0.3, 0.7), counts=(10, None), pools=()):
    return Mixture(stream, list(steps), list(weights), list(counts), transform=None, tokenizer=tokenizer,
                   subset_seed=0, pools=list(pools))


def in_memory(mix, limit_mb=1024):
    memory, why = memory_mixture(mix, image_size=32, mean=None, std=None, limit_mb=limit_mb)
    assert memory is not None, why
    return memory


def test_the_kept_pairs_are_the_webdataset_paths(toy_stream, tokenizer):
    clear_store()
    memory = in_memory(mixture(toy_stream, tokenizer))
    assert [len(s.rows) for s in memory.sources] == [10, 64]
    for source, step, count in zip(memory.sources, (0, 1), (10, None)):
        # what the webdataset path yields for this source: every pair once, captions tokenized one by one
        pipe = toy_stream.train_pipeline(steps=[step], counts=[count], tokenizer=tokenizer, resampled=False)
        theirs = sorted((tokens.numpy().tobytes(), ImageCache.from_images([image], 32).pixels.numpy().tobytes())
                        for image, tokens in pipe)
        images, tokens = source.pairs.images, source.pairs.tokens
        ours = sorted((tokens[r].numpy().tobytes(), images.pixels[r:r + 1].numpy().tobytes())
                      for r in source.rows.tolist())
        assert ours == theirs
    keys = [memory.sources[0].pairs.keys[r] for r in memory.sources[0].rows.tolist()]
    assert keys == toy_stream.buffer_keys(0, 10, 0)


def test_decoded_steps_are_shared_by_the_next_steps_mixture(toy_stream, tokenizer):
    clear_store()
    first = in_memory(mixture(toy_stream, tokenizer, steps=(0,), weights=(1.0,), counts=(None,)))
    then = in_memory(mixture(toy_stream, tokenizer, steps=(0, 2), weights=(0.5, 0.5), counts=(20, None)))
    assert then.sources[0].pairs is first.sources[0].pairs  # step 0 was not decoded again
    assert len(_STORE) == 2
    # over the limit, entries the current mixture does not use are dropped
    per_step = first.sources[0].pairs.nbytes
    in_memory(mixture(toy_stream, tokenizer, steps=(3,), weights=(1.0,), counts=(None,)), limit_mb=1.5 * per_step / 2**20)
    assert len(_STORE) == 1


def test_what_does_not_fit_or_is_not_supported_stays_on_the_webdataset_path(toy_stream, tokenizer, tmp_path):
    mix = mixture(toy_stream, tokenizer)
    assert memory_mixture(mix, image_size=32, mean=None, std=None, limit_mb=0) == (None, "memory_limit_mb is 0")
    need = (10 + 64) * bytes_per_pair(32, 32) / 2**20
    memory, why = memory_mixture(mix, image_size=32, mean=None, std=None, limit_mb=0.9 * need)
    assert memory is None and "over memory_limit_mb" in why
    assert memory_mixture(mix, image_size=32, mean=None, std=None, limit_mb=1.1 * need)[0] is not None
    pooled = mixture(toy_stream, tokenizer, pools=[Pool(toy_stream, None, 1.0)])
    # the pool adds its 256 pairs to the 74: over that limit
    assert memory_mixture(pooled, image_size=32, mean=None, std=None, limit_mb=1.1 * need)[0] is None
    assert memory_mixture(pooled, image_size=32, mean=None, std=None, limit_mb=1024)[0] is not None

    for limit, path in ((0, "webdataset"), (1024, "memory")):
        train_run(config(toy_stream, tmp_path, f"limit{limit}", memory_limit_mb=limit, iterations_per_step=2))
        for t in ("0", "1"):
            with open(tmp_path / f"limit{limit}" / "steps" / t / "step.json") as f:
                assert json.load(f)["facts"]["data_path"] == path


def batches(memory, n, **kw):
    args = dict(batch_size=8, chunk_batches=4, seed=11, start_chunk=0) | kw
    it = iter(MemoryBatches(memory, **args))
    return [next(it) for _ in range(n)]


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


def test_batches_are_a_function_of_seed_chunk_and_rank(toy_stream, tokenizer, monkeypatch):
    memory = in_memory(mixture(toy_stream, tokenizer))
    run = batches(memory, 12)
    assert same(run, batches(memory, 12))
    assert not same(run, batches(memory, 12, seed=12))
    assert same(run[8:], batches(memory, 4, start_chunk=2))  # a resume at chunk 2 sees the same batches
    with_workers = make_loader(MemoryBatches(memory, 8, 4, 11), workers=2)
    it = iter(with_workers)
    assert same(run, [next(it) for _ in range(12)])  # DataLoader workers do not change them
    # within a pass over a source every pair comes once: a batch from a 64-pair step has no repeat
    single = in_memory(mixture(toy_stream, tokenizer, steps=(1,), weights=(1.0,), counts=(None,)))
    src, pos = single.chunk_plan(11, 0, 4, 16)
    assert all(len(set(row.tolist())) == 16 for row in pos)
    # under DDP rank r takes the r-th slice of the global batch, augmented with its own draws
    monkeypatch.setenv("WORLD_SIZE", "2")
    ranks = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        ranks.append(batches(single, 4))
    for b, (r0, r1) in enumerate(zip(*ranks)):
        p = pos[b]
        rows = single.sources[0].rows
        assert torch.equal(r0[1], single.sources[0].pairs.tokens[rows[p[:8]]])
        assert torch.equal(r1[1], single.sources[0].pairs.tokens[rows[p[8:]]])


def test_sources_are_drawn_with_the_mixtures_weights(toy_stream, tokenizer):
    memory = in_memory(mixture(toy_stream, tokenizer, weights=(0.2, 0.8)))
    src, _ = memory.chunk_plan(0, 0, 50, 128)
    assert float((src == 0).float().mean()) == pytest.approx(0.2, abs=0.015)


@pytest.mark.parametrize("case", ["cosine-main", pytest.param("const-cosine-branch", marks=pytest.mark.slow),
                                  pytest.param("workers-accum-lwf", marks=pytest.mark.slow)])
def test_a_resumed_run_on_the_memory_path_equals_an_uninterrupted_one(toy_stream, tmp_path, capsys, case):
    changes, crash_after, resumed_at = CASES[case]
    changes = {**changes, "memory_limit_mb": 1024}
    train_run(config(toy_stream, tmp_path, "ref", **changes))
    cfg = config(toy_stream, tmp_path, "crashed", **changes)
    with pytest.raises(Crash):
        train_run(cfg, method=crashing(cfg.method, crash_after))
    capsys.readouterr()
    clear_store()  # the resumed process decodes again, as a new process would
    train_run(cfg, resume=True)
    assert resumed_at in capsys.readouterr().err
    assert_same_weights(tmp_path / "ref", tmp_path / "crashed")
    for t in ("0", "1"):
        with open(tmp_path / "crashed" / "steps" / t / "step.json") as f:
            assert json.load(f)["facts"]["data_path"] == "memory"
        log = [json.loads(line) for line in open(tmp_path / "crashed" / "steps" / t / "train_log.jsonl")]
        ref = [json.loads(line) for line in open(tmp_path / "ref" / "steps" / t / "train_log.jsonl")]
        assert [(r["phase"], r["iteration"], r["loss"]) for r in log] == [
            (r["phase"], r["iteration"], r["loss"]) for r in ref]


def test_a_state_saved_on_the_webdataset_path_resumes_on_it(toy_stream, tmp_path, capsys):
    """A run interrupted on the webdataset path (over the limit, or started by a ticlip without the memory
    path, whose config.yaml has no memory_limit_mb) resumes on it, exactly, though its pairs now fit."""
    changes, crash_after, resumed_at = CASES["cosine-main"]
    train_run(config(toy_stream, tmp_path, "ref", memory_limit_mb=0))
    cfg = config(toy_stream, tmp_path, "crashed", memory_limit_mb=0)
    with pytest.raises(Crash):
        train_run(cfg, method=crashing(cfg.method, crash_after))
    run_config = tmp_path / "crashed" / "config.yaml"
    lines = run_config.read_text().splitlines(keepends=True)
    assert "memory_limit_mb: 0.0\n" in lines
    run_config.write_text("".join(line for line in lines if not line.startswith("memory_limit_mb:")))
    capsys.readouterr()
    train_run(cfg, resume=True)  # with the saved config: the default limit, under which the toy stream fits
    err = capsys.readouterr().err
    assert resumed_at in err and "state it resumes was saved on the webdataset path" in err
    assert_same_weights(tmp_path / "ref", tmp_path / "crashed")
    with open(tmp_path / "crashed" / "steps" / "1" / "step.json") as f:
        assert json.load(f)["facts"]["data_path"] == "webdataset"


def test_the_default_limit_holds_the_demo_stream_not_a_large_one():
    from ticlip.config import TrainConfig

    limit = TrainConfig().memory_limit_mb * 2**20
    emoji = 3773 * bytes_per_pair(32, 32)  # every pair of the emoji stream, ticlip-tiny-32
    tic_step = 100_000 * bytes_per_pair(224, 77)  # a small TiC step for ViT-B-16 (they hold millions)
    assert emoji < limit < tic_step


def test_a_step_with_an_unreadable_image_stays_on_the_webdataset_path(toy_stream, tokenizer, tmp_path):
    """The webdataset path skips and counts a corrupt sample; the memory path leaves such a step to it."""
    import io
    import tarfile

    from ticlip.data.stream import TimeStream

    src = toy_stream.train_urls(0)[0]
    bad = tmp_path / "bad.tar"
    with tarfile.open(src) as tin, tarfile.open(bad, "w") as tout:
        members = tin.getmembers()
        first_png = next(m.name for m in members if m.name.endswith((".png", ".jpg")))
        for m in members:
            data = b"not an image" if m.name == first_png else tin.extractfile(m).read()
            info = tarfile.TarInfo(m.name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))
    data = toy_stream.to_dict()
    for st in data["steps"]:
        st["train"]["shards"] = [toy_stream.resolve(s) for s in st["train"]["shards"]]
        st["eval"] = {k: {**v, "shards": [toy_stream.resolve(s) for s in v["shards"]]} for k, v in st["eval"].items()}
        if st.get("validation"):
            st["validation"]["shards"] = [toy_stream.resolve(s) for s in st["validation"]["shards"]]
    data["steps"][0]["train"]["shards"][0] = str(bad)
    (tmp_path / "stream.json").write_text(json.dumps(data), encoding="utf-8")
    stream = TimeStream.load(str(tmp_path))
    clear_store()
    memory, why = memory_mixture(mixture(stream, tokenizer, steps=(0,), weights=(1.0,), counts=(None,)),
                                 image_size=32, mean=None, std=None, limit_mb=1024)
    assert memory is None and "could not be read" in why
