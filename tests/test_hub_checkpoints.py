"""Hub checkpoints (``ticlip.hub``): ``--init`` and ``eval --checkpoint`` take ``hf-hub:ORG/REPO[/FILE]``
and open_clip ``MODEL:TAG`` names, resolved in a Hugging Face cache the test lays out itself
(``models--ORG--REPO/snapshots/<sha>/...`` + ``refs/main``), offline (HF_HUB_OFFLINE=1)."""

import json
import os

import pytest
import torch
from train_helpers import one_error_line, one_thread  # noqa: F401  (autouse fixture)

from ticlip.cli import main
from ticlip.models import create_model, model_config, read_checkpoint, save_checkpoint

MODEL = "ticlip-tiny-32"
SHA = "0123456789abcdef0123456789abcdef01234567"


def hub_repo(cache, repo: str, files: dict[str, object]) -> str:
    """Lay out ``repo`` in a Hugging Face cache as huggingface_hub does; returns its snapshot dir.
    ``files`` maps a file name to a model (written as a checkpoint or safetensors) or bytes."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / SHA
    for name, content in files.items():
        path = snap / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif name.endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in content.state_dict().items()}, str(path))
        else:
            save_checkpoint(content, str(path), name=MODEL)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(SHA)
    return str(snap)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An offline Hugging Face cache holding org/tiny (open_clip's layout: .bin + config) and
    org/tiny-safe (safetensors), both the weights of a seed-5 tiny model, and org/tic (a TiC-CLIP-like
    repo with checkpoints/2016.pt)."""
    model = create_model(MODEL, seed=5).model
    d = tmp_path / "hf"
    config = json.dumps({"model_cfg": model_config(MODEL), "preprocess_cfg": {}}).encode()
    hub_repo(d, "org/tiny", {"open_clip_pytorch_model.bin": model, "open_clip_config.json": config})
    hub_repo(d, "org/tiny-safe", {"open_clip_model.safetensors": model, "open_clip_config.json": config})
    hub_repo(d, "org/tic", {"checkpoints/2016.pt": model})
    monkeypatch.setenv("HF_HUB_CACHE", str(d))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    local = str(tmp_path / "local.pt")
    save_checkpoint(model, local, name=MODEL)
    return local, model.state_dict()


@pytest.mark.parametrize("name", ["hf-hub:org/tiny", "hf-hub:org/tiny-safe", "hf-hub:org/tic/checkpoints/2016.pt"])
def test_hub_names_read_the_cached_weights(cache, name):
    _, expected = cache
    obj = read_checkpoint(name)
    state = obj.get("state_dict", obj)
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    b = create_model(MODEL, init=name)  # and a model starts from them
    assert torch.equal(b.model.state_dict()["logit_scale"], expected["logit_scale"])


def test_train_from_a_hub_checkpoint_equals_training_from_the_file(cache, toy_stream, tmp_path):
    local, _ = cache

    def train(name, init):
        assert main(["train", "--stream", toy_stream.root, "--logs", str(tmp_path), "--batch-size", "8",
                     "--workers", "0", "--warmup", "0", "--no-progress", "--iterations-per-step", "1",
                     "--steps", "0:0", "--method", "sequential", "--name", name, "--init", init]) == 0
        return torch.load(tmp_path / name / "steps" / "0" / "checkpoint.pt", weights_only=True)["state_dict"]

    hub, file = train("hub", "hf-hub:org/tiny"), train("file", local)
    assert all(torch.equal(hub[k], file[k]) for k in file)
    info = json.loads((tmp_path / "hub" / "run.json").read_text())
    assert info["init"] == "hf-hub:org/tiny" and info["init_fingerprint"]  # pinned: resume checks the cached file
    from ticlip.config import TrainConfig
    from ticlip.hub import resolve
    from ticlip.train.run import RunRefused, load_pinned_inputs

    cfg = TrainConfig.from_yaml(str(tmp_path / "hub" / "config.yaml"))
    assert load_pinned_inputs(cfg, str(tmp_path / "hub"))[0].init == "hf-hub:org/tiny"
    with open(resolve("hf-hub:org/tiny"), "r+b") as f:  # the cached file is replaced by other bytes
        f.write(b"\0")
    with pytest.raises(RunRefused, match="hf-hub:org/tiny changed since the run started"):
        load_pinned_inputs(cfg, str(tmp_path / "hub"))


