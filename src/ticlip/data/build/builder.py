"""``build_stream``: records → a TimeStream in a local directory (the two passes, then the manifest).

1. The metadata pass (``rows``) reads every record in this process; images held in memory go to a
   spool file. 2. ``plan`` sorts, drops, de-duplicates and splits the rows into steps. 3. The image
   pass (``images``) writes the eval, validation and train shards in ``workers`` processes, leaving a marker per
   finished shard (``resume``). 4. The manifest ``stream.json`` is written last: its presence means
   the build finished.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from typing import Iterable

from ticlip.atomic import DiskFull, disk_full, is_disk_full, write_json_atomic
from ticlip.data.build.config import EVAL_TASK, BuildConfig, BuildError
from ticlip.data.build.images import ImageOptions, Runner, build_eval, build_train, build_validation
from ticlip.data.build.plan import PlannedStep, fingerprint, plan
from ticlip.data.build.progress import progress_bar
from ticlip.data.build.resume import IMAGE_CACHE, BuildState, config_hash, identity
from ticlip.data.build.rows import Counts, Spool, json_safe, read_rows
from ticlip.data.records import Record
from ticlip.data.remote import local_output
from ticlip.data.stream import VALIDATION, ShardSet, Step, TimeStream, library_versions
from ticlip.data.table import SkippedRow


def build_stream(
    records: Iterable[Record | SkippedRow],
    out: str | os.PathLike,
    config: BuildConfig | None = None,
    *,
    name: str,
    source: str,
    source_params: dict | None = None,
    progress: bool = True,
    workers: int = 1,
    overwrite: bool = False,
) -> TimeStream:
    """Build a TimeStream in the local directory ``out`` from ``records``.

    ``source``/``source_params`` are recorded as provenance and, with ``config``, identify the
    build: re-running into a finished or interrupted ``out`` with the same ones (and the same
    input) resumes or does nothing; anything else raises BuildError unless ``overwrite``.
    ``workers`` processes decode and encode images (1 = in this process). To build from a source
    name or a table file, use ``build_stream_from``, which records the provenance for you.
    """
    config = BuildConfig.load(config.to_dict(), source="build config") if config is not None else BuildConfig()
    out = os.path.abspath(local_output(out))  # a URL is refused before abspath would make s3://b/x ./s3:/b/x
    source_params = json_safe(source_params or {})
    chash = config_hash(config, source, source_params)
    ident = identity(config, source, source_params)
    state = BuildState(out)
    state.prepare(chash, ident, overwrite)

    cache_dir = config.image_cache_dir or os.path.join(state.build_dir, IMAGE_CACHE)
    spool_path = os.path.join(state.build_dir, "spool.bin")
    spool = Spool(spool_path)
    try:  # a failed build leaves no spool behind (a re-run writes it anew), and a full disk says so
        try:
            rows, counts = read_rows(records, config, spool, cache_dir, progress)
        finally:
            spool.close()
        source_skipped = getattr(records, "skipped", None)  # what a source left out before yielding
        counts.source_skipped = dict(sorted(source_skipped.items())) if isinstance(source_skipped, dict) else {}
        warnings: list[str] = []
        steps = plan(rows, counts, config, warnings, keep_rows=_clip_score_filter(config, spool_path, cache_dir,
                                                                                  progress))
        del rows
        if not steps:
            raise BuildError(
                f"no pairs left to build a stream from: {counts.input_rows} rows in, "
                f"skipped {dict(counts.skipped)}, filtered {dict(counts.filtered)}, "
                f"duplicates {counts.duplicates}, dropped {counts.dropped_out_of_range}"
            )
        input_fingerprint = fingerprint(steps, counts)
        state.check_input(chash, input_fingerprint, ident)

        os.makedirs(state.done_dir, exist_ok=True)
        for stale in glob.glob(os.path.join(out, "steps", "*", "*.tmp-*")):
            os.remove(stale)  # left by a killed build; finished shards are renamed atomically
        runner = Runner(ImageOptions.of(config, spool_path, cache_dir), workers)
        ok = False
        bar = progress_bar(progress, total=sum(len(s.rows) for s in steps), desc="writing shards", unit=" rows")
        try:
            evals = [build_eval(st, state, runner, config, bar) for st in steps]
            validations = [build_validation(st, ev, state, runner, config, bar) for st, ev in zip(steps, evals)]
            trains = build_train(steps, evals, state, runner, config, bar, validations)
            ok = True
        finally:
            bar.close()
            runner.close(ok)

        stream = _assemble(steps, evals, validations, trains, counts, config, name, source, source_params, chash,
                           input_fingerprint, warnings, out)
        _add_labelled_eval_sets(stream, config)
        os.remove(spool_path)
        stream.save()  # last: its presence means the build finished
    except BaseException as e:
        spool.close()
        if os.path.exists(spool_path):
            os.remove(spool_path)
        if is_disk_full(e) and not isinstance(e, DiskFull):
            raise disk_full(getattr(e, "filename", None) or out) from None
        raise
    return stream


def _clip_score_filter(config: BuildConfig, spool_path: str, cache_dir: str, progress: bool):
    """The CLIP-score filter's ``keep`` (None when the build has none)."""
    if config.clip_score_checkpoint is None:
        return None
    from ticlip.data.build.clip_score import ClipScoreFilter

    return ClipScoreFilter(config, spool_path, cache_dir, progress).keep


