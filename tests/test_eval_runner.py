"""`ticlip eval` end to end on tiny checkpoints: what is written, what is computed once, what a
re-run skips, and the CLI's errors."""

import collections
import json
import os
import shutil

import pytest

from ticlip.eval import cache, runner
from ticlip.eval.metrics import transfer_metrics
from ticlip.eval.results import read_matrix, read_results
from ticlip.eval.runner import EvalConfig, evaluate_checkpoint, evaluate_run
from ticlip.run_layout import RunInfo, StepRecord

MODEL = "ticlip-tiny-32"
# ImageNet classes: 407 ambulance and 817 sports car are motor vehicles; 0 tench and 1 goldfish are not.
CLASSES = [407, 817, 0, 1]
HAS_WORDNET = os.path.exists("/usr/share/wordnet/data.noun")
TASKS = ["retrieval", "classification", "digits"] + (["classification-motor-vehicle"] if HAS_WORDNET else [])


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    """A 4-step toy stream whose steps also hold a "classification" eval set (as `ticlip data
    classify` writes it: meta class_index / synset / classname)."""
    from open_clip import IMAGENET_CLASSNAMES

    from ticlip.data.shards import ShardSample, encode_image, write_shard
    from ticlip.data.stream import ShardSet
    from ticlip.data.toy import make_toy_stream

    s = make_toy_stream(str(tmp_path_factory.mktemp("stream")), steps=4, train_per_step=8, eval_per_step=12)
    for st in s.steps:
        es = s.eval_set(st, "retrieval")
        samples = []
        for i, (img, meta) in enumerate(zip(es.images[:6], es.meta)):
            k = CLASSES[(i + st.index) % len(CLASSES)]
            ext, data = encode_image(img)
            samples.append(ShardSample(f"c{st.index}_{i}", ext, data, f"a photo of a {IMAGENET_CLASSNAMES[k]}",
                                       dict(meta, class_index=k, classname=IMAGENET_CLASSNAMES[k])))
        rel = f"steps/{st.index}/classification-000000.tar"
        write_shard(os.path.join(s.root, rel), samples)
        st.eval["classification"] = ShardSet([rel], len(samples))
    s.save()
    return s


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from ticlip.models import create_model, save_checkpoint

    d = tmp_path_factory.mktemp("ckpt")
    paths = []
    for i in range(3):
        paths.append(save_checkpoint(create_model(MODEL, seed=i).model, str(d / f"{i}.pt"), name=MODEL))
    return paths


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    f = tmp_path_factory.mktemp("tasks") / "tasks.yaml"
    f.write_text("digits:\n  kind: zeroshot_classification\n  loader: sklearn_digits\n  templates: digits\n"
                 "  options: {max_samples: 60}\n")
    return str(f)


def make_run(run_dir, stream, checkpoints, unfinished=True):
    steps = [StepRecord(i, stream.steps[i].label, os.path.relpath(p, run_dir), finished=True) for i, p in enumerate(checkpoints)]
    if unfinished:
        steps.append(StepRecord(3, stream.steps[3].label, "steps/3/checkpoint.pt", finished=False))
    RunInfo("t", stream.root, MODEL, "sequential", steps=steps).save(str(run_dir))
    return str(run_dir)


class Counter:
    """Counts model loads (the runner's) and encodes, preprocessing and classifier builds (the caches')."""

    NAMES = {"create_model": runner, "encode_pixels": cache, "encode_texts": cache, "build_classifier": cache,
             "images_to_pixels": cache}

    def __init__(self, mp):
        self.calls = collections.Counter()
        for name, module in self.NAMES.items():
            mp.setattr(module, name, self._wrap(name, getattr(module, name)))

    def _wrap(self, name, fn):
        def wrapped(*a, **k):
            self.calls[name] += 1
            return fn(*a, **k)

        return wrapped


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, stream, checkpoints, task_file):
    run_dir = make_run(tmp_path_factory.mktemp("run"), stream, checkpoints)
    lines = []
    with pytest.MonkeyPatch.context() as mp:
        counter = Counter(mp)
        outcome = evaluate_run(run_dir, EvalConfig(tasks=TASKS, task_file=task_file, batch_size=64), log=lines.append)
    return run_dir, outcome, counter.calls, lines


def per_model_results():
    dynamic = 4 * (len(TASKS) - 1)
    return dynamic + 1


