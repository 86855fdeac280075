"""One entry point from a source name or a table file to a stream, for ``ticlip data build`` and
experiments alike, so that both record the same provenance (and a stream built by one is resumed,
not refused, by the other).

    request = check_build_request("pairs.parquet", {"eval_size": 500}, {"caption_col": "text"})
    stream = build_stream_from(request, "data/mine")          # or: build_stream_from("emoji", "data/emoji")

Provenance: a registered source records its name and its options; a table records ``"table"`` and
``{"table": <absolute path>, "image_col", "caption_col", "timestamp_col", "uid_col"}``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from ticlip.data.build.builder import build_stream
from ticlip.data.build.config import BuildConfig
from ticlip.data.records import Record
from ticlip.data.remote import is_url, local_output, url_exists
from ticlip.data.stream import TimeStream
from ticlip.data.table import SkippedRow, read_table, table_format
from ticlip.errors import TiclipError
from ticlip.schema import ConfigError

# read_table's keyword arguments (a table's options) and their defaults
TABLE_OPTIONS: dict[str, str | None] = {"image_col": "image", "caption_col": "caption",
                                        "timestamp_col": "timestamp", "uid_col": None}


@dataclass(frozen=True)
class BuildRequest:
    """A checked request to build a stream (made by ``check_build_request``; nothing read yet)."""

    source: str  # provenance: the registered source's name, or "table"
    source_params: dict  # provenance: the source's options, or the table's path and columns
    config: BuildConfig  # the source's default build settings, overridden by the request's (TaskBuildConfig:
    # a task source's)
    name: str  # the stream's default name: the source name, or the table's file name without suffix
    options: dict  # what the reader gets: the source's options, or read_table's column keywords
    table: str | None = None  # the table's absolute path (source == "table")

    def records(self) -> Iterable[Record | SkippedRow]:
        """The records to build from. Option values and table columns are checked here, before any
        row is built: a table's first row is read now, a source checks its options when called."""
        if self.table is not None:
            return _started(read_table(self.table, **self.options))
        from ticlip.data import sources

        return sources.get_source(self.source).records(dict(self.options))


def is_table(source: str) -> bool:
    """Whether ``source`` names a table (by its suffix, or because such a file exists)."""
    return table_format(source) is not None or os.path.isfile(source)


def check_build_request(source: str, build: Mapping | BuildConfig | None = None, options: Mapping | None = None,
                        *, where: str = "stream") -> BuildRequest:
    """Check a request to build from ``source`` (a registered source name or a table file) without
    reading or writing any image: the table exists, ``build`` (over the source's defaults) is a valid
    ``BuildConfig``, ``options`` are options of that source (or table columns). ``where`` names the
    request's section in error messages (``stream.build: unknown key ...``); ConfigError otherwise."""
    def at(key: str) -> str:
        return f"{where}.{key}" if where else key

    if not isinstance(source, (str, os.PathLike)) or not os.fspath(source).strip():
        raise ConfigError(f"{at('source')}: name a source or a table file (.csv, .tsv, .jsonl, .parquet), "
                          f"not {source!r}")
    source = os.fspath(source)
    options = dict(_mapping(options, at("options")))
    build = build.to_dict() if isinstance(build, BuildConfig) else dict(_mapping(build, at("build")))
    if is_table(source):
        if table_format(source) is None:
            raise ConfigError(f"{at('source')}: {source}: unknown table format; use .csv, .tsv, .jsonl or .parquet")
        if not url_exists(source):  # a local file or an fsspec URL (its back-end missing: one line)
            raise ConfigError(f"{at('source')}: no such table file: {source}")
        _check_keys(options, TABLE_OPTIONS, f"{at('options')}: a table has no option", "(table columns)")
        for key, value in options.items():
            if not (isinstance(value, str) and value) and not (key == "uid_col" and value is None):
                raise ConfigError(f"{at('options')}: {key} must name a column of the table, not {value!r}")
        table = source if is_url(source) else os.path.abspath(source)
        columns = {key: options.get(key, default) for key, default in TABLE_OPTIONS.items()}
        config = BuildConfig.load(build, source=at("build"))
        return BuildRequest("table", {"table": table, **columns}, config,
                            os.path.splitext(os.path.basename(table))[0], options, table)
    from ticlip.data import sources

    try:
        spec = sources.get_source(source)
    except TiclipError as e:
        raise ConfigError(f"{at('source')}: {e}") from None
    _check_keys(options, spec.options_help, f"{at('options')}: source {spec.name!r} has no option", "")
    if getattr(spec, "check", None) is not None:  # option values (files that must exist, their layout)
        try:
            spec.check(dict(options))
        except TiclipError as e:
            raise ConfigError(f"{at('options')}: {e}") from None
    if getattr(spec, "kind", "time") == "tasks":  # a task stream: its build settings are TaskBuildConfig's
        from ticlip.data.task_stream import TaskBuildConfig

        config = TaskBuildConfig.load({**(spec.default_build or {}), **build}, source=at("build"))
        return BuildRequest(spec.name, dict(options), config, spec.name, options)
    config = BuildConfig.load({**(spec.default_build or {}), **build}, source=at("build"))
    return BuildRequest(spec.name, dict(options), config, spec.name, options)


