"""Metadata tables (CSV, JSONL, Parquet) as Records, and fetching the images they point to.

A table has one row per image-text pair with columns for the image, the caption, the timestamp and
optionally a uid. The image column holds a file path (relative paths are relative to the table's
directory), a URL (``http(s)://``, ``file://`` or any fsspec URL such as ``s3://``), or the encoded
bytes themselves (Parquet ``binary``, or a ``{"bytes": ..., "path": ...}`` struct as Hugging Face
datasets store images).

Tables are read in batches, so a table of millions of rows never sits in memory at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Iterator

from ticlip.data.records import Record
from ticlip.data.remote import open_url, url_dirname, url_exists
from ticlip.errors import TiclipError

TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
                  ".parquet": "parquet", ".pq": "parquet"}
_BATCH = 8192


class TableError(TiclipError, ValueError):
    """A table that cannot be read as asked (missing file, unknown column, unknown format)."""


@dataclass
class SkippedRow:
    """A row that could not become a Record (e.g. a malformed JSONL line); the builder counts it."""

    reason: str
    detail: str = ""


def table_format(path: str) -> str | None:
    """``"csv"``, ``"tsv"``, ``"jsonl"`` or ``"parquet"`` from the file name; None if not a table."""
    return TABLE_SUFFIXES.get(os.path.splitext(str(path))[1].lower())


def read_table(
    path: str | os.PathLike,
    *,
    image_col: str = "image",
    caption_col: str = "caption",
    timestamp_col: str = "timestamp",
    uid_col: str | None = None,
) -> Iterator[Record | SkippedRow]:
    """Yield one Record per row of a CSV/TSV/JSONL/Parquet table.

    ``uid_col=None`` uses a ``uid`` column when the table has one. Columns are checked before the
    first row is yielded: a missing column raises TableError naming the columns the table has.
    Other columns go to ``Record.extra`` only when they are small scalars (kept in each sample's
    ``.json``). Image paths are made absolute against the table's directory.
    """
    path = os.fspath(path)
    fmt = table_format(path)
    if fmt is None:
        raise TableError(f"{path}: unknown table format; use .csv, .tsv, .jsonl or .parquet")
    if not url_exists(path):  # a local file or an fsspec URL (s3://bucket/table.parquet)
        raise TableError(f"no such table file: {path}")
    base = url_dirname(path)  # relative image paths of a table at a URL are URLs beside it
    batches = {"csv": _csv_batches, "tsv": _csv_batches, "jsonl": _jsonl_batches,
               "parquet": _parquet_batches}[fmt](path, fmt)
    columns = None
    for batch in batches:
        if isinstance(batch, SkippedRow):
            yield batch
            continue
        cols, rows = batch
        if columns is None:
            columns = cols
            uid_col = _check_columns(path, columns, image_col, caption_col, timestamp_col, uid_col)
        for row in rows:
            if isinstance(row, SkippedRow):
                yield row
                continue
            yield _record(row, base, image_col, caption_col, timestamp_col, uid_col)


def _check_columns(path, columns, image_col, caption_col, timestamp_col, uid_col):
    need = {"--image-col": image_col, "--caption-col": caption_col, "--timestamp-col": timestamp_col}
    if uid_col is not None:
        need["--uid-col"] = uid_col
    for flag, col in need.items():
        if col not in columns:
            raise TableError(
                f"{path}: no column {col!r}; the table has: {', '.join(map(str, columns))} "
                f"(choose one with {flag})"
            )
    if uid_col is None and "uid" in columns:
        uid_col = "uid"
    return uid_col


def _record(row: dict, base: str, image_col, caption_col, timestamp_col, uid_col) -> Record:
    image = row.get(image_col)
    if isinstance(image, str):
        image = image.strip()
        if image and not _is_url(image) and not os.path.isabs(image):
            image = _join(base, image)
    elif isinstance(image, dict):  # Hugging Face style {"bytes": ..., "path": ...}
        if image.get("bytes"):
            image = image["bytes"]
        elif image.get("path"):
            p = str(image["path"])
            image = p if _is_url(p) or os.path.isabs(p) else _join(base, p)
        else:
            image = None
    elif image is not None and not isinstance(image, (bytes, bytearray, memoryview)):
        image = None if _is_missing(image) else image
    uid = row.get(uid_col) if uid_col else None
    uid = None if uid is None or _is_missing(uid) or str(uid) == "" else str(uid)
    skip = {image_col, caption_col, timestamp_col, uid_col}
    extra = {k: v for k, v in row.items() if k not in skip and _small_scalar(v)}
    return Record(caption=row.get(caption_col), timestamp=row.get(timestamp_col), image=image, uid=uid,
                  extra=extra)


def _join(base: str, relative: str) -> str:
    return posixpath.join(base, relative) if _is_url(base) else os.path.join(base, relative)


def _is_missing(v) -> bool:
    try:
        return v != v  # NaN
    except Exception:
        return False


def _small_scalar(v) -> bool:
    if isinstance(v, (bool, int, float)):
        return not _is_missing(v)
    return isinstance(v, str) and len(v) <= 200


def _not_utf8(path: str, where: str) -> TableError:
    return TableError(f"{path}: not UTF-8 text ({where}): a binary file, or text in another encoding; "
                      f"convert it first, e.g. `iconv -f latin1 -t utf-8 {path} > utf8.csv`")


def _csv_batches(path: str, fmt: str):
    import csv

    import pyarrow as pa
    import pyarrow.csv as pcsv

    delimiter = "\t" if fmt == "tsv" else ","
    try:
        with open_url(path, "rt", newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f, delimiter=delimiter), None)
            f.read(1 << 20)  # the first MiB decodes too: a binary or Latin-1 file fails here, before any work
    except UnicodeDecodeError as e:
        raise _not_utf8(path, f"byte 0x{e.object[e.start]:02x} at offset {e.start}") from None
    except csv.Error as e:
        raise TableError(f"{path}: not a readable {fmt.upper()} table: {e}") from None
    if not header:
        raise TableError(f"{path}: the table is empty (no header row)")
    # All columns as strings, empty cells as "": timestamps like "2016" or "1458000000" are
    # parsed by ticlip.data.timestamps, not guessed by the CSV reader.
    convert = pcsv.ConvertOptions(column_types={c: pa.string() for c in header},
                                  strings_can_be_null=False, quoted_strings_can_be_null=False)
    bad: list = []

    def invalid_row(row):  # a row with too many or too few cells: counted, not fatal
        bad.append(SkippedRow("malformed_row", f"{path}:{row.number}: {row.text[:80]!r}"))
        return "skip"

    parse = pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True, invalid_row_handler=invalid_row)
    try:
        reader = pcsv.open_csv(open_url(path, "rb") if _is_url(path) else path,
                               read_options=pcsv.ReadOptions(block_size=1 << 22, use_threads=False),
                               parse_options=parse, convert_options=convert)
        yield header, []  # the columns are checked before any row
        for batch in reader:
            rows = batch.to_pylist()
            if bad:
                rows, bad[:] = bad + rows, []
            yield header, rows
    except pa.ArrowInvalid as e:
        if "utf8" in str(e).lower() or "utf-8" in str(e).lower():
            raise _not_utf8(path, str(e).splitlines()[0][:80]) from None
        raise TableError(f"{path}: not a readable {fmt.upper()} table: {e}") from None
    if bad:
        yield header, list(bad)


def _jsonl_batches(path: str, fmt: str):
    columns: list[str] | None = None
    rows: list = []
    with open_url(path, "rt", encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                rows.append(SkippedRow("malformed_row", f"{path}:{lineno}: {e}"))
                continue
            if columns is None:
                columns = list(obj)
            else:
                columns.extend(k for k in obj if k not in columns)
            rows.append(obj)
            if len(rows) >= _BATCH:
                yield _jsonl_columns(columns), rows
                rows = []
    if rows or columns is None:
        yield _jsonl_columns(columns), rows


def _jsonl_columns(columns):
    return list(columns or [])


def _parquet_batches(path: str, fmt: str):
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(open_url(path, "rb") if _is_url(path) else path)
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError for non-Parquet files
        raise TableError(f"{path}: not a readable Parquet file: {e}") from None
    columns = list(pf.schema_arrow.names)
    yielded = False
    for batch in pf.iter_batches(batch_size=_BATCH):
        yielded = True
        yield columns, batch.to_pylist()
    if not yielded:
        yield columns, []


# --------------------------------------------------------------------------- images
def _is_url(s: str) -> bool:
    return "://" in s[:16]


class ImageFetchError(Exception):
    """An image that cannot be fetched; ``reason`` is the skip reason the builder counts."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def url_cache_path(url: str, cache_dir: str) -> str:
    """Where a URL's bytes are cached: a hash of the URL plus its extension (if short)."""
    ext = os.path.splitext(urllib.parse.urlparse(url).path)[1].lower()
    ext = ext if 1 < len(ext) <= 6 and ext[1:].isalnum() else ""
    return os.path.join(cache_dir, hashlib.sha256(url.encode("utf-8")).hexdigest()[:32] + ext)


