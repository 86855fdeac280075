"""The metadata pass: each input record becomes a typed ``Row`` (no image pixels) or a counted reason.

Per record, in this order, the first reason that applies removes it: ``bad_timestamp`` (or
``timestamp_out_of_range``: see ``ticlip.data.timestamps``),
``missing_caption``, ``missing_image``, ``unsupported_image`` (skipped), then the caption filters
``caption_words``, ``caption_chars``, ``language`` (filtered). Images a source holds in memory (PIL
images, bytes) are appended to a ``Spool`` file; file paths and URLs are only referenced (and read
for their hash when de-duplication needs one).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from ticlip.data.build.config import BuildConfig, BuildError
from ticlip.data.build.languages import language_filter
from ticlip.data.build.progress import progress_bar
from ticlip.data.records import Record
from ticlip.data.table import ImageFetchError, SkippedRow, read_image_bytes
from ticlip.data.timestamps import TimestampError, TimestampOutOfRange, parse_timestamp, period_of


@dataclass(frozen=True, slots=True)
class ImageRef:
    """Where a row's image is: a local ``file``, a ``url``, encoded ``bytes`` in the spool, or raw
    ``pixels`` in the spool (already fitted to ``max_image_side``; ``original_*`` is the size the
    source gave, which the image checks use)."""

    kind: str  # "file" | "url" | "bytes" | "pixels"
    location: str | None = None  # the path or URL (file, url)
    offset: int = 0  # the spool span (bytes, pixels)
    length: int = 0
    mode: str | None = None  # pixels only: PIL mode, size, and the size before fitting
    width: int = 0
    height: int = 0
    original_width: int = 0
    original_height: int = 0

    def parts(self) -> tuple:
        """The reference as a flat tuple (what the input fingerprint hashes)."""
        if self.kind in ("file", "url"):
            return (self.kind, self.location)
        if self.kind == "bytes":
            return ("bytes", self.offset, self.length)
        return ("pixels", self.offset, self.length, self.mode, self.width, self.height,
                self.original_width, self.original_height)


@dataclass(slots=True)
class Row:
    """What the metadata pass keeps of a record (small: no image pixels)."""

    time: dt.datetime
    seq: int  # position in the input: ties in time keep input order
    period: str
    caption: str
    uid: str | None
    ref: ImageRef
    ident: str  # what identifies the image, for derived uids and the input fingerprint
    extra: dict | None
    dedup_key: tuple  # ("uid", uid) or ("content", normalised caption, ident)


@dataclass
class Counts:
    """Rows removed before the image pass, by reason."""

    input_rows: int = 0
    skipped: Counter = field(default_factory=Counter)
    filtered: Counter = field(default_factory=Counter)
    duplicates: int = 0
    dropped_out_of_range: int = 0
    source_skipped: dict = field(default_factory=dict)  # not input rows: the source never yielded them

    def as_dict(self) -> dict:
        """The counts the input fingerprint covers (not ``source_skipped``)."""
        return {
            "input_rows": self.input_rows,
            "skipped": dict(sorted(self.skipped.items())),
            "filtered": dict(sorted(self.filtered.items())),
            "duplicates": self.duplicates,
            "dropped_out_of_range": self.dropped_out_of_range,
        }


def normalize_caption(caption: str) -> str:
    """The caption as de-duplication compares it: NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", caption).casefold().split())


def digest(*parts: bytes | str) -> str:
    """A 128-bit hex digest of ``parts`` (separated, so ("ab", "c") != ("a", "bc"))."""
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p.encode("utf-8") if isinstance(p, str) else p)
        h.update(b"\x1f")
    return h.hexdigest()


def json_safe(obj):
    """``obj`` as JSON would give it back (tuples become lists, unknown types strings)."""
    return json.loads(json.dumps(obj, default=str, ensure_ascii=False))


def caption_text(value) -> str | None:
    """The caption with whitespace collapsed; None when there is none."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    text = " ".join(str(value).split())
    return text or None


def image_kind(image) -> str | None:
    """``pil``, ``bytes``, ``file``, ``url``, ``unsupported`` or None (no image)."""
    if image is None:
        return None
    if isinstance(image, (bytes, bytearray, memoryview)):
        return "bytes" if len(image) else None
    if isinstance(image, os.PathLike):
        return "file"
    if isinstance(image, str):
        s = image.strip()
        if not s:
            return None
        if "://" in s[:16]:
            return "file" if s.lower().startswith("file://") else "url"
        return "file"
    if hasattr(image, "tobytes") and hasattr(image, "mode") and hasattr(image, "size"):
        return "pil"
    if isinstance(image, float) and math.isnan(image):
        return None
    return "unsupported"


def file_path(image) -> str:
    """A local path from a path, a PathLike or a ``file://`` URL."""
    s = os.fspath(image).strip() if not isinstance(image, str) else image.strip()
    if s.lower().startswith("file://"):
        import urllib.parse
        import urllib.request

        s = urllib.request.url2pathname(urllib.parse.urlparse(s).path)
    return s


