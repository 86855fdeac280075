"""Static task loaders on small data made here, the task table, and the one-line skip of a task
whose data is missing."""

import gzip
import io
import json
import os
import struct

import numpy as np
import pytest
from PIL import Image

from ticlip.eval.static import (
    LoaderContext,
    RetrievalData,
    TaskDataMissing,
    load_emoji_groups,
    load_fashion_mnist,
    load_image_captions,
    load_image_folder,
    load_sklearn_digits,
    load_task_data,
    load_wds,
)
from ticlip.eval.tasks import TaskError, TaskSpec, builtin_tasks, load_tasks, select_tasks

CTX = LoaderContext()


def _idx(path, array):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_fashion_mnist_reads_idx_files(tmp_path):
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    images[1, 5, 7] = 200
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", [9, 0, 3])
    data = load_fashion_mnist({"root": str(tmp_path), "split": "test"}, CTX)
    assert data.size == 3 and data.classnames[9] == "ankle boot"
    img, label = data.dataset[1]
    assert label == 0 and img.mode == "RGB" and img.size == (28, 28) and img.getpixel((7, 5)) == (200, 200, 200)


def test_fashion_mnist_missing_names_the_package(tmp_path):
    with pytest.raises(TaskDataMissing, match="dataset-fashion-mnist"):
        load_fashion_mnist({"root": str(tmp_path)}, CTX)


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="Debian dataset-fashion-mnist not installed")
def test_debian_fashion_mnist_test_split():
    data = load_fashion_mnist({}, CTX)
    assert data.size == 10000 and len(data.classnames) == 10


def test_sklearn_digits():
    data = load_sklearn_digits({}, CTX)
    assert data.size == 1797 and data.classnames == [str(d) for d in range(10)]
    img, label = data.dataset[0]
    assert img.size == (8, 8) and 0 <= label <= 9 and np.asarray(img.convert("L")).max() > 100


def _png(path, colour=(255, 0, 0), mode="RGB"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, (6, 6), colour).save(path)


def test_image_folder_with_synset_ids_uses_imagenet_names(tmp_path):
    for wnid in ("n01440764", "n01443537"):
        _png(str(tmp_path / wnid / "a.png"))
    data = load_image_folder({"root": str(tmp_path), "classnames": "imagenet"}, CTX)
    assert data.classnames == ["tench", "goldfish"] and data.size == 2
    img, label = data.dataset[1]
    assert label == 1


def test_image_folder_plain_names_and_missing(tmp_path):
    _png(str(tmp_path / "red_car" / "a.png"))
    _png(str(tmp_path / "tree" / "b.png"))
    assert load_image_folder({"root": str(tmp_path)}, CTX).classnames == ["red car", "tree"]
    with pytest.raises(TaskDataMissing, match="no image folder"):
        load_image_folder({"root": str(tmp_path / "absent")}, CTX)


