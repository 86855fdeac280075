import json
import os

import pytest
import yaml

from ticlip.cli import main
from ticlip.config import ConfigError
from ticlip.experiment import ExperimentConfig, expand, load_experiment, preset_path


def _write(path, d):
    path.write_text(yaml.safe_dump(d))
    return str(path)


def _exp(stream_path, **kw):
    d = {
        "name": "exp",
        "stream": {"path": stream_path, "source": None},
        "train": {"iterations_per_step": 2, "batch_size": 8, "warmup": 1, "workers": 0, "progress": False},
        "methods": ["sequential", "cumulative-all"],
        "seeds": [0],
        "eval": {"tasks": ["retrieval"], "seeds": 1},
    }
    d.update(kw)
    return d


def test_expand_is_methods_x_seeds_x_sweep(tmp_path):
    exp = ExperimentConfig.from_dict(_exp("s", seeds=[0, 1], sweep={"lr": [1e-3, 5e-4]}, logs=str(tmp_path)))
    runs = expand(exp)
    assert len(runs) == 2 * 2 * 2
    names = {r.name for r in runs}
    assert "sequential-lr0.001-s0" in names and "cumulative-all-lr0.0005-s1" in names
    r = next(r for r in runs if r.name == "cumulative-all-lr0.0005-s1")
    assert r.config.lr == 5e-4 and r.config.seed == 1 and r.config.method == "cumulative-all"
    assert r.run_dir == os.path.join(str(tmp_path), "exp", "cumulative-all-lr0.0005-s1")


def test_single_valued_sweep_does_not_change_names(tmp_path):
    exp = ExperimentConfig.from_dict(_exp("s", sweep={"lr": [1e-3]}))
    assert [r.name for r in expand(exp)] == ["sequential-s0", "cumulative-all-s0"]


def test_variants_configure_a_method_under_their_own_name(tmp_path):
    """A variant names a method with its own parameters and training settings; its runs carry its name as
    their label, the experiment's method_params and train settings sit underneath, and a sweep goes on top."""
    exp = ExperimentConfig.from_dict(_exp(
        "s", logs=str(tmp_path), methods=["sequential", "ema-fast", "ema-slow"], sweep={"lr": [1e-3]},
        method_params={"ema-merge": {"alpha": 0.3}},
        variants={"ema-fast": {"method": "ema-merge", "params": {"alpha": 0.9}, "train": {"schedule": "constant"}},
                  "ema-slow": {"method": "ema-merge", "train": {"warmup": 2}}}))
    runs = {r.name: r.config for r in expand(exp)}
    assert list(runs) == ["sequential-s0", "ema-fast-s0", "ema-slow-s0"]
    fast, slow, seq = runs["ema-fast-s0"], runs["ema-slow-s0"], runs["sequential-s0"]
    assert (fast.method, fast.method_params, fast.schedule, fast.label) == ("ema-merge", {"alpha": 0.9}, "constant",
                                                                           "ema-fast")
    assert (slow.method, slow.method_params, slow.warmup, slow.schedule) == ("ema-merge", {"alpha": 0.3}, 2, "cosine")
    assert seq.label is None and seq.warmup == 1 and fast.warmup == 1


