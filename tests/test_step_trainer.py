"""One step's phases (ticlip.train.step.StepTrainer) and the one description of extra compute: what the
budget estimates before a step (StepCost) is what step.json and run.json record after it."""

import json
import os

import pytest
import torch
from train_helpers import one_thread  # noqa: F401  (autouse fixture)

from ticlip.config import TrainConfig
from ticlip.methods import get_method
from ticlip.train.budget import macs_per_pair
from ticlip.train.run import train_run

PARAMS = {"ewc": {"fisher_batches": 1, "fisher_batch_size": 8}, "patching": {"alphas": "0,1"}, "lwf": {}}


def config(stream, logs, name, method, **kw):
    base = dict(stream=stream.root, logs=str(logs), name=name, batch_size=8, workers=0, warmup=1, steps="0:1",
                chunk_iterations=1, save_every_s=0.0, progress=False, method=method, iterations_per_step=2,
                method_params=PARAMS[method])
    base.update(kw)
    return TrainConfig(**base)


def step_json(run_dir, t):
    with open(os.path.join(run_dir, "steps", str(t), "step.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def runs(toy_stream, tmp_path_factory):
    logs = tmp_path_factory.mktemp("runs")
    for method in PARAMS:
        train_run(config(toy_stream, logs, method, method))
    return logs


@pytest.mark.parametrize("method", list(PARAMS))
def test_the_estimate_is_what_the_step_records(runs, method):
    mpp = macs_per_pair("ticlip-tiny-32")
    run_info = json.loads((runs / method / "run.json").read_text())
    for t in (0, 1):
        sj = step_json(runs / method, t)
        cost = sj["budget"]["cost"]
        if method == "lwf":  # one more forward per training pair from step 1, charged by the loop
            assert cost["extra_forward_passes_per_pair"] == (1.0 if t else 0.0)
            assert sj["train_macs"] == sj["budget"]["macs"] + sj["budget"]["extra_macs_estimate"]
            assert sj["extra_macs"] == 0.0 and "extra_macs" not in sj["facts"]
        else:  # pairs forwarded by the end hook: the Fisher sample, the coefficient grid x held-out pairs
            pairs = 8 if method == "ewc" else 2 * 16 * t
            assert cost["extra_pairs"] == pairs
            assert sj["extra_macs"] == sj["budget"]["extra_macs_estimate"] == sj["facts"]["extra_macs"] == pairs * mpp
            assert sj["train_macs"] == sj["budget"]["macs"]
        assert run_info["steps"][t]["macs"] == sj["train_macs"] + sj["extra_macs"]
        assert sj["plan"]["init"] == ("initial" if t == 0 else "previous")
        assert [s["kind"] for s in sj["plan"]["sources"]] == ["step"]


def test_a_kill_inside_an_expensive_end_hook_resumes_there(toy_stream, runs, tmp_path, capsys):
    """EWC says its end hook is expensive: the state is saved before it, so a crash inside it resumes
    at the end phase (no training redone) and ends with the uninterrupted run's weights."""
    assert get_method("ewc").expensive_end_step and not get_method("sequential").expensive_end_step
    cfg = config(toy_stream, tmp_path, "crashed", "ewc")
    method = get_method("ewc", **PARAMS["ewc"])
    original = method.end_step

    def end_step(ctx):
        if ctx.step == 1:
            raise KeyboardInterrupt("killed in the Fisher pass")
        return original(ctx)

    method.end_step = end_step
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, method=method)
    assert (tmp_path / "crashed" / "steps" / "1" / "state.pt").exists()
    assert not (tmp_path / "crashed" / "steps" / "1" / "checkpoint.pt").exists()
    capsys.readouterr()
    train_run(cfg, resume=True)
    assert "step 2020: resuming end phase at iteration 2/2" in capsys.readouterr().err
    for t in ("0", "1"):
        a = torch.load(runs / "ewc" / "steps" / t / "checkpoint.pt", weights_only=True)["state_dict"]
        b = torch.load(tmp_path / "crashed" / "steps" / t / "checkpoint.pt", weights_only=True)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert step_json(tmp_path / "crashed", 1)["facts"] == step_json(runs / "ewc", 1)["facts"]
