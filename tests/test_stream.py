import itertools
import json

import pytest
import torch

from ticlip.data.stream import StreamError, TimeStream, stable_fraction


def test_manifest_round_trip(toy_stream, tmp_path):
    loaded = TimeStream.load(toy_stream.root)
    assert loaded.to_dict() == toy_stream.to_dict()
    out = tmp_path / "copy.json"
    loaded.save(str(out))
    again = TimeStream.from_dict(json.loads(out.read_text()), root=loaded.root)
    assert again.to_dict() == loaded.to_dict()
    assert [s.label for s in again.steps] == ["2019", "2020", "2021", "2022"]


def test_load_errors(tmp_path):
    with pytest.raises(StreamError, match="ticlip data build"):
        TimeStream.load(str(tmp_path))
    (tmp_path / "stream.json").write_text("{not json")
    with pytest.raises(StreamError, match="not valid JSON"):
        TimeStream.load(str(tmp_path))
    (tmp_path / "stream.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(StreamError, match="unsupported"):
        TimeStream.load(str(tmp_path))


def test_step_lookup(toy_stream):
    assert toy_stream.step("2021").index == 2
    assert toy_stream.step(0).label == "2019"
    with pytest.raises(StreamError, match="steps are: 2019"):
        toy_stream.step("1999")


def test_eval_set(toy_stream):
    ev = toy_stream.eval_set("2020")
    assert len(ev) == 16 and ev.images[0].size == (32, 32)
    assert all(c.startswith("a ") for c in ev.captions)
    with pytest.raises(StreamError, match="no eval set"):
        toy_stream.eval_set("2020", "classification")


def test_validation_set(toy_stream, tmp_path):
    vs = toy_stream.validation_set("2020")
    assert vs.task == "validation" and len(vs) == toy_stream.validation_count(1) == 16
    assert {m["uid"] for m in vs.meta}.isdisjoint(m["uid"] for m in toy_stream.eval_set("2020").meta)
    assert "validation" in toy_stream.steps[1].validation.shards[0]
    assert "validation" not in toy_stream.eval_tasks()  # tuning data is not an eval task
    # a manifest written before validation sets existed loads: its steps simply have none
    d = toy_stream.to_dict()
    for st in d["steps"]:
        del st["validation"]
    old = TimeStream.from_dict(d, root=toy_stream.root)
    assert not old.has_validation and old.steps[1].validation is None and old.validation_count(1) == 0
    assert old.to_dict() == d and len(old.eval_set(1)) == 16
    with pytest.raises(StreamError, match="no validation set.*--validation-size"):
        old.validation_set(1)


def test_pipeline_feeds_open_clip_model(toy_stream):
    from torch.utils.data import DataLoader

    from ticlip.models import create_model

    bundle = create_model("ticlip-tiny-32", seed=0)
    pipe = toy_stream.train_pipeline(
        ["2019", "2020"], transform=bundle.preprocess_train, tokenizer=bundle.tokenizer, seed=1
    )
    images, texts = next(iter(DataLoader(pipe, batch_size=8, num_workers=0)))
    assert images.shape == (8, 3, 32, 32) and texts.shape == (8, 32) and texts.dtype == torch.long
    out = bundle.model(images, texts)
    assert out["image_features"].shape == (8, 128)


def _captions(pipe, n):
    return [t for _, t in itertools.islice(iter(pipe), n)]


def test_resampled_pipeline_is_seeded(toy_stream):
    a = _captions(toy_stream.train_pipeline(seed=3), 50)
    b = _captions(toy_stream.train_pipeline(seed=3), 50)
    c = _captions(toy_stream.train_pipeline(seed=4), 50)
    assert a == b and a != c


def test_weights_choose_steps(toy_stream):
    got = []
    pipe = toy_stream.train_pipeline(["2019", "2022"], weights=[0.0, 1.0], seed=0)
    for img, cap in itertools.islice(iter(pipe), 40):
        got.append(cap)
    # 2022 draws (cross, bar, ring); 2019 draws (square, circle, triangle)
    assert all(c.split()[-1] in {"cross", "bar", "ring"} for c in got)


def test_fraction_keeps_a_stable_subset(toy_stream):
    pipe = toy_stream.train_pipeline(["2019"], fractions=[0.25], resampled=False, subset_seed=7)
    first = sorted(_captions(pipe, 1000))
    second = sorted(_captions(toy_stream.train_pipeline(["2019"], fractions=[0.25], resampled=False, subset_seed=7), 1000))
    assert first == second and 5 <= len(first) <= 30  # 64 pairs x 0.25 = 16 expected


def test_non_resampled_reads_every_pair_once(toy_stream):
    caps = _captions(toy_stream.train_pipeline(resampled=False), 10_000)
    assert len(caps) == 4 * 64


def test_stable_fraction_uniform():
    xs = [stable_fraction(0, str(i)) for i in range(2000)]
    assert 0 <= min(xs) and max(xs) < 1 and abs(sum(xs) / len(xs) - 0.5) < 0.03
