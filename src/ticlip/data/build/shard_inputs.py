"""The input shards of a reshard: ``SHARDS`` as a brace pattern, a directory or a list file → shard URLs.

- a brace pattern, ``shards/{00000..00099}.tar`` (expanded by ``braceexpand``, the library
  webdataset uses; local paths or fsspec URLs such as ``s3://bucket/{000..009}.tar``);
- a local directory: its ``*.tar`` files, sorted by name;
- a local text file (any other suffix than ``.tar``): one shard path or URL per line (blank lines and
  ``#`` comments ignored; relative paths are relative to the file's directory);
- a single ``.tar`` path or URL.

The order of the returned URLs is the input order of the build (ties in time keep it), so it must not
depend on the machine: patterns and lists keep their order, directories are sorted.
"""

from __future__ import annotations

import os

from ticlip.data.build.config import BuildError
from ticlip.data.shards import UnsafeShardURL, check_shard_url, shard_scheme


def expand_shards(spec: str) -> list[str]:
    """The shard URLs that ``spec`` names (absolute paths for local shards); BuildError, one line, when
    none match, a local shard is missing, or a URL would run a command."""
    import braceexpand

    spec = str(spec).strip()
    if not spec:
        raise BuildError("SHARDS is empty: give a brace pattern (shards/{00000..00099}.tar), a directory or a "
                         "text file listing shard URLs")
    if shard_scheme(spec) is None and os.path.isdir(spec):
        urls = sorted(os.path.join(os.path.abspath(spec), f) for f in os.listdir(spec) if f.endswith(".tar"))
        if not urls:
            raise BuildError(f"no shards matched: the directory {spec} holds no .tar file")
        return urls
    if shard_scheme(spec) is None and os.path.isfile(spec) and not spec.endswith(".tar"):
        urls = _list_file(spec)
        if not urls:
            raise BuildError(f"no shards matched: the list file {spec} names no shard (one path or URL a line)")
    else:
        urls = [_absolute(u) for u in braceexpand.braceexpand(spec)]
    for url in urls:
        try:
            check_shard_url(url, f"SHARDS {spec}")
        except UnsafeShardURL as e:
            raise BuildError(str(e).replace("fix the manifest", "fix SHARDS")) from None
    local = [u for u in urls if shard_scheme(u) is None]
    missing = [u for u in local if not os.path.isfile(u)]
    if missing and len(missing) == len(urls):
        raise BuildError(f"no shards matched {spec}: {len(missing)} path(s), none exists (first: {missing[0]})")
    if missing:
        raise BuildError(f"{len(missing)} of the {len(urls)} shards of {spec} do not exist (first: {missing[0]}); "
                         "fix the pattern or the list")
    dupes = len(urls) - len(set(urls))
    if dupes:
        raise BuildError(f"SHARDS {spec} names {dupes} shard(s) more than once; list each shard once")
    return urls


def _absolute(url: str) -> str:
    return os.path.abspath(url) if shard_scheme(url) is None else url


def _list_file(path: str) -> list[str]:
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except UnicodeDecodeError:
        raise BuildError(f"SHARDS {path} is not a text file listing shard URLs (not UTF-8)") from None
    urls = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        urls.append(line if shard_scheme(line) is not None or os.path.isabs(line) else os.path.join(base, line))
    return urls


__all__ = ["expand_shards"]
