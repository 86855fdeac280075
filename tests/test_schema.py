"""ticlip.schema: one schema per configuration, and YAML, overrides, flags and errors derived from it."""

from __future__ import annotations

import argparse
from typing import Literal

import pytest

from ticlip.config import TrainConfig
from ticlip.schema import (
    ConfigError, Field, Schema, add_schema_arguments, apply_overrides, given_flags, parse_kv, read_yaml_mapping,
)


class Inner(Schema):
    depth: int = Field(1, ge=0, description="how deep")


class Example(Schema):
    rate: float = Field(1e-3, gt=0, description="a rate")
    budget: float | None = Field(None, description="a budget")
    count: int | None = None
    mode: Literal["fast", "slow"] = Field("fast", description="the mode")
    enabled: bool = Field(False, description="switch it on")
    names: list[str] | None = None
    sizes: list[int] = Field(default_factory=lambda: [1, 2])
    inner: Inner = Field(default_factory=Inner)


def test_numbers_written_as_strings_are_numbers():
    # YAML 1.1 reads 3.4e18 (no dot) as a string; flags and overrides give strings too
    e = Example.load({"budget": "3.4e18", "count": "1e3", "rate": "2_0", "inner": {"depth": "2"}})
    assert e.budget == 3.4e18 and e.count == 1000 and e.rate == 20.0 and e.inner.depth == 2


@pytest.mark.parametrize(
    "data, message",
    [
        ({"rte": 1}, r"^f.yaml: unknown key 'rte'; known keys: budget, count, enabled"),
        ({"inner": {"deep": 1}}, r"^f.yaml: unknown key 'inner.deep'; known keys: depth$"),
        ({"mode": "medium"}, r"^f.yaml: mode: .*'fast' or 'slow' \(got 'medium'\)$"),
        ({"count": "many"}, r"^f.yaml: count: .*integer.*\(got 'many'\); accepted: a whole number or null$"),
        ({"rate": -1}, r"^f.yaml: rate: Input should be greater than 0 \(got -1\)"),
        ({"sizes": [1, "x"]}, r"^f.yaml: sizes.1: .*\(got 'x'\); accepted: a whole number$"),
        ({"inner": {"depth": -1}}, r"^f.yaml: inner.depth: .*greater than or equal to 0"),
    ],
)
def test_errors_name_the_source_key_value_and_what_is_accepted(data, message):
    with pytest.raises(ConfigError, match=message):
        Example.load(data, source="f.yaml")


def test_not_a_mapping_is_one_clear_error():
    with pytest.raises(ConfigError, match="expected a mapping"):
        Example.load([1, 2], source="f.yaml")


def test_yaml_round_trip_and_replace(tmp_path):
    e = Example.load({"budget": 5.0, "names": ["a"], "inner": {"depth": 3}})
    path = str(tmp_path / "e.yaml")
    e.to_yaml(path)
    assert Example.from_yaml(path) == e
    assert e.replace(rate=0.5).rate == 0.5
    with pytest.raises(ConfigError, match="rate"):
        e.replace(rate=0)
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        read_yaml_mapping(str(tmp_path / "bad.yaml"))


def test_overrides_are_dotted_and_yaml_typed():
    d = {"inner": {"depth": 1}}
    apply_overrides(d, ["inner.depth=4", "names=[a, b]", "new.section.key=true", "rate=1e-2"])
    assert d["inner"] == {"depth": 4} and d["names"] == ["a", "b"] and d["new"] == {"section": {"key": True}}
    d.pop("new")
    assert Example.load(d).rate == 1e-2  # YAML 1.1 leaves '1e-2' a string; the schema reads it as a number
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_kv("novalue")
    with pytest.raises(ConfigError, match="'depth' is not a section"):
        apply_overrides({"depth": 3}, ["depth.x=1"])


def test_flags_derive_from_the_schema():
    p = argparse.ArgumentParser()
    add_schema_arguments(p, Example)
    help_text = p.format_help()
    assert "a rate (default 0.001)" in help_text
    assert "one of fast, slow (default fast)" in help_text
    assert "--inner" not in help_text  # sections are not flags
    args = p.parse_args(["--rate", "5e-4", "--no-enabled", "--names", "a,b", "--sizes", "3,4", "--count", "1_000"])
    assert given_flags(args, Example) == {"rate": 5e-4, "enabled": False, "names": ["a", "b"], "sizes": [3, 4],
                                          "count": 1000}
    assert given_flags(p.parse_args([]), Example) == {}  # only what the user typed
    with pytest.raises(SystemExit):
        p.parse_args(["--rate", "fast"])


def test_train_flags_show_each_schema_default_once(capsys):
    from ticlip.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name, field in TrainConfig.model_fields.items():
        if name == "method_params":
            continue
        assert "--" + name.replace("_", "-") in out, name
    assert out.count("(default 128)") == 1  # batch size, from the schema
    assert "peak learning rate (default 0.001)" in out


def test_train_config_from_flags_and_file(tmp_path):
    from ticlip.cli import build_parser
    from ticlip.train.cli import config_from_args

    path = tmp_path / "c.yaml"
    path.write_text("lr: 5e-4\nbatch_size: 64\nprecision: amp_bf16\n")
    args = build_parser().parse_args(["train", "--config", str(path), "--batch-size", "32", "--method-param",
                                      "lam=2", "--no-progress"])
    cfg, given = config_from_args(args)
    assert (cfg.lr, cfg.batch_size, cfg.precision, cfg.progress) == (5e-4, 32, "bf16", False)
    assert cfg.method_params == {"lam": 2}
    assert given == {"batch_size", "progress", "method_params"}
    with pytest.raises(ConfigError, match="no budget"):
        cfg.replace(stream="s").validate()
