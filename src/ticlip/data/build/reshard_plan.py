"""The merge plan of a reshard: all parts' indexes → steps, each with its seeded order and its eval,
validation and train shards (pure: reads and writes nothing).

The same rules as the table builder's ``plan`` (``ticlip.data.build.plan``) on compact arrays instead
of one Python object per pair, so that millions of pairs plan in a few hundred MB:

1. all kept samples in time order, ties by uid (its hash), then input order (input shard number, then
   position in it): the order is a function of the parts alone, never of which worker wrote which
   part when, and the samples of one uid are side by side;
2. samples after the last of ``step_ends`` are dropped (``dropped_out_of_range``);
3. a uid seen again (the same uid in two samples) is a duplicate: the first in input order is kept;
4. periods → steps with ``plan_steps`` (``aggregate_until``, ``step_ends``);
5. per step, a seeded permutation (NumPy's PCG64 seeded with a hash of ``"{seed}/{label}"``): its first
   ``eval_count`` samples are the eval set, the next ``validation_count`` the validation set, the rest
   train, each cut into shards of ``shard_size``.

The order within a step differs from the table builder's (another generator), the split rules do not.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from ticlip.data.build.config import EVAL_TASK, BuildConfig
from ticlip.data.build.images import shard_rel
from ticlip.data.build.plan import empty_step_warnings, eval_count, validation_count
from ticlip.data.stream import VALIDATION
from ticlip.data.timestamps import normalize_period, plan_steps

_CHUNK = 1 << 16
SOURCE_DTYPE = np.dtype([("shard", "<i4"), ("offset", "<i8"), ("length", "<i8")])  # where a sample's bytes are


@dataclass
class OutputShard:
    rel: str  # path relative to the stream root
    kind: str  # "eval", "validation" or "train"
    rows: np.ndarray  # SOURCE_DTYPE, in the order written


@dataclass
class ReshardStep:
    index: int
    label: str
    start: str
    end: str
    periods: list[str]
    eval_n: int
    validation_n: int
    train_n: int
    shards: list[OutputShard]


@dataclass
class ReshardPlan:
    steps: list[ReshardStep]
    kept: int  # samples in the parts
    duplicates: int
    dropped_out_of_range: int

    def fingerprint(self) -> str:
        """A hash of every output shard's content plan (a resumed build reuses only shards of the same plan)."""
        h = hashlib.blake2b(digest_size=16)
        for st in self.steps:
            h.update(json.dumps([st.label, st.eval_n, st.validation_n, st.train_n]).encode())
            for shard in st.shards:
                h.update(shard.rel.encode())
                h.update(np.ascontiguousarray(shard.rows).tobytes())
        h.update(json.dumps([self.kept, self.duplicates, self.dropped_out_of_range]).encode())
        return h.hexdigest()


def step_seed(seed: int, label: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}/{label}".encode("utf-8"), digest_size=8).digest(), "little")


def plan_reshard(cat: np.ndarray, shard: np.ndarray, period_names: list[str], config: BuildConfig,
                 warnings: list[str], *, eval_hashes: np.ndarray | None = None) -> ReshardPlan:
    """The plan of the parts' rows ``cat`` (``reshard_map.PART_DTYPE``, the parts one after the other in
    input order) whose input shard numbers are ``shard``. ``eval_hashes`` (the uid hashes of
    ``config.eval_uids``): each step's eval set is its samples with those uids (in the seeded order),
    as in the table builder's plan."""
    n = len(cat)
    time, period, pos, hashes = cat["time"], cat["period"], cat["pos"], cat["hash"]
    order = np.lexsort((pos, shard, hashes, time))  # the samples of one uid (one time) end up side by side
    dropped = 0
    if config.step_ends:
        last = normalize_period(config.step_ends[-1], config.granularity)
        in_range = np.array([p <= last for p in period_names], dtype=bool)
        keep = in_range[period[order]] if n else np.zeros(0, dtype=bool)
        dropped = int(n - keep.sum())
        order = order[keep]
    first = np.ones(len(order), dtype=bool)  # the first of each uid: in input order, as it sorts first
    for a in range(1, len(order), _CHUNK):  # compared in chunks: no copy of every hash
        b = min(len(order), a + _CHUNK)
        first[a:b] = hashes[order[a:b]] != hashes[order[a - 1:b - 1]]
    duplicates = int(len(order) - first.sum())
    order = order[first]
    del first

    present = [period_names[i] for i in np.unique(period[order])]
    plans, mapping = plan_steps(present, config.granularity, aggregate_until=config.aggregate_until,
                                step_ends=config.step_ends)
    warnings += empty_step_warnings(plans, config)
    step_of = np.array([mapping.get(p, -1) for p in period_names], dtype=np.int32)
    steps_of_rows = step_of[period[order]] if len(order) else np.zeros(0, dtype=np.int32)
    by_step = np.argsort(steps_of_rows, kind="stable")  # time order within each step
    bounds = np.searchsorted(steps_of_rows[by_step], np.arange(len(plans) + 1))

    del time, pos, steps_of_rows

    def source(idx: np.ndarray) -> np.ndarray:
        out = np.empty(len(idx), dtype=SOURCE_DTYPE)
        out["shard"], out["offset"], out["length"] = shard[idx], cat["offset"][idx], cat["length"][idx]
        return out
    steps = []
    for i, sp in enumerate(plans):
        rows = order[by_step[bounds[i]:bounds[i + 1]]]
        rows = rows[np.random.Generator(np.random.PCG64(step_seed(config.seed, sp.label))).permutation(len(rows))]
        count = len(rows)
        if eval_hashes is None:
            eval_n = eval_count(count, config, sp.label, warnings)
        else:  # the listed uids first: they are the eval set
            listed = np.isin(hashes[rows], eval_hashes)
            rows = np.concatenate([rows[listed], rows[~listed]])
            eval_n = int(listed.sum())
            if not eval_n:
                warnings.append(f"step {sp.label}: none of its pairs is in eval_uids: no eval set")
        validation_n = validation_count(count, eval_n, config)
        shards: list[OutputShard] = []
        pieces = [("eval", f"eval-{EVAL_TASK}", rows[:eval_n])]
        if config.validation_size:
            pieces.append(("validation", VALIDATION, rows[eval_n:eval_n + validation_n]))
        pieces.append(("train", "train", rows[eval_n + validation_n:]))
        for kind, prefix, part in pieces:
            for j in range(0, len(part), config.shard_size):
                shards.append(OutputShard(shard_rel(i, prefix, j // config.shard_size), kind,
                                          source(part[j:j + config.shard_size])))
        steps.append(ReshardStep(i, sp.label, sp.start, sp.end, list(sp.periods), eval_n, validation_n,
                                 count - eval_n - validation_n, shards))
    return ReshardPlan(steps, n, duplicates, dropped)


__all__ = ["OutputShard", "ReshardPlan", "ReshardStep", "SOURCE_DTYPE", "plan_reshard", "step_seed"]
