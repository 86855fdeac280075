"""Writing and reading webdataset shards.

Writing: atomic per-shard writes, so an interrupted build never leaves a half-written tar that a later
read (or a resumed build) would take for finished.

Reading: shards are opened only as plain files or through fsspec (``open_shard``), never through
webdataset's ``gopen``, which runs commands for ``pipe:`` URLs (and curl/gsutil for some schemes);
``check_shard_url`` refuses a command-running URL when a manifest is loaded, and ``tar_samples`` is
the one webdataset stage that turns shard URLs into samples. Unreadable shards and undecodable samples
are skipped and counted in a ``SkipCount`` (shared with DataLoader workers), never fatal, never silent.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from ticlip.errors import TiclipError

from ticlip.atomic import atomic_path
from ticlip.data.remote import MissingBackend

_KEY_OK = re.compile(r"[^A-Za-z0-9_\-]")


def sample_key(uid: str) -> str:
    """A webdataset-safe key for a uid: no dots (they split extensions) nor path separators."""
    key = _KEY_OK.sub("_", str(uid))
    return key or "_"


def encode_image(image, *, max_side: int | None = None, jpeg_quality: int = 90) -> tuple[str, bytes]:
    """Encode a PIL image for a shard: PNG when it has transparency, JPEG otherwise.

    Images larger than ``max_side`` on their longest side are downscaled (aspect kept).
    """
    from PIL import Image

    if max_side and max(image.size) > max_side:
        w, h = image.size
        scale = max_side / max(w, h)
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    has_alpha = image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        image.convert("RGBA").save(buf, format="PNG", optimize=False, compress_level=3)
        return "png", buf.getvalue()
    image.convert("RGB").save(buf, format="JPEG", quality=jpeg_quality)
    return "jpg", buf.getvalue()


@dataclass
class ShardSample:
    key: str
    image_ext: str
    image_bytes: bytes
    caption: str
    meta: dict


def write_shard(path: str, samples: Iterable[ShardSample]) -> int:
    """Write samples to ``path`` atomically (``path.tmp`` then rename). Returns the sample count."""
    import webdataset as wds

    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            # mtime fixed so that re-building the same data gives byte-identical shards.
            with wds.TarWriter(f, encoder=False, mtime=0) as w:
                for s in samples:
                    w.write(
                        {
                            "__key__": s.key,
                            s.image_ext: s.image_bytes,
                            "txt": s.caption.encode("utf-8"),
                            "json": json.dumps(s.meta, ensure_ascii=False, sort_keys=True).encode("utf-8"),
                        }
                    )
                    n += 1
    return n  # atomic_path fsyncs the shard before the rename




# --------------------------------------------------------------------------- reading
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_log = logging.getLogger(__name__)


class UnsafeShardURL(TiclipError, ValueError):
    """A shard URL that would run a command (``pipe:``) or uses a scheme ticlip does not open."""


def shard_scheme(url: str) -> str | None:
    """The URL scheme of ``url`` ("s3", "pipe", ...), None for a plain path."""
    m = _SCHEME.match(url)
    if not m or (len(m.group(1)) == 1 and os.name == "nt"):  # C:\... is a Windows path
        return None
    return m.group(1).lower()


def check_shard_url(url: str, where: str) -> None:
    """Refuse a shard URL ticlip would not open as a plain file or through fsspec: ``pipe:`` and any
    other scheme that is not ``proto://`` with a protocol fsspec knows (fsspec's file systems read
    data; none of them starts a command). ``where`` names the manifest for the one-line error."""
    scheme = shard_scheme(url)
    if scheme is None:
        return
    if scheme == "pipe":
        raise UnsafeShardURL(f"{where}: shard {url!r} is a pipe: URL, which runs a shell command; ticlip "
                             "opens shards only as files or fsspec URLs (s3://, gs://, https://): fix the manifest")
    import fsspec

    if not url.startswith(f"{scheme}://") or scheme not in fsspec.available_protocols():
        raise UnsafeShardURL(f"{where}: shard {url!r} uses the {scheme!r} scheme, which ticlip does not open; "
                             "give a file path or an fsspec URL (s3://, gs://, https://, ...): fix the manifest")
    from ticlip.data.remote import require_backend

    require_backend(url, where)  # one line naming what to install (e.g. ticlip[s3]), not a worker's traceback


def open_shard(url: str):
    """A binary file object for a shard: a plain file, or an fsspec URL. Never a command."""
    check_shard_url(url, "shard")
    if shard_scheme(url) is None:
        return open(url, "rb")
    import fsspec

    return fsspec.open(url, "rb").open()


SKIP_REASONS = ("unreadable shard", "undecodable sample")


class SkipCount:
    """Samples skipped while reading shards, by reason (``SKIP_REASONS``). The counters live in shared
    memory so that DataLoader workers' skips reach the process that logs them."""

    def __init__(self):
        import multiprocessing as mp

        self._values = {r: mp.Value("q", 0) for r in SKIP_REASONS}

    def add(self, reason: str, n: int = 1) -> None:
        v = self._values[reason]
        with v.get_lock():
            v.value += n

    def as_dict(self) -> dict[str, int]:
        return {r: int(v.value) for r, v in self._values.items()}

    def total(self) -> int:
        return sum(self.as_dict().values())


