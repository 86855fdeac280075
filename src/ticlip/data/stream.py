"""TimeStream: an ordered sequence of time steps, each with train shards and held-out eval sets.

A stream lives in a directory (local or any fsspec URL) holding ``stream.json`` (the manifest) and the
webdataset shards it names. Shard paths in the manifest are relative to the manifest's directory
unless they are fsspec URLs (``s3://...``, ``https://...``) or absolute paths. Loading a manifest checks
its types, refuses command-running shard URLs (``pipe:``; see ``ticlip.data.shards.check_shard_url``)
and, for a local stream, that every shard file it names exists.

Sample layout in every shard (train and eval alike)::

    <key>.png | <key>.jpg   the image (PNG keeps an alpha channel, e.g. emoji)
    <key>.txt               the caption (UTF-8)
    <key>.json              {"uid": ..., "timestamp": ISO date, "step": label, ...}
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

MANIFEST_NAME = "stream.json"
MANIFEST_FORMAT = "ticlip-stream/1"
VALIDATION = "validation"  # a step's validation set: tuning data, never evaluated (not an eval task)
IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")
ADAPTATION, HELD_OUT = "adaptation", "held_out"  # a task stream's task roles (Step.role)
ROLES = (ADAPTATION, HELD_OUT)


from torch.utils.data import IterableDataset

from ticlip.atomic import write_text_atomic
from ticlip.data.shards import SkipCount, check_shard_url, decode_or_skip, tar_samples
from ticlip.errors import TiclipError

_log = logging.getLogger(__name__)


class StreamError(TiclipError, ValueError):
    """A stream manifest is missing, malformed, or asked for something it does not hold."""


@dataclass
class ShardSet:
    """A list of webdataset shards and the number of pairs they hold."""

    shards: list[str] = field(default_factory=list)
    count: int = 0

    def to_dict(self) -> dict:
        return {"shards": list(self.shards), "count": int(self.count)}

    @classmethod
    def from_dict(cls, d: dict, where: str = "shard set") -> "ShardSet":
        d = _typed(d, dict, where, "an object with shards and count")
        shards = _typed(d.get("shards", []), list, f"{where}.shards", "a list of shard paths")
        for i, u in enumerate(shards):
            _typed(u, str, f"{where}.shards[{i}]", "a shard path or URL")
        return cls(shards=list(shards), count=_count(d.get("count", 0), f"{where}.count"))


def _typed(value, kind: type, where: str, what: str):
    """``value`` if it is a ``kind``, else a one-line StreamError naming the manifest key."""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise StreamError(f"{where} must be {what}, got {json.dumps(value, ensure_ascii=False)[:80]}")
    return value


def _count(value, where: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():  # "12" from hand-edited manifests
        return int(value)
    n = _typed(value, int, where, "a whole number of pairs")
    if n < 0:
        raise StreamError(f"{where} must be a whole number of pairs, got {n}")
    return n


@dataclass
class Step:
    """One time slice of the stream.

    ``label`` names it ("2016", "≤2014", "2017–2018", "2021-03"); ``start``/``end`` are inclusive
    ISO dates; ``periods`` lists the years or months it covers; ``eval`` maps a task name (e.g.
    ``"retrieval"``) to its held-out shards; ``validation`` holds the step's validation pairs (what
    methods tune on; disjoint from train and eval), None in streams built without validation sets.
    """

    index: int
    label: str
    start: str
    end: str
    periods: list[str]
    train: ShardSet
    eval: dict[str, ShardSet] = field(default_factory=dict)
    validation: ShardSet | None = None
    # Task streams only (absent from time streams' manifests): "adaptation" or "held_out" (ROLES), the
    # task's class names (eval sets' meta "class_index" indexes them) and its caption template ("{c}").
    role: str | None = None
    classes: list[str] | None = None
    template: str | None = None

    def to_dict(self) -> dict:
        d = {
            "index": self.index,
            "label": self.label,
            "start": self.start,
            "end": self.end,
            "periods": list(self.periods),
            "train": self.train.to_dict(),
            "eval": {k: v.to_dict() for k, v in self.eval.items()},
        }
        if self.validation is not None:  # absent: a stream built without validation sets
            d[VALIDATION] = self.validation.to_dict()
        for key in ("role", "classes", "template"):  # task streams only
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "step") -> "Step":
        d = _typed(d, dict, where, "an object (index, label, start, end, train, eval)")
        try:
            return cls(
                index=_typed(d["index"], int, f"{where}.index", "a whole number"),
                label=str(d["label"]),
                start=str(d["start"]),
                end=str(d["end"]),
                periods=[str(p) for p in _typed(d.get("periods", []), list, f"{where}.periods", "a list")],
                train=ShardSet.from_dict(d["train"], f"{where}.train"),
                eval={k: ShardSet.from_dict(v, f"{where}.eval.{k}")
                      for k, v in _typed(d.get("eval", {}), dict, f"{where}.eval", "an object of eval sets").items()},
                validation=ShardSet.from_dict(d[VALIDATION], f"{where}.{VALIDATION}")
                if d.get(VALIDATION) is not None else None,
                role=_role(d.get("role"), f"{where}.role"),
                classes=[str(c) for c in _typed(d["classes"], list, f"{where}.classes", "a list of class names")]
                if d.get("classes") is not None else None,
                template=str(d["template"]) if d.get("template") is not None else None,
            )
        except KeyError as e:
            raise StreamError(f"{where} lacks field {e.args[0]!r}") from None

    def shard_sets(self) -> list[tuple[str, ShardSet]]:
        """Every shard set of the step with its name: train, each eval set, validation."""
        sets = [("train", self.train)] + [(f"eval {k}", v) for k, v in self.eval.items()]
        return sets + ([(VALIDATION, self.validation)] if self.validation is not None else [])


def _role(value, where: str) -> str | None:
    if value is not None and value not in ROLES:
        raise StreamError(f"{where} must be one of {', '.join(ROLES)}, got {json.dumps(value)[:40]}")
    return value


def _is_url(path: str) -> bool:
    return "://" in path or path.startswith("pipe:")


def _fs_open(path: str, mode: str = "rb"):
    if path.startswith("pipe:"):
        raise StreamError(f"{path!r} is a pipe: URL, which runs a shell command; give a path or an fsspec URL")
    from ticlip.data.remote import open_url

    return open_url(path, mode)  # a URL's back-end missing: one line naming what to install


def stable_fraction(seed: int | str, key: str) -> float:
    """A number in [0, 1) fixed by (seed, key): ranks a step's pairs for its replay buffers.

    A buffer of k pairs of a step keeps the k pairs of lowest ``stable_fraction(f"{seed}/{label}",
    key)`` (see ``TimeStream.buffer_keys``): the same pairs on every pass, in every worker and on
    every rank, and a buffer of k' <= k pairs is a subset of the buffer of k.
    """
    h = hashlib.blake2b(f"{seed}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


@dataclass(frozen=True)
class PairId:
    """One train pair as the shards name it: its webdataset ``key`` (``__key__``: what replay buffers
    select by), the ``uid`` its json carries (the key when it has none) and the ``shard`` holding it."""

    key: str
    uid: str
    shard: str


def read_pair_index(urls: Sequence[str]) -> list[PairId]:
    """The pairs of ``urls`` in shard order, read from the shards' json/txt members (images are skipped,
    not decoded). Cached per process (shards are immutable once a stream is built), for a bounded
    number of shard lists."""
    return list(_pair_index(tuple(urls)))


# Bounded: a process trains one stream at a time, and a run's steps (plus a pool) fit well within it.
@functools.lru_cache(maxsize=64)
def _pair_index(urls: tuple[str, ...]) -> tuple[PairId, ...]:
    import webdataset as wds

    small = (".json", ".txt")
    ds = wds.DataPipeline(wds.SimpleShardList(list(urls)),
                          tar_samples(select_files=lambda name: name.endswith(small)))
    pairs = []
    for sample in ds:
        uid = None
        if "json" in sample:
            try:
                uid = json.loads(sample["json"]).get("uid")
            except (ValueError, AttributeError):
                uid = None
        key = sample["__key__"]
        pairs.append(PairId(key=key, uid=str(uid) if uid is not None else key, shard=sample["__url__"]))
    return tuple(pairs)


@functools.lru_cache(maxsize=64)
def _ranked_pairs(urls: tuple[str, ...], seed: str) -> tuple[PairId, ...]:
    """A step's pairs ranked for its replay buffers by ``stable_fraction(seed, key)``, ties by key."""
    return tuple(sorted(_pair_index(urls), key=lambda p: (stable_fraction(seed, p.key), p.key)))