def _add_labelled_eval_sets(stream: TimeStream, config: BuildConfig) -> None:
    """TiC-DataCompNet: when ``eval_uids`` lists each uid's synset, a second eval set ``datacompnet``
    of the labelled eval pairs (ticlip.data.datacompnet); other lists add nothing."""
    if config.eval_uids is None:
        return
    from ticlip.data.datacompnet import EVAL_SET, add_datacompnet_from_eval_uids

    counts = add_datacompnet_from_eval_uids(stream, config.eval_uids, shard_size=config.shard_size)
    for st, step_count in zip(stream.steps, stream.provenance["counts"]["steps"]):
        if counts is not None and EVAL_SET in st.eval:
            step_count["eval"][EVAL_SET] = st.eval[EVAL_SET].count


def _assemble(steps: list[PlannedStep], evals: list[dict], validations: list[dict | None],
              trains: list[list[dict]], counts: Counts,
              config: BuildConfig, name: str, source: str, source_params: dict, chash: str,
              input_fingerprint: str, warnings: list[str], out: str) -> TimeStream:
    """The manifest from the shard markers (and each step's ``sizes.json``)."""
    skipped, filtered = Counter(counts.skipped), Counter(counts.filtered)
    step_objs, step_counts = [], []
    for st, ev, va, tr in zip(steps, evals, validations, trains):
        for m in [ev, *([va] if va else []), *tr]:
            skipped.update(m["skipped"])
            filtered.update(m["filtered"])
        train_shards = [m["shard"] for m in tr if m["shard"]]
        train_n = sum(m["count"] for m in tr)
        sizes = {os.path.basename(m["shard"]): m["count"] for m in tr if m["shard"]}
        eval_sets = {}
        if ev["count"]:
            eval_sets[EVAL_TASK] = ShardSet(list(ev["shards"]), ev["count"])
            # eval shards hold shard_size pairs each but the last
            for k, rel in enumerate(ev["shards"]):
                sizes[os.path.basename(rel)] = min(config.shard_size, ev["count"] - k * config.shard_size)
        validation = None
        if va is not None:  # the build has validation sets (this step's may be empty)
            validation = ShardSet(list(va["shards"]), va["count"])
            for k, rel in enumerate(va["shards"]):
                sizes[os.path.basename(rel)] = min(config.shard_size, va["count"] - k * config.shard_size)
            if va["count"] < st.validation_n:
                warnings.append(f"step {st.label}: only {va['count']} of {st.validation_n} validation pairs "
                                "passed the image checks")
        if sizes:
            write_json_atomic(os.path.join(out, "steps", str(st.index), "sizes.json"), sizes)
        if train_n == 0:
            warnings.append(f"step {st.label}: no train pairs left after the image checks")
        if ev["count"] < st.eval_n:
            warnings.append(f"step {st.label}: only {ev['count']} of {st.eval_n} eval pairs passed the image checks")
        step_objs.append(Step(st.index, st.label, st.start, st.end, list(st.periods),
                              ShardSet(train_shards, train_n), eval_sets, validation))
        step_count = {"label": st.label, "train": train_n, "eval": {EVAL_TASK: ev["count"]}}
        if validation is not None:
            step_count[VALIDATION] = validation.count
        step_counts.append(step_count)
    counts_out = {
        "input_rows": counts.input_rows,
        "skipped": dict(sorted(skipped.items())),
        "filtered": dict(sorted(filtered.items())),
        "duplicates": counts.duplicates,
        "dropped_out_of_range": counts.dropped_out_of_range,
        "steps": step_counts,
        "source_skipped": counts.source_skipped,
    }
    provenance = {
        "builder": "ticlip.data.build",
        "source": source,
        "source_params": source_params,
        "config": config.record_dict(),
        "seed": config.seed,
        "counts": counts_out,
        "config_hash": chash,
        "input_fingerprint": input_fingerprint,
        "library_versions": library_versions(),
        "warnings": warnings,
    }
    return TimeStream(root=out, name=name, granularity=config.granularity, steps=step_objs,
                      provenance=provenance)


__all__ = ["build_stream"]