def test_wds_layout_of_clip_benchmark(tmp_path):
    import webdataset as wds

    (tmp_path / "classnames.txt").write_text("cat\ndog\n")
    (tmp_path / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
    os.makedirs(tmp_path / "test")
    with wds.TarWriter(str(tmp_path / "test" / "0.tar")) as w:
        for i, cls in enumerate([1, 0, 1]):
            buf = io.BytesIO()
            Image.new("RGB", (5, 5), (i * 50, 0, 0)).save(buf, format="PNG")
            w.write({"__key__": f"s{i}", "png": buf.getvalue(), "cls": str(cls).encode()})
    data = load_wds({"root": str(tmp_path), "split": "test"}, CTX)
    assert data.classnames == ["cat", "dog"] and data.templates == ["a photo of a {c}."]
    samples = list(data.dataset)
    assert [int(y) for _, y in samples] == [1, 0, 1] and samples[2][0].getpixel((0, 0))[0] == 100
    with pytest.raises(TaskDataMissing):
        load_wds({"root": str(tmp_path / "absent")}, CTX)


@pytest.mark.parametrize("fmt", ["json", "token", "csv"])
def test_image_captions_formats(tmp_path, fmt):
    for name in ("1.jpg", "2.jpg"):
        _png(str(tmp_path / "images" / name))
    pairs = [("1.jpg", "a red square"), ("1.jpg", "red again"), ("2.jpg", "another one")]
    if fmt == "json":
        path = tmp_path / "caps.json"
        path.write_text(json.dumps([{"image": "1.jpg", "caption": ["a red square", "red again"]},
                                    {"image": "2.jpg", "caption": "another one"}]))
    elif fmt == "token":
        path = tmp_path / "caps.token"
        path.write_text("".join(f"{img}#{k}\t{c}\n" for k, (img, c) in enumerate(pairs)))
    else:
        path = tmp_path / "caps.csv"
        path.write_text("image_name| comment_number| comment\n" + "".join(f"{img}| {k}| {c}\n" for k, (img, c) in enumerate(pairs)))
    data = load_image_captions({"images": str(tmp_path / "images"), "captions": str(path)}, CTX)
    assert isinstance(data, RetrievalData)
    assert data.captions == [c for _, c in pairs] and data.text_to_image == [0, 0, 1] and len(data.images) == 2


def test_image_captions_missing_images_is_an_error_not_a_silent_drop(tmp_path):
    _png(str(tmp_path / "images" / "1.jpg"))
    path = tmp_path / "caps.token"
    path.write_text("1.jpg#0\tone\n9.jpg#0\tnine\n")
    from ticlip.errors import TiclipError

    with pytest.raises(TiclipError, match="1 of 2 captions"):
        load_image_captions({"images": str(tmp_path / "images"), "captions": str(path)}, CTX)
    with pytest.raises(TaskDataMissing):
        load_image_captions({"images": str(tmp_path / "nope"), "captions": str(path)}, CTX)


def _group_stream(root):
    from ticlip.data.shards import ShardSample, encode_image, write_shard
    from ticlip.data.stream import ShardSet, Step, TimeStream

    steps = []
    groups = ["Smileys & Emotion", "Animals & Nature", "Smileys & Emotion", "Food & Drink"]
    for k in range(2):
        samples = []
        for i in range(2):
            ext, data = encode_image(Image.new("RGBA", (8, 8), (255, 200, 0, 255)))
            uid = f"e{k}{i}"
            samples.append(ShardSample(uid, ext, data, f"emoji {uid}", {"uid": uid, "group": groups[2 * k + i]}))
        rel = f"steps/{k}/eval-000000.tar"
        write_shard(os.path.join(root, rel), samples)
        steps.append(Step(k, str(2015 + k), "", "", [], ShardSet(), {"retrieval": ShardSet([rel], 2)}))
    s = TimeStream(root=str(root), name="e", granularity="year", steps=steps)
    s.save()
    return s


def test_emoji_groups_from_the_streams_held_out_pairs(tmp_path):
    stream = _group_stream(tmp_path)
    data = load_emoji_groups({"source": "stream"}, LoaderContext(stream=stream))
    assert data.classnames == ["animals and nature", "food and drink", "smileys and emotion"]
    assert [data.dataset[i][1] for i in range(len(data.dataset))] == [2, 0, 2, 1]


def test_emoji_groups_stream_source_without_groups_is_missing(toy_stream):
    with pytest.raises(TaskDataMissing, match="emoji group"):
        load_emoji_groups({"source": "stream"}, LoaderContext(stream=toy_stream))


# ------------------------------------------------------------------------------ the table
def test_builtin_table_parses_and_selects():
    tasks = builtin_tasks()
    assert {"retrieval", "classification", "fashion-mnist", "digits", "emoji-groups", "imagenet1k", "flickr30k"} <= set(tasks)
    assert [t.name for t in select_tasks(tasks, ["digits", "retrieval"])] == ["retrieval", "digits"]
    assert all(not t.dynamic for t in select_tasks(tasks, ["static"]))
    with pytest.raises(TaskError, match="unknown task 'nope'"):
        select_tasks(tasks, ["nope"])


def test_task_file_adds_and_overrides(tmp_path):
    f = tmp_path / "tasks.yaml"
    f.write_text("digits:\n  kind: zeroshot_classification\n  loader: sklearn_digits\n  options: {max_samples: 50}\n"
                 "mine:\n  kind: zeroshot_classification\n  loader: image_folder\n  options: {root: '{data_dir}/mine'}\n")
    tasks = load_tasks(str(f))
    assert tasks["digits"].options == {"max_samples": 50} and "mine" in tasks
    data = load_task_data(tasks["digits"], CTX)
    assert len(data.dataset) == 50
    with pytest.raises(TaskDataMissing, match=str(tmp_path / "d" / "mine")):
        load_task_data(tasks["mine"], LoaderContext(data_dir=str(tmp_path / "d")))


@pytest.mark.parametrize("entry, words", [
    ({"kind": "nope"}, "kind"),
    ({"kind": "zeroshot_classification", "loader": "nope"}, "loader"),
    ({"kind": "dynamic_retrieval"}, "eval_set"),
    ({"kind": "retrieval", "loader": "image_captions", "colour": 1}, "unknown key 'colour'"),
    ({"kind": "retrieval", "loader": "sklearn_digits"}, "gives zeroshot_classification data, not retrieval"),
    ({"kind": "retrieval", "loader": "image_captions", "name": "x"}, "unknown key 'name'"),
])
def test_malformed_entries_are_clear_errors(entry, words):
    with pytest.raises(TaskError, match=words):
        TaskSpec.from_entry("t", entry)


def test_runner_skips_a_task_with_missing_data_in_one_line(toy_stream, tmp_path):
    from ticlip.eval.runner import EvalConfig, Evaluator, ModelRef

    f = tmp_path / "tasks.yaml"
    f.write_text("gone:\n  kind: zeroshot_classification\n  loader: image_folder\n  options: {root: /nonexistent/x}\n")
    lines = []
    ev = Evaluator(toy_stream, EvalConfig(tasks=["gone"], task_file=str(f)), str(tmp_path / "out"), log=lines.append)
    models = [ModelRef(i, str(i), str(tmp_path / f"{i}.pt"), "ticlip-tiny-32") for i in range(2)]
    outcome = ev.run(models, [(s.index, s.label) for s in toy_stream.steps])
    assert list(outcome.skipped_tasks) == ["gone"] and outcome.models_loaded == 0
    assert lines == [lines[0]] and "gone" in lines[0] and "/nonexistent/x" in lines[0]
