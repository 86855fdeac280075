"""The image pass: decode, check, resize and re-encode each planned row's image, in ``workers``
processes, and write the shards (each eval set, each validation set, then train chunks of
``shard_size`` rows).

Each row gives ``("ok", ShardSample)``, ``("skip", reason)`` or ``("filter", name)``. Every finished
shard leaves a marker (see ``resume.BuildState``), so an interrupted build redoes only what is missing.
"""

from __future__ import annotations

import io
import math
import os
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

from ticlip.atomic import write_json_atomic
from ticlip.data.build.config import EVAL_TASK, BuildConfig
from ticlip.data.build.plan import PlannedRow, PlannedStep
from ticlip.data.build.resume import BuildState
from ticlip.data.shards import ShardSample, encode_image, write_shard
from ticlip.data.stream import VALIDATION
from ticlip.data.remote import MissingBackend
from ticlip.data.table import ImageFetchError, read_image_bytes


@dataclass(frozen=True)
class ImageOptions:
    """What a worker needs to process rows (picklable: sent once to each worker)."""

    min_side: int
    max_aspect_ratio: float | None
    max_side: int
    spool_path: str
    cache_dir: str

    @classmethod
    def of(cls, config: BuildConfig, spool_path: str, cache_dir: str) -> "ImageOptions":
        return cls(config.min_image_side, config.max_aspect_ratio, config.max_image_side, spool_path, cache_dir)


def shard_rel(index: int, kind: str, j: int) -> str:
    """A shard's path relative to the stream root."""
    return f"steps/{index}/{kind}-{j:06d}.tar"


def _open_image(opts: ImageOptions, row: PlannedRow, spool):
    """(PIL image not yet fully decoded, original size)."""
    from PIL import Image

    ref = row.ref
    if ref.kind == "pixels":
        spool.seek(ref.offset)
        image = Image.frombytes(ref.mode, (ref.width, ref.height), spool.read(ref.length))
        return image, (ref.original_width, ref.original_height)
    if ref.kind == "bytes":
        spool.seek(ref.offset)
        data = spool.read(ref.length)
    elif ref.kind == "file":
        data = read_image_bytes(ref.location)
    else:
        data = read_image_bytes(ref.location, cache_dir=opts.cache_dir)
    image = Image.open(io.BytesIO(data))
    return image, image.size


def process_row(opts: ImageOptions, row: PlannedRow, spool) -> tuple:
    """("ok", ShardSample) | ("skip", reason) | ("filter", name) for one row."""
    from PIL import Image, ImageOps

    try:
        image, (w, h) = _open_image(opts, row, spool)
    except ImageFetchError as e:
        return ("skip", e.reason)
    except MissingBackend:  # the fsspec back-end of s3:// etc. is not installed: one error, not a skip per image
        raise
    except Image.DecompressionBombError:
        return ("skip", "image_too_large")
    except Exception:  # Pillow raises many types for undecodable data
        return ("skip", "corrupt_image")
    if min(w, h) < max(opts.min_side, 1):
        return ("filter", "image_side") if min(w, h) >= 1 else ("skip", "corrupt_image")
    if opts.max_aspect_ratio is not None and max(w, h) > opts.max_aspect_ratio * min(w, h):
        return ("filter", "aspect_ratio")
    try:
        if getattr(image, "format", None) == "JPEG" and max(w, h) > opts.max_side:
            scale = opts.max_side / max(w, h)
            image.draft(None, (max(1, round(w * scale)), max(1, round(h * scale))))
        image.load()
        image = ImageOps.exif_transpose(image)
        ext, data = encode_image(image, max_side=opts.max_side)
    except Image.DecompressionBombError:
        return ("skip", "image_too_large")
    except Exception:
        return ("skip", "corrupt_image")
    meta = {**(row.extra or {}), "uid": row.uid, "timestamp": row.timestamp, "period": row.period,
            "step": row.label}
    return ("ok", ShardSample(row.key, ext, data, row.caption, meta))


def process_rows(opts: ImageOptions, rows: list[PlannedRow]) -> list[tuple]:
    with open(opts.spool_path, "rb") as spool:
        return [process_row(opts, r, spool) for r in rows]


def write_train_chunk(opts: ImageOptions, job: tuple) -> dict:
    """Process one chunk of rows and write its shard (if any row passed); returns its marker."""
    path, rel, rows = job
    results = process_rows(opts, rows)
    samples = [r[1] for r in results if r[0] == "ok"]
    if samples:
        write_shard(path, samples)
    return {"shard": rel if samples else None, "count": len(samples), "rows": len(rows), **tally(results)}


def tally(results) -> dict:
    """Rows removed in the image pass, by reason."""
    skipped, filtered = Counter(), Counter()
    for r in results:
        if r[0] == "skip":
            skipped[r[1]] += 1
        elif r[0] == "filter":
            filtered[r[1]] += 1
    return {"skipped": dict(skipped), "filtered": dict(filtered)}


def _pool_rows(task: tuple) -> list[tuple]:
    opts, rows = task
    return process_rows(opts, rows)


