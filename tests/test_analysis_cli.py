"""`ticlip analyze shift` and `ticlip analyze forgetting` end to end on a toy stream, their one-line
errors, and the report's shift / drift / forgetting sections rendered in headless Chromium."""

import csv
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from ticlip.cli import main
from train_helpers import one_error_line, one_thread  # noqa: F401  (one_thread: autouse fixture)

HAS_WORDNET = os.path.exists("/usr/share/wordnet/index.noun")
needs_wordnet = pytest.mark.skipif(not HAS_WORDNET, reason="WordNet 3.0 is not installed (Debian wordnet-base; "
                                   "scripts/install-system-deps.sh installs it)")
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    from ticlip.data.toy import make_toy_stream

    return make_toy_stream(str(tmp_path_factory.mktemp("shift") / "toy"), steps=3).root


def _square(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    labels = rows[0][1:]
    assert [r[0] for r in rows[1:]] == labels
    M = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    np.testing.assert_allclose(M, M.T)
    np.testing.assert_array_equal(np.diag(M), 0)
    return labels, M


@needs_wordnet
def test_shift_without_fid_writes_tv_and_drift(stream, tmp_path):
    out = tmp_path / "a"
    assert main(["analyze", "shift", stream, "--out", str(out), "--no-fid", "--min-count", "2", "--top-k", "10"]) == 0
    labels, TV = _square(out / "shift_tv.csv")
    assert labels == ["2019", "2020", "2021"]
    assert (TV[~np.eye(3, dtype=bool)] > 0).all() and (TV <= 1).all()  # the toy vocabulary slides per step
    assert not (out / "shift_fid.csv").exists()
    meta = json.loads((out / "shift.json").read_text())
    assert meta["fid"] is None and meta["tv"]["top_k"] <= 10
    assert meta["pairs"]["2019"] == {"used": 16, "total": 16}
    # toy step k draws shapes k..k+2 of the shape list: "cross" first appears at step 1
    new_2020 = [c["noun"] for c in meta["drift"][1]["concepts"] if c["new"]]
    assert "cross" in new_2020
    for st in meta["drift"]:
        for c in st["concepts"]:
            assert c["n"] >= 2
            for ex in c["examples"]:
                assert (out / ex["path"]).exists() and c["noun"] in ex["caption"]
    # deterministic: a second run gives the same matrix
    assert main(["analyze", "shift", stream, "--out", str(tmp_path / "b"), "--no-fid", "--min-count", "2",
                 "--top-k", "10"]) == 0
    np.testing.assert_array_equal(_square(tmp_path / "b" / "shift_tv.csv")[1], TV)


@needs_wordnet
@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "x.pt"], "needs --model"),
    ([], "FID needs a model"),
    (["--no-fid", "--task", "nope"], "no such eval set"),
    (["--no-fid", "--top-k", "0"], "top_k"),
    (["--run", "no-such-run", "--step", "2019"], "not a ticlip run"),
    (["--checkpoint", "missing.pt", "--model", "ticlip-tiny-32"], "does not exist"),
])
def test_shift_bad_input_is_one_line_and_writes_nothing(stream, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["analyze", "shift", stream, "--out", str(out)] + args) == 2
    assert message in one_error_line(capsys, "analyze")
    assert not out.exists()


def test_forgetting_bad_input_is_one_line(tmp_path, capsys):
    assert main(["analyze", "forgetting", str(tmp_path)]) == 2
    assert "not a ticlip run" in one_error_line(capsys, "analyze")
    assert main(["analyze", "forgetting", str(tmp_path / "nope")]) == 2
    assert "no run directory" in one_error_line(capsys, "analyze")


def _toy_run(stream, run_dir, steps=3):
    """A run whose step checkpoints are tiny models with different seeds (no training needed here)."""
    from ticlip.models import create_model, save_checkpoint
    from ticlip.run_layout import RunInfo, StepRecord

    recs = []
    for i, label in enumerate(["2019", "2020", "2021"][:steps]):
        path = f"steps/{i}/checkpoint.pt"
        save_checkpoint(create_model("ticlip-tiny-32", seed=i).model, os.path.join(run_dir, path), name="ticlip-tiny-32")
        recs.append(StepRecord(i, label, path, finished=True))
    RunInfo(name=os.path.basename(run_dir), stream=stream, model="ticlip-tiny-32", method="sequential",
            steps=recs).save(run_dir)
    return run_dir