class _CountingHandler:
    """A webdataset exception handler: count the failure under ``reason``, log it once, skip it."""

    def __init__(self, counter: SkipCount | None, reason: str):
        self.counter, self.reason = counter, reason

    def __call__(self, exn: Exception) -> bool:
        if isinstance(exn, (UnsafeShardURL, MissingBackend)):
            return False  # re-raised: a refused URL or a missing back-end is an error, not a bad sample
        if self.counter is not None:
            self.counter.add(self.reason)
        _log.warning("skipped (%s): %s: %s", self.reason, type(exn).__name__, str(exn)[:200])
        return True


def _open_shards(src: Iterable[dict], handler) -> Iterator[dict]:
    for sample in src:
        url = sample["url"]
        try:
            stream = open_shard(url)
        except (UnsafeShardURL, MissingBackend):
            raise
        except Exception as exn:  # noqa: BLE001 - a missing or unreadable shard is skipped and counted
            exn.args = exn.args + (url,)
            if handler(exn):
                continue
            raise
        yield {**sample, "stream": stream}


def tar_samples(skipped: SkipCount | None = None, select_files: Callable[[str], bool] | None = None):
    """A webdataset stage: shard URLs (``{"url": ...}``) to raw samples, like
    ``wds.tarfile_to_samples`` but opening shards with ``open_shard`` and skipping (and counting in
    ``skipped``) shards that cannot be opened or read to the end (a truncated tar)."""
    from webdataset.tariterators import group_by_keys

    handler = _CountingHandler(skipped, "unreadable shard")

    def stage(src: Iterable[dict]) -> Iterator[dict]:
        return group_by_keys(_expand(_open_shards(src, handler), handler, select_files), handler=handler)

    return stage


def _expand(sources: Iterable[dict], handler: "_CountingHandler", select_files) -> Iterator[dict]:
    """The files of each opened shard, then webdataset's end-of-shard marker ``{}``. Written out
    rather than ``webdataset.tariterators.tar_file_expander`` so that a truncated shard counts once
    (webdataset's calls its handler both inside and around the tar reader for one bad shard)."""
    from webdataset.tariterators import tar_file_iterator

    for source in sources:
        failed: list[Exception] = []

        def stop(exn: Exception) -> bool:  # a bad member: stop reading this shard, count it below
            failed.append(exn)
            return False

        try:
            for sample in tar_file_iterator(source["stream"], handler=stop, select_files=select_files):
                sample["__url__"] = source["url"]
                yield sample
        except Exception as exn:  # noqa: BLE001 - a tar header cut short: the shard's rest is unreadable
            failed.append(exn)
        finally:
            close = getattr(source["stream"], "close", None)
            if close is not None:
                close()
        if failed:
            failed[0].args = failed[0].args + (source["url"],)
            handler(failed[0])
        yield {}  # end of shard: no sample spans two shards


def decode_or_skip(decode: Callable[[dict], Any], skipped: SkipCount | None = None):
    """A webdataset stage: ``decode`` each sample; a sample that fails (a corrupt image, a missing
    member) is skipped and counted in ``skipped`` as "undecodable sample"."""
    handler = _CountingHandler(skipped, "undecodable sample")

    def stage(src: Iterable[dict]) -> Iterator[Any]:
        for sample in src:
            try:
                out = decode(sample)
            except Exception as exn:  # noqa: BLE001 - whatever a corrupt sample raises, it is skipped and counted
                handler(exn)
                continue
            yield out

    return stage
