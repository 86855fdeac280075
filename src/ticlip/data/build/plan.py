"""Step planning: rows in time order → de-duplicated → steps (periods, aggregation) → a seeded order
per step whose first ``eval_n`` rows are the eval candidates, the next ``validation_n`` passing rows
the validation set, and the rest train.

Pure: nothing here reads images or writes files, so a plan can be made (and tested) on its own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from ticlip.data.build.config import BuildConfig
from ticlip.data.build.rows import Counts, ImageRef, Row, digest, normalize_caption
from ticlip.data.shards import sample_key
from ticlip.data.timestamps import normalize_period, plan_steps


@dataclass(frozen=True, slots=True)
class PlannedRow:
    """One row as the image pass gets it (the sample's ``.json`` is made from these fields)."""

    key: str  # the webdataset key, unique in the stream
    caption: str
    uid: str
    timestamp: str  # ISO date, or datetime when it has a time of day
    period: str
    label: str  # the step's label
    extra: dict | None
    ref: ImageRef
    ident: str

    def fingerprint_fields(self) -> list:
        """What the input fingerprint hashes of this row (stable across builder versions)."""
        head = [self.key, self.caption, self.uid, self.timestamp, self.period, self.label, self.extra]
        return [str(x) for x in head] + [str(x) for x in self.ref.parts()] + [self.ident]


@dataclass
class PlannedStep:
    index: int
    label: str
    start: str
    end: str
    periods: list[str]
    rows: list[PlannedRow]  # in the seeded order: the first ``eval_n`` are the eval candidates
    eval_n: int
    validation_n: int = 0  # validation pairs to take after the eval set (before the train rows)



def empty_step_warnings(plans, config) -> list[str]:
    """A warning naming the steps of ``config.step_ends`` that got no data (left out of the stream)."""
    if not config.step_ends:
        return []
    covered = {p.label for p in plans}
    expected, _ = plan_steps([normalize_period(e, config.granularity) for e in config.step_ends],
                             config.granularity, step_ends=config.step_ends)
    empty = [p.label for p in expected if p.label not in covered]
    return [f"no data for step(s) {', '.join(empty)}: left out of the stream"] if empty else []


def plan(rows: list[Row], counts: Counts, config: BuildConfig, warnings: list[str],
         keep_rows: Callable[[list[Row], Counts], list[Row]] | None = None) -> list[PlannedStep]:
    """The steps of ``rows`` (sorted in place). Adds to ``counts`` (dropped, duplicates) and ``warnings``.
    ``keep_rows(rows, counts)`` (the CLIP-score filter) sees the de-duplicated rows in time order and
    returns those that stay, counting the others."""
    rows.sort(key=lambda r: (r.time, r.seq))  # stable: first in time, then first in input
    if config.step_ends:
        last = normalize_period(config.step_ends[-1], config.granularity)
        kept = [r for r in rows if r.period <= last]
        counts.dropped_out_of_range = len(rows) - len(kept)
        rows = kept
    if config.dedup:
        rows = _dedup(rows, counts)
    if keep_rows is not None:
        rows = keep_rows(rows, counts)
    plans, mapping = plan_steps([r.period for r in rows], config.granularity,
                                aggregate_until=config.aggregate_until, step_ends=config.step_ends)
    warnings += empty_step_warnings(plans, config)
    by_step: list[list[Row]] = [[] for _ in plans]
    for r in rows:
        by_step[mapping[r.period]].append(r)

    keys = _Keys()
    steps = []
    eval_uids = _eval_uids(config)
    for i, (step_plan, step_rows) in enumerate(zip(plans, by_step)):
        planned = [keys.planned(r, step_plan.label) for r in step_rows]
        random.Random(f"{config.seed}/{step_plan.label}").shuffle(planned)
        if eval_uids is None:
            eval_n = eval_count(len(planned), config, step_plan.label, warnings)
        else:  # the listed uids first (in the seeded order): they are the eval candidates
            held = [p for p in planned if p.uid in eval_uids]
            planned = held + [p for p in planned if p.uid not in eval_uids]
            eval_n = len(held)
            if not held:
                warnings.append(f"step {step_plan.label}: none of its pairs is in eval_uids: no eval set")
        steps.append(PlannedStep(i, step_plan.label, step_plan.start, step_plan.end, step_plan.periods,
                                 planned, eval_n, validation_count(len(planned), eval_n, config)))
    return steps


def _eval_uids(config: BuildConfig) -> frozenset[str] | None:
    """The uids of ``config.eval_uids`` (TiC's eval uid lists; ticlip.data.tic_formats), or None."""
    if config.eval_uids is None:
        return None
    from ticlip.data.tic_formats import eval_uid_set

    return eval_uid_set(config.eval_uids)


def _dedup(rows: list[Row], counts: Counts) -> list[Row]:
    """The first row of each de-duplication key (rows are in time order)."""
    seen: set = set()
    kept = []
    for r in rows:
        if r.dedup_key in seen:
            counts.duplicates += 1
            continue
        seen.add(r.dedup_key)
        kept.append(r)
    return kept


class _Keys:
    """Unique uids and webdataset keys over the whole stream."""

    def __init__(self):
        self.used_keys: set[str] = set()
        self.uid_count: Counter = Counter()

    def planned(self, r: Row, label: str) -> PlannedRow:
        uid = r.uid if r.uid is not None else digest(normalize_caption(r.caption), r.ident)[:20]
        self.uid_count[uid] += 1
        if self.uid_count[uid] > 1:  # the same uid twice (de-duplication off): keep both, distinctly
            uid = f"{uid}-{self.uid_count[uid] - 1}"
        key = sample_key(uid)
        while key in self.used_keys:  # two uids that map to one webdataset key
            key += "_"
        self.used_keys.add(key)
        return PlannedRow(key, r.caption, uid, iso(r.time), r.period, label, r.extra or None, r.ref, r.ident)


def eval_count(n: int, config: BuildConfig, label: str, warnings: list[str]) -> int:
    """How many of a step's ``n`` rows are held out (before the image checks)."""
    if config.eval_fraction is not None:
        return min(config.eval_size, round(config.eval_fraction * n))
    eval_n = min(config.eval_size, n // 2)
    if config.eval_size > n // 2:
        warnings.append(f"step {label}: {n} pairs, eval set capped at half ({eval_n}); "
                        "set eval_fraction for small steps")
    return eval_n


def validation_count(n: int, eval_n: int, config: BuildConfig) -> int:
    """How many of a step's ``n`` rows form its validation set (before the image checks):
    ``min(validation_size, round(validation_ratio × eval_n), (n − eval_n) // 2)``, so at least half
    of what the eval set leaves stays for training."""
    if config.validation_size == 0:
        return 0
    return max(0, min(config.validation_size, round(config.validation_ratio * eval_n), (n - eval_n) // 2))


def iso(t: dt.datetime) -> str:
    return t.date().isoformat() if t.time() == dt.time(0) else t.isoformat()


def fingerprint(steps: list[PlannedStep], counts: Counts) -> str:
    """A hash of the planned rows and the counts: a resumed build must plan exactly the same."""
    h = hashlib.blake2b(digest_size=16)
    for st in steps:
        # "|validation_n" only when there is one: plans without validation hash as they always did
        tail = f"|{st.validation_n}" if st.validation_n else ""
        h.update(f"{st.label}|{st.eval_n}{tail}\n".encode())
        for row in st.rows:
            h.update(json.dumps(row.fingerprint_fields(), ensure_ascii=False, sort_keys=True).encode("utf-8"))
    h.update(json.dumps(counts.as_dict(), sort_keys=True).encode())
    return h.hexdigest()


__all__ = ["PlannedRow", "PlannedStep", "eval_count", "fingerprint", "plan", "validation_count"]
