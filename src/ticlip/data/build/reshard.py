"""Reshard existing webdataset shards by timestamp into a stream, without re-encoding:
``ticlip data build SHARDS --timestamps TABLE --out DIR``.

    request = check_reshard_request("shards/{00000..00099}.tar", "timestamps.parquet", {"eval_size": 500})
    stream = reshard_stream(request, "data/tic", engine="dask", workers=8)

1. Check everything first (``check_reshard_request``): the shards exist (local ones), the table has the
   uid and timestamp columns, the settings are a valid ``BuildConfig``. Nothing is written before.
2. The table becomes a compact uid index (``uid_index``), saved in ``OUT/.build/uid-index``.
3. Map (``reshard_map``), one job per input shard, on the engine (``engines``): each writes a part of
   its kept samples (their bytes as they are), an index and a marker with its counts, in
   ``OUT/.build/parts``. A finished input shard is not read again by a resumed build.
4. Merge (``reshard_plan``): time order, drop, de-duplicate, steps, seeded eval / validation / train
   split, computed from the parts' indexes alone.
5. Write (``reshard_write``), one job per output shard, on the engine; a marker per finished shard.
6. The manifest ``stream.json`` (the same format and counts as any build, ``builder._assemble``), last;
   the parts and the index are then removed.

Filters are off unless asked (a reshard's input is usually filtered already): ``RESHARD_DEFAULTS``
set the caption filters to 0 and the aspect-ratio bound to none; every other ``BuildConfig`` setting
means what it means for a table build, except ``max_image_side`` and ``image_cache_dir`` (no image is
resized or fetched; refused) and ``dedup`` (a uid is kept once, always).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ticlip.atomic import write_json_atomic
from ticlip.data.build.builder import _add_labelled_eval_sets, _assemble
from ticlip.data.build.config import BuildConfig, BuildError
from ticlip.data.build.engines import make_engine
from ticlip.data.build.progress import progress_bar
from ticlip.data.build.reshard_map import PART_DTYPE, MapOptions, map_shard, part_paths
from ticlip.data.build.reshard_plan import plan_reshard
from ticlip.data.build.reshard_write import write_output
from ticlip.data.build.resume import BuildState, config_hash, identity
from ticlip.data.build.rows import Counts
from ticlip.data.build.shard_inputs import expand_shards
from ticlip.data.build.uid_index import UidIndex, check_table, hash_uids, read_uid_index, release_shared
from ticlip.data.shards import shard_scheme
from ticlip.data.stream import MANIFEST_NAME, TimeStream

SOURCE = "reshard"  # the manifest's provenance.source
RESHARD_DEFAULTS = {"min_caption_words": 0, "min_caption_chars": 0, "max_aspect_ratio": None}
NOT_FOR_RESHARD = {"max_image_side": "images are copied as they are, never resized",
                   "image_cache_dir": "no image is fetched"}


@dataclass(frozen=True)
class ReshardRequest:
    """A checked request to reshard (``check_reshard_request``); nothing read beyond headers yet."""

    spec: str  # SHARDS as given (local paths made absolute)
    shards: tuple[str, ...]  # the input shard URLs, in input order
    table: str  # the timestamp table's absolute path
    uid_col: str
    timestamp_col: str
    config: BuildConfig
    name: str  # the stream's default name: the table's file name without suffix

    @property
    def source_params(self) -> dict:
        digest = hashlib.blake2b("\n".join(self.shards).encode("utf-8"), digest_size=16).hexdigest()
        return {"shards": self.spec, "shard_count": len(self.shards), "shards_digest": digest,
                "timestamps": self.table, "uid_col": self.uid_col, "timestamp_col": self.timestamp_col}


def check_reshard_request(shards: str, timestamps: str, build: Mapping | None = None, *, uid_col: str = "uid",
                          timestamp_col: str = "timestamp") -> ReshardRequest:
    """Check a reshard without writing anything; one-line BuildError / ConfigError for bad input."""
    build = dict(build or {})
    for key, why in NOT_FOR_RESHARD.items():
        if build.get(key) is not None:
            raise BuildError(f"{key} does not apply to a reshard ({why}); leave it out")
    if build.get("dedup") is False:
        raise BuildError("dedup false does not apply to a reshard: a uid is the key of its sample, kept once")
    config = BuildConfig.load({**RESHARD_DEFAULTS, **build}, source="build")
    for flag, col in (("--uid-col", uid_col), ("--timestamp-col", timestamp_col)):
        if not isinstance(col, str) or not col:
            raise BuildError(f"{flag} must name a column of the table, not {col!r}")
    table = os.path.abspath(os.fspath(timestamps))
    check_table(table, uid_col, timestamp_col)
    urls = expand_shards(os.fspath(shards))
    spec = os.fspath(shards)
    spec = os.path.abspath(spec) if shard_scheme(spec) is None else spec
    return ReshardRequest(spec, tuple(urls), table, uid_col, timestamp_col, config,
                          os.path.splitext(os.path.basename(table))[0])


def reshard_stream(request: ReshardRequest, out: str | os.PathLike, *, name: str | None = None,
                   engine="local", workers: int | None = None, scheduler: str | None = None,
                   progress: bool = True, overwrite: bool = False) -> TimeStream:
    """Build (or resume, or find finished) the stream of ``request`` in the local directory ``out``.

    ``engine`` is ``"local"`` (``workers`` processes; 1: this process), ``"dask"`` (a LocalCluster of
    ``workers``, or the cluster at ``scheduler``) or an engine object (``ticlip.data.build.engines``).
    The output is the same, byte for byte, whatever the engine and the worker count. Across
    machines, ``out`` must be a shared file system mounted at the same path on every worker."""
    from ticlip.locking import DirLock

    out = os.path.abspath(os.fspath(out))
    if "://" in out[:16]:
        raise BuildError(f"--out must be a local directory, not {out}; copy the built stream afterwards")
    owned = isinstance(engine, str)
    with DirLock(out, what="stream"):
        runner = make_engine(engine, workers, scheduler) if owned else engine
        ok = False
        try:
            stream = _reshard(request, out, name or request.name, runner, progress, overwrite)
            ok = True
        finally:
            if owned:
                runner.close(ok)
    return stream


def _reshard(request: ReshardRequest, out: str, name: str, engine, progress: bool, overwrite: bool) -> TimeStream:
    config, params = request.config, request.source_params
    chash, ident = config_hash(config, SOURCE, params), identity(config, SOURCE, params)
    state = BuildState(out)
    if not overwrite and os.path.exists(os.path.join(out, MANIFEST_NAME)) and os.path.exists(state.state_path):
        recorded = _read_json(state.state_path)
        if recorded.get("config_hash") == chash and recorded.get("finished"):
            return TimeStream.load(out)
    state.prepare(chash, ident, overwrite)

    index = read_uid_index(request.table, request.uid_col, request.timestamp_col, config.granularity)
    table_digest = index.digest()
    recorded = _read_json(state.state_path) if os.path.exists(state.state_path) else None
    if recorded is not None and recorded.get("table_digest") != table_digest:
        raise BuildError(f"{out} holds a build from another version of {request.table} (the table changed "
                         "since); choose another --out, or pass --overwrite to rebuild it")
    if recorded is None:
        recorded = {"config_hash": chash, "identity": ident, "table_digest": table_digest}
        write_json_atomic(state.state_path, recorded)
    index_dir = os.path.join(state.build_dir, "uid-index")
    if _saved_digest(index_dir) != table_digest:
        index.save(index_dir)
    period_names, table_stats = list(index.period_names), dict(index.stats)
    del index

    parts_dir = os.path.join(state.build_dir, "parts")
    os.makedirs(parts_dir, exist_ok=True)
    opts = MapOptions(parts_dir, index_dir, config.min_caption_words, config.min_caption_chars, config.language,
                      config.min_image_side, config.max_aspect_ratio)
    jobs = [(i, url) for i, url in enumerate(request.shards) if not _part_done(parts_dir, i)]
    bar = progress_bar(progress, total=len(request.shards), initial=len(request.shards) - len(jobs),
                       desc="reading input shards", unit=" shards")
    try:
        for _ in engine.map(functools.partial(map_shard, opts), jobs):
            bar.update(1)
    finally:
        bar.close()

    release_shared()  # this process's copy of the index, if it ran map jobs itself
    markers = [_read_json(part_paths(parts_dir, i)[2]) for i in range(len(request.shards))]
    rows, shard_of_rows = _load_parts(parts_dir, markers)
    warnings: list[str] = []
    plan = plan_reshard(rows, shard_of_rows, period_names, config, warnings, eval_hashes=_eval_hashes(config))
    del rows, shard_of_rows
    if not plan.steps:
        skipped = sum((Counter(m["skipped"]) for m in markers), Counter())
        raise BuildError(f"no pairs left to build a stream from: {sum(m['samples'] for m in markers)} samples "
                         f"in {len(markers)} shards, skipped {dict(skipped)}, unreadable shards "
                         f"{sum(1 for m in markers if m['unreadable'])}")
    fingerprint = plan.fingerprint()
    if recorded.get("input_fingerprint") != fingerprint:
        # another plan (an input shard read now that was unreadable before): its shards are written anew
        for stale in (state.done_dir, os.path.join(out, "steps")):
            if os.path.isdir(stale):
                shutil.rmtree(stale)
        recorded = {**recorded, "input_fingerprint": fingerprint}
        write_json_atomic(state.state_path, recorded)
    _write_outputs(plan, state, parts_dir, engine, progress)

    stream = _manifest(plan, markers, table_stats, config, name, params, chash, fingerprint, warnings, out)
    _add_labelled_eval_sets(stream, config)  # TiC-DataCompNet's synset-labelled eval set, when listed
    stream.save()  # last: its presence means the build finished
    write_json_atomic(state.state_path, {**recorded, "finished": True})
    shutil.rmtree(parts_dir)  # a copy of the input: no longer needed
    shutil.rmtree(index_dir)
    return stream


def _write_outputs(plan, state: BuildState, parts_dir: str, engine, progress: bool) -> None:
    os.makedirs(state.done_dir, exist_ok=True)
    jobs, marks = [], {}
    for st in plan.steps:
        for shard in st.shards:
            mpath = os.path.join(state.done_dir, shard.rel.replace("/", "_") + ".json")
            if state.read_marker(mpath, "shard") is not None:
                continue
            path = os.path.join(state.out, shard.rel)
            marks[path] = (mpath, shard.rel)
            jobs.append((path, parts_dir, shard.rows))
    total = sum(len(st.shards) for st in plan.steps)
    bar = progress_bar(progress, total=total, initial=total - len(jobs), desc="writing shards", unit=" shards")
    try:
        for path, count in engine.map(_write_job, jobs):
            mpath, rel = marks[path]
            write_json_atomic(mpath, {"shard": rel, "count": count})
            bar.update(1)
    finally:
        bar.close()


def _write_job(job) -> tuple[str, int]:
    return job[0], write_output(job)


def _eval_hashes(config: BuildConfig):
    """The uid hashes (``uid_index.hash_uids``) of ``config.eval_uids``, or None without a list."""
    if config.eval_uids is None:
        return None
    from ticlip.data.tic_formats import eval_uid_set

    return hash_uids(sorted(eval_uid_set(config.eval_uids)))


def _manifest(plan, markers: list[dict], table_stats: dict, config: BuildConfig, name: str, params: dict,
              chash: str, fingerprint: str, warnings: list[str], out: str) -> TimeStream:
    skipped, filtered = Counter(), Counter()
    for m in markers:
        skipped.update(m["skipped"])
        filtered.update(m["filtered"])
    unreadable = [m["url"] for m in markers if m["unreadable"]]
    counts = Counts(input_rows=sum(m["samples"] for m in markers), skipped=skipped, filtered=filtered,
                    duplicates=plan.duplicates, dropped_out_of_range=plan.dropped_out_of_range,
                    source_skipped={"unreadable_shard": len(unreadable)} if unreadable else {})
    if unreadable:
        warnings.append(f"{len(unreadable)} input shard(s) unreadable or cut short (first: {unreadable[0]}); "
                        "re-run the same command to try them again")
    evals, validations, trains = [], [], []
    for st in plan.steps:
        def held(kind):
            shards = [s for s in st.shards if s.kind == kind]
            return {"count": sum(len(s.rows) for s in shards), "shards": [s.rel for s in shards],
                    "skipped": {}, "filtered": {}, "consumed": sum(len(s.rows) for s in shards)}

        evals.append(held("eval"))
        validations.append(held("validation") if config.validation_size else None)
        trains.append([{"shard": s.rel, "count": len(s.rows), "skipped": {}, "filtered": {}}
                       for s in st.shards if s.kind == "train"])
    stream = _assemble(plan.steps, evals, validations, trains, counts, config, name, SOURCE, params, chash,
                       fingerprint, warnings, out)
    stream.provenance["builder"] = "ticlip.data.build.reshard"
    stream.provenance["reshard"] = {"input_shards": len(markers), "unreadable_shards": unreadable[:20],
                                    "table": table_stats}
    return stream


def _load_parts(parts_dir: str, markers: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Every part's rows in one array (filled part by part: never two copies) and their shard numbers."""
    sizes = [m["kept"] for m in markers]
    rows = np.zeros(sum(sizes), dtype=PART_DTYPE)
    at = 0
    for i, size in enumerate(sizes):
        part = np.load(part_paths(parts_dir, i)[1])
        if len(part) != size:
            raise BuildError(f"{part_paths(parts_dir, i)[1]} holds {len(part)} rows, its marker says {size}; "
                             "re-run with --overwrite")
        rows[at:at + size] = part
        at += size
    return rows, np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)


def _part_done(parts_dir: str, shard: int) -> bool:
    blob, index, marker = part_paths(parts_dir, shard)
    if not (os.path.exists(marker) and os.path.exists(index) and os.path.exists(blob)):
        return False
    return _read_json(marker).get("unreadable") is None  # an unreadable shard is tried again


def _saved_digest(index_dir: str) -> str | None:
    path = os.path.join(index_dir, "index.json")
    return _read_json(path).get("digest") if os.path.exists(path) else None


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


__all__ = ["NOT_FOR_RESHARD", "RESHARD_DEFAULTS", "ReshardRequest", "UidIndex", "check_reshard_request",
           "reshard_stream"]
