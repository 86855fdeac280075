"""The evaluator's parts on their own: the scorer registry, the typed caches, the config schema and
its check, and the `ticlip eval` flags derived from it. Fast: no open_clip model is built."""

import argparse
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from ticlip.errors import TiclipError
from ticlip.eval import cache, scorers
from ticlip.eval.cache import EvalSets, FeatureCache, PixelCache
from ticlip.eval.config import EvalConfig, check_eval_config
from ticlip.eval.tasks import KINDS, TaskSpec
from ticlip.schema import ConfigError


# ------------------------------------------------------------------------------ scorer registry
def test_every_task_kind_has_exactly_one_scorer():
    assert set(scorers.SCORERS) == set(KINDS)
    assert scorers.scorer_for("dynamic_retrieval") is scorers.score_dynamic_retrieval
    assert scorers.scorer_for("dynamic_classification") is scorers.score_dynamic_classification
    assert scorers.scorer_for("zeroshot_classification") is scorers.score_static_classification
    assert scorers.scorer_for("retrieval") is scorers.score_static_retrieval


@pytest.mark.parametrize("entry", [
    {"kind": "dynamic_retrieval", "eval_set": "retrieval"},
    {"kind": "dynamic_classification", "eval_set": "classification"},
    {"kind": "zeroshot_classification", "loader": "sklearn_digits"},
    {"kind": "retrieval", "loader": "image_captions"},
])
def test_score_task_dispatches_by_kind(entry, monkeypatch):
    called = []
    for kind in KINDS:
        monkeypatch.setitem(scorers.SCORERS, kind, lambda spec, j, ctx, kind=kind: called.append(kind) or scorers.Score({"k": kind}))
    spec = TaskSpec.from_entry("t", entry)
    got = scorers.score_task(spec, None if "loader" in entry else 0, ctx=None)
    assert called == [entry["kind"]] and got.metrics == {"k": entry["kind"]}


def test_an_unknown_kind_is_a_clear_error():
    with pytest.raises(TiclipError, match="no scorer for task kind 'nope'; known kinds: dynamic_retrieval"):
        scorers.score_task(SimpleNamespace(kind="nope", name="t"), None, ctx=None)


# ------------------------------------------------------------------------------ typed caches
def to_tensor(img):
    return torch.as_tensor(np.asarray(img, dtype=np.float32)).permute(2, 0, 1).contiguous()


def images(n, value=0):
    return [Image.new("RGB", (4, 4), (value + i, 0, 0)) for i in range(n)]


SET_BYTES = 3 * 4 * 4 * 4  # one 4x4 RGB image as float32


def test_pixel_cache_keeps_sets_within_its_byte_budget(monkeypatch):
    made = []
    monkeypatch.setattr(cache, "images_to_pixels", lambda ims, t, **k: made.append(len(ims)) or torch.stack([t(i) for i in ims]))
    px = PixelCache(budget=5 * SET_BYTES)
    a = px.images(("a",), images(3), to_tensor, batch_size=8, workers=0)
    assert a.shape == (3, 3, 4, 4) and px.used == 3 * SET_BYTES
    assert px.images(("b",), images(3), to_tensor, batch_size=8, workers=0) is None  # 6 sets > 5: not kept
    assert px.used == 3 * SET_BYTES and ("b",) not in px
    assert px.images(("a",), images(3), to_tensor, batch_size=8, workers=0) is a  # reused, not made again
    assert px.images(("c",), images(2), to_tensor, batch_size=8, workers=0) is not None  # exactly fills it
    assert px.used == px.budget and made == [3, 2]
    labelled = [(img, k) for k, img in enumerate(images(2))]
    assert px.labelled(("d",), labelled, to_tensor, batch_size=8, workers=0) is None  # full
    assert PixelCache(10 * SET_BYTES).labelled(("d",), iter(labelled), to_tensor, batch_size=8, workers=0) is None
    entry = PixelCache(10 * SET_BYTES).labelled(("d",), labelled, to_tensor, batch_size=8, workers=0)
    assert entry.pixels.shape == (2, 3, 4, 4) and entry.labels.tolist() == [0, 1]


class TinyModel(torch.nn.Module):
    """encode_image: the mean red value and a constant; encode_text: the token count and a constant."""

    def encode_image(self, x):
        return torch.stack([x[:, 0].mean(dim=(1, 2)), torch.ones(len(x))], dim=1)

    def encode_text(self, tokens):
        return torch.stack([tokens.float(), torch.ones(len(tokens))], dim=1)


def fake_stream():
    def eval_set(step, name):
        uids = [f"{step}-{i}" for i in range(4)]
        if name == "classification":
            uids = uids[1:3]
        ims = images(len(uids), value=10 * step)
        return SimpleNamespace(images=ims, captions=[f"c{u}" for u in uids], meta=[{"uid": u} for u in uids])

    return SimpleNamespace(eval_set=eval_set, steps=[])


