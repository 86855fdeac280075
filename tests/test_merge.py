"""The ``merge`` method family (``ticlip.methods.merge``): parameters checked before any work, where each
train_from/deploy choice makes the next step start (and whether const-cosine trains a trunk), the
running merge of each operator step by step, its state across a resume, and the trainer's "trained"
init (``trained.pt`` or the trunk), with merged checkpoints that open_clip loads."""

import io
import json
import os

import pytest
import torch
from train_helpers import one_thread  # noqa: F401  (autouse fixture)

from ticlip.config import TrainConfig
from ticlip.methods import MethodContext, MethodError, check_method_params, get_method
from ticlip.methods import merge_ops as ops
from ticlip.train.schedule import next_step_continues
from ticlip.train.run import train_run

SIZES = [100, 100, 100, 100]


# --------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("params, message", [
    ({"operator": "lerp", "top_k": 0.3}, "parameter top_k is not used by operator lerp"),
    ({"operator": "bogus"}, "operator"),
    ({"train_from": "trained", "deploy": "trained"}, "never uses the merge"),
    ({"train_from": "deployed", "deploy": "trained"}, "never uses the merge"),
    ({"operator": "average", "weights": "1,0"}, "weights must all be > 0"),
    ({"operator": "dare-ties", "drop_rate": 1.0}, "drop_rate"),
    ({"alpha": 2}, "alpha"),
])
def test_bad_parameters_are_one_line_errors(params, message):
    with pytest.raises(MethodError) as e:
        check_method_params("merge", params, source="exp.yaml: method_params.merge")
    text = str(e.value)
    assert message in text and "\n" not in text and text.startswith("exp.yaml: method_params.merge")


def test_parameters_resolve_aliases_and_operator_defaults():
    p = check_method_params("merge", {"operator": "EMA", "train_from": "deployed"}, source="s")
    assert p["operator"] == "lerp" and p["train_from"] == "merge"
    assert check_method_params("merge", {"operator": "task_arithmetic"}, source="s")["scaling"] == 0.5
    assert check_method_params("merge", {"operator": "ties"}, source="s")["scaling"] == 1.0
    # two configurations differ only through their parameters: nothing is shared between instances
    a, b = get_method("merge", operator="ties", top_k=0.1), get_method("merge", operator="slerp", alpha=0.3)
    assert (a.operator, a.top_k, b.operator, b.alpha) == ("ties", 0.1, "slerp", 0.3) and a.params != b.params


@pytest.mark.parametrize("train_from, deploy, init, changes, continues", [
    ("merge", "merge", "previous", True, False),     # Patching / EMA: the next step starts from the merge
    ("trained", "merge", "trained", True, True),     # from the trained weights (the trunk under const-cosine)
    ("initial", "merge", "initial", True, False),    # every step from the run's initial weights
    ("merge", "trained", "previous", True, False),   # deploy the trained model, train from the merge
])
def test_where_the_next_step_starts(train_from, deploy, init, changes, continues):
    m = get_method("merge", train_from=train_from, deploy=deploy)
    assert m.plan(0, SIZES).init == "initial" and m.plan(2, SIZES).init == init
    assert m.end_step_changes_weights is changes
    assert next_step_continues(m, 1, SIZES) is continues and not next_step_continues(m, 3, SIZES)


@pytest.mark.parametrize("params, message", [
    (["operator=tie"], "operator"),
    (["operator=lerp", "drop_rate=0.3"], "drop_rate is not used by operator lerp"),
    (["operator=average", "weights=1,1"], "weights has 2 value"),  # the toy stream has 4 steps
])
def test_the_cli_reaches_merge_by_name_and_refuses_bad_parameters_before_any_work(toy_stream, tmp_path, capsys,
                                                                                     params, message):
    from ticlip.cli import main

    argv = ["train", "--stream", toy_stream.root, "--logs", str(tmp_path), "--no-progress", "--name", "bad",
            "--iterations-per-step", "2", "--warmup", "0", "--method", "merge",
            *[a for p in params for a in ("--method-param", p)]]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "bad").exists()


