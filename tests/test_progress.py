"""Progress on the terminal (ticlip.progress): run progress read from fabricated run directories,
the ETA, status lines when stderr is not a terminal, `ticlip eval`'s per-model / per-task lines and
`ticlip run`'s per-run step lines."""

import io
import json
import os
import re

import pytest
import yaml

from ticlip.progress import (INTERVAL_ENV, RateMeter, RunWork, StatusDisplay, StepWork, TrainingProgress,
                             format_duration, poll_run, read_last_record)
from ticlip.run_layout import RunInfo, StepRecord


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _log_lines(run_dir, step, records, cut_tail=False):
    d = os.path.join(run_dir, "steps", str(step))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "train_log.jsonl"), "a") as f:
        for r in records:
            f.write(json.dumps({"step": step, "label": str(step), **r}) + "\n")
        if cut_tail:
            f.write('{"step": %d, "iteration": 99' % step)  # a line being written


def _fake_run(tmp_path, name, finished, stream_steps=3):
    run_dir = str(tmp_path / name)
    os.makedirs(run_dir, exist_ok=True)
    steps = [StepRecord(i, str(i), f"steps/{i}/checkpoint.pt", finished=True) for i in finished]
    RunInfo(name, "s", "m", "sequential", steps=steps, extra={"steps_planned": list(range(stream_steps))}).save(run_dir)
    return run_dir


def _work(name, run_dir, sizes=(10, 20, 30), trunk=(0, 0, 0)):
    return RunWork(name, run_dir, [StepWork(i, str(i), n, x) for i, (n, x) in enumerate(zip(sizes, trunk))], len(sizes))


def test_poll_reads_finished_steps_and_the_current_step_log(tmp_path):
    run_dir = _fake_run(tmp_path, "a", finished=[0])
    _log_lines(run_dir, 1, [{"phase": "main", "iteration": i, "pairs_per_s": 100.0 + i} for i in range(1, 6)],
               cut_tail=True)
    st = poll_run(_work("a", run_dir))
    assert (st.step.index, st.step_done, st.done, st.finished_steps) == (1, 5, 10 + 5, 1)
    assert st.fraction == pytest.approx(15 / 60)
    assert st.pairs_per_s == 105.0
    line = st.line(eta_s=125)
    assert "a: step 1 (2/3) 5/20 it" in line and "105 pairs/s" in line and "ETA 2m05s" in line


def test_poll_counts_const_cosines_trunk_and_finished_runs(tmp_path):
    run_dir = _fake_run(tmp_path, "b", finished=[0])
    # step 1: 20 iterations, branch point 12, trunk of 8 more; the trunk restarts at iteration 12
    _log_lines(run_dir, 1, [{"phase": "branch", "iteration": 20}, {"phase": "trunk", "iteration": 16}])
    st = poll_run(_work("b", run_dir, trunk=(0, 8, 0)))
    assert (st.step_done, st.done, st.phase) == (20 + 4, 10 + 24, "trunk")
    assert st.work.total == 68
    done = poll_run(_work("c", _fake_run(tmp_path, "c", finished=[0, 1, 2])))
    assert done.finished and done.fraction == 1.0 and "finished" in done.line()
    nothing = poll_run(_work("d", str(tmp_path / "missing")))
    assert (nothing.done, nothing.step.index, nothing.step_done) == (0, 0, 0)


def test_read_last_record_skips_a_cut_line_and_reads_long_files(tmp_path):
    p = str(tmp_path / "log.jsonl")
    with open(p, "w") as f:
        for i in range(2000):
            f.write(json.dumps({"iteration": i, "pad": "x" * 50}) + "\n")
        f.write('{"iteration": 20')
    assert read_last_record(p)["iteration"] == 1999
    assert read_last_record(str(tmp_path / "none.jsonl")) is None


