"""The emoji source: coverage, captions, dates from the version table, rendering, font errors."""

import os
from collections import Counter

import pytest

from ticlip.data.build import BuildConfig, build_stream_from, count_check
from ticlip.data.sources import get_source
from ticlip.data.sources import emoji as emoji_source
from ticlip.data.sources.emoji import EMOJI_VERSION_YEARS, emoji_caption, emoji_uid
from ticlip.errors import TiclipError

try:
    emoji_source.find_font()
    HAVE_FONT = True
except TiclipError:
    HAVE_FONT = False
needs_font = pytest.mark.skipif(not HAVE_FONT, reason="no colour emoji font (fonts-noto-color-emoji)")

KNOWN = {  # codepoints -> (year, caption) from the version table and CLDR names
    "1f600": ("2015", "grinning face"),  # E1.0
    "1f972": ("2020", "smiling face with tear"),  # E13.0
    "1fae0": ("2021", "melting face"),  # E14.0
    "1fae8": ("2022", "shaking face"),  # E15.0
    "1f426-200d-1f525": ("2023", "phoenix"),  # E15.1, a ZWJ sequence
    "1f44d-1f3fd": ("2015", "thumbs up: medium skin tone"),  # E1.0
    "1f1ef-1f1f5": ("2010", "flag: Japan"),  # E0.6
    "1f402": ("2015", "ox"),  # E1.0, a one-word name
}


@pytest.fixture(scope="module")
def emoji_run():
    """One pass over the source: metadata of every record and the images of the KNOWN ones."""
    records = get_source("emoji").records({})
    rows, images = [], {}
    for r in records:
        rows.append((r.caption, r.timestamp, r.uid, r.extra))
        if r.uid in KNOWN:
            images[r.uid] = r.image
    return rows, images, Counter(records.skipped)


@needs_font
def test_coverage_is_the_font_and_version_table(emoji_run):
    import emoji

    rows, _, skipped = emoji_run
    # Debian 12's Noto Color Emoji 2.042 draws 3,773 fully-qualified emoji up to E15.1.
    assert 3500 <= len(rows) <= 3900
    # Nothing is dropped silently: kept + counted skips = everything the emoji package knows.
    assert len(rows) + sum(skipped.values()) == len(emoji.EMOJI_DATA)
    assert skipped["not_fully_qualified"] > 0 and skipped["version_after_table"] > 0
    assert len({uid for _, _, uid, _ in rows}) == len(rows)


@needs_font
def test_every_record_has_a_caption_a_year_and_metadata(emoji_run):
    rows, _, _ = emoji_run
    years = Counter(int(ts) for _, ts, _, _ in rows)
    assert min(years) == 2010 and max(years) == 2023
    assert set(years) <= set(EMOJI_VERSION_YEARS.values())
    for caption, _, uid, extra in rows:
        assert caption.split() and caption == caption.strip()
        assert emoji_uid(extra["emoji"]) == uid
        assert EMOJI_VERSION_YEARS[float(extra["version"][1:])] is not None
    groups = Counter(extra.get("group") for *_, extra in rows)
    assert None not in groups and "Smileys & Emotion" in groups and "Flags" in groups
    # skin-tone variants are part of the stream
    assert sum("skin tone" in c for c, *_ in rows) > 1000


@needs_font
def test_known_emoji_follow_the_version_table(emoji_run):
    rows, _, _ = emoji_run
    by_uid = {uid: (ts, caption, extra) for caption, ts, uid, extra in rows}
    for uid, (year, caption) in KNOWN.items():
        assert uid in by_uid, f"{caption} not covered"
        assert by_uid[uid][:2] == (year, caption)
    assert by_uid["1f600"][2]["group"] == "Smileys & Emotion"
    assert by_uid["1f600"][2]["version"] == "E1.0"


@needs_font
def test_rendered_emoji_is_rgba_square_and_not_blank(emoji_run):
    _, images, _ = emoji_run
    img = images["1f600"]
    assert img.mode == "RGBA" and img.width == img.height >= 64
    alpha = img.getchannel("A")
    assert alpha.getpixel((0, 0)) == 0  # transparent background
    assert alpha.getbbox() is not None
    # the glyph fills the square up to the 2-px margin
    x0, y0, x1, y1 = alpha.getbbox()
    assert max(x1 - x0, y1 - y0) >= img.width - 4
    # a multi-codepoint (skin tone) sequence renders as one glyph of about the same size
    tone = images["1f44d-1f3fd"]
    assert abs(tone.width - img.width) < img.width // 4


def test_caption_readability():
    assert emoji_caption(":thumbs_up_medium_skin_tone:") == "thumbs up: medium skin tone"
    assert emoji_caption(":man_dark_skin_tone_beard:") == "man: dark skin tone, beard"
    assert (emoji_caption(":kiss_woman_man_light_skin_tone_medium-dark_skin_tone:")
            == "kiss woman man: light skin tone, medium-dark skin tone")
    assert emoji_caption(":keycap_#:") == "keycap: #"
    assert emoji_caption(":England:", "\U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F") == "flag: England"
    assert emoji_caption(":Aries:", "\u2648") == "Aries"  # not a flag
    assert emoji_caption(":Mrs._Claus:") == "Mrs. Claus"


def test_missing_font_path_names_the_flag(tmp_path):
    with pytest.raises(TiclipError, match="--font"):
        get_source("emoji").records({"font": str(tmp_path / "nope.ttf")})


def test_no_font_installed_names_the_debian_package(monkeypatch):
    monkeypatch.setattr(emoji_source, "DEFAULT_FONT_PATHS", ())
    monkeypatch.delenv("TICLIP_EMOJI_FONT", raising=False)
    with pytest.raises(TiclipError, match="fonts-noto-color-emoji.*--font"):
        get_source("emoji").records({})


def test_a_font_without_colour_emoji_is_refused(tmp_path):
    import matplotlib

    plain = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
    with pytest.raises(TiclipError, match="colour"):
        get_source("emoji").records({"font": plain, "font_size": "64"})
    junk = tmp_path / "junk.ttf"
    junk.write_bytes(b"not a font")
    with pytest.raises(TiclipError, match="cannot load"):
        get_source("emoji").records({"font": str(junk)})


def test_unknown_option_lists_valid_ones():
    with pytest.raises(TiclipError, match="font_size"):
        get_source("emoji").records({"size": "12"})


@pytest.mark.slow
@needs_font
def test_emoji_stream_builds_end_to_end(tmp_path):
    spec = get_source("emoji")
    stream = build_stream_from("emoji", tmp_path / "emoji", progress=False)
    assert stream.name == "emoji" and stream.provenance["source"] == "emoji"
    assert stream.provenance["config"] == BuildConfig.load(spec.default_build).record_dict()
    assert len(stream.steps) >= 6
    assert stream.labels[0] == "≤2014" and stream.labels[-1] == "2021–2023"
    ok, line = count_check(stream)
    assert ok, line
    counts = stream.provenance["counts"]
    assert counts["filtered"] == {}  # the relaxed caption filter keeps one-word names like "ox"
    assert counts["source_skipped"]["version_after_table"] > 0
    for st in stream.steps:  # the same 100 held-out eval pairs in every step, 50 for validation
        assert st.eval["retrieval"].count == spec.default_build["eval_size"] == 100
        assert stream.validation_count(st.index) == 50 and st.train.count > 100
    sample = next(stream.iter_samples(stream.train_urls(0)))
    assert sample["image"].mode == "RGBA" and max(sample["image"].size) <= 72
    assert sample["meta"].get("group")
