"""--report-to tensorboard / wandb: training scalars at the global iteration across steps, and the
evaluation matrices and summaries after `ticlip eval`, read back from what the back-ends wrote
(TensorBoard's event file; W&B's offline run file). No network: W&B runs offline."""

import glob
import json
import os

import pytest
from train_helpers import one_thread  # noqa: F401  (autouse fixture)

from ticlip.cli import main
from ticlip.loggers import summary_scalars

def train(stream, logs, *extra):
    return main(["train", "--stream", stream.root, "--logs", str(logs), "--batch-size", "8", "--workers", "0",
                 "--warmup", "0", "--no-progress", "--method", "sequential", "--iterations-per-step", "2",
                 "--steps", "0:1", *extra])


def evaluate(run_dir):
    from ticlip.eval.runner import EvalConfig, evaluate_run

    evaluate_run(str(run_dir), EvalConfig(tasks=["retrieval"], seeds=1, batch_size=64), log=lambda m: None)


@pytest.mark.slow  # trains two toy steps and evaluates them
def test_tensorboard_logs_the_global_iteration_and_the_evaluation(toy_stream, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert train(toy_stream, tmp_path, "--report-to", "tensorboard", "--name", "tb") == 0
    evaluate(tmp_path / "tb")
    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    # two steps of two iterations: the second step continues the axis instead of restarting at 1
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [(e.step, e.value) for e in events.Scalars("train/step")] == [(1, 0), (2, 0), (3, 1), (4, 1)]
    # after evaluation: per model step, the in-domain score E[i, i] and the mean of E's row
    E = json.load(open(tmp_path / "tb" / "eval_summary.json"))["dynamic"]["retrieval"]
    in_domain = events.Scalars("eval/retrieval/in_domain")
    assert [e.step for e in in_domain] == [0, 1]
    assert sum(e.value for e in in_domain) / 2 == pytest.approx(E["in_domain"], abs=1e-6)
    assert events.Scalars("summary/retrieval/backward")[0].value == pytest.approx(E["backward"], abs=1e-6)
    assert "eval/retrieval/matrix/text_summary" in events.Tags()["tensors"]


@pytest.mark.slow  # trains two toy steps and evaluates them, with W&B's service process
def test_wandb_offline_run_holds_the_logged_keys(toy_stream, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
                       "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true",
                       "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
                       "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache")}.items():
        monkeypatch.setenv(key, value)
    assert train(toy_stream, tmp_path, "--report-to", "wandb", "--name", "wb") == 0
    info = json.load(open(tmp_path / "wb" / "run.json"))
    run_id = info["extra"]["wandb_id"]
    evaluate(tmp_path / "wb")
    files = sorted(glob.glob(str(tmp_path / "wb" / "wandb" / "offline-run-*" / f"run-{run_id}.wandb")))
    assert len(files) == 2  # training, then evaluation resuming the same W&B run

    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in records(files[0]) if r.WhichOneof("record_type") == "history"]
    steps = [h["_step"] for h in history if "train/loss" in h]
    assert steps == [1, 2, 3, 4]
    assert [h["train/step"] for h in history if "train/loss" in h] == [0, 0, 1, 1]
    keys = set()
    for r in records(files[1]):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            keys |= {item.key or "/".join(item.nested_key) for item in r.history.item}
        elif kind == "summary":
            keys |= {item.key or "/".join(item.nested_key) for item in r.summary.update}
    kinds = [[r.WhichOneof("record_type") for r in records(f)] for f in files]
    assert "eval/retrieval/matrix/_type" in keys, (kinds, [os.path.getsize(f) for f in files], files)  # a wandb.Table, its rows in files/media (below)
    assert "summary/retrieval/in_domain" in keys and "summary/retrieval/backward" in keys
    tables = glob.glob(os.path.dirname(files[1]) + "/files/media/table/eval/retrieval/matrix_*.table.json")
    table = json.load(open(tables[0]))
    E = json.load(open(tmp_path / "wb" / "eval_summary.json"))["dynamic"]["retrieval"]
    assert table["columns"] == ["model_step", "2019", "2020", "2021", "2022"]
    assert (table["data"][0][1] + table["data"][1][2]) / 2 == pytest.approx(E["in_domain"], abs=1e-6)


def records(path):
    """The protobuf records of a W&B run file (``run-<id>.wandb``). wandb 0.31 no longer ships a Python
    reader (its core is in Go), so this reads the format by hand: a 7-byte header (":W&B", magic,
    version), then LevelDB-log blocks of 32 KiB holding chunks (crc32, length, type: 1 full, 2 first,
    3 middle, 4 last) of serialised ``wandb_internal_pb2.Record``s."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (length == 0 and kind == 0):  # block trailer / zero padding
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(buf)
            buf = b""
            yield rec


def test_summary_scalars_flatten_the_eval_summary():
    summary = {"dynamic": {"retrieval": {"metric": "mean_recall@1", "in_domain": 0.5, "backward": float("nan"),
                                         "chance": [0.1]}},
               "static": {"digits": {"metric": "acc1", "last": 0.7}}, "task_stream": {"ka": 0.3}}
    assert summary_scalars(summary) == {"summary/retrieval/in_domain": 0.5, "summary/digits/last": 0.7,
                                        "summary/task_stream/ka": 0.3}