def test_rate_and_eta_from_polled_runs(tmp_path):
    clock = Clock()
    a, b = _fake_run(tmp_path, "a", finished=[]), _fake_run(tmp_path, "b", finished=[])
    out = io.StringIO()
    progress = TrainingProgress([_work("a", a), _work("b", b, sizes=(5, 5, 5))], slots=2, file=out,
                                interactive=False, interval=30, clock=clock)
    assert progress.total == 60 + 15
    progress.poll(["a", "b"])
    assert progress.meters["a"].eta(60) is None  # no log line yet: start-up does not count as its rate
    _log_lines(a, 0, [{"iteration": 2}])
    _log_lines(b, 0, [{"iteration": 1}])
    clock.now += 5
    progress.poll(["a", "b"])
    _log_lines(a, 0, [{"iteration": 10}])
    _log_lines(b, 1, [{"iteration": 1}])
    with open(os.path.join(b, "run.json")) as f:
        info = json.load(f)
    info["steps"] = [{"index": 0, "label": "0", "checkpoint": "steps/0/checkpoint.pt", "finished": True}]
    with open(os.path.join(b, "run.json"), "w") as f:
        json.dump(info, f)
    clock.now += 10
    statuses = progress.poll(["a", "b"])
    assert [s.done for s in statuses] == [10, 5 + 1]
    # overall: 16 iterations in 15 s since the first poll; 59 left
    assert progress.display.eta() == pytest.approx(59 / (16 / 15))
    # run a: 8 iterations in the 10 s since its first log line; 50 left
    assert progress.meters["a"].eta(60 - 10) == pytest.approx(50 / 0.8)
    # a failed run's unfinished work leaves the total
    progress.drop("b")
    assert progress.total == 60 + 6


def test_status_lines_when_not_a_terminal(tmp_path):
    clock = Clock()
    a, b = _fake_run(tmp_path, "a", finished=[0]), _fake_run(tmp_path, "b", finished=[])
    _log_lines(a, 1, [{"iteration": 7, "pairs_per_s": 250.0}])
    _log_lines(b, 0, [{"iteration": 3, "pairs_per_s": 120.0}])
    out = io.StringIO()
    progress = TrainingProgress([_work("a", a), _work("b", b)], desc="training", slots=2, file=out,
                                interactive=False, interval=30, clock=clock)
    progress.poll(["a", "b"])
    first = out.getvalue()
    assert first.startswith("training:  17% (20/120 it)")
    assert "  a: step 1 (2/3) 7/20 it, 250 pairs/s" in first
    assert "  b: step 0 (1/3) 3/10 it, 120 pairs/s" in first
    clock.now += 10
    progress.poll(["a", "b"])
    assert out.getvalue() == first  # nothing within the interval
    clock.now += 25
    _log_lines(b, 0, [{"iteration": 9, "pairs_per_s": 130.0}])
    progress.poll(["a", "b"])
    second = out.getvalue()[len(first):]
    assert second.count("training:") == 1 and "b: step 0 (1/3) 9/10 it" in second
    progress.write("  a trained")
    assert out.getvalue().endswith("  a trained\n")
    progress.close()


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "5")
    assert StatusDisplay("x", 10, file=io.StringIO(), interactive=False).interval == 5.0
    monkeypatch.setenv(INTERVAL_ENV, "soon")
    from ticlip.errors import TiclipError

    with pytest.raises(TiclipError, match=INTERVAL_ENV):
        StatusDisplay("x", 10, file=io.StringIO(), interactive=False)


def test_terminal_bars_show_each_active_run(tmp_path):
    a = _fake_run(tmp_path, "a", finished=[])
    _log_lines(a, 0, [{"iteration": 4, "pairs_per_s": 99.0}])
    out = io.StringIO()
    progress = TrainingProgress([_work("a", a)], slots=1, file=out, interactive=True)
    progress.poll(["a"], force=True)
    progress.write("  a trained")
    progress.close()
    text = out.getvalue()
    assert "a: step 0 (1/3) 4/10 it, 99 pairs/s" in text and "\r" in text and "  a trained" in text


def test_format_duration_and_rate_meter():
    assert [format_duration(s) for s in (None, 5, 125, 3725)] == ["?", "5s", "2m05s", "1h02m"]
    clock = Clock()
    m = RateMeter(clock)
    m.sample(10)
    assert m.rate is None and m.eta(5) is None
    clock.now += 4
    m.sample(30)
    assert m.rate == pytest.approx(5.0) and m.eta(50) == pytest.approx(10.0) and m.eta(0) == 0.0


# ------------------------------------------------------------------------------ ticlip eval
MODEL = "ticlip-tiny-32"