def test_every_pair_is_written_once(evaluated):
    run_dir, outcome, calls, lines = evaluated
    records = read_results(os.path.join(run_dir, "eval.jsonl"))
    assert len(records) == outcome.evaluated == 3 * per_model_results()
    keys = {(r["model_step"]["index"], r["task"], r["eval_step"] and r["eval_step"]["index"]) for r in records}
    assert len(keys) == len(records)
    assert any("2022" in m and "not finished" in m for m in lines)
    r = next(r for r in records if r["task"] == "retrieval")
    assert r["seeds"] == [0, 1, 2] and r["n"] == 12 and set(r["std"]) == set(r["metrics"])
    assert 0 <= r["metrics"]["mean_recall@1"] <= 1 and r["metric"] == "mean_recall@1"
    cls = [r for r in records if r["task"] == "classification"]
    assert all(r["n"] == 6 and r["metrics"]["classes"] == 4 for r in cls)
    if HAS_WORDNET:  # only the motor vehicles (CLASSES[0:2]), ranked among the 2 of them
        sub = [r for r in records if r["task"] == "classification-motor-vehicle"]
        vehicles = {j: sum((i + j) % len(CLASSES) < 2 for i in range(6)) for j in range(4)}
        assert sorted(r["n"] for r in sub) == sorted(3 * list(vehicles.values()))
        assert all(r["n"] == vehicles[r["eval_step"]["index"]] and r["metrics"]["classes"] == 2 for r in sub)


def test_models_loaded_sets_encoded_and_classifiers_built_once(evaluated):
    _, outcome, calls, _ = evaluated
    assert calls["create_model"] == outcome.models_loaded == 3
    # per model: 4 retrieval sets + digits; the classification sets are cut from the retrieval
    # sets (same uids), so their images are taken from the retrieval features, not encoded again
    assert calls["encode_pixels"] == 3 * 5
    assert calls["encode_texts"] == 3 * 4  # captions of the retrieval sets only
    # per model: one classifier for the dynamic classification (all steps, subtree too), one for digits
    assert calls["build_classifier"] == 3 * 2
    # pixels are preprocessed once per run, not per model
    assert calls["images_to_pixels"] == 4


def test_matrix_and_summary_agree_with_eval_jsonl(evaluated):
    run_dir, outcome, _, _ = evaluated
    E, rows, cols = read_matrix(os.path.join(run_dir, "matrix_retrieval.csv"))
    assert cols == rows == ["2019", "2020", "2021", "2022"]
    records = read_results(os.path.join(run_dir, "eval.jsonl"))
    diag = [r["metrics"]["mean_recall@1"] for r in records
            if r["task"] == "retrieval" and r["model_step"]["index"] == r["eval_step"]["index"]]
    assert len(diag) == 3
    assert transfer_metrics(E)["in_domain"] == pytest.approx(sum(diag) / 3, abs=1e-5)
    summary = json.load(open(os.path.join(run_dir, "eval_summary.json")))
    assert summary["dynamic"]["retrieval"]["missing"] == 4  # the unfinished step's row
    assert summary["static"]["digits"]["steps"] == 4
    assert os.path.exists(os.path.join(run_dir, "matrix_classification.csv"))


def _copy_run(evaluated, tmp_path, stream, checkpoints):
    run_dir = make_run(tmp_path / "run", stream, checkpoints)
    shutil.copy(os.path.join(evaluated[0], "eval.jsonl"), run_dir)
    return run_dir


def test_rerun_skips_finished_pairs(evaluated, tmp_path, stream, checkpoints, task_file, monkeypatch):
    run_dir = _copy_run(evaluated, tmp_path, stream, checkpoints)
    counter = Counter(monkeypatch)
    lines = []
    outcome = evaluate_run(run_dir, EvalConfig(tasks=TASKS, task_file=task_file), log=lines.append)
    assert counter.calls["create_model"] == 0 and counter.calls["encode_pixels"] == 0
    assert outcome.evaluated == 0 and outcome.reused == 3 * per_model_results()
    assert os.path.exists(os.path.join(run_dir, "matrix_retrieval.csv"))