class SourceStarved(StreamError):
    """A resampled train source read many shards in a row without yielding a pair (it would loop forever)."""


class _Starvation:
    """Counts shards opened by one resampled source since it last yielded a pair; raises
    ``SourceStarved`` naming the source past ``limit`` (instead of looping forever)."""

    def __init__(self, what: str, limit: int):
        self.what, self.limit, self.reads = what, limit, 0

    def count_shards(self, src):
        self.reads = 0
        for item in src:
            self.reads += 1
            if self.reads > self.limit:
                raise SourceStarved(
                    f"{self.what} yielded no train pair in {self.limit} shard reads in a row: its shards hold no "
                    f"pair the plan keeps (empty or missing shards, or a manifest that does not match them); "
                    f"rebuild the stream or leave the step out")
            yield item

    def saw_pair(self, src):
        for item in src:
            self.reads = 0
            yield item


@dataclass
class EvalSet:
    """A held-out set in memory: images (PIL), captions and metadata, aligned by position."""

    step: str
    task: str
    images: list
    captions: list[str]
    meta: list[dict]
    skipped: dict[str, int] = field(default_factory=dict)  # samples its shards held that could not be read

    def __len__(self) -> int:
        return len(self.captions)


@dataclass
class TimeStream:
    root: str
    name: str
    granularity: str
    steps: list[Step]
    provenance: dict[str, Any] = field(default_factory=dict)
    format: str = MANIFEST_FORMAT
    # Task streams: the held-out tasks (role "held_out", indices after the steps'), evaluated but never
    # trained on: they are not steps, so no plan, pipeline or budget can reach them.
    held_out: list[Step] = field(default_factory=list)

    # ----------------------------------------------------------------- I/O
    def to_dict(self) -> dict:
        return {
            "format": self.format,
            "name": self.name,
            "granularity": self.granularity,
            "steps": [s.to_dict() for s in self.steps],
            "provenance": self.provenance,
            **({"held_out": [s.to_dict() for s in self.held_out]} if self.held_out else {}),
        }

    @classmethod
    def from_dict(cls, d: dict, root: str) -> "TimeStream":
        d = _typed(d, dict, "the manifest", "a JSON object")
        fmt = d.get("format")
        if fmt != MANIFEST_FORMAT:
            raise StreamError(
                f"unsupported stream manifest format {fmt!r} (this ticlip reads {MANIFEST_FORMAT!r})"
            )
        raw = _typed(d.get("steps", []), list, "steps", "a list of step objects")
        steps = [Step.from_dict(s, f"steps[{i}]") for i, s in enumerate(raw)]
        if not steps:
            raise StreamError("stream manifest has no steps")
        raw_held = _typed(d.get("held_out", []), list, "held_out", "a list of task objects")
        held_out = [Step.from_dict(s, f"held_out[{i}]") for i, s in enumerate(raw_held)]
        for i, st in enumerate(steps):
            if st.role == HELD_OUT:
                raise StreamError(f"steps[{i}] ({st.label!r}) is a held-out task: held-out tasks belong under "
                                  "held_out, never among the trained steps")
        for i, st in enumerate(held_out):
            if st.role != HELD_OUT or st.train.shards:
                raise StreamError(f"held_out[{i}] ({st.label!r}) must have role {HELD_OUT!r} and no train shards")
        for st in steps + held_out:
            for name, shard_set in st.shard_sets():
                for u in shard_set.shards:
                    check_shard_url(u, f"step {st.label!r} {name}")
        return cls(
            root=root,
            name=str(d.get("name", "")),
            granularity=str(d.get("granularity", "")),
            steps=steps,
            provenance=dict(_typed(d.get("provenance", {}), dict, "provenance", "an object")),
            held_out=held_out,
        )

    def missing_shards(self) -> list[tuple[Step, str, str]]:
        """(step, set name, path) of every shard of a local stream that is not a file (none for URLs)."""
        out = []
        for st in self.steps + self.held_out:
            for name, shard_set in st.shard_sets():
                for u in shard_set.shards:
                    path = self.resolve(u)
                    if not _is_url(path) and not os.path.isfile(path):
                        out.append((st, name, path))
        return out

    def check_files(self, where: str | None = None) -> None:
        """StreamError (one line) when a shard file the manifest names is missing, e.g. a step
        directory that was not copied: found when the stream is loaded, not steps into training."""
        missing = self.missing_shards()
        if not missing:
            return
        st, name, path = missing[0]
        directory = os.path.dirname(path)
        hint = f"its directory {directory} is missing" if not os.path.isdir(directory) else "the file is missing"
        raise StreamError(
            f"{where or self.manifest_path(self.root)}: {len(missing)} shard file(s) the manifest names are missing, "
            f"first step {st.label!r} {name}: {path} ({hint}); copy the stream completely or rebuild it")

    @staticmethod
    def manifest_path(path: str | os.PathLike) -> str:
        path = os.fspath(path)
        if path.endswith(".json"):
            return path
        return posixpath.join(path, MANIFEST_NAME) if _is_url(path) else os.path.join(path, MANIFEST_NAME)

    @classmethod
    def load(cls, path: str | os.PathLike, *, check_files: bool = True) -> "TimeStream":
        """Load a stream from its directory (or its ``stream.json``), local or fsspec URL: types
        checked, command-running shard URLs refused, and (``check_files``) every local shard present."""
        mpath = cls.manifest_path(path)
        if not _is_url(mpath) and not os.path.exists(mpath):
            raise StreamError(
                f"no stream manifest at {mpath}: build one with `ticlip data build SOURCE --out DIR`"
            )
        try:
            with _fs_open(mpath, "rb") as f:
                d = json.loads(f.read().decode("utf-8"))
        except json.JSONDecodeError as e:
            raise StreamError(f"stream manifest {mpath} is not valid JSON: {e}") from None
        except UnicodeDecodeError as e:
            raise StreamError(f"stream manifest {mpath} is not UTF-8 text ({e.reason} at byte {e.start})") from None
        root = posixpath.dirname(mpath) if _is_url(mpath) else os.path.dirname(os.path.abspath(mpath))
        try:
            stream = cls.from_dict(d, root=root)
        except TiclipError as e:
            raise StreamError(f"stream manifest {mpath}: {e}") from None
        if check_files:
            stream.check_files(f"stream manifest {mpath}")
        return stream

    def save(self, path: str | os.PathLike | None = None) -> str:
        """Write the manifest atomically (temp file, then rename); returns its path."""
        mpath = self.manifest_path(path if path is not None else self.root)
        data = json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        if _is_url(mpath):
            import fsspec

            from ticlip.data.remote import require_backend

            require_backend(mpath, "stream manifest")
            with fsspec.open(mpath, "w", encoding="utf-8") as f:
                f.write(data)
            return mpath
        return write_text_atomic(mpath, data)

    # ------------------------------------------------------------- queries
    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.steps]

    @property
    def step_sizes(self) -> list[int]:
        """The train pairs of each step: what methods plan with (``Method.plan(t, step_sizes)``)."""
        return [s.train.count for s in self.steps]

    @property
    def is_task_stream(self) -> bool:
        """Whether the steps are tasks (datasets or concepts) with roles, rather than time periods."""
        return any(s.role is not None for s in self.steps)

    def held_out_task(self, label: str) -> Step:
        """A held-out task by label (for evaluation only: ``step()`` never returns one)."""
        for s in self.held_out:
            if s.label == label:
                return s
        raise StreamError(f"stream {self.name!r} has no held-out task {label!r}; it has: "
                          f"{', '.join(s.label for s in self.held_out) or 'none'}")

    def step(self, key: int | str | Step) -> Step:
        """A step by index (0-based int), label ("2016"), or the step itself."""
        if isinstance(key, Step):
            return key
        if isinstance(key, int):
            if not -len(self.steps) <= key < len(self.steps):
                raise StreamError(f"step index {key} out of range: the stream has {len(self.steps)} steps")
            return self.steps[key]
        for s in self.steps:
            if s.label == key:
                return s
        # Accept "3" for an index and ASCII "<=2014" for "≤2014".
        alt = str(key).replace("<=", "≤").replace("--", "–")
        for s in self.steps:
            if s.label == alt or s.label.replace("–", "-") == str(key):
                return s
        if str(key).isdigit() and int(key) < len(self.steps):
            return self.steps[int(key)]
        raise StreamError(f"no step {key!r} in stream {self.name!r}; steps are: {', '.join(self.labels)}")

    def resolve(self, shard: str) -> str:
        """The location of a shard: URLs and absolute paths as given, others relative to the root."""
        if _is_url(shard) or os.path.isabs(shard):
            return shard
        if _is_url(self.root):
            return posixpath.join(self.root, shard)
        return os.path.join(self.root, shard)

    def train_urls(self, step: int | str | Step) -> list[str]:
        return [self.resolve(s) for s in self.step(step).train.shards]

    def eval_tasks(self) -> list[str]:
        tasks: list[str] = []
        for s in self.steps:
            for t in s.eval:
                if t not in tasks:
                    tasks.append(t)
        return tasks

    # ------------------------------------------------------------ loading
    def iter_samples(self, urls: Sequence[str], skipped: SkipCount | None = None) -> Iterator[dict]:
        """Decoded samples of the given shards, in order: dicts with image (PIL), caption, meta.
        Unreadable shards and undecodable samples are skipped and counted in ``skipped``."""
        import webdataset as wds

        ds = wds.DataPipeline(
            wds.SimpleShardList(list(urls)),
            tar_samples(skipped),
            decode_or_skip(decode_sample, skipped),
        )
        yield from ds

    def eval_set(self, step: int | str | Step, task: str = "retrieval") -> EvalSet:
        """A step's held-out set for ``task``, loaded into memory (eval sets are small); a held-out
        task of a task stream is given as its Step."""
        st = step if isinstance(step, Step) and step in self.held_out else self.step(step)
        if task not in st.eval:
            raise StreamError(
                f"step {st.label!r} has no eval set {task!r}; it has: {', '.join(st.eval) or 'none'}"
            )
        images, captions, meta, skipped = [], [], [], SkipCount()
        for s in self.iter_samples([self.resolve(u) for u in st.eval[task].shards], skipped):
            images.append(s["image"])
            captions.append(s["caption"])
            meta.append(s["meta"])
        return EvalSet(step=st.label, task=task, images=images, captions=captions, meta=meta,
                       skipped={k: v for k, v in skipped.as_dict().items() if v})

    @property
    def has_validation(self) -> bool:
        """Whether the stream was built with validation sets (a step may still hold none)."""
        return any(s.validation is not None for s in self.steps)

    def validation_count(self, step: int | str | Step) -> int:
        """Validation pairs of a step (0 when it has none)."""
        v = self.step(step).validation
        return v.count if v is not None else 0

    def validation_set(self, step: int | str | Step) -> EvalSet:
        """A step's validation set, loaded into memory (task ``"validation"``): the pairs methods tune
        on, disjoint from its train pairs and from every eval set."""
        st = self.step(step)
        if st.validation is None:
            raise StreamError(
                f"step {st.label!r} of stream {self.name!r} has no validation set (the stream was built "
                "without validation sets); rebuild it with `ticlip data build ... --validation-size N`"
            )
        images, captions, meta, skipped = [], [], [], SkipCount()
        for s in self.iter_samples([self.resolve(u) for u in st.validation.shards], skipped):
            images.append(s["image"])
            captions.append(s["caption"])
            meta.append(s["meta"])
        return EvalSet(step=st.label, task=VALIDATION, images=images, captions=captions, meta=meta,
                       skipped={k: v for k, v in skipped.as_dict().items() if v})

    def train_index(self, step: int | str | Step) -> list[PairId]:
        """Every train pair of a step (key, uid, shard), in shard order (``read_pair_index``)."""
        return read_pair_index(self.train_urls(step))

    def buffer_pairs(self, step: int | str | Step, pairs: int | None, subset_seed: int | str = 0) -> list[PairId]:
        """The replay buffer of ``pairs`` pairs of a step (None: all of them), best-ranked first.

        Pairs are ranked by ``stable_fraction(f"{subset_seed}/{label}", key)`` (ties by key) and the
        first ``pairs`` are kept: exactly that many (all of them when the step holds fewer), and the
        buffer of k' <= k pairs is a prefix, so a subset, of the buffer of k: a buffer that shrinks
        from step to step only discards."""
        st = self.step(step)
        ranked = _ranked_pairs(tuple(self.train_urls(st)), f"{subset_seed}/{st.label}")
        return list(ranked if pairs is None else ranked[:max(0, int(pairs))])

    def buffer_keys(self, step: int | str | Step, pairs: int | None, subset_seed: int | str = 0) -> list[str]:
        """The webdataset keys of ``buffer_pairs`` (what ``train_pipeline(counts=...)`` keeps)."""
        return [p.key for p in self.buffer_pairs(step, pairs, subset_seed)]

    def train_pipeline(
        self,
        steps: Sequence[int | str | Step] | None = None,
        weights: Sequence[float] | None = None,
        transform: Callable | None = None,
        tokenizer: Callable | None = None,
        *,
        fractions: Sequence[float] | None = None,
        counts: Sequence[int | None] | None = None,
        resampled: bool = True,
        seed: int = 0,
        shuffle: int = 1000,
        subset_seed: int | str = 0,
        skipped: SkipCount | None = None,
    ):
        """A webdataset pipeline over the train shards of ``steps`` yielding (image, tokens).

        - ``weights``: relative sampling probability of each step (default: proportional to the
          pairs each step contributes). With ``resampled=True`` shards are drawn with replacement
          forever (iteration-based training); otherwise every shard is read once, in order.
        - ``counts``: keep exactly ``counts[i]`` pairs of step i, a replay buffer (None: all of it):
          the first ``counts[i]`` of ``buffer_keys(step, ..., subset_seed)``; only the shards holding
          them are read. ``fractions`` (when ``counts`` is not given) asks for
          ``round(fraction × pairs in the step's shards)`` pairs the same way.
        - A step whose buffer keeps no pair, or that has no train shards, is left out with a log line;
          if nothing is left, ``StreamError``. A resampled source that opens many shards in a row
          without yielding a pair raises ``SourceStarved`` naming the step (it would loop forever).
        - ``transform`` maps a PIL image to a tensor; ``tokenizer`` maps a list of captions to a
          (1, context_length) tensor (open_clip's tokenizer), of which row 0 is yielded.
        - ``seed``: with the same seed, rank and worker, resampled pipelines yield the same order.
        - ``skipped``: counts the samples of unreadable (truncated) shards and undecodable samples, which
          are skipped rather than fatal.
        """
        import webdataset as wds

        chosen = [self.step(s) for s in (steps if steps is not None else self.steps)]
        for st in chosen:  # the one gate every train source passes: held-out tasks are never trained on
            if st.role == HELD_OUT or st in self.held_out:
                raise StreamError(f"task {st.label!r} is held out: it is evaluated, never trained on")
        if not chosen:
            raise StreamError("train_pipeline needs at least one step")
        if counts is not None and fractions is not None:
            raise StreamError("give train_pipeline counts or fractions, not both")
        if fractions is not None and len(fractions) != len(chosen):
            raise StreamError(f"{len(fractions)} fractions for {len(chosen)} steps")
        if counts is not None and len(counts) != len(chosen):
            raise StreamError(f"{len(counts)} counts for {len(chosen)} steps")
        if counts is None:
            if fractions is None:
                counts = [None] * len(chosen)
            else:
                counts = [None if f >= 1.0 else 0 if f <= 0 else round(f * len(self.train_index(st)))
                          for st, f in zip(chosen, fractions)]
        if weights is None:
            weights = [max(st.train.count, 1) if n is None else n for st, n in zip(chosen, counts)]
        if len(weights) != len(chosen):
            raise StreamError(f"{len(weights)} weights for {len(chosen)} steps")
        keep: list[tuple[Step, float, list[str] | None]] = []
        for st, w, n in zip(chosen, weights, counts):
            if not st.train.shards:
                _log.warning("train pipeline: leaving step %r out: it has no train shards", st.label)
                continue
            keys = None if n is None or not w > 0 else self.buffer_keys(st, n, subset_seed)
            if n is not None and (not n > 0 or (keys is not None and not keys)):
                _log.warning("train pipeline: leaving step %r out: its buffer keeps no pairs (%s asked)", st.label, n)
                continue
            if w > 0:
                keep.append((st, w, keys))
        if not keep:
            raise StreamError(f"nothing to train on: steps {', '.join(st.label for st in chosen)} have zero weight, "
                              f"no train shards or empty buffers")

        def finish(sample: dict):
            image = sample["image"]
            if transform is not None:
                image = transform(image)
            text = sample["caption"]
            if tokenizer is not None:
                text = tokenizer([text])[0]
            return image, text

        def source(st: Step, keys: list[str] | None, k: int):
            urls = [self.resolve(u) for u in st.train.shards]
            if keys is not None:  # read only the shards that hold a kept pair
                kept = set(keys)
                holding = {p.shard for p in self.train_index(st) if p.key in kept}
                urls = [u for u in urls if u in holding]
                if not urls:
                    raise StreamError(f"step {st.label!r}: no train shard holds the {len(keys)} pairs of its buffer")
            stages: list = []
            watch = _Starvation(f"train source step {st.label!r} ({len(urls)} shards, e.g. {urls[0]})",
                                limit=max(50, 4 * len(urls)))
            if resampled:
                stages += [wds.ResampledShards(urls, seed=seed * 1009 + k, deterministic=True), watch.count_shards]
            else:
                stages += [wds.SimpleShardList(urls), wds.split_by_node, wds.split_by_worker]
            stages.append(tar_samples(skipped))
            if keys is not None:
                stages.append(wds.select(_KeyFilter(keys)))
            if resampled:
                stages.append(watch.saw_pair)
            if shuffle and resampled:
                stages.append(wds.shuffle(shuffle, initial=min(shuffle, 100), rng=_Rng(seed, k)))
            stages.append(decode_or_skip(decode_sample, skipped))
            stages.append(wds.map(finish))
            return wds.DataPipeline(*stages)

        sources = [source(st, keys, k) for k, (st, _, keys) in enumerate(keep)]
        if len(sources) == 1:
            return sources[0]
        total = float(sum(w for _, w, _ in keep))
        probs = [w / total for _, w, _ in keep]
        if resampled:
            return _SeededMix(sources, probs, seed)
        return _Chain(sources)