@needs_wordnet
@pytest.mark.slow
def test_shift_with_fid_and_forgetting_end_to_end(stream, tmp_path, capsys):
    run = _toy_run(stream, str(tmp_path / "run"))
    out = tmp_path / "shift"
    assert main(["analyze", "shift", stream, "--out", str(out), "--run", run, "--step", "2020", "--min-count", "2"]) == 0
    labels, FID = _square(out / "shift_fid.csv")
    assert labels == ["2019", "2020", "2021"] and (FID[~np.eye(3, dtype=bool)] > 0).all()
    assert json.loads((out / "shift.json").read_text())["model"]["source"].endswith("step 2020")
    assert main(["analyze", "shift", stream, "--out", str(out), "--run", run, "--step", "2030"]) == 2
    assert "no finished step" in one_error_line(capsys, "analyze")

    assert main(["analyze", "forgetting", run, "--min-count", "2"]) == 0
    with open(os.path.join(run, "analysis", "forgetting.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(int(r["n"]) >= 2 and r["step"] in ("2019", "2020") for r in rows)
    for r in rows:
        assert float(r["drop"]) == pytest.approx(float(r["recall_intro"]) - float(r["recall_last"]), abs=1e-5)
    meta = json.loads(open(os.path.join(run, "analysis", "forgetting.json")).read())
    assert meta["last_step"] == "2021" and meta["concepts"] == len(rows)


def _fake_forgetting(run_dir, image):
    """forgetting.csv / .json as `ticlip analyze forgetting` writes them, with hand-set numbers."""
    from ticlip.analysis.files import write_json, write_thumbnail
    from ticlip.analysis.forgetting import ConceptForgetting
    from ticlip.analysis.run_forgetting import forgetting_csv
    from ticlip.atomic import write_text_atomic

    base = os.path.join(run_dir, "analysis")
    rows = [ConceptForgetting("circle", 0, 6, 0.5, 0.0, [0]), ConceptForgetting("square", 1, 5, 0.4, 0.4)]
    write_text_atomic(os.path.join(base, "forgetting.csv"), forgetting_csv(rows, ["2019", "2020", "2021"]))
    write_thumbnail(image, os.path.join(base, "thumbs", "circle-0.png"))
    write_json(os.path.join(base, "forgetting.json"), {
        "method": "sequential", "settings": {"min_count": 5}, "last_step": "2021",
        "dropped_most": [{"concept": "circle", "step": "2019", "n": 6, "recall_intro": 0.5, "recall_last": 0.0,
                          "drop": 0.5, "examples": [{"path": "thumbs/circle-0.png", "caption": "a red circle"}]}]})


@needs_wordnet
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package `chromium`)")
def test_report_shows_shift_drift_and_forgetting_in_chromium(stream, tmp_path):
    from test_report import fabricate_run, seq_matrix

    from ticlip.data.stream import TimeStream
    from ticlip.report import write_report
    from ticlip.run_layout import RunInfo

    analysed = fabricate_run(tmp_path, "seq", "sequential", 0, seq_matrix())
    other = fabricate_run(tmp_path, "cum", "cumulative-all", 0, seq_matrix(0.05))
    for r in (analysed, other):
        info = RunInfo.load(r)
        info.stream = stream
        info.save(r)
    assert main(["analyze", "shift", stream, "--no-fid", "--min-count", "2", "--top-k", "10"]) == 0  # STREAM/analysis
    _fake_forgetting(analysed, TimeStream.load(stream).eval_set(0).images[0])
    files = write_report([analysed, other], str(tmp_path / "report"))
    page = open(files.html, encoding="utf-8").read()
    for title in ("Distribution shift: toy", "Concept drift: toy", "Forgetting by concept"):
        assert f"<h2>{title}</h2>" in page
    assert "ticlip analyze forgetting RUN" in page  # the run without the analysis gets the command
    assert any(os.path.basename(p).startswith("shift_tv_") for p in files.plots)
    assert not any(os.path.basename(p).startswith("shift_fid_") for p in files.plots)
    meta = json.loads(open(os.path.join(stream, "analysis", "shift.json")).read())
    thumbs = sum(len(c["examples"]) for st in meta["drift"] for c in st["concepts"]) + 1  # + the forgetting example

    profile = tmp_path / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-extensions", "--no-first-run", f"--user-data-dir={profile}",
           "--virtual-time-budget=10000", "--dump-dom", "file://" + os.path.abspath(files.html)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, env={**os.environ, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body[^>]*>", proc.stdout).group(0)
    assert 'data-images="ok"' in body, body
    assert int(re.search(r'data-image-count="(\d+)"', body).group(1)) == len(files.plots) + thumbs
    shutil.rmtree(os.path.join(stream, "analysis"))  # the module's stream is shared with other tests
