"""Readers of the released TiC-CLIP data formats (Garg et al., ICLR 2024; github.com/apple/ml-tic-clip).

Each reader turns a public download into what ticlip's builder takes: ``Record``s (or ``SkippedRow``s,
counted by reason), or a uid → timestamp table (columns ``uid``, ``timestamp``) for resharding existing
shards. Layouts, as released:

- **TiC-DataComp timestamps** (README "TiC-DataComp UIDs" of apple/ml-tic-clip; files on
  huggingface.co/datasets/apple/TiC-DataComp): ``tic-datacomp_training_yearly_noeval/<YYYY>.npy`` and
  ``tic-datacomp_training_monthly/<YYYYMM>.npy`` (the Apple CDN also ships the months as
  ``<YYYY>.tar`` holding ``<YYYY>/<YYYYMM>.npy``). Each file holds the DataComp uids of its period as
  128-bit hashes: a NumPy array of dtype ``u8,u8`` (DataComp's ``resharder.py --subset-file``; the
  sizes add up: 12.7B pairs x 16 bytes = the 203 GB of yearly files), the first field the uid's first
  16 hex digits. ``read_tic_datacomp_timestamps`` yields (uid, period); ``write_timestamp_table``
  writes them as Parquet.
- **TiC-DataComp-Retrieval / TiC-DataCompNet eval uids** (README; dataset_creation/tic-datacomp/
  generate_eval_uids.py): ``tic-datacomp_retrieval_evals_year2uids.{pkl,json}`` (year → uids) and
  ``tic-datacompnet_year2uids.{pkl,json}`` (year → WordNet synset → uids); uids are 32-digit hex
  strings (the pickles may hold them in NumPy arrays). generate_eval_uids.py turns them into
  ``eval/retrieval/<year>.npy`` (``u8,u8``), which ``read_eval_uids`` reads too.
- **YFCC15M** (dataset_creation/tic-yfcc15m/create_splits.py): ``yfcc15m.csv`` with YFCC100M's columns
  (photoid, uid = the Flickr user, datetaken, dateuploaded = unix seconds, title, description,
  usertags, ..., downloadurl, ..., key = the image hash); the caption is
  ``clean(f"{title}. {description}. {usertags}")[:500]`` with URL-decoding, ftfy and HTML tags removed;
  the image is ``<images>/<key[:3]>/<key[3:6]>/<key>.jpg``; TiC-YFCC groups upload years
  2004–2008, 2009–2010, 2011–2012, 2013–2014.
- **RedCaps** (dataset_creation/tic-redcaps/create_splits.py; the RedCaps v1.0 annotation zip):
  ``annotations/<subreddit>_<year>.json`` for years 2017–2020 (``_2017`` holds 2008–2017), each
  ``{"info": ..., "annotations": [{"image_id", "author", "url", "raw_caption", "caption", "subreddit",
  "score", "created_utc", "permalink", "crosspost_parents"}, ...]}``; the image is
  ``<images>/<subreddit>/<image_id>.jpg`` (redcaps-downloader's layout) or the ``url``.

TiC's own scripts bin by the file's period (DataComp, RedCaps) or by ``datetime.fromtimestamp``
in local time (YFCC); ticlip bins by the timestamp in UTC.
"""

from __future__ import annotations

import html
import io
import json
import os
import pickle
import re
import tarfile
import urllib.parse
from typing import Iterable, Iterator

from ticlip.data.records import Record
from ticlip.data.table import SkippedRow, table_format
from ticlip.errors import TiclipError

FORMATS = ("tic-datacomp", "yfcc15m", "redcaps")
_PERIOD_FILE = re.compile(r"^(\d{4})(\d{2})?$")
_HEX_UID = re.compile(r"^[0-9a-fA-F]{32}$")
_CHUNK = 1 << 16


class FormatError(TiclipError, ValueError):
    """A file that is not in the released layout it was given as (one line: the file and the fix)."""