@pytest.mark.parametrize(
    "variants, message",
    [
        ({"v": {"params": {}}}, "variants.v.method: Field required"),
        ({"v": {"method": "sequential", "train": {"seed": 1}}}, "variants.v.train.*experiment's own keys"),
        ({"v": {"method": "sequential", "train": {"lrr": 1}}}, "'lrr' is not a training setting"),
        ({"v": {"method": "sequential", "extra": 1}}, "unknown key 'variants.v.extra'"),
    ],
)
def test_variant_schema_errors(variants, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig.from_dict(_exp("s", methods=["v"], variants=variants), source="e.yaml")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"methods": ["v"], "variants": {"v": {"method": "sequental"}}}, "unknown method.*sequental"),
        ({"methods": ["sequential"], "variants": {"sequential": {"method": "lwf"}}}, "variants: sequential is the "
                                                                                       "name of a method"),
        ({"methods": ["v"], "variants": {"v": {"method": "lwf", "params": {"lamda": 1}}}}, "variants.v.params.*lamda"),
        ({"methods": ["w"], "variants": {"v": {"method": "lwf"}}}, "unknown method.*w; known.*variants: v"),
    ],
)
def test_variant_errors_before_anything_runs(toy_stream, change, message):
    from ticlip.experiment import validate_experiment

    with pytest.raises(ConfigError, match=message):
        validate_experiment(ExperimentConfig.from_dict(_exp(toy_stream.root, **change)), source="e.yaml")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"train": {"learning_rate": 1}}, "train: 'learning_rate' is not a training setting"),
        ({"train": {"seed": 3}}, "experiment's own keys"),
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"seeds": []}, "seeds: List should have at least 1 item"),
        ({"seeds": "x"}, "seeds.0: .*valid integer.*'x'"),
        ({"sweep": {"lr": 1e-3}}, "sweep.lr: Input should be a valid list"),
        ({"sweep": {"lr": []}}, "non-empty list"),
        ({"stream": {"path": "x", "sorce": "emoji"}}, "unknown key 'stream.sorce'"),
        ({"parallel": 0}, "parallel: .*greater than or equal to 1"),
    ],
)
def test_config_errors(change, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig.from_dict(_exp("s", **change), source="e.yaml")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"methods": ["sequental"]}, "unknown method"),
        ({"eval": {"taks": ["retrieval"]}}, "eval: unknown key 'taks'"),
        ({"eval": {"tasks": ["retreival"]}}, "retreival"),
        ({"eval": {"seeds": "many"}}, "eval: seeds"),
        ({"eval": {"enabled": "sometimes"}}, "eval.enabled"),
        ({"method_params": {"lwf": {"lamda": 1}}}, "method_params.lwf.*lamda"),
        ({"method_params": {"ewc": {"lam": "strong"}}}, "method_params.ewc.*lam"),
        ({"method_params": {"nope": {}}}, "unknown method"),
        ({"train": {"model": "no-such-model"}}, "no-such-model"),
        ({"train": {"init": "missing.pt"}}, "missing.pt"),
        ({"train": {"warmup": -1}}, "warmup"),
        ({"train": {"warmup": 5}}, "run sequential-s0: warmup of 5 iterations does not fit a step of 2"),
        ({"train": {"steps": "7:9"}}, "steps"),
        ({"reference": "oracle"}, "reference: 'oracle' is not among the methods"),
        ({"stream": {"path": "NEW", "source": "no-such-source"}}, "no-such-source"),
        ({"stream": {"path": "NEW", "source": "emoji", "options": {"fnot": "x"}}}, "fnot"),
        ({"stream": {"path": "NEW", "source": "emoji", "build": {"eval_fraktion": 0.1}}}, "eval_fraktion"),
    ],
)
def test_run_checks_every_section_before_writing_anything(toy_stream, tmp_path, capsys, change, message):
    """A mistake in any section costs seconds: one line naming it, and nothing written."""
    import re
    import time

    logs = tmp_path / "runs"
    d = _exp(toy_stream.root, logs=str(logs))
    for key, value in change.items():
        if key == "stream":
            value = {**value, "path": str(tmp_path / "new-stream")}
        elif key == "train":
            value = {**d["train"], **value}
        d[key] = value
    cfg = _write(tmp_path / "e.yaml", d)
    t0 = time.time()
    assert main(["run", cfg]) == 2
    err = capsys.readouterr().err.strip()
    assert re.search(message, err), err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert not logs.exists() and not (tmp_path / "new-stream").exists()
    assert time.time() - t0 < 30


def test_overrides_reach_keys_spelt_with_dashes(tmp_path):
    """Names with dashes (a method under method_params, a variant) are reached as written; settings
    still accept dashes for underscores."""
    d = _exp("s", method_params={"cumulative-exp": {"seed": 1}}, variants={"my-v": {"method": "lwf"}})
    exp = load_experiment(_write(tmp_path / "e.yaml", d), [
        "method_params.cumulative-exp.seed=2", "variants.my-v.params.lam=3", "train.warmup-later=4"])
    assert exp.method_params == {"cumulative-exp": {"seed": 2}}
    assert exp.variants["my-v"].params == {"lam": 3} and exp.train["warmup_later"] == 4


