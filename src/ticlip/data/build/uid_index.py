"""The uid → timestamp table of a reshard as a compact, sorted index (``UidIndex``).

The table (CSV/TSV or Parquet; ``--uid-col``, ``--timestamp-col``) is read in batches. Each uid becomes
a 16-byte BLAKE2b hash (sorted, ``numpy`` ``S16``), next to its time (int64 microseconds since
1970-01-01, naive UTC) and its period's id: 28 bytes a row, no Python object per row, so that the
index of millions of rows stays small and is shared by worker processes through a memory map.

Timestamps are parsed by ``ticlip.data.timestamps.parse_timestamp`` (the builder's parser), once per
distinct value of a batch; a row whose timestamp does not parse or is out of range keeps its uid with
the reason (``BAD_TIMESTAMP``, ``OUT_OF_RANGE``), so that samples with that uid are counted under
it. Rows without a uid, and CSV rows with the wrong number of cells (``malformed_rows``), are counted
and left out; a uid on several rows keeps its earliest valid time (counted as ``duplicate_uids``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field

import numpy as np

from ticlip.atomic import atomic_path, write_json_atomic
from ticlip.data.build.config import BuildError
from ticlip.data.timestamps import TimestampOutOfRange, TimestampError, parse_timestamp, period_of

BAD_TIMESTAMP, OUT_OF_RANGE = -1, -2  # period ids of rows whose timestamp cannot be used
PERIOD_REASONS = {BAD_TIMESTAMP: "bad_timestamp", OUT_OF_RANGE: "timestamp_out_of_range"}
TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
_EPOCH = dt.datetime(1970, 1, 1)
_BATCH = 65536


def uid_hash(uid: str) -> bytes:
    """The 16 bytes a uid is indexed by (collisions: ~n²/2¹²⁹, none in practice at 10¹⁰ uids)."""
    return hashlib.blake2b(uid.encode("utf-8"), digest_size=16).digest()


def hash_uids(uids: list[str]) -> np.ndarray:
    return np.array([uid_hash(u) for u in uids], dtype="S16") if uids else np.zeros(0, dtype="S16")


@dataclass
class UidIndex:
    hashes: np.ndarray  # S16, sorted, unique
    times: np.ndarray  # int64 µs since 1970
    periods: np.ndarray  # int32: index into period_names, or BAD_TIMESTAMP / OUT_OF_RANGE
    period_names: list[str]
    stats: dict = field(default_factory=dict)  # table_rows, rows_without_uid, duplicate_uids[, malformed_rows]

    def lookup(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(found, time, period id) for each 16-byte hash in ``queries`` (time/period are 0 where not found)."""
        n = len(self.hashes)
        if n == 0 or len(queries) == 0:
            zeros = np.zeros(len(queries), dtype=np.int64)
            return np.zeros(len(queries), dtype=bool), zeros, zeros.astype(np.int32)
        pos = np.minimum(np.searchsorted(self.hashes, queries), n - 1)
        found = self.hashes[pos] == queries
        return found, np.where(found, self.times[pos], 0), np.where(found, self.periods[pos], 0).astype(np.int32)

    def digest(self) -> str:
        """A hash of the index's content (what a resumed build must find unchanged)."""
        h = hashlib.blake2b(digest_size=16)
        for a in (self.hashes, self.times, self.periods):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(json.dumps(self.period_names).encode())
        return h.hexdigest()

    # ------------------------------------------------------------------ on disk (shared by workers)
    def save(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        for name in ("hashes", "times", "periods"):
            with atomic_path(os.path.join(directory, f"{name}.npy")) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, getattr(self, name))
        write_json_atomic(os.path.join(directory, "index.json"),
                          {"period_names": self.period_names, "stats": self.stats, "digest": self.digest()})

    @classmethod
    def load(cls, directory: str) -> "UidIndex":
        with open(os.path.join(directory, "index.json"), encoding="utf-8") as f:
            meta = json.load(f)
        arrays = [np.load(os.path.join(directory, f"{n}.npy"), mmap_mode="r") for n in ("hashes", "times", "periods")]
        return cls(*arrays, meta["period_names"], meta["stats"])


_LOADED: dict[str, UidIndex] = {}
_LOCK = threading.Lock()


def load_shared(directory: str) -> UidIndex:
    """The index saved in ``directory``, loaded (memory-mapped) once per worker process."""
    with open(os.path.join(directory, "index.json"), encoding="utf-8") as f:
        key = f"{directory}|{json.load(f)['digest']}"  # a rebuilt index in the same place is loaded anew
    with _LOCK:
        if key not in _LOADED:
            _LOADED.clear()  # one build at a time per process
            _LOADED[key] = UidIndex.load(directory)
        return _LOADED[key]


def release_shared() -> None:
    """Forget the index ``load_shared`` loaded in this process (its pages leave memory)."""
    with _LOCK:
        _LOADED.clear()


# ---------------------------------------------------------------------------- reading the table
def table_kind(path: str) -> str | None:
    return TABLE_FORMATS.get(os.path.splitext(str(path))[1].lower())


def check_table(path: str, uid_col: str, timestamp_col: str) -> None:
    """The table exists, is CSV/TSV/Parquet and has both columns; BuildError (one line) otherwise."""
    kind = table_kind(path)
    if kind is None:
        raise BuildError(f"--timestamps {path}: unknown table format; use .csv, .tsv or .parquet")
    if not os.path.isfile(path):
        raise BuildError(f"--timestamps {path}: no such table file")
    columns = _columns(path, kind)
    for flag, col in (("--uid-col", uid_col), ("--timestamp-col", timestamp_col)):
        if col not in columns:
            raise BuildError(f"--timestamps {path}: no column {col!r}; the table has: "
                             f"{', '.join(map(str, columns))} (choose one with {flag})")


