"""The source registry: names, errors for unknown sources and options, option parsing."""

import pytest

from ticlip.data.build import BuildConfig
from ticlip.data.sources import SourceRecords, get_source, list_sources, option_int
from ticlip.errors import TiclipError


def test_known_sources_and_their_specs():
    assert {"emoji", "synthetic"} <= set(list_sources())
    for name in list_sources():
        spec = get_source(name)
        assert spec.name == name
        assert spec.options_help and all(isinstance(v, str) and v for v in spec.options_help.values())
        assert isinstance(spec.default_build, dict)


def test_default_builds_are_valid_build_configs():
    for name in list_sources():
        config = BuildConfig.load(get_source(name).default_build, source=name)
        assert config.to_dict().items() >= get_source(name).default_build.items()


def test_unknown_source_lists_the_known_ones():
    with pytest.raises(TiclipError, match="emoji.*synthetic"):
        get_source("flickr")


def test_unknown_option_names_the_valid_ones():
    with pytest.raises(TiclipError, match="num_pairs"):
        get_source("synthetic").records({"num_pair": 10})


def test_option_values_from_the_command_line_are_parsed():
    assert option_int({"n": " 12 "}, "n", 3) == 12
    assert option_int({}, "n", 3) == 3
    with pytest.raises(TiclipError, match="n='x'"):
        option_int({"n": "x"}, "n", 3)
    with pytest.raises(TiclipError, match="at least 0"):
        option_int({"n": "-1"}, "n", 3, minimum=0)
    records = get_source("synthetic").records({"num_pairs": "5", "seed": "2"})
    assert len(records) == 5 and len(list(records)) == 5


def test_source_records_count_skips_per_pass():
    def produce(skipped):
        for i in range(4):
            if i % 2:
                skipped["odd"] += 1
                continue
            yield i

    records = SourceRecords(produce)
    assert list(records) == [0, 2] and records.skipped == {"odd": 2}
    assert list(records) == [0, 2] and records.skipped == {"odd": 2}  # a second pass counts afresh
    with pytest.raises(TypeError):
        len(records)
