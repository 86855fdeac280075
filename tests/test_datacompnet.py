"""TiC-DataCompNet's released eval uid list (year -> WordNet synset -> uids; apple/ml-tic-clip
tic-datacompnet_year2uids.pkl, generate_datacompnet_uid2classid.py) as a classification eval set of a
stream: `ticlip data build --eval-uids` keeps each uid's synset, and `ticlip eval` scores the set per step
with the existing dynamic_classification task `datacompnet`."""

import csv
import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from ticlip.cli import main
from ticlip.data.datacompnet import imagenet_labels
from ticlip.data.stream import TimeStream
from ticlip.data.tic_formats import FormatError, read_eval_uid_synsets, read_eval_uids
from ticlip.eval.results import read_matrix, read_results
from ticlip.eval.runner import EvalConfig, evaluate_run
from ticlip.run_layout import RunInfo, StepRecord

MODEL = "ticlip-tiny-32"
YEARS = [2016, 2017, 2018]
UIDS = {y: [f"{y:04d}{i:028x}" for i in range(6)] for y in YEARS}  # 32 hex digits, DataComp-style
# The release's keys are ImageNet-1k synset ids: n01440764 tench (class 0), n01443537 goldfish (1),
# n02129604 tiger (292), n03100240 convertible (511).
LISTED = {
    "2016": {"n01440764": UIDS[2016][:2], "n02129604": UIDS[2016][2:3]},
    "2017": {"n01443537": UIDS[2017][:1], "n02129604": UIDS[2017][1:3]},
    "2018": {"n03100240": UIDS[2018][:2]},
}


def write_table(tmp_path) -> str:
    """A table source whose uids are the listed ones and some that are not (the train pairs)."""
    rows = []
    for y in YEARS:
        for i, uid in enumerate(UIDS[y]):
            img = tmp_path / f"{uid}.png"
            Image.new("RGB", (24, 24), ((37 * i) % 256, (y * 7) % 256, 90)).save(img)
            rows.append({"image": str(img), "caption": f"a photo {y} {i}", "timestamp": str(y), "uid": uid})
    path = tmp_path / "pairs.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return str(path)


def write_datacompnet_pickle(path):
    """As released: a pickle of year -> synset -> NumPy array of hex uid strings."""
    with open(path, "wb") as f:
        pickle.dump({y: {s: np.array(u) for s, u in v.items()} for y, v in LISTED.items()}, f)


def test_synsets_read_from_the_released_layouts(tmp_path):
    pkl = tmp_path / "tic-datacompnet_year2uids.pkl"
    write_datacompnet_pickle(pkl)
    expected = {u: s for v in LISTED.values() for s, us in v.items() for u in us}
    assert read_eval_uid_synsets(str(pkl)) == expected
    js = tmp_path / "tic-datacompnet_year2uids.json"
    js.write_text(json.dumps(LISTED))
    assert read_eval_uid_synsets(str(js)) == expected
    assert read_eval_uids(str(js))["2016"] == set(UIDS[2016][:3])  # the flat view is unchanged
    retrieval = tmp_path / "tic-datacomp_retrieval_evals_year2uids.json"
    retrieval.write_text(json.dumps({"2016": UIDS[2016][:2]}))
    assert read_eval_uid_synsets(str(retrieval)) == {}  # year -> uids: no labels
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"2016": {"tench": UIDS[2016][:1]}}))
    with pytest.raises(FormatError, match="'tench' is not a WordNet synset id"):
        read_eval_uid_synsets(str(bad))
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps({"2016": {"n01440764": UIDS[2016][:1], "n01443537": UIDS[2016][:1]}}))
    with pytest.raises(FormatError, match="listed under both n01440764 and n01443537"):
        read_eval_uid_synsets(str(twice))


def test_labels_are_imagenet_indices_and_open_clip_names():
    assert imagenet_labels(["n01440764", "n02129604", "n03100240"]) == {
        "n01440764": (0, "tench"), "n02129604": (292, "tiger"), "n03100240": (511, "convertible")}
    with pytest.raises(FormatError, match="n00000001 is not an ImageNet-1k class"):
        imagenet_labels(["n00000001", "n01440764"])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dcnet")
    table = write_table(tmp)
    pkl = tmp / "tic-datacompnet_year2uids.pkl"
    write_datacompnet_pickle(pkl)
    out = str(tmp / "stream")
    assert main(["data", "build", table, "--out", out, "--eval-uids", str(pkl), "--validation-size", "0",
                 "--max-image-side", "16", "--workers", "1", "--quiet"]) == 0
    return tmp, TimeStream.load(out)


