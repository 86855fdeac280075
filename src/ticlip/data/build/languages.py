"""Language filters: ``keep(caption) -> bool`` hooks named by ``BuildConfig.language``.

The registry is filled at import time (built-in filters) and by ``register_language_filter``; it is a
registry of named functions, not a cache: nothing is added to it while building.
"""

from __future__ import annotations

from typing import Callable


def ascii_english(caption: str) -> bool:
    """A crude stand-in for a language identifier: at least 90% of the letters are ASCII."""
    letters = [c for c in caption if c.isalpha()]
    return bool(letters) and sum(c.isascii() for c in letters) >= 0.9 * len(letters)


LANGUAGE_FILTERS: dict[str, Callable[[str], bool]] = {"ascii-english": ascii_english}


def register_language_filter(name: str, keep: Callable[[str], bool]) -> None:
    """Make ``keep(caption) -> bool`` available as ``BuildConfig(language=name)``.

    A real language identifier (e.g. fastText's lid.176 as DataComp uses) plugs in here.
    """
    LANGUAGE_FILTERS[name] = keep


def language_filter(name: str | None) -> Callable[[str], bool] | None:
    """The filter called ``name`` (None: no language filter)."""
    return LANGUAGE_FILTERS[name] if name else None


__all__ = ["LANGUAGE_FILTERS", "ascii_english", "language_filter", "register_language_filter"]
