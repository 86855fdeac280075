"""`ticlip data build | info | show` through ticlip.cli.main."""

import json
import sys
import types

import pytest

from test_build import image_rows, write_csv
from ticlip.cli import main
from ticlip.data.stream import TimeStream


@pytest.fixture
def table(tmp_path):
    rows = image_rows(tmp_path, 40, ["2014", "2015", "2016", "2017"])
    rows[0]["timestamp"] = "not a date"
    return write_csv(tmp_path / "t.csv", rows, ("uid", "image", "caption", "timestamp"))


def test_build_then_info(table, tmp_path, capsys):
    out = str(tmp_path / "s")
    assert main(["data", "build", table, "--out", out, "--eval-size", "2", "--aggregate-until", "2015",
                 "--shard-size", "4", "--max-image-side", "8", "--workers", "1", "--quiet"]) == 0
    text = capsys.readouterr().out
    # eval 2 per step, validation min(1000, round(0.5 x 2)) = 1 per step (validation_size's default)
    assert "3 steps (≤2015, 2016, 2017)" in text and "30 train + 6 eval + 3 validation pairs" in text
    s = TimeStream.load(out)
    assert s.name == "t" and s.provenance["source"] == "table"
    assert s.provenance["source_params"]["table"] == table
    assert s.provenance["config"]["aggregate_until"] == "2015"

    assert main(["data", "info", out]) == 0
    info = capsys.readouterr().out
    assert "≤2015" in info and "skipped:      1 (bad_timestamp 1)" in info and "OK" in info
    assert "validation" in info.splitlines()[2] and "+ validation 3 =" in info
    assert main(["data", "info", out, "--json"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j["counts_add_up"] and j["counts"]["skipped"] == {"bad_timestamp": 1}
    assert [st["label"] for st in j["steps"]] == ["≤2015", "2016", "2017"]
    val = [st["validation"]["count"] for st in j["steps"]]
    assert val == [c["validation"] for c in j["counts"]["steps"]] == [1, 1, 1]


def test_config_yaml_and_flag_precedence(table, tmp_path, capsys):
    cfg = tmp_path / "b.yaml"
    cfg.write_text("eval_size: 3\nstep_ends: ['2015', '2016']\nmax_image_side: 8\n")
    out = str(tmp_path / "s")
    assert main(["data", "build", table, "--out", out, "--config", str(cfg), "--eval-size", "1",
                 "--no-dedup", "--quiet"]) == 0
    s = TimeStream.load(out)
    assert s.labels == ["≤2015", "2016"]
    assert s.provenance["config"]["eval_size"] == 1 and s.provenance["config"]["dedup"] is False
    assert s.provenance["counts"]["dropped_out_of_range"] == 10


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.csv"], "no such table file"),
        (["TABLE", "--caption-col", "text"], "no column 'text'"),
        (["TABLE", "--granularity", "week"], "build: granularity: Input should be 'year' or 'month' (got 'week')"),
        (["TABLE", "--step-ends", "2015-06"], "build: step_ends: period '2015-06' does not fit granularity 'year'"),
        (["TABLE", "--eval-fraction", "2"], "build: eval_fraction: must be in [0, 1) (got 2.0)"),
        (["TABLE", "--font", "x.ttf"], "options: a table has no option 'font'; accepted: image_col, caption_col"),
        (["nosuchsource"], "source: unknown source 'nosuchsource'; known sources: emoji, redcaps, synthetic"),
        (["TABLE", "--config", "BADKEY"], "bad.yaml: unknown key 'colour'"),
        (["synthetic", "--image-col", "x"], "options: source 'synthetic' has no option 'image_col'; accepted: num_pairs"),
        (["synthetic", "--option", "oops"], "KEY=VALUE"),
        (["TABLE", "--config", "nope.yaml"], "config file nope.yaml does not exist"),
    ],
)
def test_build_errors_exit_2(args, message, table, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("colour: red\n")
    args = [{"TABLE": table, "BADKEY": str(tmp_path / "bad.yaml")}.get(a, a) for a in args]
    assert main(["data", "build", *args, "--out", str(tmp_path / "s"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("ticlip data: error:")
    assert not (tmp_path / "s" / "stream.json").exists()


def test_rebuild_refused_then_overwritten(table, tmp_path, capsys):
    out = str(tmp_path / "s")
    base = ["data", "build", table, "--out", out, "--eval-size", "2", "--quiet", "--workers", "1"]
    assert main(base) == 0
    assert main(base) == 0  # same config: nothing to redo
    assert main(base + ["--seed", "5"]) == 2
    assert "different configuration (config.seed: 0 -> 5)" in capsys.readouterr().err
    assert main(base + ["--seed", "5", "--overwrite"]) == 0
    assert TimeStream.load(out).provenance["seed"] == 5


def test_source_options_and_defaults_reach_the_source(tmp_path, monkeypatch, capsys):
    from ticlip.data.records import Record
    from ticlip.data.sources import SourceSpec
    import ticlip.data.sources as sources

    seen = {}

    def records(options):
        seen.update(options)
        from PIL import Image

        for i in range(20):
            yield Record(f"fake pair {i}", 2015 + i % 2, Image.new("RGB", (8, 8), (i, 0, 0)))

    spec = SourceSpec("fake", records, default_build={"eval_fraction": 0.25, "max_image_side": 8},
                      options_help={k: "an option" for k in ("font", "num_pairs", "style", "k")})
    monkeypatch.setattr(sources, "get_source", lambda name: spec)
    out = str(tmp_path / "s")
    assert main(["data", "build", "fake", "--out", out, "--font", "f.ttf", "--num-pairs", "20",
                 "--option", "style=flat", "--option", "k=a=b", "--quiet"]) == 0
    assert seen == {"font": "f.ttf", "num_pairs": 20, "style": "flat", "k": "a=b"}
    s = TimeStream.load(out)
    assert s.name == "fake" and s.provenance["source_params"] == seen
    assert [st.eval["retrieval"].count for st in s.steps] == [2, 2]  # round(0.25 * 10)


def test_show_calls_contact_sheet(table, tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "s")
    assert main(["data", "build", table, "--out", out, "--eval-size", "2", "--quiet"]) == 0
    calls = []
    fake = types.ModuleType("ticlip.data.show")
    fake.contact_sheet = lambda stream, step, path, n, split, seed: calls.append((step.label, path, n, split, seed))
    monkeypatch.setitem(sys.modules, "ticlip.data.show", fake)
    sheet = str(tmp_path / "sheet.png")
    assert main(["data", "show", out, "--step", "2016", "--out", sheet, "--n", "4", "--split", "retrieval"]) == 0
    assert calls == [("2016", sheet, 4, "retrieval", 0)]
    assert main(["data", "show", out, "--step", "1999", "--out", sheet]) == 2
    assert "no step '1999'" in capsys.readouterr().err


def test_info_on_missing_stream(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path)]) == 2
    assert "ticlip data build" in capsys.readouterr().err
