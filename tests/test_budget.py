import math

import pytest

from ticlip.errors import TiclipError
from ticlip.methods import get_method
from ticlip.train.budget import Budget, BudgetError, count_forward_macs, macs_per_pair
from ticlip.train.schedule import ScheduleConfig


def vit_clip_macs(image, patch, v_width, v_layers, ctx, t_width, t_layers, embed):
    """Independent hand count of a ViT CLIP's forward MACs for one pair (matmuls and conv only)."""

    def tower(tokens, width, layers):
        # per layer: qkv 3·W², out proj W², MLP 8·W² per token; attention QKᵀ and AV 2·N²·W
        return layers * (12 * width * width * tokens + 2 * tokens * tokens * width)

    patches = (image // patch) ** 2
    vision = patches * v_width * 3 * patch * patch + tower(patches + 1, v_width, v_layers) + v_width * embed
    text = tower(ctx, t_width, t_layers) + t_width * embed  # projection of the EOT token only
    return vision + text


def test_vit_b16_macs_match_a_hand_count():
    expected = vit_clip_macs(224, 16, 768, 12, 77, 512, 12, 512)
    assert macs_per_pair("ViT-B-16") == pytest.approx(expected, rel=0.01)
    # the paper's convention: its totals / iterations / batch ≈ 20.5 GMACs for ViT-B/16
    assert 20e9 < macs_per_pair("ViT-B-16") < 21e9


def test_sizes_change_the_count():
    base = macs_per_pair("ticlip-tiny-32")
    assert base == pytest.approx(vit_clip_macs(32, 8, 128, 2, 32, 128, 2, 128), rel=0.02)
    assert macs_per_pair("ticlip-tiny-32", image_size=64) == pytest.approx(
        vit_clip_macs(64, 8, 128, 2, 32, 128, 2, 128), rel=0.02)
    assert macs_per_pair("ticlip-tiny-32", context_length=16) == pytest.approx(
        vit_clip_macs(32, 8, 128, 2, 16, 128, 2, 128), rel=0.02)


def test_model_object_counts_like_its_name_and_is_left_alone():
    import torch

    from ticlip.models import create_model

    model = create_model("ticlip-tiny-32", seed=0).model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert macs_per_pair(model) == macs_per_pair("ticlip-tiny-32")
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_real_cpu_forward_counts_attention_too():
    """On CPU the fused flash-attention kernel is registered with torch's SDPA formula."""
    import torch

    from ticlip.models import create_model
    from ticlip.train.budget import _flop_counter

    model = create_model("ticlip-tiny-32", seed=0).model.train()
    counter = _flop_counter()
    with counter:
        model(torch.randn(2, 3, 32, 32), torch.zeros(2, 32, dtype=torch.long))
    assert counter.get_total_flops() / 2 / 2 == pytest.approx(count_forward_macs(model), rel=1e-6)


def test_bad_model_and_sizes():
    with pytest.raises(TiclipError, match="unknown model"):
        macs_per_pair("no-such-model")
    with pytest.raises(BudgetError, match="image_size"):
        macs_per_pair("ticlip-tiny-32", image_size=0)


def test_iterations_arithmetic():
    b = Budget(total_macs=1e12, steps=4, macs_per_pair=1e6, global_batch_size=100)
    assert b.per_step_macs == 2.5e11
    assert b.macs_per_iteration == 1e8
    assert b.iterations_per_step == 2500
    assert b.pairs_per_step == 250_000
    assert b.total_iterations == 10_000
    # floor: never over budget
    assert Budget(0.9999e12, 4, 1e6, 100).iterations_per_step == 2499
    # an iteration count survives the round trip through MACs
    mpp = macs_per_pair("ticlip-tiny-32")
    assert Budget.from_iterations(150, 7, mpp, 128).iterations_per_step == 150
    assert Budget(1e12, 4, 1e6, 100, budget_scale=1.5).iterations_per_step == 3750


@pytest.mark.parametrize("kwargs", [
    dict(total_macs=0), dict(total_macs=float("nan")), dict(steps=0), dict(steps=2.5),
    dict(global_batch_size=-1), dict(macs_per_pair=0), dict(budget_scale=0), dict(total_macs=1e7),
])
def test_bad_budgets_are_refused(kwargs):
    args = dict(total_macs=1e12, steps=4, macs_per_pair=1e6, global_batch_size=100) | kwargs
    with pytest.raises(BudgetError):
        Budget(**args)


def test_oracle_lwf_ewc_patching_accounting(toy_stream):
    b = Budget(1e12, 4, 1e6, 100)
    for t in range(4):
        s = b.plan_step(get_method("oracle"), t)
        assert s.iterations == 2500 * (t + 1) and s.overrun == 0.0 and s.allotted_macs == 2.5e11 * (t + 1)
        seq = b.plan_step(get_method("sequential"), t)
        assert (seq.iterations, seq.extra_macs_estimate, seq.overrun) == (2500, 0.0, 0.0)
        lwf = b.plan_step(get_method("lwf"), t)
        assert lwf.iterations == 2500  # same iterations, the extra forward is reported, not paid by cutting
        assert lwf.extra_macs_estimate == (lwf.macs if t else 0.0)
        assert lwf.overrun == pytest.approx(1.0 if t else 0.0)
        ewc = b.plan_step(get_method("ewc", fisher_batches=3, fisher_batch_size=50), t)
        assert ewc.extra_macs_estimate == 150 * 1e6
        assert ewc.overrun == pytest.approx(150 * 1e6 / 2.5e11)
        # patching counts its own held-out pairs: 16 retrieval pairs per earlier step of the toy stream
        pat = b.plan_step(get_method("patching", alphas="0,0.5,1"), t, stream=toy_stream)
        assert pat.extra_macs_estimate == 3 * 16 * t * 1e6 and pat.cost.extra_pairs == 3 * 16 * t
        blind = b.plan_step(get_method("patching", alphas="0,0.5,1"), t)  # no stream: not estimated, said so
        assert blind.extra_macs_estimate == 0.0 and bool(blind.cost.note) == (t > 0)
    oracle_total = sum(s.total_macs for s in b.plan(get_method("oracle")))
    assert oracle_total == pytest.approx(2.5 * b.total_macs)  # (1+2+3+4)/4 for T = 4
    with pytest.raises(BudgetError):
        b.plan_step(get_method("oracle"), 4)


def test_const_cosine_branch_is_charged():
    b = Budget(1e12, 4, 1e6, 100)
    s = b.plan_step(get_method("sequential"), 1, schedule=ScheduleConfig(kind="const-cosine"))
    assert s.iterations == 2500
    assert s.extra_macs_estimate == 500 * b.macs_per_iteration
    assert s.overrun == pytest.approx(0.2)
    assert b.plan_step(get_method("sequential"), 1, schedule=ScheduleConfig(kind="cosine")).overrun == 0.0


def test_const_cosine_charges_the_trunk_only_when_the_next_step_continues_from_it(toy_stream):
    """Oracle and Restart start every step from the initial weights: their trunk is never used, so none
    is charged; nor after the stream's last step. The iterations do not change."""
    b = Budget(1e12, 4, 1e6, 100)
    cc = ScheduleConfig(kind="const-cosine")
    seq = [b.plan_step(get_method("sequential"), t, schedule=cc) for t in range(4)]
    assert [s.extra_macs_estimate for s in seq] == [500 * b.macs_per_iteration] * 3 + [0.0]
    for name in ("oracle", "restart"):
        for stream in (None, toy_stream):
            rows = [b.plan_step(get_method(name), t, schedule=cc, stream=stream) for t in range(4)]
            assert all(r.extra_macs_estimate == 0.0 and r.overrun == 0.0 for r in rows), name
            plain = [b.plan_step(get_method(name), t, stream=stream) for t in range(4)]
            assert [r.iterations for r in rows] == [r.iterations for r in plain]


def test_paper_rows():
    """TiC-CLIP App. C.4: 3.4e18 MACs, batch 8192, 4 steps, ViT-B-16 -> about 20,000 iterations
    (TiC-YFCC and TiC-RedCaps). TiC-DataComp L / XL: the released configs run 22,500 / 20,500
    iterations per step at batch 8192 / 90,112 over 7 steps for 2.7e19 / 2.7e20 MACs."""
    mpp = macs_per_pair("ViT-B-16")
    yfcc = Budget(3.4e18, 4, mpp, 8192)
    assert abs(yfcc.total_iterations - 20_000) / 20_000 < 0.02
    large = Budget(2.7e19, 7, mpp, 8192)
    assert large.iterations_per_step == pytest.approx(22_500, rel=0.03)
    xlarge = Budget(2.7e20, 7, mpp, 90_112)
    assert xlarge.iterations_per_step == pytest.approx(20_500, rel=0.03)


def test_budget_cli(capsys):
    from ticlip.cli import main

    rc = main(["budget", "--model", "ViT-B-16", "--total-macs", "3.4e18", "--batch-size", "8192", "--steps", "4",
               "--method", "oracle", "--method", "lwf"])
    out = capsys.readouterr().out
    assert rc == 0
    total = int(next(line for line in out.splitlines() if line.startswith("iterations in total")).split(":")[1]
                .replace(",", ""))
    assert abs(total - 20_000) < 400
    assert "lwf" in out and "100%" in out  # LwF's starred overrun
    main(["budget", "--model", "ticlip-tiny-32", "--total-macs", "1e12", "--batch-size", "8", "--steps", "3",
          "--method", "all"])
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("(")]
    assert len(notes) == 1 and "patching" in notes[0] and "pairs of earlier steps" in notes[0]  # its note, once


def test_budget_cli_json_and_errors(capsys):
    import json

    from ticlip.cli import main

    assert main(["budget", "--model", "ticlip-tiny-32", "--iterations-per-step", "150", "--batch-size", "128",
                 "--steps", "7", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["budget"]["iterations_per_step"] == 150
    assert math.isclose(data["macs_per_pair"], macs_per_pair("ticlip-tiny-32"))
    assert main(["budget", "--model", "nope", "--total-macs", "1e12", "--batch-size", "8", "--steps", "2"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["budget", "--model", "ticlip-tiny-32", "--total-macs", "1e5", "--batch-size", "8", "--steps", "2"]) == 2
    assert "less than one iteration" in capsys.readouterr().err
    assert main(["budget", "--model", "ticlip-tiny-32", "--total-macs", "1e12", "--steps", "2"]) == 2
    assert "--batch-size" in capsys.readouterr().err
