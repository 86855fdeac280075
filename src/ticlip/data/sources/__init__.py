"""Sources: named generators of timestamped image-text pairs (``Record``s) for the builder.

Each source module defines ``SOURCE``, a :class:`SourceSpec`: the records generator, the build
settings that suit it (``BuildConfig`` field overrides) and a one-line help per option.

    spec = get_source("emoji")
    records = spec.records({"font": "/path/to/font.ttf"})   # options as the CLI passes them
    for r in records: ...
    records.skipped                                           # what the source left out, by reason

Options arrive as strings from the command line (``--option KEY=VALUE``) or as Python values; the
``option_*`` helpers below convert them and name the option in their errors.
"""

from __future__ import annotations

import importlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from ticlip.data.records import Record
from ticlip.errors import TiclipError

# name -> module defining SOURCE; imported only when asked for (the emoji source loads fonts).
_SOURCE_MODULES = {
    "emoji": "ticlip.data.sources.emoji",
    "synthetic": "ticlip.data.sources.synthetic",
    "tasks-cpu": "ticlip.data.sources.tasks_cpu",
    # the released TiC-CLIP formats (ticlip.data.tic_formats)
    "yfcc15m": "ticlip.data.sources.yfcc15m",
    "redcaps": "ticlip.data.sources.redcaps",
    "tic-datacomp": "ticlip.data.sources.tic_datacomp",
}


@dataclass
class SourceSpec:
    """A named source: ``records(options)`` yields ``Record``s; ``default_build`` holds
    ``BuildConfig`` field overrides suited to it; ``options_help`` documents each option."""

    name: str
    records: Callable[[dict], Iterable[Record]]
    default_build: dict = field(default_factory=dict)
    options_help: dict[str, str] = field(default_factory=dict)
    description: str = ""
    kind: str = "time"  # "tasks": records carry extra["task"] and are built by ticlip.data.task_stream
    check: Callable[[dict], None] | None = None  # checks option values before any work (check_build_request)


class SourceRecords:
    """An iterable of records that also counts what the source left out, by reason.

    ``produce(skipped)`` is a generator function that yields records and adds to the ``skipped``
    counter as it goes; ``skipped`` is complete once iteration ends (the builder may copy it into
    the manifest's provenance). Iterating twice re-runs the generator with a fresh count.
    """

    def __init__(self, produce: Callable[[Counter], Iterator[Record]], *, length: int | None = None):
        self._produce = produce
        self._length = length
        self.skipped: Counter = Counter()

    def __iter__(self) -> Iterator[Record]:
        self.skipped = Counter()
        return iter(self._produce(self.skipped))

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("this source does not know its length before it runs")
        return self._length


def list_sources() -> list[str]:
    return sorted(_SOURCE_MODULES)


def get_source(name: str) -> SourceSpec:
    """The source called ``name``; a TiclipError lists the known ones otherwise."""
    module = _SOURCE_MODULES.get(str(name).lower())
    if module is None:
        raise TiclipError(
            f"unknown source {name!r}; known sources: {', '.join(list_sources())} "
            "(or give a metadata table: CSV, JSONL or Parquet)"
        )
    return importlib.import_module(module).SOURCE


def check_options(source: str, options: dict | None, options_help: dict[str, str]) -> dict:
    """``options`` as a dict, after refusing names the source does not know."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(options_help))
    if unknown:
        valid = ", ".join(f"{k} ({v})" for k, v in options_help.items()) or "none"
        raise TiclipError(f"source {source!r} has no option {', '.join(map(repr, unknown))}; valid options: {valid}")
    return options


def option_int(options: dict, key: str, default: int, *, minimum: int | None = None) -> int:
    value = options.get(key, default)
    if value is None:
        return default
    try:
        n = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise TiclipError(f"option {key}={value!r} is not an integer") from None
    if minimum is not None and n < minimum:
        raise TiclipError(f"option {key}={n} must be at least {minimum}")
    return n


def option_float(options: dict, key: str, default: float) -> float:
    value = options.get(key, default)
    if value is None:
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TiclipError(f"option {key}={value!r} is not a number") from None


__all__ = [
    "SourceRecords",
    "SourceSpec",
    "check_options",
    "get_source",
    "list_sources",
    "option_float",
    "option_int",
]
