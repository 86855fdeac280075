"""Streams in object storage (``ticlip.data.remote``): train and evaluate from ``memory://`` and from
``s3://`` on a local S3-compatible server (moto's server mode on 127.0.0.1, credentials and endpoint
from the standard AWS environment variables, as s3fs/botocore read them), with the same results as
from the local copy; a missing fsspec back-end and a URL as build output are one line each."""

import importlib
import logging
import os
import socket
import sys
import uuid

import pytest
import torch
from train_helpers import one_error_line, one_thread  # noqa: F401  (autouse fixture)

from ticlip.cli import main
from ticlip.data.stream import TimeStream

MODEL = "ticlip-tiny-32"


def train_args(stream: str, logs, name: str, *extra) -> list[str]:
    return ["train", "--stream", stream, "--logs", str(logs), "--batch-size", "8", "--warmup", "0", "--no-progress",
            "--iterations-per-step", "2", "--steps", "0:0", "--method", "sequential", "--name", name, *extra]


def trained(logs, name: str) -> dict:
    return torch.load(os.path.join(logs, name, "steps", "0", "checkpoint.pt"), weights_only=True)["state_dict"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def eval_row(root: str, checkpoint: str, out) -> list[str]:
    assert main(["eval", "--checkpoint", checkpoint, "--model", MODEL, "--stream", root, "--out", str(out),
                 "--tasks", "retrieval", "--no-progress"]) == 0
    return (out / "matrix_retrieval.csv").read_text().splitlines()


@pytest.fixture(scope="module")
def local_runs(toy_stream, tmp_path_factory):
    """Step 0 of the toy stream trained from its local directory (the references), with no DataLoader
    worker and with two."""
    logs = tmp_path_factory.mktemp("local")
    for workers in ("0", "2"):
        args = train_args(toy_stream.root, logs, f"w{workers}", "--workers", workers, "--memory-limit-mb", "0")
        assert main(args) == 0
    return str(logs)


def memory_copy(root: str) -> str:
    import fsspec

    url = f"memory://streams/{uuid.uuid4().hex}"
    fsspec.filesystem("memory").put(root, url, recursive=True)
    return url


def test_a_memory_stream_reads_like_its_local_copy(toy_stream):
    url = memory_copy(toy_stream.root)
    stream = TimeStream.load(url)
    assert stream.root == url and stream.train_urls(1)[0].startswith(url + "/steps/")

    def first_pairs(s, n=20):
        it = iter(s.train_pipeline([1, 2], seed=3, shuffle=8))
        return [next(it) for _ in range(n)]

    for (a_img, a_txt), (b_img, b_txt) in zip(first_pairs(stream), first_pairs(toy_stream)):
        assert a_txt == b_txt and a_img.tobytes() == b_img.tobytes()
    remote, local = stream.eval_set(2), toy_stream.eval_set(2)
    assert remote.captions == local.captions and len(remote) == 16
    assert [p.key for p in stream.train_index(0)] == [p.key for p in toy_stream.train_index(0)]


@pytest.mark.slow
def test_a_memory_stream_trains_and_evaluates_like_its_local_copy(toy_stream, local_runs, tmp_path):
    url = memory_copy(toy_stream.root)
    assert main(train_args(url, tmp_path, "r", "--workers", "0", "--memory-limit-mb", "0")) == 0
    assert same_weights(trained(tmp_path, "r"), trained(local_runs, "w0"))
    checkpoint = os.path.join(local_runs, "w0", "steps", "0", "checkpoint.pt")
    assert eval_row(url, checkpoint, tmp_path / "mem") == eval_row(toy_stream.root, checkpoint, tmp_path / "local")


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on a free port of 127.0.0.1; fake credentials and the endpoint in the environment."""
    s3fs = pytest.importorskip("s3fs", reason="install ticlip[s3] (the dev extra has it)")
    server_mod = pytest.importorskip("moto.server", reason="install moto[server] (the dev extra has it)")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        mp.delenv("AWS_PROFILE", raising=False)
        s3fs.S3FileSystem.clear_instance_cache()  # none made with another endpoint
        yield s3fs.S3FileSystem()
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


@pytest.mark.slow
def test_an_s3_stream_trains_and_evaluates_like_its_local_copy(s3_server, toy_stream, local_runs, tmp_path):
    s3_server.mkdir("ticlip-test")
    s3_server.put(toy_stream.root + "/", "ticlip-test/toy/", recursive=True)
    url = "s3://ticlip-test/toy"
    # two DataLoader workers: each forked worker opens the shards through its own s3fs client
    assert main(train_args(url, tmp_path, "r", "--workers", "2", "--memory-limit-mb", "0")) == 0
    assert same_weights(trained(tmp_path, "r"), trained(local_runs, "w2"))
    checkpoint = os.path.join(local_runs, "w2", "steps", "0", "checkpoint.pt")
    assert eval_row(url, checkpoint, tmp_path / "s3") == eval_row(toy_stream.root, checkpoint, tmp_path / "local")


def test_a_missing_backend_is_one_line_saying_what_to_install(tmp_path, capsys, monkeypatch):
    if _importable("gcsfs"):  # gcsfs is no dependency of ticlip: gs:// has no back-end here
        pytest.skip("gcsfs is installed")
    assert main(["train", "--stream", "gs://bucket/stream", "--logs", str(tmp_path), "--no-progress",
                 "--iterations-per-step", "1"]) == 2
    assert "pip install gcsfs to read gs:// URLs" in one_error_line(capsys, "train")
    # s3fs made unimportable for real: the same line names the extra
    monkeypatch.setitem(sys.modules, "s3fs", None)
    monkeypatch.delitem(importlib.import_module("fsspec.registry")._registry, "s3", raising=False)
    assert main(["data", "info", "s3://bucket/stream"]) == 2
    line = one_error_line(capsys, "data")
    assert "install ticlip[s3]" in line and "s3://bucket/stream/stream.json" in line


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_a_manifest_naming_shards_without_a_backend_is_refused_at_load(toy_stream, tmp_path, monkeypatch):
    from ticlip.data.remote import MissingBackend

    manifest = toy_stream.to_dict()
    manifest["steps"][0]["train"]["shards"] = ["s3://bucket/train-000000.tar"]
    monkeypatch.setitem(sys.modules, "s3fs", None)
    monkeypatch.delitem(importlib.import_module("fsspec.registry")._registry, "s3", raising=False)
    with pytest.raises(MissingBackend, match=r"step '2019' train: s3://bucket/train-000000.tar .* ticlip\[s3\]"):
        TimeStream.from_dict(manifest, root=str(tmp_path))


def test_a_url_as_build_output_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["data", "build", "synthetic", "--out", "s3://bucket/stream"]) == 2
    line = one_error_line(capsys, "data")
    assert "--out must be a local directory" in line and "aws s3 cp --recursive" in line
    assert os.listdir(tmp_path) == []  # no ./s3:/bucket/stream made by the lock or the builder


def test_a_table_at_a_url_builds_the_same_stream_as_its_local_copy(tmp_path):
    import fsspec
    from test_build import captions, image_rows, write_csv

    rows = image_rows(tmp_path, 12, ["2019", "2020", "2021"])
    for r in rows:  # relative to the table: at a URL they resolve to URLs beside it
        r["image"] = os.path.relpath(r["image"], tmp_path)
    write_csv(tmp_path / "pairs.csv", rows, ("uid", "image", "caption", "timestamp"))
    url = f"memory://tables/{uuid.uuid4().hex}"
    fsspec.filesystem("memory").put(str(tmp_path), url, recursive=True)
    built = {}
    for name, table in (("local", str(tmp_path / "pairs.csv")), ("url", f"{url}/pairs.csv")):
        assert main(["data", "build", table, "--out", str(tmp_path / name), "--quiet", "--eval-size", "0",
                     "--validation-size", "0"]) == 0
        built[name] = TimeStream.load(str(tmp_path / name))
    assert built["url"].labels == built["local"].labels == ["2019", "2020", "2021"]
    assert captions(built["url"]) == captions(built["local"]) and len(captions(built["url"])) == 12
    assert built["url"].provenance["source_params"]["table"] == f"{url}/pairs.csv"  # the URL, not ./memory:/...