class _Rng:
    """A ``random.Random`` seeded per (seed, source, worker, rank) when first used in a worker."""

    def __init__(self, seed: int, k: int):
        self.seed, self.k, self._rng = seed, k, None

    def _get(self):
        if self._rng is None:
            import random

            from webdataset import utils

            self._rng = random.Random(utils.make_seed(self.seed, self.k, utils.pytorch_worker_seed()))
        return self._rng

    def __getattr__(self, name):
        return getattr(self._get(), name)


class _KeyFilter:
    """Keeps the samples whose ``__key__`` is in a replay buffer's keys (picklable, for workers)."""

    def __init__(self, keys):
        self.keys = frozenset(keys)

    def __call__(self, sample: dict) -> bool:
        return sample.get("__key__", "") in self.keys


class _Chain(IterableDataset):
    """Reads several pipelines one after another (non-resampled multi-step reads)."""

    def __init__(self, sources):
        self.sources = sources

    def __iter__(self):
        for s in self.sources:
            yield from s


class _SeededMix(IterableDataset):
    """Draw from several infinite sources with fixed probabilities, reproducibly.

    webdataset's RandomMix seeds its RNG from global state; here the draw order is a function of
    (seed, worker, rank) so that two runs with one seed see the same mixture.
    """

    def __init__(self, sources, probs, seed: int):
        self.sources, self.probs, self.seed = sources, list(probs), seed

    def __iter__(self):
        import random

        from webdataset import utils

        rng = random.Random(utils.make_seed(self.seed, 7919, utils.pytorch_worker_seed()))
        its = [iter(s) for s in self.sources]
        idx = list(range(len(its)))
        while True:
            i = rng.choices(idx, weights=self.probs)[0]
            try:
                yield next(its[i])
            except StopIteration:
                return


