"""`ticlip train` end to end on the toy stream: every registered method, step ranges, configs, refusals,
and clear errors (exit status 2) for bad input."""

import json

import pytest
import torch
from train_helpers import one_thread  # noqa: F401  (autouse fixture)

from ticlip.cli import main
from ticlip.methods import list_methods
from ticlip.run_layout import RunInfo


def train(stream, logs, *extra):
    return main(["train", "--stream", stream.root, "--logs", str(logs), "--batch-size", "8", "--workers", "0",
                 "--warmup", "0", "--no-progress", *extra])


# smaller extras than the defaults, to keep the test fast (the defaults run in the kill/resume test)
FAST_PARAMS = {"ewc": ["fisher_batches=2", "fisher_batch_size=8"], "patching": ["alphas=0,0.5,1"]}


# The fast tier trains one method of each family end to end; the others run in the full tier.
FAST_TIER_METHODS = {"sequential", "cumulative-all", "oracle", "patching", "lwf", "ewc", "mixture"}


@pytest.mark.parametrize("method", [m if m in FAST_TIER_METHODS else pytest.param(m, marks=pytest.mark.slow)
                                    for m in list_methods()])
def test_every_method_trains_every_step(toy_stream, tmp_path, method):
    params = [a for p in FAST_PARAMS.get(method, []) for a in ("--method-param", p)]
    assert train(toy_stream, tmp_path, "--method", method, "--iterations-per-step", "2", "--name", "r", *params) == 0
    run = tmp_path / "r"
    info = RunInfo.load(str(run))
    assert [s.index for s in info.steps] == [0, 1, 2, 3] and all(s.finished for s in info.steps)
    for s in info.steps:
        ckpt = torch.load(run / s.checkpoint, weights_only=False)
        assert "logit_scale" in ckpt["state_dict"] and ckpt["label"] == toy_stream.steps[s.index].label
        log = [json.loads(line) for line in open(run / "steps" / str(s.index) / "train_log.jsonl")]
        step = json.loads((run / "steps" / str(s.index) / "step.json").read_text())
        assert [r["iteration"] for r in log] == list(range(1, step["iterations"] + 1))
        assert s.pairs_seen == 8 * step["iterations"] and s.macs >= step["train_macs"] > 0
        assert not (run / "steps" / str(s.index) / "state.pt").exists()  # resumable state is cleaned up
    assert info.steps[-1].cumulative_macs == pytest.approx(sum(s.macs for s in info.steps))
    iterations = [json.loads((run / "steps" / str(t) / "step.json").read_text())["iterations"] for t in range(4)]
    assert iterations == ([2, 4, 6, 8] if method == "oracle" else [2, 2, 2, 2])


def test_const_cosine_writes_branch_checkpoint_and_continues_from_the_trunk(toy_stream, tmp_path):
    assert train(toy_stream, tmp_path, "--method", "sequential", "--iterations-per-step", "10",
                 "--schedule", "const-cosine", "--name", "cc", "--steps", "0:1") == 0
    s0 = tmp_path / "cc" / "steps" / "0"
    log = [json.loads(line) for line in open(s0 / "train_log.jsonl")]
    phases = [(r["phase"], r["iteration"]) for r in log]
    assert phases == [("main", i) for i in range(1, 9)] + [("branch", 9), ("branch", 10), ("trunk", 9), ("trunk", 10)]
    lr = {(r["phase"], r["iteration"]): r["lr"] for r in log}
    assert lr["branch", 10] < lr["trunk", 10] == lr["main", 8]  # the branch decays, the trunk stays at the peak
    deploy = torch.load(s0 / "checkpoint.pt", weights_only=False)["state_dict"]
    trunk = torch.load(s0 / "continue.pt", weights_only=False)["state_dict"]
    assert not torch.equal(deploy["logit_scale"], trunk["logit_scale"]) or not all(
        torch.equal(deploy[k], trunk[k]) for k in deploy)
    step1 = json.loads((tmp_path / "cc" / "steps" / "1" / "step.json").read_text())
    assert "trunk" in step1["init"]
    info = RunInfo.load(str(tmp_path / "cc"))
    assert info.steps[0].pairs_seen == 8 * 12  # the decay branch's 2 extra iterations are charged
    assert not (s0 / "trunk.pt").exists()