def test_an_experiment_checks_merge_parameters_before_any_work(toy_stream, tmp_path, capsys):
    import yaml

    from ticlip.cli import main

    d = {"name": "exp", "stream": {"path": toy_stream.root, "source": None},
         "train": {"iterations_per_step": 2, "batch_size": 8, "warmup": 1, "workers": 0, "progress": False},
         "methods": ["merge"], "method_params": {"merge": {"operator": "ties", "alpha": 0.3}}, "seeds": [0],
         "eval": {"tasks": ["retrieval"], "seeds": 1}, "logs": str(tmp_path / "runs")}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(d))
    assert main(["run", str(tmp_path / "e.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "method_params.merge" in err and "alpha is not used by operator ties" in err
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- the running merge
class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(4))
        self.register_buffer("n", torch.tensor([0]))


def states():
    """θ_0..θ_2 ("trained" weights) and the base (the initial weights)."""
    base = {"w": torch.tensor([1.0, 1.0, 1.0, 1.0]), "n": torch.tensor([0])}
    trained = [{"w": torch.tensor([2.0, 0.0, 1.5, -1.0]), "n": torch.tensor([1])},
               {"w": torch.tensor([0.0, -3.0, 1.2, 2.0]), "n": torch.tensor([2])},
               {"w": torch.tensor([3.0, 1.0, 0.0, 1.0]), "n": torch.tensor([3])}]
    return base, trained


def run_steps(method, model, base, trained, start_of=None):
    """Drive begin_step / "training" (load θ_t) / end_step; the model starts step 0 at ``base`` and later
    steps at ``start_of(t, deployed)`` (default: what was deployed). The deployed state per step."""
    deployed, out = base, []
    for t, theta in enumerate(trained):
        model.load_state_dict(base if t == 0 else (start_of(t, deployed) if start_of else deployed))
        ctx = MethodContext(step=t, stream=None, model=model)
        method.begin_step(ctx)
        model.load_state_dict(theta)
        facts = method.end_step(ctx).facts
        deployed = {k: v.clone() for k, v in model.state_dict().items()}
        out.append((deployed, facts))
    return out


def same(a, b):
    return a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_lerp_is_a_running_ema_deployed_and_recorded():
    base, th = states()
    out = run_steps(get_method("merge", operator="lerp", alpha=0.25), Tiny(), base, th)
    m1 = ops.lerp(th[0], th[1], 0.25)
    assert same(out[0][0], th[0]) and same(out[1][0], m1) and same(out[2][0], ops.lerp(m1, th[2], 0.25))
    assert out[2][0]["n"].item() == 3  # integers from the newest model
    facts = out[1][1]
    assert facts["operator"] == "lerp" and facts["deployed"] == "merge" and facts["train_from"] == "merge"
    assert facts["coefficients"] == {"previous_merge": 0.75, "trained": 0.25}
    assert out[0][1]["coefficients"] == {} and facts["merged_steps"] == ["0", "1"]


@pytest.mark.parametrize("method, params", [("merge", {"operator": "lerp", "alpha": 0.25}),
                                             ("ema-merge", {"alpha": 0.25})])
def test_merge_initial_makes_the_initial_weights_the_first_merge(method, params):
    """A pretrained start (FoMo-in-Flux): M_{-1} = the run's initial weights, so step 0 is merged too."""
    base, th = states()
    out = run_steps(get_method(method, merge_initial=True, **params), Tiny(), base, th)
    m0 = ops.lerp(base, th[0], 0.25)
    assert same(out[0][0], m0) and same(out[1][0], ops.lerp(m0, th[1], 0.25))
    off = run_steps(get_method(method, **params), Tiny(), base, th)
    assert same(off[0][0], th[0])  # the default (from scratch, TiC-CLIP's Patching): step 0 is not merged


@pytest.mark.parametrize("operator, params, expected", [
    ("task-arithmetic", {"scaling": 0.5}, lambda b, m, t: ops.task_arithmetic(b, [m, t], 0.5)),
    ("ties", {"top_k": 0.5}, lambda b, m, t: ops.ties(b, [m, t], 0.5, 1.0)),
    ("dare-ties", {"drop_rate": 0.5, "seed": 3}, lambda b, m, t: ops.dare_ties(b, [m, t], 0.5, 1.0, 3 * 1_000_003 + 1)),
    ("slerp", {"alpha": 0.5}, lambda b, m, t: ops.slerp(m, t, 0.5)),
])
def test_task_vectors_are_taken_against_the_runs_initial_weights(operator, params, expected):
    base, th = states()
    out = run_steps(get_method("merge", operator=operator, **params), Tiny(), base, th[:2])
    assert same(out[1][0], expected(base, th[0], th[1]))


def test_average_is_the_offline_merge_of_every_trained_checkpoint():
    base, th = states()
    method = get_method("merge", operator="average", weights="1,1,2,5")
    out = run_steps(method, Tiny(), base, th)
    assert torch.equal(out[2][0]["w"], ops.average(th, [1, 1, 2])["w"])  # same accumulation: bit for bit
    assert out[2][1]["coefficients"] == {"weights": {"0": 0.25, "1": 0.25, "2": 0.5}}
    with pytest.raises(MethodError, match="one weight per step"):
        get_method("merge", operator="average", weights="1,2").estimate_cost(2)


def test_train_from_merge_while_deploying_the_trained_model():
    base, th = states()
    model = Tiny()
    method = get_method("merge", operator="lerp", alpha=0.5, train_from="merge", deploy="trained")
    run_steps(method, model, base, th[:1])
    assert torch.equal(model.state_dict()["w"], th[0]["w"])  # deployed: the trained model
    model.load_state_dict(th[0])  # the trainer starts step 1 from checkpoint.pt (θ_0) ...
    method.begin_step(MethodContext(step=1, stream=None, model=model))
    assert torch.equal(model.w.data, th[0]["w"])  # ... and M_0 = θ_0 is what it trains from
    model.load_state_dict(th[1])
    method.end_step(MethodContext(step=1, stream=None, model=model))
    assert torch.equal(model.w.data, th[1]["w"])
    model.load_state_dict(th[1])
    method.begin_step(MethodContext(step=2, stream=None, model=model))
    assert same(model.state_dict(), ops.lerp(th[0], th[1], 0.5))  # step 2 trains from M_1


def test_train_from_initial_restores_the_runs_initial_weights():
    base, th = states()
    model = Tiny()
    method = get_method("merge", train_from="initial")
    run_steps(method, model, base, th[:1])
    model.load_state_dict(th[2])  # whatever the trainer made (a fresh init without --init)
    method.begin_step(MethodContext(step=1, stream=None, model=model))
    assert torch.equal(model.w.data, base["w"])


def test_the_state_is_weights_only_and_a_resumed_method_merges_the_same():
    base, th = states()
    method = get_method("merge", operator="ties", top_k=0.5, train_from="trained")
    model = Tiny()
    run_steps(method, model, base, th[:2])
    buf = io.BytesIO()
    torch.save(method.state_dict(), buf)
    buf.seek(0)
    restored = get_method("merge", operator="ties", top_k=0.5, train_from="trained")
    restored.load_state_dict(torch.load(buf, weights_only=True))
    for m in (method, restored):
        model.load_state_dict(th[1])
        m.begin_step(MethodContext(step=2, stream=None, model=model))
        model.load_state_dict(th[2])
        m.end_step(MethodContext(step=2, stream=None, model=model))
        if m is method:
            first = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(torch.equal(first[k], model.state_dict()[k]) for k in first)


# --------------------------------------------------------------------------- with the trainer
def config(stream, logs, name, method, params=None, **kw):
    base = dict(stream=stream.root, logs=str(logs), name=name, batch_size=8, workers=0, warmup=1, steps="0:1",
                chunk_iterations=2, save_every_s=0.0, progress=False, method=method, iterations_per_step=3,
                lr=1e-3, method_params=params or {})
    base.update(kw)
    return TrainConfig(**base)


def weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def step_json(run, t):
    return json.loads((run / "steps" / str(t) / "step.json").read_text())


TRAINED_MERGE = {"operator": "lerp", "alpha": 0.5, "train_from": "trained", "deploy": "merge"}


@pytest.mark.slow
def test_train_from_trained_deploying_the_merge(toy_stream, tmp_path):
    train_run(config(toy_stream, tmp_path, "seq", "sequential", steps="0"))
    train_run(config(toy_stream, tmp_path, "m", "merge", TRAINED_MERGE))
    run = tmp_path / "m"
    # step 0 trains like sequential; its trained weights are kept for step 1, which starts from them
    trained0 = weights(run / "steps" / "0" / "trained.pt")
    seq0 = weights(tmp_path / "seq" / "steps" / "0" / "checkpoint.pt")
    assert all(torch.equal(trained0[k], seq0[k]) for k in seq0)
    assert step_json(run, 1)["init"] == "step 0's trained weights (before its end hook)"
    assert step_json(run, 1)["plan"]["init"] == "trained"
    # step 1 deploys lerp(M_0, θ_1) and records it
    m0, m1 = weights(run / "steps" / "0" / "checkpoint.pt"), weights(run / "steps" / "1" / "checkpoint.pt")
    expected = ops.lerp(m0, weights(run / "steps" / "1" / "trained.pt"), 0.5)
    assert all(torch.equal(m1[k], expected[k]) for k in expected)
    facts = step_json(run, 1)["facts"]
    assert facts["operator"] == "lerp" and facts["deployed"] == "merge" and facts["coefficients"]["trained"] == 0.5
    assert step_json(run, 1)["extra_macs"] == 0.0  # merging is not a forward pass


@pytest.mark.parametrize("operator", ["ties", "dare-ties", "slerp", "average"])
def test_a_merged_checkpoint_loads_with_open_clip(tmp_path, operator):
    """The merge of real ticlip-tiny-32 models, deployed by the method and saved as the trainer saves
    checkpoint.pt, loads with open_clip.create_model_and_transforms(pretrained=path)."""
    import open_clip

    from ticlip.models import create_model, register_tiny_models, save_checkpoint

    bundle = create_model("ticlip-tiny-32", seed=0)
    base = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    th = [{k: v.clone() for k, v in create_model("ticlip-tiny-32", seed=s).model.state_dict().items()} for s in (1, 2)]
    run_steps(get_method("merge", operator=operator), bundle.model, base, th)
    path = str(tmp_path / "checkpoint.pt")
    save_checkpoint(bundle.model, path, name="ticlip-tiny-32")
    register_tiny_models()
    model, _, _ = open_clip.create_model_and_transforms("ticlip-tiny-32", pretrained=path)
    saved = weights(path)
    assert all(torch.equal(model.state_dict()[k], saved[k]) for k in saved)
    assert not all(torch.equal(saved[k], th[1][k]) for k in saved)  # it is a merge, not the last model


@pytest.mark.slow
def test_const_cosine_trains_from_the_trunk_when_training_from_the_trained_weights(toy_stream, tmp_path):
    cc = dict(schedule="const-cosine", decay_fraction=0.4, iterations_per_step=5)
    train_run(config(toy_stream, tmp_path, "cc", "merge", TRAINED_MERGE, **cc))
    run = tmp_path / "cc"
    assert (run / "steps" / "0" / "continue.pt").exists() and not (run / "steps" / "0" / "trained.pt").exists()
    assert step_json(run, 1)["init"] == "step 0's constant-LR trunk"
    assert step_json(run, 0)["budget"]["extra_macs_estimate"] > 0  # the trunk is charged
    train_run(config(toy_stream, tmp_path, "cm", "merge", {"train_from": "merge"}, **cc))
    assert not (tmp_path / "cm" / "steps" / "0" / "continue.pt").exists()  # the next step starts from the merge
    assert step_json(tmp_path / "cm", 0)["budget"]["extra_macs_estimate"] == 0.0


class Crash(RuntimeError):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("where", ["training", "merge"])
def test_a_crash_then_resume_gives_the_same_checkpoints(toy_stream, tmp_path, where):
    from ticlip.methods.merge import Merge

    train_run(config(toy_stream, tmp_path, "ref", "merge", TRAINED_MERGE))
    method = Merge(**TRAINED_MERGE)
    calls = [0]
    if where == "merge":  # dies inside step 1's end hook: trained.pt written, the checkpoint not yet
        original = method.end_step

        def end_step(ctx):
            if ctx.step == 1:
                raise Crash("inside the merge")
            return original(ctx)

        method.end_step = end_step
    else:  # dies on the 6th batch (step 1's third, after the state saved at its second)
        def extra_loss(*args, **kwargs):
            calls[0] += 1
            if calls[0] > 5:
                raise Crash("mid-step")

        method.extra_loss = extra_loss
    cfg = config(toy_stream, tmp_path, "crashed", "merge", TRAINED_MERGE)
    with pytest.raises(Crash):
        train_run(cfg, method=method)
    assert os.path.exists(tmp_path / "crashed" / "steps" / "1" / "state.pt")
    train_run(cfg, resume=True)
    for t in ("0", "1"):
        for name in ("checkpoint.pt", "trained.pt"):
            a, b = weights(tmp_path / "ref" / "steps" / t / name), weights(tmp_path / "crashed" / "steps" / t / name)
            assert all(torch.equal(a[k], b[k]) for k in a), (t, name)


# --------------------------------------------------------------------------- Patching and EMA as before
# The code before the merge family: commit 5119487 (the last one before issue 12), taken from this
# checkout's git history (a clean clone has it), or a directory given in TICLIP_PRE12_SRC.
PRE12_COMMIT = "5119487"


@pytest.fixture(scope="module")
def pre12_src(tmp_path_factory):
    given = os.environ.get("TICLIP_PRE12_SRC")
    if given:
        return given
    import subprocess

    import ticlip

    repo = os.path.dirname(os.path.dirname(os.path.dirname(ticlip.__file__)))
    out = tmp_path_factory.mktemp("pre12")
    archive = subprocess.run(["git", "-C", repo, "archive", PRE12_COMMIT, "src"], capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"commit {PRE12_COMMIT} (the code before the merge family) is not in this checkout's history")
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return str(out / "src")


@pytest.mark.slow
@pytest.mark.parametrize("method, extra", [
    ("patching", ["--method-param", "alphas=0,0.5,1"]),
    ("ema-merge", ["--method-param", "alpha=0.3", "--schedule", "const-cosine", "--decay-fraction", "0.4"]),
])
def test_patching_and_ema_merge_give_the_same_weights_as_before_the_family(toy_stream, tmp_path, method, extra,
                                                                           pre12_src):
    """The same tiny run trained by the code before this family (commit ``PRE12_COMMIT`` from git, or
    ``TICLIP_PRE12_SRC``) and by this one, each in its own process: identical checkpoints, bit for bit."""
    import subprocess
    import sys

    import ticlip

    here = os.path.dirname(os.path.dirname(ticlip.__file__))
    args = ["train", "--stream", toy_stream.root, "--logs", str(tmp_path), "--method", method, "--iterations-per-step",
            "5", "--batch-size", "8", "--workers", "0", "--warmup", "1", "--steps", "0:2", "--no-progress",
            "--threads", "1", *extra]
    for name, src in (("before", pre12_src), ("now", here)):
        env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        done = subprocess.run([sys.executable, "-m", "ticlip.cli", *args, "--name", name], env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    for t in ("0", "1", "2"):
        a = weights(tmp_path / "before" / "steps" / t / "checkpoint.pt")
        b = weights(tmp_path / "now" / "steps" / t / "checkpoint.pt")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), t
        assert step_json(tmp_path / "before", int(t))["facts"] == step_json(tmp_path / "now", int(t))["facts"]
    assert step_json(tmp_path / "now", 1)["facts"]["alpha"] in ((0.0, 0.5, 1.0) if method == "patching" else (0.3,))


@pytest.mark.slow
def test_the_step_cache_keys_a_step_on_the_weights_it_really_starts_from(toy_stream, tmp_path):
    """train_from=merge with deploy=trained: the trainer loads step t-1's checkpoint (θ_{t-1}, as
    Sequential would) and begin_step swaps in M_{t-1}. Step 1 (M_0 = θ_0) trains exactly like
    Sequential's and is reused; step 2 (M_1 ≠ θ_1) is not, and matches the run without a cache."""
    cache = str(tmp_path / "cache")
    params = {"operator": "lerp", "alpha": 0.5, "train_from": "merge", "deploy": "trained"}
    train_run(config(toy_stream, tmp_path, "seq", "sequential", steps="0:2", step_cache=cache))
    train_run(config(toy_stream, tmp_path, "m", "merge", params, steps="0:2", step_cache=cache))
    train_run(config(toy_stream, tmp_path, "alone", "merge", params, steps="0:2"))
    reused = [step_json(tmp_path / "m", t)["step_cache"]["reused"] for t in range(3)]
    assert reused == [True, True, False]
    for t in ("0", "1", "2"):
        a, b = weights(tmp_path / "m" / "steps" / t / "checkpoint.pt"), weights(tmp_path / "alone" / "steps" / t /
                                                                                 "checkpoint.pt")
        assert all(torch.equal(a[k], b[k]) for k in a), t
    s2 = weights(tmp_path / "seq" / "steps" / "2" / "checkpoint.pt")
    m2 = weights(tmp_path / "m" / "steps" / "2" / "checkpoint.pt")
    assert not all(torch.equal(s2[k], m2[k]) for k in s2)
