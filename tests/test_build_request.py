"""One entry point from a source name or a table to a stream: ``check_build_request`` (checks only)
and ``build_stream_from``, which ``ticlip data build`` and experiments both call."""

import os

import pytest

import ticlip.data.build.images as images_mod
from test_build import image_rows, write_csv
from ticlip.cli import main
from ticlip.data.build import BuildConfig, BuildError, BuildRequest, build_stream_from, check_build_request
from ticlip.data.stream import TimeStream
from ticlip.schema import ConfigError


@pytest.fixture
def table(tmp_path):
    rows = image_rows(tmp_path, 24, ["2015", "2016"])
    return write_csv(tmp_path / "pairs.csv", [{**r, "text": r["caption"]} for r in rows],
                     ("image", "text", "timestamp"))


@pytest.mark.parametrize(
    "source, build, options, message",
    [
        ("flickr", None, None, "stream.source: unknown source 'flickr'; known sources: emoji, redcaps, synthetic"),
        ("missing.csv", None, None, "stream.source: no such table file: missing.csv"),
        ("", None, None, "stream.source: name a source or a table file"),
        ("synthetic", None, {"num_pair": 3}, "stream.options: source 'synthetic' has no option 'num_pair'; "
                                             "accepted: num_pairs, start_year"),
        ("TABLE", None, {"font": "x.ttf"}, "stream.options: a table has no option 'font'; accepted: image_col, "
                                           "caption_col, timestamp_col, uid_col"),
        ("TABLE", None, {"caption_col": 3}, "stream.options: caption_col must name a column of the table, not 3"),
        ("synthetic", {"eval_sise": 3}, None, "stream.build: unknown key 'eval_sise'; known keys: aggregate_until"),
        ("TABLE", {"granularity": "week"}, None, "stream.build: granularity: Input should be 'year' or 'month'"),
        ("synthetic", ["eval_size"], None, "stream.build: expected a mapping"),
        ("emoji", None, "font=x", "stream.options: expected a mapping"),
    ],
)
def test_check_build_request_errors_are_one_line(source, build, options, message, table, tmp_path):
    with pytest.raises(ConfigError) as e:
        check_build_request(table if source == "TABLE" else source, build, options)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    assert sorted(os.listdir(tmp_path)) == ["img", "pairs.csv"]  # nothing written


def test_check_build_request_reads_no_images(tmp_path):
    """A table's image paths are not looked at (nor the table's rows): checks are instant."""
    path = write_csv(tmp_path / "t.csv", [{"image": "nowhere.png", "caption": "a b c", "timestamp": "2016"}])
    request = check_build_request(path, {"eval_size": 1}, {"uid_col": None}, where="exp.stream")
    assert request == BuildRequest("table", {"table": path, "image_col": "image", "caption_col": "caption",
                                             "timestamp_col": "timestamp", "uid_col": None},
                                   BuildConfig(eval_size=1), "t", {"uid_col": None}, path)
    with pytest.raises(ConfigError, match=r"^exp\.stream\.build: eval_size"):
        check_build_request(path, {"eval_size": -1}, where="exp.stream")


def test_source_defaults_under_the_given_settings():
    request = check_build_request("emoji", {"eval_size": 50})
    assert request.config.eval_size == 50 and request.config.max_image_side == 72  # emoji's default
    assert request.config.step_ends[-1] == "2023"
    assert (request.source, request.source_params, request.name, request.table) == ("emoji", {}, "emoji", None)
    full = check_build_request("emoji", BuildConfig(eval_size=50))  # a whole config replaces the defaults
    assert full.config == BuildConfig(eval_size=50)


def test_table_stream_built_by_the_cli_is_continued_by_build_stream_from(table, tmp_path, monkeypatch, capsys):
    """What an experiment does with a stream section naming the same table: accepted, nothing rebuilt."""
    out = str(tmp_path / "s")
    assert main(["data", "build", table, "--out", out, "--caption-col", "text", "--eval-size", "2",
                 "--max-image-side", "8", "--workers", "1", "--quiet"]) == 0
    before = TimeStream.load(out)
    written = []
    real = images_mod.write_shard
    monkeypatch.setattr(images_mod, "write_shard", lambda p, s: (written.append(p), real(p, s))[1])
    for finished in (True, False):
        if not finished:
            os.remove(os.path.join(out, "stream.json"))  # as if interrupted just before the manifest
        again = build_stream_from(table, out, build={"eval_size": 2, "max_image_side": 8},
                                  options={"caption_col": "text"}, progress=False)
        assert written == []  # every shard was found finished
        assert again.to_dict() == before.to_dict()
    assert again.provenance["source"] == "table" and again.provenance["source_params"] == {
        "table": table, "image_col": "image", "caption_col": "text", "timestamp_col": "timestamp", "uid_col": None}
    # another setting is still refused, naming it
    with pytest.raises(BuildError, match=r"different configuration \(config.eval_size: 2 -> 3\)"):
        build_stream_from(table, out, build={"eval_size": 3, "max_image_side": 8}, options={"caption_col": "text"},
                          progress=False)


def test_source_stream_same_provenance_from_cli_and_library(tmp_path, capsys):
    cli_out, lib_out = str(tmp_path / "cli"), str(tmp_path / "lib")
    assert main(["data", "build", "synthetic", "--out", cli_out, "--num-pairs", "30", "--option", "seed=2",
                 "--option", "image_size=16", "--eval-size", "2", "--quiet", "--workers", "1"]) == 0
    lib = build_stream_from("synthetic", lib_out, build={"eval_size": 2},
                            options={"num_pairs": 30, "seed": 2, "image_size": 16}, progress=False)
    cli = TimeStream.load(cli_out)
    for key in ("source", "source_params", "config", "config_hash", "input_fingerprint", "counts"):
        assert cli.provenance[key] == lib.provenance[key], key
    assert cli.name == lib.name == "synthetic"
    # and the library call into the CLI's directory is a finished build, not a conflict
    assert build_stream_from("synthetic", cli_out, build={"eval_size": 2}, progress=False,
                             options={"seed": 2, "image_size": 16, "num_pairs": 30}).to_dict() == cli.to_dict()


def test_build_stream_from_a_request_takes_no_other_settings(table):
    request = check_build_request(table, options={"caption_col": "text"})
    with pytest.raises(TypeError, match="check_build_request"):
        build_stream_from(request, "out", build={"eval_size": 1})


def test_bad_table_column_fails_before_anything_is_written(table, tmp_path):
    request = check_build_request(table)  # the table has no "caption" column: found when reading starts
    with pytest.raises(Exception, match="no column 'caption'"):
        build_stream_from(request, tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()