def test_rerun_after_an_interruption_redoes_only_the_lost_pairs(evaluated, tmp_path, stream, checkpoints, task_file, monkeypatch):
    run_dir = _copy_run(evaluated, tmp_path, stream, checkpoints)
    path = os.path.join(run_dir, "eval.jsonl")
    with open(path) as f:
        kept = f.readlines()[:-2]
    lost = [json.loads(x) for x in open(path).readlines()[-2:]]
    with open(path, "w") as f:
        f.writelines(kept)
        f.write('{"model_step": {"index": 2')  # the tail of a write cut short
    counter = Counter(monkeypatch)
    lines = []
    outcome = evaluate_run(run_dir, EvalConfig(tasks=TASKS, task_file=task_file), log=lines.append)
    assert counter.calls["create_model"] == 1
    assert outcome.evaluated == 2
    assert any("unreadable line" in m for m in lines)
    redone = read_results(path, warn=lambda m: None)[-2:]
    assert [(r["task"], r["eval_step"]) for r in redone] == [(r["task"], r["eval_step"]) for r in lost]


def test_changed_retrieval_settings_redo_retrieval_only(evaluated, tmp_path, stream, checkpoints, task_file, monkeypatch):
    run_dir = _copy_run(evaluated, tmp_path, stream, checkpoints)
    counter = Counter(monkeypatch)
    config = EvalConfig(tasks=TASKS, task_file=task_file, seeds=2, subsample=8, steps=[1])
    outcome = evaluate_run(run_dir, config, log=lambda m: None)
    assert outcome.evaluated == 4 and counter.calls["create_model"] == 1
    assert counter.calls["build_classifier"] == 0
    latest = read_results(os.path.join(run_dir, "eval.jsonl"))[-4:]
    assert all(r["task"] == "retrieval" and r["n"] == 8 and r["seeds"] == [0, 1] for r in latest)
    assert all(r["model_step"]["index"] == 1 for r in latest)


