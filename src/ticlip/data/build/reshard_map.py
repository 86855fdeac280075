"""The map stage of a reshard: one input shard → a part (its kept samples, byte for byte, as tar
members under their output names), an index of the part and a marker with the shard's counts.

Runs in any worker (a local process, a Dask worker): everything it needs travels in a picklable
``MapOptions`` and the job ``(shard number, url)``; the uid index is memory-mapped from the build
directory. What it writes depends only on the input shard and the options, never on which worker
ran it or when, so the merge (``reshard_plan``, ``reshard_write``) sees the same parts whatever the
engine and the worker count.

Per sample (the files of one key, in tar order), the first reason that applies removes it and is
counted: *skipped* ``corrupt_json`` (a ``.json`` that is not a JSON object), ``missing_image``,
``missing_caption``, ``uid_not_in_table``, ``bad_timestamp`` / ``timestamp_out_of_range`` (the
table's value), then *filtered* ``caption_words``, ``caption_chars``, ``language`` and, only where
asked (``min_image_side`` > 0 or a ``max_aspect_ratio``), the image checks, which decode the image
(``image_side``, ``aspect_ratio``; skipped: ``corrupt_image``, ``image_too_large``) but never
re-encode it. The uid is the ``.json``'s ``"uid"`` when it has one, else the sample's key.
A shard that cannot be opened, or breaks off (a truncated tar), is marked ``unreadable``: the samples
read whole before the break count as usual, the rest of the shard is not read (and is no input row).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ticlip.atomic import atomic_path, write_json_atomic
from ticlip.data.build.languages import language_filter
from ticlip.data.build.rows import caption_text
from ticlip.data.build.tar_stream import iter_members, member
from ticlip.data.build.uid_index import PERIOD_REASONS, hash_uids, load_shared
from ticlip.data.shards import open_shard, sample_key
from ticlip.data.stream import IMAGE_KEYS

PART_DTYPE = np.dtype([("hash", "S16"), ("time", "<i8"), ("period", "<i4"), ("pos", "<i4"),
                       ("offset", "<i8"), ("length", "<i8")])
_CHUNK = 512  # samples looked up in the index at once (their bytes are held meanwhile)


@dataclass(frozen=True)
class MapOptions:
    """What a map worker needs (picklable; sent with every job)."""

    parts_dir: str
    index_dir: str
    min_caption_words: int
    min_caption_chars: int
    language: str | None
    min_image_side: int
    max_aspect_ratio: float | None

    @property
    def image_checks(self) -> bool:
        return self.min_image_side > 0 or self.max_aspect_ratio is not None


def part_paths(parts_dir: str, shard: int) -> tuple[str, str, str]:
    """(bytes, index, marker) of input shard number ``shard``."""
    stem = os.path.join(parts_dir, f"{shard:06d}")
    return stem + ".tar.part", stem + ".npy", stem + ".json"


def output_key(uid: str) -> str:
    """The webdataset key of a uid in the output: the uid itself when it is a safe key, else the
    safe form plus 8 hex digits of the uid's hash (so two uids never share a key)."""
    key = sample_key(uid)
    if key == uid:
        return key
    return f"{key}_{hashlib.blake2b(uid.encode('utf-8'), digest_size=4).hexdigest()}"


def split_name(name: str) -> tuple[str | None, str | None]:
    """(key, extensions) of a member name exactly as webdataset's ``base_plus_ext`` splits it. The
    usual case (a dot inside the last path component, not first) is written out because the regular
    expression costs a noticeable share of a sample's time; any other name goes to webdataset."""
    start = name.rfind("/") + 1
    dot = name.find(".", start)
    if dot > start:
        return name[:dot], name[dot + 1:]
    from webdataset.tariterators import base_plus_ext

    return base_plus_ext(name)


def _groups(f):
    """(key, [(ext, bytes), ...]) per sample: consecutive files sharing a key, as webdataset groups them."""
    key, files = None, []
    for name, read in iter_members(f):
        base, ext = split_name(name)
        if base is None:
            continue
        if base != key and files:  # the previous sample is whole: handed on before this one is read
            yield key, files
            files = []
        key = base
        files.append((ext, read()))
    if files:
        yield key, files


