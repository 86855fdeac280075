"""Identical work is done once: a step training fully determined by the same inputs is trained once and
reused bit-identically (ticlip.train.reuse), and identical checkpoints are evaluated once
(ticlip.eval.shared)."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
import torch
import yaml
from train_helpers import one_thread  # noqa: F401  (autouse fixture)

from ticlip.config import TrainConfig
from ticlip.methods import get_method
from ticlip.train.batches import rng_state, set_rng_state
from ticlip.train.reuse import StepCache
from ticlip.train.run import train_run


def config(stream, logs, name, **kw):
    base = dict(stream=stream.root, logs=str(logs), name=name, batch_size=8, workers=0, warmup=1, steps="0:1",
                chunk_iterations=2, save_every_s=0.0, progress=False, method="sequential", iterations_per_step=2)
    base.update(kw)
    return TrainConfig(**base)


EWC_PARAMS = {"fisher_batches": 1, "fisher_batch_size": 4}


def step_json(run_dir, t) -> dict:
    with open(os.path.join(run_dir, "steps", str(t), "step.json")) as f:
        return json.load(f)


def weights(run_dir, t) -> dict:
    return torch.load(os.path.join(run_dir, "steps", str(t), "checkpoint.pt"), weights_only=True)["state_dict"]


def same_weights(a_dir, b_dir, t) -> bool:
    a, b = weights(a_dir, t), weights(b_dir, t)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def losses(run_dir, t) -> list:
    with open(os.path.join(run_dir, "steps", str(t), "train_log.jsonl")) as f:
        return [(r["phase"], r["iteration"], r["loss"]) for r in map(json.loads, f)]


@pytest.fixture(scope="module")
def trained(toy_stream, tmp_path_factory):
    """sequential, then cumulative-all sharing its cache, and cumulative-all trained without a cache."""
    logs = tmp_path_factory.mktemp("reuse")
    cache = str(logs / "cache")
    train_run(config(toy_stream, logs, "seq", step_cache=cache))
    train_run(config(toy_stream, logs, "cum", method="cumulative-all", step_cache=cache))
    train_run(config(toy_stream, logs, "cum-ref", method="cumulative-all"))
    return logs, cache


def test_a_second_method_reuses_step_0_bit_identically(trained):
    logs, _ = trained
    cum, ref = logs / "cum", logs / "cum-ref"
    s0, s1 = step_json(cum, 0), step_json(cum, 1)
    assert s0["reused_from"] == "seq step 0" and s0["step_cache"]["reused"]
    assert s0["step_cache"]["key"] == step_json(logs / "seq", 0)["step_cache"]["key"]
    # step 1 of cumulative-all replays step 0's data: another training, trained and keyed here
    assert "reused_from" not in s1 and not s1["step_cache"]["reused"] and s1["step_cache"]["key"]
    assert "step_cache" not in step_json(ref, 0)  # no cache configured: nothing recorded
    assert s0["facts"] == step_json(ref, 0)["facts"]  # the data path the reused training read, too
    for t in (0, 1):  # step 1 trains on from the reused weights and RNG states: still bit-identical
        assert same_weights(cum, ref, t), f"step {t}"
        assert losses(cum, t) == losses(ref, t)
    info, ref_info = (json.load(open(d / "run.json")) for d in (cum, ref))
    assert info["extra"]["reused"] == {"0": "seq step 0"}
    # the reused step still counts its compute: the method spent it, the machine did not redo it
    assert [s["macs"] for s in info["steps"]] == [s["macs"] for s in ref_info["steps"]]
    assert [s["pairs_seen"] for s in info["steps"]] == [s["pairs_seen"] for s in ref_info["steps"]]


def test_the_share_of_work_saved(trained):
    from ticlip.train.reuse import work_saved

    logs, _ = trained
    runs = [str(logs / "seq"), str(logs / "cum")]
    out = work_saved(runs)
    infos = [json.load(open(os.path.join(r, "run.json"))) for r in runs]
    total = sum(s["macs"] for info in infos for s in info["steps"])
    assert out["steps"] == 4 and out["reused_steps"] == 1 and out["macs"] == total
    assert out["reused_macs"] == step_json(logs / "cum", 0)["train_macs"] > 0
    assert out["share"] == out["reused_macs"] / total


def test_a_run_whose_training_differs_is_not_reused(toy_stream, trained):
    logs, cache = trained
    train_run(config(toy_stream, logs, "seq-seed1", seed=1, steps="0:0", step_cache=cache))
    assert not step_json(logs / "seq-seed1", 0)["step_cache"]["reused"]
    # EWC trains step 0 like Sequential (reused), then adds its penalty: step 1 starts from the same
    # weights with the same plan and budget as Sequential's step 1, and only its training key differs
    train_run(config(toy_stream, logs, "ewc", method="ewc", step_cache=cache, method_params=EWC_PARAMS))
    assert step_json(logs / "ewc", 0)["reused_from"] == "seq step 0"
    assert step_json(logs / "ewc", 0)["facts"]["fisher_pairs"] == 4  # its end_step ran on the reused weights
    assert "reused_from" not in step_json(logs / "ewc", 1)
    assert step_json(logs / "ewc", 1)["step_cache"]["key"] != step_json(logs / "seq", 1)["step_cache"]["key"]


@pytest.mark.slow
def test_more_keys_and_a_run_reusing_every_step(toy_stream, trained):
    logs, cache = trained
    train_run(config(toy_stream, logs, "seq-lr", lr=5e-4, steps="0:0", step_cache=cache))
    assert not step_json(logs / "seq-lr", 0)["step_cache"]["reused"]
    if not os.path.exists(logs / "ewc"):
        train_run(config(toy_stream, logs, "ewc", method="ewc", step_cache=cache, method_params=EWC_PARAMS))
    train_run(config(toy_stream, logs, "ewc-ref", method="ewc", method_params=EWC_PARAMS))
    for t in (0, 1):
        assert same_weights(logs / "ewc", logs / "ewc-ref", t)
    # a second sequential run reuses both steps
    train_run(config(toy_stream, logs, "seq2", step_cache=cache))
    assert [step_json(logs / "seq2", t).get("reused_from") for t in (0, 1)] == ["seq step 0", "seq step 1"]
    assert same_weights(logs / "seq2", logs / "seq", 1)


def test_an_experiment_gives_its_runs_a_step_cache_unless_it_says_otherwise(tmp_path):
    from ticlip.experiment import ExperimentConfig, expand

    base = {"name": "exp", "stream": "s", "logs": str(tmp_path), "methods": ["sequential"],
            "train": {"iterations_per_step": 2}}
    (run,) = expand(ExperimentConfig.from_dict(base))
    assert run.config.step_cache == os.path.join(str(tmp_path), "exp", "step-cache")
    off = dict(base, train={"iterations_per_step": 2, "step_cache": None})
    assert expand(ExperimentConfig.from_dict(off))[0].config.step_cache is None


def test_training_keys_of_the_methods():
    assert get_method("sequential").training_key(1) is None
    assert get_method("patching").training_key(1) is None  # patching differs after training, not in it
    lwf = get_method("lwf", lam=2.0)
    assert lwf.training_key(0) is None and lwf.training_key(1)["distill"]["lam"] == 2.0
    ewc = get_method("ewc")
    assert ewc.training_key(0) is None  # no Fisher yet
    ewc.load_state_dict({"fisher": {"w": torch.ones(2)}, "anchor": {"w": torch.zeros(2)}})
    assert ewc.training_key(1)["fisher"]["w"].sum() == 2

    class Hooked(type(get_method("sequential"))):  # a method with a loss term that forgot training_key
        name = "hooked"

        def extra_loss(self, model, images, texts, outputs):
            return None

    assert Hooked().training_key(0) == {"method": "hooked", "params": {}}


def test_every_method_trains_step_0_alike_so_the_demo_trains_it_once():
    """What the key takes from the method (plan, budget, training key) is the same for every method's
    step 0; the rest comes from the shared settings and the seed."""
    from ticlip.methods import list_methods
    from ticlip.train.budget import Budget
    from ticlip.train.buffers import with_run_seed
    from ticlip.train.reuse import digest

    sizes = [300, 200, 250]
    budget = Budget(1e12, len(sizes), 1e6, 128)
    seen = {}
    for name in list_methods():
        method = get_method(name)
        b = budget.plan_step(method, 0)
        seen[name] = digest([with_run_seed(method.plan(0, sizes), 0).to_dict(), b.iterations, b.allotted_macs,
                             b.cost.extra_forward_passes_per_pair, method.training_key(0)])
    assert len(set(seen.values())) == 1, seen
    lwf = get_method("lwf")  # ... and not step 1 of a method whose training differs
    assert digest(lwf.training_key(1)) != digest(get_method("sequential").training_key(1))


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    import random

    import numpy as np

    random.random(), np.random.rand(), torch.rand(1), np.random.randn()
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), float(np.random.randn()), float(torch.rand(1)))
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), float(np.random.randn()), float(torch.rand(1))) == expected


def test_a_run_waits_for_the_run_training_the_same_key_then_reuses(tmp_path):
    cache = StepCache(str(tmp_path), wait_s=30)
    got = {}
    holding, stored = threading.Event(), threading.Event()

    def first():
        with cache.claim("k") as entry:
            got["first"] = entry
            holding.set()
            time.sleep(0.5)
            cache.store("k", {"facts": 1}, {"model": {"w": torch.ones(3)}, "source": {"run": "A", "step": 0}})
        stored.set()

    a = threading.Thread(target=first)
    a.start()
    holding.wait(10)
    with cache.claim("k") as entry:  # blocks until A stored and released
        got["second"] = entry
    a.join()
    assert got["first"] is None and stored.is_set()
    assert torch.equal(got["second"]["model"]["w"], torch.ones(3)) and got["second"]["source"]["run"] == "A"


def test_a_waiting_run_gives_up_after_its_timeout_and_trains(tmp_path):
    notes = []
    holder = StepCache(str(tmp_path))
    waiter = StepCache(str(tmp_path), wait_s=0.3, say=notes.append)
    with holder.claim("k") as entry:
        assert entry is None
        with waiter.claim("k") as other:
            assert other is None  # trains on its own
    assert notes and f"pid {os.getpid()}" in notes[-1]  # names the holder


def test_the_lock_of_a_killed_holder_is_taken_over(tmp_path):
    """A run killed (SIGKILL) while training a key leaves its lock behind; the next run takes it over
    at once instead of waiting."""
    lock_dir = tmp_path / "train" / "k.lock"
    code = ("import os, signal, sys; from ticlip.locking import DirLock; DirLock(sys.argv[1]).acquire(); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code, str(lock_dir)], timeout=60)
    assert proc.returncode == -9 and (lock_dir / ".ticlip.lock").exists()
    t0 = time.monotonic()
    with StepCache(str(tmp_path), wait_s=30).claim("k") as entry:
        assert entry is None  # this run trains the key now
    assert time.monotonic() - t0 < 10


class Crash(Exception):
    pass


def crash_at(monkeypatch, iteration: int):
    """Make training die after ``iteration`` iterations (after its state was saved), the method untouched."""
    import ticlip.train.loop as loop

    original = loop.train_loop

    def train_loop(*args, after_iteration=None, **kwargs):
        def after(state):
            after_iteration(state)
            if state.iteration >= iteration:
                raise Crash(f"crash at iteration {iteration}")

        return original(*args, after_iteration=after, **kwargs)

    monkeypatch.setattr(loop, "train_loop", train_loop)


def test_resume_with_the_cache_on(toy_stream, tmp_path, monkeypatch):
    """A run killed in its first step (its key not stored yet) releases the key: another run trains and
    stores it; the killed run resumes from its own saved state, ends bit-identical, and reuses step 1."""
    cache = str(tmp_path / "cache")
    cfg = config(toy_stream, tmp_path, "crashed", step_cache=cache, seed=5, iterations_per_step=4)
    with monkeypatch.context() as m:
        crash_at(m, 3)
        with pytest.raises(Crash):
            train_run(cfg)
    assert os.path.exists(tmp_path / "crashed" / "steps" / "0" / "state.pt")
    # the same training under another name: it would wait (hours) if the crashed run still held the key
    train_run(config(toy_stream, tmp_path, "other", step_cache=cache, seed=5, iterations_per_step=4))
    assert not step_json(tmp_path / "other", 0)["step_cache"]["reused"]
    train_run(cfg, resume=True)
    assert step_json(tmp_path / "crashed", 0)["step_cache"]["why_not"].endswith("resumed from a saved state")
    assert step_json(tmp_path / "crashed", 1)["reused_from"] == "other step 1"
    assert same_weights(tmp_path / "crashed", tmp_path / "other", 0)  # "other" trained it without a break
    assert losses(tmp_path / "crashed", 0) == losses(tmp_path / "other", 0)


def test_const_cosine_steps_are_not_cached(toy_stream, tmp_path):
    cfg = config(toy_stream, tmp_path, "cc", step_cache=str(tmp_path / "cache"), steps="0:0",
                 schedule="const-cosine", iterations_per_step=3, decay_fraction=0.4, chunk_iterations=1)
    train_run(cfg)
    rec = step_json(tmp_path / "cc", 0)["step_cache"]
    assert rec["key"] is None and "const-cosine" in rec["why_not"]
    assert not os.path.exists(tmp_path / "cache" / "train") or not os.listdir(tmp_path / "cache" / "train")


def _eval_records(run_dir) -> list:
    with open(os.path.join(run_dir, "eval.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_identical_checkpoints_are_evaluated_once(trained, tmp_path):
    from ticlip.eval.config import EvalConfig
    from ticlip.eval.runner import evaluate_run

    logs, _ = trained
    ecfg = EvalConfig(tasks=["retrieval"], seeds=1, steps=[0])
    runs = {}
    for name in ("seq", "cum", "cum-ref"):  # copies: evaluation writes into the run directory
        runs[name] = str(tmp_path / name)
        shutil.copytree(logs / name, runs[name])
    evaluate_run(runs["seq"], ecfg, log=lambda s: None)
    evaluate_run(runs["cum"], ecfg, log=lambda s: None)  # step 0 has seq's tensors: copied
    evaluate_run(runs["cum-ref"], ecfg, log=lambda s: None)  # no cache: evaluated on its own
    seq, cum, ref = (_eval_records(runs[n]) for n in ("seq", "cum", "cum-ref"))
    assert seq and len(seq) == len(cum) == len(ref)
    assert all("shared_from" not in r for r in seq + ref)
    assert all(r["shared_from"]["checkpoint"] == os.path.join(runs["seq"], "steps", "0", "checkpoint.pt")
               for r in cum)
    assert all(r["checkpoint"].startswith(runs["cum"]) for r in cum)
    key = lambda r: (r["task"], r["eval_step"]["index"])  # noqa: E731
    for a, b in zip(sorted(cum, key=key), sorted(ref, key=key)):
        same = {k: a[k] for k in a if k not in ("created", "time", "checkpoint", "shared_from")}
        assert same == {k: b[k] for k in b if k not in ("created", "time", "checkpoint")}


@pytest.mark.slow
def test_rerunning_an_experiment_reuses_the_cache(toy_stream, tmp_path, capsys):
    from ticlip.cli import main

    logs = str(tmp_path / "runs")
    exp = {"name": "exp", "stream": {"path": toy_stream.root, "source": None},
           "train": {"iterations_per_step": 2, "batch_size": 8, "warmup": 1, "workers": 0, "progress": False,
                     "steps": "0:1"},
           "methods": ["sequential", "cumulative-all"], "seeds": [0], "eval": {"tasks": ["retrieval"], "seeds": 1},
           "report": False, "logs": logs}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    assert main(["run", str(tmp_path / "e.yaml")]) == 0
    exp_dir = os.path.join(logs, "exp")
    cum = os.path.join(exp_dir, "cumulative-all-s0")
    assert step_json(cum, 0)["reused_from"] == "sequential-s0 step 0"
    first = open(os.path.join(cum, "matrix_retrieval.csv")).read()
    shutil.rmtree(cum)
    assert main(["run", str(tmp_path / "e.yaml")]) == 0
    capsys.readouterr()
    assert [step_json(cum, t)["reused_from"] for t in (0, 1)] == ["sequential-s0 step 0", "cumulative-all-s0 step 1"]
    assert all("shared_from" in r for r in _eval_records(cum))
    assert open(os.path.join(cum, "matrix_retrieval.csv")).read() == first


@pytest.mark.slow
def test_two_processes_reaching_the_same_key_train_it_once(toy_stream, tmp_path):
    cache = str(tmp_path / "cache")
    procs = []
    for name, method in (("a", "sequential"), ("b", "cumulative-all")):
        args = ["train", "--stream", toy_stream.root, "--logs", str(tmp_path), "--name", name, "--method", method,
                "--iterations-per-step", "4", "--batch-size", "8", "--warmup", "1", "--workers", "0", "--steps", "0:0",
                "--threads", "1", "--no-progress", "--step-cache", cache]
        procs.append(subprocess.Popen([sys.executable, "-m", "ticlip.cli", *args], stderr=subprocess.PIPE, text=True))
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    reused = [step_json(tmp_path / n, 0).get("reused_from") for n in ("a", "b")]
    assert sorted(map(bool, reused)) == [False, True], reused
    assert same_weights(tmp_path / "a", tmp_path / "b", 0)