# ------------------------------------------------------------------------------- uid arrays
def uid_from_pair(high: int, low: int) -> str:
    """The 32-digit hex uid of a ``u8,u8`` record (DataComp's 128-bit uid hash)."""
    return f"{int(high):016x}{int(low):016x}"


def _uids_of_array(arr, where: str) -> Iterator[str]:
    """The uids of an array: ``u8,u8`` records, an (n, 2) uint64 array, or strings/bytes."""
    import numpy as np

    if arr.dtype.names is not None and len(arr.dtype.names) == 2:
        hi, lo = arr.dtype.names
        for start in range(0, len(arr), _CHUNK):
            part = np.asarray(arr[start:start + _CHUNK])
            yield from (uid_from_pair(a, b) for a, b in zip(part[hi].tolist(), part[lo].tolist()))
    elif arr.ndim == 2 and arr.shape[1] == 2 and arr.dtype.kind == "u":
        for start in range(0, len(arr), _CHUNK):
            yield from (uid_from_pair(a, b) for a, b in np.asarray(arr[start:start + _CHUNK]).tolist())
    elif arr.dtype.kind in "USO" and arr.ndim <= 1:
        for u in arr.reshape(-1).tolist():
            yield _uid_text(u, where)
    else:
        raise FormatError(f"{where}: not an array of uids (dtype {arr.dtype}, shape {arr.shape}); expected "
                          "DataComp's u8,u8 uid hashes or 32-digit hex strings")


def _uid_text(u, where: str) -> str:
    s = u.decode("ascii", "replace") if isinstance(u, bytes) else str(u)
    s = s.strip().lower()
    if not _HEX_UID.match(s):
        raise FormatError(f"{where}: {s[:40]!r} is not a DataComp uid (32 hex digits)")
    return s