def _pool_train(task: tuple) -> tuple:
    opts, job = task
    return job[0], write_train_chunk(opts, job)


class Runner:
    """Runs row batches in-process (workers <= 1) or in a process pool (each task carries the options)."""

    def __init__(self, opts: ImageOptions, workers: int):
        self.opts, self.workers, self.pool = opts, max(1, int(workers or 1)), None
        if self.workers > 1:
            import multiprocessing as mp

            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            self.pool = mp.get_context(method).Pool(self.workers)

    def rows(self, rows: list[PlannedRow]) -> list[tuple]:
        if self.pool is None or len(rows) < 2 * self.workers:
            return process_rows(self.opts, rows)
        k = math.ceil(len(rows) / self.workers)
        parts = self.pool.map(_pool_rows, [(self.opts, rows[i:i + k]) for i in range(0, len(rows), k)])
        return [r for part in parts for r in part]

    def train(self, jobs: list) -> Iterator[tuple]:
        if self.pool is None:
            for job in jobs:
                yield job[0], write_train_chunk(self.opts, job)
        else:
            yield from self.pool.imap_unordered(_pool_train, [(self.opts, job) for job in jobs])

    def close(self, ok: bool):
        if self.pool is not None:
            if ok:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()


def build_eval(st: PlannedStep, state: BuildState, runner: Runner, config: BuildConfig, bar) -> dict:
    """The step's held-out set: the first ``eval_n`` rows (seeded order) whose image passes."""
    return _held_out(st, 0, st.eval_n, f"eval-{EVAL_TASK}", state.eval_marker(st.index), state, runner, config, bar)


def build_validation(st: PlannedStep, ev: dict, state: BuildState, runner: Runner, config: BuildConfig,
                     bar) -> dict | None:
    """The step's validation set: the next ``validation_n`` passing rows after those the eval set
    consumed (so it shares no row with eval or train); None when the build has no validation sets."""
    if config.validation_size == 0:
        return None
    return _held_out(st, ev["consumed"], st.validation_n, VALIDATION, state.validation_marker(st.index),
                     state, runner, config, bar)


def _held_out(st: PlannedStep, start: int, n: int, kind: str, marker_path: str, state: BuildState,
              runner: Runner, config: BuildConfig, bar) -> dict:
    """Write the first ``n`` rows from ``st.rows[start:]`` whose image passes as ``<kind>-NNNNNN.tar``
    shards; the marker's ``consumed`` counts the rows looked at (from ``start``)."""
    marker = state.read_marker(marker_path)
    if marker is not None:
        bar.update(marker["consumed"])
        return marker
    rows = st.rows[start:]
    chosen, failed, pos = [], [], 0
    while len(chosen) < n and pos < len(rows):
        need = n - len(chosen)
        batch = rows[pos:pos + need + need // 8 + 4]
        for r in runner.rows(batch):
            pos += 1
            (chosen if r[0] == "ok" else failed).append(r)
            if len(chosen) == n:
                break
    bar.update(pos)
    shards = []
    samples = [r[1] for r in chosen]
    for j in range(0, len(samples), config.shard_size):
        rel = shard_rel(st.index, kind, j // config.shard_size)
        write_shard(os.path.join(state.out, rel), samples[j:j + config.shard_size])
        shards.append(rel)
    marker = {"consumed": pos, "count": len(samples), "shards": shards, **tally(failed)}
    write_json_atomic(marker_path, marker)
    return marker


def build_train(steps: list[PlannedStep], evals: list[dict], state: BuildState, runner: Runner,
                config: BuildConfig, bar, validations: list[dict | None] | None = None) -> list[list[dict]]:
    """Write every step's train chunks (skipping finished ones): the rows after those the eval and
    validation sets consumed; markers per step, chunk order."""
    markers: list[list[dict | None]] = []
    jobs = []
    for st, ev, va in zip(steps, evals, validations or [None] * len(steps)):
        rest = st.rows[ev["consumed"] + (va["consumed"] if va else 0):]
        chunks = [rest[i:i + config.shard_size] for i in range(0, len(rest), config.shard_size)]
        markers.append([None] * len(chunks))
        for j, rows in enumerate(chunks):
            mpath = state.train_marker(st.index, j)
            marker = state.read_marker(mpath, "shard")
            if marker is not None:
                markers[-1][j] = marker
                bar.update(marker["rows"])
                continue
            rel = shard_rel(st.index, "train", j)
            jobs.append(((st.index, j, mpath), os.path.join(state.out, rel), rel, rows))
    where = {}
    pool_jobs = []
    for tag, path, rel, rows in jobs:
        where[path] = tag
        pool_jobs.append((path, rel, rows))
    for path, marker in runner.train(pool_jobs):
        index, j, mpath = where[path]
        write_json_atomic(mpath, marker)
        markers[index][j] = marker
        bar.update(marker["rows"])
    return markers


__all__ = [
    "ImageOptions", "Runner", "build_eval", "build_train", "build_validation", "process_row", "shard_rel", "tally",
]