def read_image_bytes(ref: str, *, cache_dir: str | None = None, timeout: float = 30.0) -> bytes:
    """The encoded bytes of an image given by a local path or URL (see the module doc).

    URL images are cached in ``cache_dir`` (written atomically) and read from there next time.
    Raises ImageFetchError with reason ``missing_image`` (no such file, HTTP 404/410) or
    ``image_fetch_failed`` (any other network or storage error).
    """
    if not _is_url(ref):
        return _read_local(ref)
    scheme = ref.split("://", 1)[0].lower()
    if scheme == "file":
        return _read_local(urllib.request.url2pathname(urllib.parse.urlparse(ref).path))
    cached = url_cache_path(ref, cache_dir) if cache_dir else None
    if cached and os.path.exists(cached):
        with open(cached, "rb") as f:
            return f.read()
    data = _fetch(ref, scheme, timeout)
    if cached:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{cached}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, cached)
    return data


def _read_local(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ImageFetchError("missing_image", f"no such image file: {path}") from None
    except OSError as e:
        raise ImageFetchError("missing_image", f"cannot read {path}: {e}") from None


def _fetch(url: str, scheme: str, timeout: float) -> bytes:
    if scheme in ("http", "https"):
        req = urllib.request.Request(url, headers={"User-Agent": "ticlip-data-build"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            reason = "missing_image" if e.code in (404, 410) else "image_fetch_failed"
            raise ImageFetchError(reason, f"{url}: HTTP {e.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise ImageFetchError("image_fetch_failed", f"{url}: {e}") from None
    from ticlip.data.remote import require_backend

    require_backend(url, "image")  # raised, not counted per image: every image of the table would fail alike
    try:
        import fsspec

        with fsspec.open(url, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ImageFetchError("missing_image", f"no such image: {url}") from None
    except Exception as e:  # fsspec back-ends raise their own error types
        raise ImageFetchError("image_fetch_failed", f"{url}: {e}") from None


__all__ = [
    "ImageFetchError",
    "SkippedRow",
    "TableError",
    "read_image_bytes",
    "read_table",
    "table_format",
    "url_cache_path",
]