def _load_npy(source, where: str):
    import numpy as np

    try:  # allow_pickle=False: a .npy of uids never needs code to load
        return np.load(source, mmap_mode="r" if isinstance(source, str) else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise FormatError(f"{where}: not a readable .npy file: {str(e).splitlines()[0][:100]}") from None


def period_of_file(name: str) -> str:
    """``"2016"`` for ``2016.npy``, ``"2016-03"`` for ``201603.npy`` (TiC-DataComp's file names)."""
    stem = os.path.basename(name).split(".")[0]
    m = _PERIOD_FILE.match(stem)
    if not m or (m.group(2) and not 1 <= int(m.group(2)) <= 12):
        raise FormatError(f"{name}: the file name is not a period: TiC-DataComp names them YYYY.npy or YYYYMM.npy")
    return m.group(1) if not m.group(2) else f"{m.group(1)}-{m.group(2)}"


def tic_datacomp_files(path: str) -> list[tuple[str, str]]:
    """(period, file) of every ``YYYY.npy``/``YYYYMM.npy`` under ``path`` (a file, a directory searched
    recursively, or the CDN's ``YYYY.tar``: then the file is ``archive.tar::member``), sorted."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FormatError(f"no such file or directory: {path} (give TiC-DataComp's YYYY.npy / YYYYMM.npy files "
                          "or a directory holding them)")
    if os.path.isdir(path):
        found = []
        for root, _, files in os.walk(path):
            for f in files:
                if f.endswith((".npy", ".tar")) and _PERIOD_FILE.match(f.split(".")[0]):
                    found += tic_datacomp_files(os.path.join(root, f))
        if not found:
            raise FormatError(f"{path}: no YYYY.npy or YYYYMM.npy files (TiC-DataComp's uid files) in it")
        return sorted(found)
    if path.endswith(".tar"):
        with tarfile.open(path) as tar:
            members = [m.name for m in tar.getmembers() if m.isfile() and m.name.endswith(".npy")]
        return sorted((period_of_file(m), f"{path}::{m}") for m in members)
    return [(period_of_file(path), path)]


def _file_uids(file: str) -> Iterator[str]:
    if "::" in file:
        archive, member = file.split("::", 1)
        with tarfile.open(archive) as tar:
            data = tar.extractfile(member).read()
        yield from _uids_of_array(_load_npy(io.BytesIO(data), file), file)
    else:
        yield from _uids_of_array(_load_npy(file, file), file)


def read_tic_datacomp_timestamps(path: str) -> Iterator[tuple[str, str]]:
    """(uid, period) for every uid in TiC-DataComp's per-period uid files under ``path``."""
    for period, file in tic_datacomp_files(path):
        for uid in _file_uids(file):
            yield uid, period


def write_timestamp_table(pairs: Iterable[tuple[str, str]], out: str, *, batch: int = 1 << 20) -> int:
    """Write (uid, timestamp) pairs as a Parquet table with columns ``uid`` and ``timestamp`` (written
    atomically, in batches); the number of rows. Any table with those columns serves as the uid →
    timestamp table of a reshard (``ticlip data build SHARDS --timestamps TABLE``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ticlip.atomic import atomic_path

    schema = pa.schema([("uid", pa.string()), ("timestamp", pa.string())])
    n = 0
    with atomic_path(out, suffix=".parquet") as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            uids: list[str] = []
            times: list[str] = []
            for uid, t in pairs:
                uids.append(uid)
                times.append(t)
                if len(uids) >= batch:
                    writer.write_table(pa.table({"uid": uids, "timestamp": times}, schema=schema))
                    n += len(uids)
                    uids, times = [], []
            if uids or n == 0:
                writer.write_table(pa.table({"uid": uids, "timestamp": times}, schema=schema))
                n += len(uids)
    return n


# ------------------------------------------------------------------------------- eval uids
class _ArraysOnly(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays only (what the released eval pickles hold: their
    imports are numpy.core.multiarray._reconstruct, numpy.ndarray and numpy.dtype); anything else is
    refused, so a pickle cannot run code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a uid list")
        import numpy as np

        if name == "_frombuffer":
            return _frombuffer()
        return {"ndarray": np.ndarray, "dtype": np.dtype}.get(name) or _reconstruct()


def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as r  # NumPy >= 2
    except ImportError:
        from numpy.core.multiarray import _reconstruct as r
    return r


def _frombuffer():
    try:
        from numpy._core.numeric import _frombuffer as f  # NumPy >= 2
    except ImportError:
        from numpy.core.numeric import _frombuffer as f
    return f


def _flatten_uids(value, where: str) -> Iterator[str]:
    """Uids of a year's value: a list/array of uids, or (TiC-DataCompNet) synset → uids."""
    import numpy as np

    if isinstance(value, dict):
        for sub in value.values():
            yield from _flatten_uids(sub, where)
    elif isinstance(value, np.ndarray):
        yield from _uids_of_array(value, where)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for u in value:
            yield _uid_text(u, where)
    else:
        raise FormatError(f"{where}: expected lists of uids (or synset -> uids), found {type(value).__name__}")


_SYNSET = re.compile(r"^n\d{8}$")


def _load_year_mapping(path: str) -> dict:
    """The mapping of a ``*year2uids.pkl`` / ``.json`` file (pickles through ``_ArraysOnly``)."""
    suffix = os.path.splitext(path)[1].lower()
    try:
        with open(path, "rb") as f:
            doc = _ArraysOnly(f).load() if suffix != ".json" else json.load(f)
    except (pickle.UnpicklingError, json.JSONDecodeError, EOFError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: not a readable year -> uids {suffix[1:]} file: {e}") from None
    if not isinstance(doc, dict):
        raise FormatError(f"{path}: expected a mapping of year -> uids, found {type(doc).__name__}")
    return doc


def read_eval_uid_synsets(path: str) -> dict[str, str]:
    """uid → WordNet synset id (``n01440764``) of TiC-DataCompNet's ``tic-datacompnet_year2uids.pkl`` /
    ``.json`` (year → synset → uids; generate_datacompnet_uid2classid.py maps the synsets to ImageNet
    class ids); ``{}`` for a list without synsets (year → uids, ``.npy``, text). A uid listed under two
    synsets is an error: its label would be ambiguous."""
    path = os.fspath(path)
    if os.path.isdir(path) or os.path.splitext(path)[1].lower() not in (".pkl", ".pickle", ".json"):
        return {}
    out: dict[str, str] = {}
    for year, value in _load_year_mapping(path).items():
        if not isinstance(value, dict):
            continue  # year -> uids: no labels
        for synset, uids in value.items():
            wnid = str(synset).strip()
            if not _SYNSET.match(wnid):
                raise FormatError(f"{path} [{year}]: {wnid[:40]!r} is not a WordNet synset id such as n01440764 "
                                  "(TiC-DataCompNet keys each year's uids by synset)")
            for uid in _flatten_uids(uids, f"{path} [{year}][{wnid}]"):
                if out.setdefault(uid, wnid) != wnid:
                    raise FormatError(f"{path}: uid {uid} is listed under both {out[uid]} and {wnid}; "
                                      "a DataCompNet uid has one class")
    return out


def read_eval_uids(path: str) -> dict[str, set[str]]:
    """Period → uids of TiC's evaluation uid lists: ``*year2uids.pkl`` / ``.json`` (year → uids, or
    year → synset → uids, flattened: ``read_eval_uid_synsets`` keeps the synsets), one ``.npy`` of uids
    (the period from its name, else ``"*"``), a directory of ``<year>.npy`` (generate_eval_uids.py's
    ``eval/retrieval/``), or a text file of one uid a line."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FormatError(f"no such eval uid file: {path} (give tic-datacomp_retrieval_evals_year2uids.pkl/.json, "
                          "tic-datacompnet_year2uids.pkl/.json, <year>.npy files or a text file of uids)")
    if os.path.isdir(path):
        out: dict[str, set[str]] = {}
        for period, file in tic_datacomp_files(path):
            out.setdefault(period, set()).update(_file_uids(file))
        return out
    suffix = os.path.splitext(path)[1].lower()
    if suffix in (".pkl", ".pickle", ".json"):
        doc = _load_year_mapping(path)
        return {str(year): set(_flatten_uids(v, f"{path} [{year}]")) for year, v in doc.items()}
    if suffix == ".npy":
        try:
            period = period_of_file(path)
        except FormatError:
            period = "*"
        return {period: set(_file_uids(path))}
    with open(path, encoding="utf-8") as f:  # any ids (YFCC photoids, RedCaps image_ids), one a line
        return {"*": {line.strip() for line in f if line.strip() and line.strip().lower() != "uid"}}


def eval_uid_set(path: str) -> frozenset[str]:
    """All uids of ``read_eval_uids(path)``, whatever their period."""
    return frozenset(u for uids in read_eval_uids(path).values() for u in uids)


# ------------------------------------------------------------------------------- tables
def _rows(path: str) -> Iterator[dict | SkippedRow]:
    """The rows of a CSV/TSV/JSONL/Parquet file as dicts of strings (CSV) or values (Parquet), in
    batches; uses ticlip.data.table's readers, which count malformed rows instead of failing."""
    from ticlip.data import table as _table

    fmt = table_format(path)
    if fmt is None:
        raise FormatError(f"{path}: unknown table format; use .csv, .tsv, .jsonl or .parquet")
    reader = {"csv": _table._csv_batches, "tsv": _table._csv_batches, "jsonl": _table._jsonl_batches,
              "parquet": _table._parquet_batches}[fmt]
    first = True
    for batch in reader(path, fmt):
        if isinstance(batch, SkippedRow):
            yield batch
            continue
        columns, rows = batch
        if first:
            first = False
            yield {"__columns__": list(columns)}
        yield from rows


def _columns_then_rows(path: str, need: Iterable[str], what: str) -> tuple[list[str], Iterator]:
    rows = _rows(path)
    head = next(rows, {"__columns__": []})
    columns = head.get("__columns__", []) if isinstance(head, dict) else []
    missing = [c for c in need if c not in columns]
    if missing:
        raise FormatError(f"{path}: no column {', '.join(map(repr, missing))} of {what}; the table has: "
                          f"{', '.join(columns) or 'no columns'}")
    return columns, rows


# ------------------------------------------------------------------------------- YFCC15M
YFCC_STEP_ENDS = ["2008", "2010", "2012", "2014"]  # create_splits.py's year groups


def yfcc_caption(title, description, usertags) -> str:
    """TiC-YFCC's caption: ``f"{title}. {description}. {usertags}"``, URL-decoded (YFCC stores
    ``+``-encoded text), fixed by ftfy, HTML tags removed and entities unescaped, cut at 500 chars."""
    import ftfy

    def text(v):
        return "" if v is None or v != v else str(v)  # None / NaN: empty, as create_splits.py does

    raw = f"{text(title)}. {text(description)}. {text(usertags)}"
    return html.unescape(re.sub(r"<.*?>", "", ftfy.fix_text(urllib.parse.unquote_plus(raw))))[:500]


def yfcc_image_path(images: str, key: str) -> str:
    return os.path.join(images, key[:3], key[3:6], f"{key}.jpg")


def check_yfcc15m(path: str, images: str | None = None) -> None:
    """Refuse, in one line, what cannot be read as YFCC15M metadata (before any row is built)."""
    if not os.path.isfile(path):
        raise FormatError(f"no such YFCC15M metadata file: {path} (yfcc15m.csv: YFCC100M's columns for the 15M subset)")
    if images is not None and not os.path.isdir(images):
        raise FormatError(f"images={images}: not a directory (the YFCC images as <key[:3]>/<key[3:6]>/<key>.jpg)")
    need = ["photoid", "dateuploaded", "title", "description"] + (["key"] if images else ["downloadurl"])
    _columns_then_rows(path, need, "YFCC100M" + ("" if images else " (without images=DIR the image is its "
                                                                    "downloadurl)"))


def yfcc15m_records(path: str, images: str | None = None) -> Iterator[Record | SkippedRow]:
    """One Record per row of a YFCC15M metadata table: uid = photoid, timestamp = dateuploaded (unix
    seconds), caption as TiC-YFCC makes it, image from ``images`` (by key) or the downloadurl."""
    check_yfcc15m(path, images)
    columns, rows = _columns_then_rows(path, [], "YFCC100M")
    has_tags = "usertags" in columns
    for row in rows:
        if isinstance(row, SkippedRow):
            yield row
            continue
        key = str(row.get("key") or "")
        image = (yfcc_image_path(images, key) if key else None) if images else (row.get("downloadurl") or None)
        extra = {k: row[k] for k in ("datetaken",) if row.get(k) not in (None, "")}
        yield Record(caption=yfcc_caption(row.get("title"), row.get("description"),
                                          row.get("usertags") if has_tags else ""),
                     timestamp=row.get("dateuploaded"), image=image,
                     uid=str(row["photoid"]) if row.get("photoid") not in (None, "") else None, extra=extra)


# ------------------------------------------------------------------------------- RedCaps
REDCAPS_STEP_ENDS = ["2017", "2018", "2019", "2020"]  # the annotation files' years (_2017: 2008-2017)
_REDCAPS_FILE = re.compile(r"^(.+)_(\d{4})\.json$")


def redcaps_files(path: str) -> list[str]:
    """The annotation files: ``path`` itself, or every ``<subreddit>_<year>.json`` in the directory."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FormatError(f"no such RedCaps annotations file or directory: {path} (the annotations/ folder of "
                          "redcaps_v1.0_annotations.zip)")
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if _REDCAPS_FILE.match(f))
    if not files:
        raise FormatError(f"{path}: no <subreddit>_<year>.json annotation files in it")
    return files


def check_redcaps(path: str, images: str | None = None) -> None:
    files = redcaps_files(path)
    if images is not None and not os.path.isdir(images):
        raise FormatError(f"images={images}: not a directory (RedCaps images as <subreddit>/<image_id>.jpg)")
    with open(files[0], "rb") as f:
        head = f.read(1 << 16)
    if b'"annotations"' not in head and len(head) == 1 << 16:
        return  # a large file whose key comes later: checked when read
    try:
        doc = json.loads(head) if len(head) < 1 << 16 else None
    except json.JSONDecodeError as e:
        raise FormatError(f"{files[0]}: not a RedCaps annotation file (JSON error: {e})") from None
    if doc is not None and not (isinstance(doc, dict) and isinstance(doc.get("annotations"), list)):
        raise FormatError(f"{files[0]}: not a RedCaps annotation file: no \"annotations\" list")


def redcaps_records(path: str, images: str | None = None) -> Iterator[Record | SkippedRow]:
    """One Record per RedCaps annotation: uid = image_id, timestamp = created_utc, caption = the
    cleaned ``caption`` (not ``raw_caption``), image ``images/<subreddit>/<image_id>.jpg`` or the url."""
    check_redcaps(path, images)
    for file in redcaps_files(path):
        try:
            with open(file, encoding="utf-8") as f:
                doc = json.load(f)
            anns = doc["annotations"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            yield SkippedRow("malformed_file", f"{file}: {e}")
            continue
        for ann in anns:
            if not isinstance(ann, dict) or not ann.get("image_id"):
                yield SkippedRow("malformed_row", f"{file}: {str(ann)[:80]}")
                continue
            sub = str(ann.get("subreddit") or "")
            image = os.path.join(images, sub, f"{ann['image_id']}.jpg") if images else ann.get("url")
            extra = {k: ann[k] for k in ("subreddit", "score") if ann.get(k) is not None}
            yield Record(caption=ann.get("caption"), timestamp=ann.get("created_utc"), image=image,
                         uid=str(ann["image_id"]), extra=extra)


# ------------------------------------------------------------------------------- DataComp metadata
def datacomp_metadata_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FormatError(f"no such DataComp metadata file or directory: {path} (download_upstream.py's "
                          "metadata/*.parquet)")
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".parquet"))
    if not files:
        raise FormatError(f"{path}: no .parquet files (DataComp's metadata/*.parquet) in it")
    return files


def check_tic_datacomp(path: str, timestamps: str | None) -> None:
    if not timestamps:
        raise FormatError("format tic-datacomp needs timestamps=DIR: TiC-DataComp's YYYY.npy / YYYYMM.npy uid files "
                          "(e.g. --option timestamps=tic-datacomp_training_yearly_noeval)")
    tic_datacomp_files(timestamps)
    for file in datacomp_metadata_files(path)[:1]:
        _columns_then_rows(file, ["uid", "url", "text"], "DataComp metadata")


def tic_datacomp_records(path: str, timestamps: str | None) -> Iterator[Record | SkippedRow]:
    """DataComp metadata rows (uid, url, text) joined with TiC-DataComp's uid → period files: one
    Record per row whose uid has a period (the image is fetched from its url); rows without one are
    counted as ``no_timestamp``. The join holds all uids of the timestamp files in memory; for pools of
    billions, reshard existing shards with ``write_timestamp_table``'s table instead."""
    check_tic_datacomp(path, timestamps)
    period = dict(read_tic_datacomp_timestamps(timestamps))
    for file in datacomp_metadata_files(path):
        _, rows = _columns_then_rows(file, ["uid", "url", "text"], "DataComp metadata")
        for row in rows:
            if isinstance(row, SkippedRow):
                yield row
                continue
            uid = str(row.get("uid") or "").lower()
            t = period.get(uid)
            if t is None:
                yield SkippedRow("no_timestamp", uid)
                continue
            yield Record(caption=row.get("text"), timestamp=t, image=row.get("url"), uid=uid)


__all__ = [
    "FORMATS", "FormatError", "REDCAPS_STEP_ENDS", "YFCC_STEP_ENDS", "check_redcaps", "check_tic_datacomp",
    "check_yfcc15m", "eval_uid_set", "period_of_file", "read_eval_uid_synsets", "read_eval_uids",
    "read_tic_datacomp_timestamps", "redcaps_files", "redcaps_records", "tic_datacomp_files", "tic_datacomp_records", "uid_from_pair",
    "write_timestamp_table", "yfcc15m_records", "yfcc_caption", "yfcc_image_path",
]