def build_stream_from(
    request_or_source: BuildRequest | str,
    out: str | os.PathLike,
    *,
    build: Mapping | BuildConfig | None = None,
    options: Mapping | None = None,
    name: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    workers: int | None = None,
    where: str = "stream",
) -> TimeStream:
    """Build (or resume, or find finished) the stream of a request, or of ``source`` with ``build``
    settings and ``options`` (checked by ``check_build_request``), in the local directory ``out``.

    ``name`` defaults to the request's; ``workers`` processes decode and encode images (None: 1, in
    this process; the output does not depend on it). A finished build with the same request leaves
    ``out`` as it is; another configuration raises BuildError unless ``overwrite``. The build holds
    ``out``'s lock (``ticlip.locking.DirLock``): a second build into ``out`` fails at once."""
    local_output(out)  # before the lock, which would create a local ./s3:/... directory
    if isinstance(request_or_source, BuildRequest):
        if build is not None or options is not None:
            raise TypeError("build_stream_from: give build= and options= to check_build_request, not with a request")
        request = request_or_source
    else:
        request = check_build_request(request_or_source, build, options, where=where)
    records = request.records()
    if type(request.config).__name__ == "TaskBuildConfig":  # a task source (ticlip.data.task_stream)
        from ticlip.data.task_stream import build_task_stream, group_tasks

        tasks = group_tasks(records)
        return build_task_stream(tasks, out, request.config, name=name or request.name, source=request.source,
                                 source_params=request.source_params, overwrite=overwrite,
                                 source_skipped=dict(getattr(records, "skipped", {}) or {}))
    from ticlip.locking import DirLock

    with DirLock(out, what="stream"):  # one builder per output directory (a second one is refused at once)
        return build_stream(records, out, request.config, name=name or request.name, source=request.source,
                            source_params=request.source_params, progress=progress, workers=workers or 1,
                            overwrite=overwrite)


def _mapping(value: Any, where: str) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {type(value).__name__} {value!r}")
    return value


def _check_keys(options: dict, accepted: Mapping, prefix: str, note: str) -> None:
    unknown = [k for k in options if k not in accepted]
    if unknown:
        known = ", ".join(accepted) or "none"
        raise ConfigError(f"{prefix} {', '.join(map(repr, unknown))}; accepted: {known}" + (f" {note}" if note else ""))


def _started(rows: Iterator) -> Iterator:
    """The same rows as ``rows``, whose first row has already been read (so that a missing column
    fails before anything is written)."""
    try:
        first = next(rows)
    except StopIteration:
        return iter(())

    def chain():
        yield first
        yield from rows

    return chain()


__all__ = ["TABLE_OPTIONS", "BuildRequest", "build_stream_from", "check_build_request", "is_table"]