def test_step_range_config_file_and_method_params(toy_stream, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: lwf\niterations_per_step: 3\nmethod_params: {lam: 2.0}\nlr: 0.01\n")
    rc = train(toy_stream, tmp_path, "--config", str(cfg), "--iterations-per-step", "2", "--steps", "2020:2021",
               "--method-param", "temperature=2", "--name", "rng")
    assert rc == 0
    assert "should start from step 0's checkpoint" in capsys.readouterr().err  # warned: no step 0 in this run
    info = RunInfo.load(str(tmp_path / "rng"))
    assert [s.index for s in info.steps] == [1, 2]
    import yaml

    saved = yaml.safe_load((tmp_path / "rng" / "config.yaml").read_text())
    assert saved["method"] == "lwf" and saved["iterations_per_step"] == 2 and saved["lr"] == 0.01
    assert saved["method_params"] == {"lam": 2.0, "temperature": 2}
    assert "step 1's checkpoint" in json.loads((tmp_path / "rng" / "steps" / "2" / "step.json").read_text())["init"]


def test_rerunning_a_run_name_is_refused(toy_stream, tmp_path, capsys):
    args = ("--method", "sequential", "--iterations-per-step", "1", "--name", "again", "--steps", "0")
    assert train(toy_stream, tmp_path, *args) == 0
    capsys.readouterr()
    assert train(toy_stream, tmp_path, *args) == 2
    assert "already finished" in capsys.readouterr().err
    assert train(toy_stream, tmp_path, *args, "--resume") == 0  # nothing left to do
    # an unfinished run: the refusal names --resume and --name
    info = RunInfo.load(str(tmp_path / "again"))
    info.steps = []
    info.save(str(tmp_path / "again"))
    assert train(toy_stream, tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert "not finished" in err and "--resume" in err and "--name" in err
    assert train(toy_stream, tmp_path, "--name", "missing", "--resume") == 2
    assert "nothing to resume" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--stream", "/nonexistent/stream", "--iterations-per-step", "1"], "no stream manifest"),
    (["--method", "replay-everything", "--iterations-per-step", "1"], "unknown method"),
    (["--model", "ViT-Z-99", "--iterations-per-step", "1"], "unknown model"),
    (["--steps", "2021:2019", "--iterations-per-step", "1"], "starts after it ends"),
    (["--steps", "1999:2020", "--iterations-per-step", "1"], "no step '1999'"),
    (["--iterations-per-step", "1", "--precision", "fp16"], "fp16 needs a CUDA GPU"),
    (["--iterations-per-step", "2", "--warmup", "5"], "warmup of 5 iterations does not fit"),
    ([], "no budget"),
    (["--iterations-per-step", "1", "--total-macs", "1e12"], "either --total-macs or --iterations-per-step"),
    (["--total-macs", "1e3"], "less than one iteration"),
    (["--iterations-per-step", "1", "--method-param", "lam"], "KEY=VALUE"),
    (["--iterations-per-step", "1", "--init", "/nonexistent.pt"], "does not exist"),
])
def test_bad_input_exits_2_with_a_clear_message(toy_stream, tmp_path, capsys, args, message):
    argv = ["train", "--logs", str(tmp_path), "--no-progress", "--name", "bad"]
    if "--stream" not in args:
        argv += ["--stream", toy_stream.root]
    assert main(argv + args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()  # nothing written for a refused run


def test_report_to_tensorboard(toy_stream, tmp_path, capsys):
    import importlib.util

    args = ("--method", "sequential", "--iterations-per-step", "2", "--steps", "0", "--report-to", "tensorboard")
    rc = train(toy_stream, tmp_path, *args, "--name", "tb")
    if importlib.util.find_spec("tensorboard") is None:
        assert rc == 2 and "pip install tensorboard" in capsys.readouterr().err
    else:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        assert rc == 0
        events = EventAccumulator(str(tmp_path / "tb" / "tensorboard")).Reload()
        assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
        assert "train/lr" in events.Tags()["scalars"]


@pytest.mark.slow
def test_const_cosine_keeps_what_end_step_learnt(toy_stream, tmp_path):
    """The trunk rewinds the model to the branch point, but not the method's end_step state (EWC's
    Fisher, patching's patched weights): a counter kept by end_step must see every step."""
    from ticlip.config import TrainConfig
    from ticlip.methods.base import StepOutcome
    from ticlip.methods.sequential import Sequential
    from ticlip.train.run import train_run

    class CountingEnds(Sequential):
        def __init__(self):
            super().__init__()
            self.ends, self.seen_at_begin = 0, []

        def begin_step(self, ctx):
            self.seen_at_begin.append(self.ends)

        def end_step(self, ctx):
            self.ends += 1
            return StepOutcome()

        def state_dict(self):
            return {"ends": self.ends}

        def load_state_dict(self, state):
            self.ends = state.get("ends", 0)

    method = CountingEnds()
    cfg = TrainConfig(stream=toy_stream.root, method="sequential", iterations_per_step=5, batch_size=8, warmup=0,
                      workers=0, schedule="const-cosine", name="cc", logs=str(tmp_path), progress=False)
    train_run(cfg, method=method)
    assert method.seen_at_begin == [0, 1, 2, 3] and method.ends == 4