def test_features_are_encoded_once_per_model_and_pixels_once_per_run(monkeypatch):
    calls = {"encode_pixels": 0, "images_to_pixels": 0, "encode_texts": 0}
    for name in calls:
        fn = getattr(cache, name)
        monkeypatch.setattr(cache, name, lambda *a, _fn=fn, _n=name, **k: calls.__setitem__(_n, calls[_n] + 1) or _fn(*a, **k))
    sets, pixels = EvalSets(fake_stream()), PixelCache(1 << 20)
    tokenizer = lambda texts: torch.tensor([len(t) for t in texts])  # noqa: E731
    for model in range(2):  # two checkpoints of one run: same transform, so the same pixels
        feats = FeatureCache(TinyModel(), tokenizer, to_tensor, ("tiny", 4), pixels, batch_size=2)
        for step in (0, 1):
            img = feats.dynamic_images(sets, "retrieval", step)
            assert feats.dynamic_images(sets, "retrieval", step) is img
            feats.dynamic_texts(sets, "retrieval", step)
            feats.dynamic_texts(sets, "retrieval", step)
            cls = feats.dynamic_images(sets, "classification", step)  # rows of the retrieval features, by uid
            assert torch.equal(cls, img[1:3])
    assert calls == {"encode_pixels": 2 * 2, "images_to_pixels": 2, "encode_texts": 2 * 2}


def test_a_classifier_is_built_once_per_model(monkeypatch):
    built = []
    monkeypatch.setattr(cache, "build_classifier", lambda *a, **k: built.append(a[2]) or torch.eye(2))
    feats = FeatureCache(TinyModel(), None, to_tensor, ("tiny", 4), PixelCache(0))
    w = feats.classifier("static:pets", ["cat", "dog"], ["a {c}"])
    assert feats.classifier("static:pets", ["cat", "dog"], ["a {c}"]) is w
    assert built == [["cat", "dog"]]


# ------------------------------------------------------------------------------ config and its check
def test_check_eval_config_rejects_an_unknown_task_in_one_line():
    with pytest.raises(ConfigError) as e:
        check_eval_config(EvalConfig(tasks=["retreival"]), source="exp.yaml: eval")
    msg = str(e.value)
    assert msg.startswith("exp.yaml: eval: tasks: unknown task 'retreival'; known tasks: retrieval,")
    assert "\n" not in msg


def test_check_eval_config_knows_groups_and_the_task_file(tmp_path):
    check_eval_config(EvalConfig(tasks=["dynamic", "digits"]), source="x")
    f = tmp_path / "tasks.yaml"
    f.write_text("mine:\n  kind: zeroshot_classification\n  loader: sklearn_digits\n")
    check_eval_config(EvalConfig(tasks=["mine"], task_file=str(f)), source="x")
    with pytest.raises(ConfigError, match="x: tasks: unknown task 'mine'"):
        check_eval_config(EvalConfig(tasks=["mine"]), source="x")
    f.write_text("bad:\n  kind: nope\n")
    with pytest.raises(ConfigError, match=r"x: task_file: .*task 'bad': kind"):
        check_eval_config(EvalConfig(task_file=str(f)), source="x")


@pytest.mark.parametrize("data, words", [
    ({"seeds": "x"}, "eval: seeds: "),
    ({"seeds": 0}, "greater than or equal to 1"),
    ({"taks": ["retrieval"]}, "unknown key 'taks'"),
])
def test_eval_config_errors_name_the_key(data, words):
    with pytest.raises(ConfigError, match=words):
        EvalConfig.load(data, source="eval")


def test_eval_config_round_trips_through_yaml(tmp_path):
    cfg = EvalConfig.load({"tasks": ["retrieval"], "seeds": "2", "subsample": 1e3}, source="eval")
    assert cfg.seeds == 2 and cfg.subsample == 1000
    path = str(tmp_path / "eval.yaml")
    cfg.to_yaml(path)
    assert EvalConfig.from_yaml(path) == cfg


# ------------------------------------------------------------------------------ flags from the schema
def eval_parser():
    from ticlip.eval import cli

    parser = argparse.ArgumentParser(prog="ticlip")
    cli.register(parser.add_subparsers(dest="command"))
    return parser


def test_eval_help_shows_the_schema_default_once(capsys):
    with pytest.raises(SystemExit):
        eval_parser().parse_args(["eval", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    seeds = EvalConfig.model_fields["seeds"]
    assert f"--seeds SEEDS {seeds.description} (default {seeds.default})" in out
    assert out.count(f"(default {seeds.default})") == 1
    assert "--batch-size BATCH_SIZE images/texts encoded at once (default 256)" in out


def test_eval_flags_become_the_config():
    from ticlip.eval.cli import config_from_args

    args = eval_parser().parse_args(["eval", "RUN", "--tasks", "retrieval,digits", "--seeds", "2",
                                     "--steps", "0,2", "--batch-size", "1e2"])
    cfg = config_from_args(args)
    assert cfg == EvalConfig(tasks=["retrieval", "digits"], seeds=2, steps=[0, 2], batch_size=100)
    assert config_from_args(eval_parser().parse_args(["eval", "RUN"])) == EvalConfig()