@pytest.fixture(scope="module")
def tiny_run(toy_stream, tmp_path_factory):
    """A run of two finished steps holding random tiny checkpoints."""
    from ticlip.models import create_model, save_checkpoint

    run_dir = tmp_path_factory.mktemp("run")
    steps = []
    for i in range(2):
        os.makedirs(run_dir / "steps" / str(i))
        save_checkpoint(create_model(MODEL, seed=i).model, str(run_dir / "steps" / str(i) / "checkpoint.pt"), name=MODEL)
        steps.append(StepRecord(i, toy_stream.steps[i].label, f"steps/{i}/checkpoint.pt", finished=True))
    RunInfo("t", toy_stream.root, MODEL, "sequential", steps=steps).save(str(run_dir))
    return str(run_dir), toy_stream


def test_eval_prints_per_model_and_per_task_progress(tiny_run, monkeypatch, capsys):
    from ticlip.cli import main

    run_dir, stream = tiny_run
    monkeypatch.setenv(INTERVAL_ENV, "0")  # a status block at every update
    assert main(["eval", run_dir, "--tasks", "retrieval", "--seeds", "1", "--batch-size", "8"]) == 0
    err = capsys.readouterr().err
    n = len(stream.steps)
    for i, label in enumerate(stream.labels[:2], 1):
        for k, step in enumerate(stream.labels, 1):
            pattern = (rf"model step {re.escape(label)} \({i}/2\): task {k}/{n} retrieval @ step {re.escape(step)}, "
                       rf"\d+ encoded, \d+ img\+txt/s")
            assert re.search(pattern, err), pattern
        # the model's summary line: every eval pair's image and text went through the model once
        pairs = sum(s.eval["retrieval"].count for s in stream.steps)
        assert re.search(rf"model step {re.escape(label)}: {n} results in [\d.]+ s; {2 * pairs} images\+texts "
                         rf"encoded, \d+ img\+txt/s", err)
    assert re.search(r"eval: 100% \(8/8 results\)", err)


def test_eval_no_progress_prints_no_status(tiny_run, tmp_path, monkeypatch, capsys):
    import shutil

    from ticlip.cli import main

    run_dir = str(tmp_path / "run")
    shutil.copytree(tiny_run[0], run_dir, ignore=shutil.ignore_patterns("eval.jsonl"))  # evaluate afresh
    monkeypatch.setenv(INTERVAL_ENV, "0")
    assert main(["eval", run_dir, "--tasks", "retrieval", "--seeds", "1", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "task 1/" not in err and "eval:" not in err
    assert "img+txt/s" in err  # the per-model summary lines stay


# ------------------------------------------------------------------------------ ticlip run
@pytest.mark.slow
@pytest.mark.parametrize("parallel", [2, 1])
def test_run_shows_each_runs_step_progress(toy_stream, tmp_path, monkeypatch, capsys, parallel):
    from ticlip.cli import main

    monkeypatch.setenv(INTERVAL_ENV, "0")
    logs = str(tmp_path / "runs")
    exp = {"name": "exp", "stream": {"path": toy_stream.root, "source": None}, "logs": logs, "parallel": parallel,
           "train": {"iterations_per_step": 12, "batch_size": 8, "warmup": 1, "workers": 0},
           "methods": ["sequential", "oracle"], "seeds": [0], "eval": {"tasks": ["retrieval"], "seeds": 1}}
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(exp))
    assert main(["run", str(cfg), "--no-report"]) == 0
    err = capsys.readouterr().err
    # oracle trains (t+1) x 12 iterations at step t: 12+24+36+48, sequential 4 x 12. (With 3 iterations per
    # step, oracle's steps after the shared step 0 could all finish between two 0.5-s polls: no line to see.)
    assert re.search(r"training[^:]*: 100% \(168/168 it\)", err), err[-2000:]
    for name in ("sequential-s0", "oracle-s0"):
        assert re.search(rf"  {name}: step \S+ \([1-4]/4\) \d+/\d+ it", err), name
        assert f"{name} trained" in err
        assert re.search(rf"  {name}: 16 results in [\d.]+ s \(\d+ images\+texts encoded, \d+ img\+txt/s\)", err)
    assert re.search(r"model step \S+ \(\d/4\): task \d/4 retrieval", err)