def test_eval_a_hub_checkpoint_equals_the_file(cache, toy_stream, tmp_path):
    local, _ = cache
    out = {}
    for name, ckpt in (("hub", "hf-hub:org/tiny-safe"), ("file", local)):
        assert main(["eval", "--checkpoint", ckpt, "--model", MODEL, "--stream", toy_stream.root, "--out",
                     str(tmp_path / name), "--tasks", "retrieval", "--no-progress"]) == 0
        out[name] = (tmp_path / name / "matrix_retrieval.csv").read_text().splitlines()
    assert out["hub"][0] == out["file"][0] and out["hub"][1].split(",")[1:] == out["file"][1].split(",")[1:]
    assert out["hub"][1].startswith("tiny-safe,") and out["file"][1].startswith("local,")


def test_offline_and_not_cached_is_one_line_saying_how_to_fetch_it(cache, toy_stream, tmp_path, capsys):
    assert main(["train", "--stream", toy_stream.root, "--logs", str(tmp_path), "--no-progress",
                 "--iterations-per-step", "1", "--init", "hf-hub:org/missing"]) == 2
    line = one_error_line(capsys, "train")
    assert "hf download org/missing open_clip_model.safetensors" in line and "HF_HUB_OFFLINE" in line
    assert main(["eval", "--checkpoint", "hf-hub:org/tic/checkpoints/2099.pt", "--model", MODEL, "--stream",
                 toy_stream.root, "--out", str(tmp_path / "e")]) == 2
    assert "hf download org/tic checkpoints/2099.pt" in one_error_line(capsys, "eval")


def test_open_clip_tags_resolve_through_open_clips_table(cache, toy_stream, tmp_path, capsys):
    from ticlip.hub import HubError, resolve

    # open_clip's table: ViT-B-32:laion2b_s34b_b79k lives in laion/CLIP-ViT-B-32-laion2B-s34B-b79K
    snap = hub_repo(tmp_path / "hf", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", {"open_clip_pytorch_model.bin": b"x"})
    assert resolve("ViT-B-32:laion2b_s34b_b79k") == os.path.join(snap, "open_clip_pytorch_model.bin")
    with pytest.raises(HubError, match="hf download laion/CLIP-ViT-B-16-laion2B-s34B-b88K"):
        resolve("ViT-B-16:laion2b_s34b_b88k")  # not cached, offline
    with pytest.raises(HubError, match="its tags: .*laion2b_s34b_b79k"):
        resolve("ViT-B-32:nope")
    # the tag names its model: another --model is refused before anything loads
    assert main(["train", "--stream", toy_stream.root, "--init", "ViT-B-32:laion2b_s34b_b79k", "--model", MODEL,
                 "--iterations-per-step", "1", "--logs", str(tmp_path)]) == 2
    assert "not of --model 'ticlip-tiny-32': pass --model ViT-B-32" in one_error_line(capsys, "train")


def test_a_pickle_on_the_hub_is_refused_like_a_local_one(tmp_path, monkeypatch):
    import pickle

    from ticlip.models import CheckpointError

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    hub_repo(tmp_path / "hf", "org/evil", {"open_clip_pytorch_model.bin": pickle.dumps({"state_dict": Evil()})})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(CheckpointError, match="needs arbitrary unpickling"):
        read_checkpoint("hf-hub:org/evil")


def test_a_local_file_wins_over_a_hub_name(tmp_path, monkeypatch):
    from ticlip.hub import is_hub_name

    monkeypatch.chdir(tmp_path)
    assert is_hub_name("ViT-B-32:openai") and is_hub_name("hf-hub:a/b") and not is_hub_name("runs/a:b/x.pt")
    (tmp_path / "ViT-B-32:openai").write_bytes(b"")
    assert not is_hub_name("ViT-B-32:openai")