def map_shard(opts: MapOptions, job: tuple[int, str]) -> dict:
    """Write input shard ``job = (number, url)``'s part, index and marker; return the marker."""
    shard, url = job
    blob_path, index_path, marker_path = part_paths(opts.parts_dir, shard)
    index = load_shared(opts.index_dir)
    keep_language = language_filter(opts.language)
    skipped, filtered = Counter(), Counter()
    rows: list[tuple] = []
    unreadable = None
    samples = 0
    with atomic_path(blob_path) as tmp:
        with open(tmp, "wb") as out:
            pending: list[tuple] = []

            def flush():
                _process(pending, index, opts, keep_language, skipped, filtered, rows, out)
                pending.clear()

            try:
                with open_shard(url) as f:
                    for pos, (key, files) in enumerate(_groups(f)):
                        samples += 1
                        pending.append((pos, key, files))
                        if len(pending) >= _CHUNK:
                            flush()
            except Exception as e:  # noqa: BLE001 - an unreadable or truncated shard is counted, never fatal
                unreadable = f"{type(e).__name__}: {str(e)[:200]}"
            flush()
    table = np.array(rows, dtype=PART_DTYPE) if rows else np.zeros(0, dtype=PART_DTYPE)
    with atomic_path(index_path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, table)
    marker = {"url": url, "samples": samples, "kept": len(rows), "skipped": dict(sorted(skipped.items())),
              "filtered": dict(sorted(filtered.items())), "unreadable": unreadable}
    write_json_atomic(marker_path, marker)
    return marker


def _process(pending, index, opts: MapOptions, keep_language, skipped, filtered, rows, out) -> None:
    """Check a chunk of samples, look their uids up at once, append the kept ones to ``out``."""
    if not pending:
        return
    ready = []  # (pos, uid, files, image bytes, caption)
    for pos, key, files in pending:
        exts = {ext.lower(): data for ext, data in files}
        uid = key
        if "json" in exts:
            try:
                meta = json.loads(exts["json"])
            except ValueError:
                meta = None
            if not isinstance(meta, dict):
                skipped["corrupt_json"] += 1
                continue
            if meta.get("uid") is not None and str(meta["uid"]) != "":
                uid = str(meta["uid"])
        image = next((exts[k] for k in IMAGE_KEYS if k in exts), None)
        if not image:
            skipped["missing_image"] += 1
            continue
        caption = caption_text(exts.get("txt"))
        if caption is None:
            skipped["missing_caption"] += 1
            continue
        ready.append((pos, uid, files, image, caption))
    if not ready:
        return
    hashes = hash_uids([r[1] for r in ready])
    found, times, periods = index.lookup(hashes)
    offset = out.tell()
    blobs = []
    for (pos, uid, files, image, caption), h, ok, t, p in zip(ready, hashes, found, times, periods):
        if not ok:
            skipped["uid_not_in_table"] += 1
            continue
        if p < 0:
            skipped[PERIOD_REASONS[int(p)]] += 1
            continue
        if len(caption.split()) < opts.min_caption_words:
            filtered["caption_words"] += 1
            continue
        if len(caption) < opts.min_caption_chars:
            filtered["caption_chars"] += 1
            continue
        if keep_language is not None and not keep_language(caption):
            filtered["language"] += 1
            continue
        if opts.image_checks:
            verdict = image_check(image, opts.min_image_side, opts.max_aspect_ratio)
            if verdict is not None:
                (skipped if verdict[0] == "skip" else filtered)[verdict[1]] += 1
                continue
        key = output_key(uid)
        blob = b"".join([member(f"{key}.{ext}", data) for ext, data in files])
        blobs.append(blob)
        rows.append((h, int(t), int(p), pos, offset, len(blob)))
        offset += len(blob)
    out.write(b"".join(blobs))


def image_check(data: bytes, min_side: int, max_aspect_ratio: float | None) -> tuple[str, str] | None:
    """None when the image passes; else ("filter", name) or ("skip", reason). Decodes the image (so a
    corrupt one is found) and keeps nothing of the decoding: the bytes are copied as they are."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        w, h = image.size
        if min(w, h) < 1:
            return ("skip", "corrupt_image")
        if min(w, h) < min_side:
            return ("filter", "image_side")
        if max_aspect_ratio is not None and max(w, h) > max_aspect_ratio * min(w, h):
            return ("filter", "aspect_ratio")
        image.load()
    except Image.DecompressionBombError:
        return ("skip", "image_too_large")
    except Exception:  # noqa: BLE001 - Pillow raises many types for undecodable data
        return ("skip", "corrupt_image")
    return None


__all__ = ["MapOptions", "PART_DTYPE", "image_check", "map_shard", "output_key", "part_paths"]