def test_overrides_and_presets(tmp_path):
    path = _write(tmp_path / "e.yaml", _exp("s"))
    exp = load_experiment(path, ["train.lr=0.01", "seeds=[3, 4]", "stream.path=elsewhere"])
    assert exp.train["lr"] == 0.01 and exp.seeds == [3, 4] and exp.stream.path == "elsewhere"
    for preset in ["emoji-cpu", "emoji-fomo", "fomo-cpu", "synthetic-monthly", "tic-yfcc", "tic-redcaps", "tic-datacomp-medium", "tic-datacomp-large",
                   "tic-datacomp-xlarge"]:
        exp = load_experiment(preset_path(preset))
        assert expand(exp), preset
    with pytest.raises(ConfigError, match="no config file or preset"):
        preset_path("no-such-preset")


@pytest.mark.slow
def test_run_end_to_end_three_methods(toy_stream, tmp_path, capsys):
    logs = str(tmp_path / "runs")
    cfg = _write(tmp_path / "e.yaml", _exp(toy_stream.root, methods=["sequential", "cumulative-all", "patching"],
                                            logs=logs, reference="sequential"))
    assert main(["run", cfg]) == 0
    out = capsys.readouterr().out
    assert "Difference to sequential" in open(os.path.join(logs, "exp", "table.md")).read()  # the named reference
    for m in ("sequential", "cumulative-all", "patching"):
        assert m in out
        run_dir = os.path.join(logs, "exp", f"{m}-s0")
        info = json.load(open(os.path.join(run_dir, "run.json")))
        assert [s["finished"] for s in info["steps"]] == [True] * 4
        assert os.path.exists(os.path.join(run_dir, "matrix_retrieval.csv"))
        assert os.path.exists(os.path.join(run_dir, "config.yaml"))
    assert os.path.exists(os.path.join(logs, "exp", "report.html"))
    assert "report: " in out
    # a second run skips finished runs and gives the same table
    mtime = os.path.getmtime(os.path.join(logs, "exp", "sequential-s0", "steps", "3", "checkpoint.pt"))
    assert main(["run", cfg]) == 0
    out2 = capsys.readouterr().out
    assert "0 trained now, 3 already finished" in out2
    assert os.path.getmtime(os.path.join(logs, "exp", "sequential-s0", "steps", "3", "checkpoint.pt")) == mtime
    # the same config and seed under another name gives the same numbers
    assert main(["run", cfg, "--methods", "sequential", "--name", "again", "--no-report"]) == 0
    capsys.readouterr()
    first = open(os.path.join(logs, "exp", "sequential-s0", "matrix_retrieval.csv")).read()
    assert open(os.path.join(logs, "again", "sequential-s0", "matrix_retrieval.csv")).read() == first
    # compare prints the same table from the experiment directory
    assert main(["compare", os.path.join(logs, "exp")]) == 0
    table = capsys.readouterr().out
    assert "cumulative-all" in table and "patching" in table


def test_run_errors(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "no config file or preset" in capsys.readouterr().err
    cfg = _write(tmp_path / "e.yaml", _exp(str(tmp_path / "nostream")))
    assert main(["run", cfg]) == 2
    assert "no stream" in capsys.readouterr().err
    assert main(["compare", str(tmp_path)]) == 2
    assert "holds no ticlip runs" in capsys.readouterr().err


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    from ticlip.config import TrainConfig

    path = tmp_path / "t.yaml"
    path.write_text("total_macs: 3.4e18\nbatch_size: '128'\nlr: 1e-3\n")
    cfg = TrainConfig.from_yaml(str(path))
    assert cfg.total_macs == 3.4e18 and cfg.batch_size == 128 and cfg.lr == 1e-3
    path.write_text("lr: fast\n")
    with pytest.raises(ConfigError, match=r"t.yaml: lr: .*valid number.*'fast'"):
        TrainConfig.from_yaml(str(path))