def test_one_outside_checkpoint(stream, checkpoints, tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    counter = Counter(monkeypatch)
    o = evaluate_checkpoint(checkpoints[1], MODEL, stream.root, out, EvalConfig(tasks=["retrieval"]), log=lambda m: None)
    assert o.evaluated == 4 and counter.calls["create_model"] == 1
    E_text = open(os.path.join(out, "matrix_retrieval.csv")).read().splitlines()
    assert E_text[0] == "model_step,2019,2020,2021,2022" and E_text[1].startswith("1,") and len(E_text) == 2
    o = evaluate_checkpoint(checkpoints[1], MODEL, stream.root, out, EvalConfig(tasks=["retrieval"]), log=lambda m: None)
    assert o.evaluated == 0 and counter.calls["create_model"] == 1
    # another file with the same name into the same directory is not mistaken for the first one
    other = tmp_path / "elsewhere" / "1.pt"
    os.makedirs(other.parent)
    shutil.copy(checkpoints[2], other)
    o = evaluate_checkpoint(str(other), MODEL, stream.root, out, EvalConfig(tasks=["retrieval"]), log=lambda m: None)
    assert o.evaluated == 4


@pytest.mark.parametrize("argv, words", [
    (["eval"], "give a run directory"),
    (["eval", "--checkpoint", "x.pt"], "--model"),
    (["eval", "/nonexistent/run"], "no run directory"),
    (["eval", "RUN", "--tasks", "nope"], "unknown task 'nope'"),
    (["eval", "RUN", "--seeds", "0"], "seeds: Input should be greater than or equal to 1 (got 0)"),
    (["eval", "RUN", "--tasks", ","], "--tasks needs at least one value"),
    (["eval", "RUN", "--model", "ViT-B-16"], "apply to --checkpoint"),
    (["eval", "RUN", "--steps", "7"], "no step(s) [7]"),
    (["eval", "--checkpoint", "/nonexistent.pt", "--model", MODEL, "--stream", "STREAM"], "does not exist"),
])
def test_cli_errors_are_one_clear_line(argv, words, evaluated, stream, capsys):
    from ticlip.cli import main

    argv = [a.replace("RUN", evaluated[0]).replace("STREAM", stream.root) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


def test_cli_prints_the_summary(evaluated, tmp_path, stream, checkpoints, task_file, capsys):
    from ticlip.cli import main

    run_dir = _copy_run(evaluated, tmp_path, stream, checkpoints)
    assert main(["eval", run_dir, "--tasks", ",".join(TASKS), "--task-file", task_file]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["evaluated"] == 0 and out["models_loaded"] == 0
    assert set(out["summary"]["dynamic"]) >= {"retrieval", "classification"}
    assert "in_domain" in out["summary"]["dynamic"]["retrieval"]


def test_classification_scores_equal_a_direct_evaluation(evaluated, stream, checkpoints):
    """The classification images' features are taken from the retrieval features by uid; the
    scores must equal encoding the classification set itself."""
    from open_clip import IMAGENET_CLASSNAMES

    from ticlip.eval.encode import encode_pixels, eval_transform, images_to_pixels
    from ticlip.eval.zeroshot import build_classifier, templates, zero_shot_accuracy
    from ticlip.models import create_model

    b = create_model(MODEL, init=checkpoints[0])
    present = sorted(CLASSES)
    w = build_classifier(b.model, b.tokenizer, [IMAGENET_CLASSNAMES[k] for k in present], templates("openai"))
    records = read_results(os.path.join(evaluated[0], "eval.jsonl"))
    for j in range(4):
        es = stream.eval_set(j, "classification")
        feats = encode_pixels(b.model, images_to_pixels(es.images, eval_transform(b)))
        labels = [present.index(m["class_index"]) for m in es.meta]
        expected = zero_shot_accuracy(feats, labels, w, ks=(1, 2, 3))
        got = next(r for r in records if r["task"] == "classification" and r["model_step"]["index"] == 0
                   and r["eval_step"]["index"] == j)["metrics"]
        assert got["acc1"] == pytest.approx(expected["acc1"])
        assert got["mean_per_class_recall"] == pytest.approx(expected["mean_per_class_recall"])


def test_tables_keep_tasks_not_selected_this_time(evaluated, tmp_path, stream, checkpoints):
    run_dir = _copy_run(evaluated, tmp_path, stream, checkpoints)
    evaluate_run(run_dir, EvalConfig(tasks=["retrieval"]), log=lambda m: None)
    summary = json.load(open(os.path.join(run_dir, "eval_summary.json")))
    assert set(summary["static"]) == {"digits"} and {"retrieval", "classification"} <= set(summary["dynamic"])


def test_records_and_summary_carry_chance_and_subsample_statistics(evaluated):
    """Each dynamic result says its chance level (1/n pairs for Recall@1, 1/classes for top-1) and
    keeps the main metric per subsample; the summary names the subsample size and chance level."""
    run_dir, _, _, _ = evaluated
    records = read_results(os.path.join(run_dir, "eval.jsonl"))
    ret = [r for r in records if r["task"] == "retrieval"]
    assert ret and all(r["chance"] == pytest.approx(1 / r["n"]) and r["trials"] == 2 * r["n"] for r in ret)
    assert all(r["per_seed"]["mean_recall@1"] == [r["metrics"]["mean_recall@1"]] for r in ret)  # 12 of 12: once
    cls = [r for r in records if r["task"] == "classification"]
    assert cls and all(r["chance"] == pytest.approx(1 / 4) and r["classes"] == 4 for r in cls)
    digits = [r for r in records if r["task"] == "digits"]
    assert digits and all(r["chance"] == pytest.approx(1 / 10) for r in digits)
    summary = json.load(open(os.path.join(run_dir, "eval_summary.json")))
    assert summary["dynamic"]["retrieval"]["subsample_pairs"] == [12]
    assert summary["dynamic"]["retrieval"]["chance"] == [pytest.approx(1 / 12)]


def test_dynamic_retrieval_keeps_every_subsample(monkeypatch):
    """30 pairs, subsamples of 10 with 3 seeds: the record keeps the 3 values, their std and chance 1/10."""
    import numpy as np
    import torch

    from ticlip.eval.scorers import ScoringContext, score_dynamic_retrieval
    from ticlip.eval.tasks import load_tasks

    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(30, 8, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(img + 0.8 * torch.randn(30, 8, generator=g), dim=-1)

    class Features:
        def dynamic_images(self, sets, name, j):
            return img

        def dynamic_texts(self, sets, name, j):
            return txt

    class Stream:
        steps = [type("S", (), {"label": "2020"})()]

    spec = load_tasks(None)["retrieval"]
    ctx = ScoringContext(Features(), None, None, Stream(), seeds=3, subsample=10)
    score = score_dynamic_retrieval(spec, 0, ctx)
    values = score.extra["per_seed"]["mean_recall@1"]
    assert len(values) == 3 and len(set(values)) > 1  # three different subsamples
    assert score.metrics["mean_recall@1"] == pytest.approx(np.mean(values))
    assert score.extra["std"]["mean_recall@1"] == pytest.approx(np.std(values, ddof=1))
    assert score.extra["chance"] == pytest.approx(0.1) and score.extra["n"] == 10
