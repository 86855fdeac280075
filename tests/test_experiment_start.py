"""Experiments that make their pretrained start (``start:``) and build the other streams their methods
read (``pools:``): refused in one line before any work when they cannot, made once and reused."""

import os

import pytest
import yaml
from train_helpers import one_thread  # noqa: F401  (autouse fixture)

from ticlip.cli import main
from ticlip.pretrained import START_MODEL


def write_experiment(tmp_path, toy_stream, **over) -> str:
    d = {"name": "exp", "stream": {"path": toy_stream.root, "source": None},
         "train": {"model": START_MODEL, "init": str(tmp_path / "starts" / "start.pt"), "iterations_per_step": 1,
                   "batch_size": 4, "warmup": 0, "workers": 0, "progress": False, "steps": "0:1"},
         "start": {"pool": "synthetic", "max_pairs": 16, "views": 1, "steps": 2, "batch_size": 8},
         "methods": ["sequential"], "seeds": [0], "eval": {"enabled": False}, "report": False,
         "logs": str(tmp_path / "runs")}
    for key, value in over.items():
        section, _, sub = key.partition(".")
        if sub:
            d[section][sub] = value
        elif value is None:
            d.pop(section)
        else:
            d[section] = value
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(d))
    return str(path)


@pytest.mark.parametrize("over, message", [
    ({"train.init": None}, "start: needs one train.init for every run"),
    ({"train.model": "ticlip-tiny-32"}, f"start: makes model {START_MODEL}, but train.model is ticlip-tiny-32"),
    ({"start": {"out": "x.pt"}}, "start.out: the start is written to train.init"),
    ({"start": {"steps": 0}}, "steps"),
    ({"pools": [{"path": "nowhere/pool", "source": None}]}, "no stream at nowhere/pool and no 'pools[0].source'"),
])
def test_a_start_or_pool_that_cannot_be_made_is_one_line_before_any_work(toy_stream, tmp_path, capsys, over,
                                                                         message):
    assert main(["run", write_experiment(tmp_path, toy_stream, **over)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "starts").exists()


@pytest.mark.slow
def test_the_experiment_makes_the_start_and_the_pool_then_trains_from_them(toy_stream, tmp_path):
    """The start is made once (a second run finds it), the pool stream is built, and the mixture's runs
    read it; every run starts from the start's weights."""
    import torch

    pool = tmp_path / "pool"
    path = write_experiment(
        tmp_path, toy_stream, pools=[{"path": str(pool), "source": "synthetic", "options": {"num_pairs": 64},
                                      "build": {"eval_size": 8, "validation_size": 0}}],
        methods=["sequential", "mixture"], method_params={"mixture": {"pool_stream": str(pool)}})
    assert main(["run", path]) == 0
    start = tmp_path / "starts" / "start.pt"
    assert start.exists() and (pool / "stream.json").exists()
    made = os.path.getmtime(start)
    run = tmp_path / "runs" / "exp" / "mixture-s0"
    step = yaml.safe_load((run / "steps" / "0" / "step.json").read_text())
    assert step["mixture"]["pairs_drawn"]["pool"] > 0
    a = torch.load(start, map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(run / "steps" / "0" / "checkpoint.pt", map_location="cpu", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)  # trained from it
    assert main(["run", path]) == 0 and os.path.getmtime(start) == made  # found, not made again