def _columns(path: str, kind: str) -> list[str]:
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(path).schema_arrow.names)
        import csv

        with open(path, newline="", encoding="utf-8-sig") as f:
            return next(csv.reader(f, delimiter="\t" if kind == "tsv" else ","), None) or []
    except UnicodeDecodeError:
        raise BuildError(f"--timestamps {path}: not UTF-8 text; convert it first") from None
    except Exception as e:  # pyarrow: not a Parquet file; csv: a broken header
        raise BuildError(f"--timestamps {path}: not a readable {kind} table: {str(e).splitlines()[0][:120]}") from None


def _batches(path: str, kind: str, uid_col: str, timestamp_col: str, malformed: list):
    """(uids, timestamps) pyarrow arrays per batch; CSV rows with too many or too few cells are
    counted in ``malformed`` (one item each) and left out."""
    import pyarrow as pa

    if kind == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=_BATCH, columns=[uid_col, timestamp_col]):
            yield batch.column(0), batch.column(1)
        return
    import pyarrow.csv as pcsv

    strings = {uid_col: pa.string(), timestamp_col: pa.string()}  # nothing guessed by the CSV reader
    reader = pcsv.open_csv(
        path, read_options=pcsv.ReadOptions(block_size=1 << 22, use_threads=False),
        parse_options=pcsv.ParseOptions(delimiter="\t" if kind == "tsv" else ",", newlines_in_values=True,
                                        invalid_row_handler=lambda row: (malformed.append(row.number), "skip")[1]),
        convert_options=pcsv.ConvertOptions(column_types=strings, include_columns=[uid_col, timestamp_col],
                                            strings_can_be_null=True))
    for batch in reader:
        yield batch.column(0), batch.column(1)


def read_uid_index(path: str, uid_col: str, timestamp_col: str, granularity: str) -> UidIndex:
    """The index of the table at ``path`` (checked by ``check_table`` first)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    check_table(path, uid_col, timestamp_col)
    period_ids: dict[str, int] = {}
    parts_h, parts_t, parts_p = [], [], []
    rows = without_uid = 0
    malformed: list = []
    try:
        for uids, stamps in _batches(path, table_kind(path), uid_col, timestamp_col, malformed):
            rows += len(uids)
            valid = pc.and_(pc.is_valid(uids), pc.not_equal(pc.cast(uids, pa.string()), ""))
            valid = valid.fill_null(False)
            without_uid += len(uids) - pc.sum(valid).as_py() if len(uids) else 0
            uids, stamps = pc.filter(uids, valid), pc.filter(stamps, valid)
            if not len(uids):
                continue
            encoded = pc.dictionary_encode(stamps, null_encoding="encode")
            times, periods = _parse_values(encoded.dictionary.to_pylist(), granularity, period_ids)
            codes = encoded.indices.to_numpy(zero_copy_only=False)
            parts_h.append(hash_uids([str(u) for u in uids.to_pylist()]))
            parts_t.append(times[codes])
            parts_p.append(periods[codes])
    except BuildError:
        raise
    except Exception as e:  # pyarrow: a malformed row or file part
        raise BuildError(f"--timestamps {path}: not a readable table: {str(e).splitlines()[0][:160]}") from None
    pa.default_memory_pool().release_unused()  # the batches are gone: hand their memory back
    hashes = np.concatenate(parts_h) if parts_h else np.zeros(0, dtype="S16")
    times = np.concatenate(parts_t) if parts_t else np.zeros(0, dtype=np.int64)
    periods = np.concatenate(parts_p) if parts_p else np.zeros(0, dtype=np.int32)
    del parts_h, parts_t, parts_p
    # periods in sorted order, so that comparing ids compares periods
    names = sorted(period_ids)
    remap = np.array([names.index(p) for p in sorted(period_ids, key=period_ids.get)], dtype=np.int32)
    periods = np.where(periods >= 0, remap[np.maximum(periods, 0)] if len(remap) else periods, periods)
    # one row per uid: the earliest usable time (bad timestamps last), then the first in the table
    unusable = (periods < 0).astype(np.int8)
    order = np.lexsort((np.arange(len(hashes)), times, unusable, hashes))
    hashes, times, periods = hashes[order], times[order], periods[order]
    first = np.ones(len(hashes), dtype=bool)
    first[1:] = hashes[1:] != hashes[:-1]
    stats = {"table_rows": int(rows), "rows_without_uid": int(without_uid), "duplicate_uids": int((~first).sum())}
    if malformed:
        stats["malformed_rows"] = len(malformed)
    return UidIndex(hashes[first], times[first], periods[first].astype(np.int32), names, stats)


def _parse_values(values: list, granularity: str, period_ids: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    times = np.zeros(len(values), dtype=np.int64)
    periods = np.zeros(len(values), dtype=np.int32)
    for i, v in enumerate(values):
        try:
            t = parse_timestamp(v)
        except TimestampOutOfRange:
            periods[i] = OUT_OF_RANGE
            continue
        except TimestampError:
            periods[i] = BAD_TIMESTAMP
            continue
        delta = t - _EPOCH
        times[i] = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
        periods[i] = period_ids.setdefault(period_of(t, granularity), len(period_ids))
    return times, periods


__all__ = ["BAD_TIMESTAMP", "OUT_OF_RANGE", "PERIOD_REASONS", "UidIndex", "check_table", "hash_uids",
           "load_shared", "read_uid_index", "release_shared", "uid_hash"]