def decode_sample(sample: dict) -> dict:
    """Raw webdataset sample (bytes per extension) to {image: PIL, caption: str, meta: dict}."""
    from PIL import Image

    data = None
    for k in IMAGE_KEYS:
        if k in sample:
            data = sample[k]
            break
    if data is None:
        raise StreamError(f"sample {sample.get('__key__')!r} in {sample.get('__url__')!r} has no image")
    image = Image.open(io.BytesIO(data))
    image.load()
    caption = sample.get("txt", b"")
    caption = caption.decode("utf-8") if isinstance(caption, bytes) else str(caption)
    meta = sample.get("json", b"{}")
    meta = json.loads(meta.decode("utf-8") if isinstance(meta, bytes) else meta)
    return {"__key__": sample.get("__key__"), "image": image, "caption": caption, "meta": meta}


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a build, for provenance."""
    from importlib import metadata

    out = {}
    for pkg in ("ticlip", "pillow", "webdataset", "emoji", "numpy", "pyarrow", "torch", "open-clip-torch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


__all__ = [
    "ADAPTATION",
    "EvalSet",
    "HELD_OUT",
    "MANIFEST_NAME",
    "ROLES",
    "ShardSet",
    "Step",
    "StreamError",
    "TimeStream",
    "VALIDATION",
    "PairId",
    "SourceStarved",
    "decode_sample",
    "library_versions",
    "read_pair_index",
    "stable_fraction",
]