def fit(image, max_side: int):
    """Downscale to ``max_side`` exactly as ``encode_image`` does, so it will not resize again."""
    from PIL import Image

    w, h = image.size
    if not max_side or max(w, h) <= max_side:
        return image
    scale = max_side / max(w, h)
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)


class Spool:
    """An append-only file for images a source holds in memory (bytes, PIL pixels)."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._f = open(path, "wb")
        self.size = 0

    def add(self, data: bytes) -> tuple[int, int]:
        off = self.size
        self._f.write(data)
        self.size += len(data)
        return off, len(data)

    def close(self):
        self._f.close()


class RowReader:
    """Turns records into ``Row``s for one build (``read`` returns a row or the reason it was removed).

    Rows of one period share one period string (``_periods``): millions of rows stay small. That
    table lives as long as the reader, i.e. one build.
    """

    def __init__(self, config: BuildConfig, spool: Spool, cache_dir: str):
        self.config, self.spool, self.cache_dir = config, spool, cache_dir
        self.keep_language = language_filter(config.language)
        self._periods: dict[str, str] = {}

    def read(self, rec: Record, seq: int) -> tuple[str | None, Row | None]:
        """(reason, None) for a record removed here, else (None, Row). Filters are ``filter:<name>``."""
        config = self.config
        try:
            t = parse_timestamp(rec.timestamp)
        except TimestampOutOfRange:
            return "timestamp_out_of_range", None
        except TimestampError:
            return "bad_timestamp", None
        caption = caption_text(rec.caption)
        if caption is None:
            return "missing_caption", None
        kind = image_kind(rec.image)
        if kind is None:
            return "missing_image", None
        if kind == "unsupported":
            return "unsupported_image", None
        if kind == "file":
            path = file_path(rec.image)
            if not os.path.isfile(path):
                return "missing_image", None
        if len(caption.split()) < config.min_caption_words:
            return "filter:caption_words", None
        if len(caption) < config.min_caption_chars:
            return "filter:caption_chars", None
        if self.keep_language is not None and not self.keep_language(caption):
            return "filter:language", None

        need_hash = config.dedup and rec.uid is None
        if kind == "pil":
            ident, ref = self._spool_pixels(rec.image)
        elif kind == "bytes":
            data = bytes(rec.image)
            ident = digest(data)
            off, n = self.spool.add(data)
            ref = ImageRef("bytes", offset=off, length=n)
        elif kind == "file":
            if need_hash:
                try:
                    ident = digest(read_image_bytes(path))
                except ImageFetchError as e:
                    return e.reason, None
            else:
                st = os.stat(path)
                ident = f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"
            ref = ImageRef("file", path)
        else:  # url
            url = str(rec.image).strip()
            if need_hash:
                try:
                    ident = digest(read_image_bytes(url, cache_dir=self.cache_dir))
                except ImageFetchError as e:
                    return e.reason, None
            else:
                ident = url
            ref = ImageRef("url", url)
        uid = None if rec.uid is None else str(rec.uid)
        dedup_key = ("uid", uid) if uid is not None else ("content", normalize_caption(caption), ident)
        period = period_of(t, config.granularity)
        period = self._periods.setdefault(period, period)
        extra = json_safe(rec.extra) if rec.extra else None
        return None, Row(t, seq, period, caption, uid, ref, ident, extra, dedup_key)

    def _spool_pixels(self, image) -> tuple[str, ImageRef]:
        if image.mode not in ("RGB", "RGBA", "L", "LA"):
            has_alpha = image.mode == "P" and "transparency" in image.info or "A" in image.mode
            image = image.convert("RGBA" if has_alpha else "RGB")
        ow, oh = image.size
        ident = digest(image.mode, f"{ow}x{oh}", image.tobytes())
        small = fit(image, self.config.max_image_side)
        off, n = self.spool.add(small.tobytes())
        return ident, ImageRef("pixels", None, off, n, small.mode, small.size[0], small.size[1], ow, oh)


def read_rows(records: Iterable, config: BuildConfig, spool: Spool, cache_dir: str,
              progress: bool) -> tuple[list[Row], Counts]:
    """The metadata pass over ``records``: the rows kept, in input order, and the counts of the rest."""
    counts = Counts()
    rows: list[Row] = []
    reader = RowReader(config, spool, cache_dir)
    bar = progress_bar(progress, desc="reading rows", unit=" rows")
    try:
        for seq, rec in enumerate(records):
            counts.input_rows += 1
            bar.update(1)
            if isinstance(rec, SkippedRow):
                counts.skipped[rec.reason] += 1
                continue
            if not isinstance(rec, Record):
                raise BuildError(f"a source yielded {type(rec).__name__}, not a Record")
            reason, row = reader.read(rec, seq)
            if reason is not None:
                bucket = counts.filtered if reason.startswith("filter:") else counts.skipped
                bucket[reason.removeprefix("filter:")] += 1
                continue
            rows.append(row)
    finally:
        bar.close()
    return rows, counts


__all__ = ["Counts", "ImageRef", "Row", "RowReader", "Spool", "digest", "json_safe", "normalize_caption",
           "read_rows"]