def test_build_writes_a_labelled_eval_set_per_step(built):
    _, s = built
    assert s.labels == ["2016", "2017", "2018"]
    for label, listed in LISTED.items():
        i = s.labels.index(label)
        ret = s.eval_set(i, "retrieval")
        assert {m["uid"] for m in ret.meta} == {u for us in listed.values() for u in us}  # as before
        net = s.eval_set(i, "datacompnet")
        got = {m["uid"]: (m["synset"], m["class_index"], m["classname"]) for m in net.meta}
        labels = imagenet_labels(listed)
        assert got == {u: (w, *labels[w]) for w, us in listed.items() for u in us}
        assert len(net.images) == len(got)
        assert s.steps[i].train.count == 6 - len(got)
    assert s.eval_set(0, "datacompnet").meta[0]["classname"] in {"tench", "tiger"}
    counts = s.provenance["datacompnet"]["counts"]
    assert counts["2017"] == {"eval": 3, "labelled": 3, "classes": 2}
    assert s.provenance["counts"]["steps"][2]["eval"] == {"retrieval": 2, "datacompnet": 2}


def test_retrieval_list_adds_no_classification_set(tmp_path):
    table = write_table(tmp_path)
    lst = tmp_path / "tic-datacomp_retrieval_evals_year2uids.json"
    lst.write_text(json.dumps({str(y): UIDS[y][:2] for y in YEARS}))
    out = str(tmp_path / "s")
    assert main(["data", "build", table, "--out", out, "--eval-uids", str(lst), "--validation-size", "0",
                 "--max-image-side", "16", "--workers", "1", "--quiet"]) == 0
    s = TimeStream.load(out)
    assert s.eval_tasks() == ["retrieval"] and "datacompnet" not in s.provenance
    assert s.provenance["counts"]["steps"][0]["eval"] == {"retrieval": 2}


def test_eval_scores_datacompnet_per_step_with_chance(built):
    from ticlip.models import create_model, save_checkpoint

    tmp, s = built
    run_dir = tmp / "run"
    run_dir.mkdir()
    steps = []
    for i, st in enumerate(s.steps):
        path = save_checkpoint(create_model(MODEL, seed=i).model, str(run_dir / f"{i}.pt"), name=MODEL)
        steps.append(StepRecord(i, st.label, os.path.relpath(path, run_dir), finished=True))
    RunInfo("t", s.root, MODEL, "sequential", steps=steps).save(str(run_dir))
    evaluate_run(str(run_dir), EvalConfig(tasks=["datacompnet"], batch_size=16), log=lambda m: None)
    E, rows, cols = read_matrix(str(run_dir / "matrix_datacompnet.csv"))
    assert E.shape == (3, 3) and cols == s.labels and np.isfinite(E).all()
    records = [r for r in read_results(str(run_dir / "eval.jsonl")) if r["task"] == "datacompnet"]
    assert len(records) == 9
    # four classes over the stream (tench, goldfish, tiger, convertible): chance top-1 is 1/4
    assert {r["classes"] for r in records} == {4} and {r["chance"] for r in records} == {0.25}
    assert {(r["eval_step"]["label"], r["n"]) for r in records} == {("2016", 3), ("2017", 3), ("2018", 2)}


def test_reshard_honours_eval_uids_and_labels_datacompnet(tmp_path):
    """The preset's path: existing DataComp shards (.json with "uid") resharded by a uid -> year table
    with --eval-uids tic-datacompnet_year2uids.pkl: the listed uids are the eval sets, labelled."""
    from reshard_helpers import tiny_png, write_input_shard
    from reshard_helpers import write_table as write_uid_table

    samples, rows = [], []
    for y in YEARS:
        for i, uid in enumerate(UIDS[y]):
            samples.append({"key": f"{y}{i:04d}", "image": tiny_png(i), "caption": f"c {y} {i}", "meta": {"uid": uid}})
            rows.append((uid, y))
    write_input_shard(str(tmp_path / "shards" / "00000.tar"), samples)
    table = write_uid_table(str(tmp_path / "uid-time.csv"), rows)
    pkl = tmp_path / "tic-datacompnet_year2uids.pkl"
    write_datacompnet_pickle(pkl)
    out = str(tmp_path / "s")
    assert main(["data", "build", str(tmp_path / "shards"), "--timestamps", table, "--out", out,
                 "--eval-uids", str(pkl), "--validation-size", "0", "--quiet"]) == 0
    s = TimeStream.load(out)
    for label, listed in LISTED.items():
        i = s.labels.index(label)
        want = {u: w for w, us in listed.items() for u in us}
        assert {m["uid"] for m in s.eval_set(i, "retrieval").meta} == set(want)
        assert {m["uid"]: m["synset"] for m in s.eval_set(i, "datacompnet").meta} == want
        assert s.steps[i].train.count == 6 - len(want)
