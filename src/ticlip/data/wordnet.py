"""A minimal reader for the WordNet 3.0 noun database (Debian's ``wordnet-base`` files).

ImageNet synset ids (``n02129604``) are WordNet 3.0 noun offsets with an ``n`` prefix, so the
Princeton files installed by ``wordnet-base`` (``/usr/share/wordnet/data.noun``) give, per class,
its lemmas, its definition and its hypernyms.

Why hand-written (about 100 lines) rather than nltk: nltk's ``WordNetCorpusReader`` expects the
nltk_data layout (it opens a ``lexnames`` file that Debian's package does not ship) and would add a
dependency for four fields of one file. The format is documented in wndb(5WN): each data line is

    offset lex_filenum ss_type w_cnt (word lex_id){w_cnt} p_cnt (symbol offset pos source/target){p_cnt} [frames] | gloss

with ``w_cnt`` in hexadecimal and ``p_cnt`` in decimal. Only nouns are read; pointers to other
parts of speech are ignored. Lemmas keep WordNet's spelling with ``_`` turned into spaces.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache

from ticlip.errors import TiclipError

DEFAULT_WORDNET_DIR = "/usr/share/wordnet"
# Hypernym pointers: "@" (hypernym) and "@i" (instance hypernym); hyponyms "~" and "~i".
_HYPERNYM = {"@", "@i"}
_HYPONYM = {"~", "~i"}


class WordNetError(TiclipError):
    """WordNet files are missing or malformed, or a synset id does not exist."""


@dataclass
class Synset:
    wnid: str  # "n02129604"
    lemmas: list[str]  # ["tiger", "Panthera tigris"]
    definition: str  # the gloss up to its first example
    gloss: str  # the whole gloss, examples included
    hypernyms: list[str] = field(default_factory=list)
    hyponyms: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.lemmas[0] if self.lemmas else self.wnid


def _definition(gloss: str) -> str:
    """The gloss without its quoted examples: 'large feline ...; endangered' stays whole,
    'a hat ...; "he wore a cap"' loses the example."""
    cut = gloss.find('; "')
    if cut < 0 and gloss.startswith('"'):
        cut = 0
    return (gloss if cut < 0 else gloss[:cut]).strip()


def parse_data_line(line: str) -> Synset:
    """One line of ``data.noun`` to a Synset (see the module docstring for the format)."""
    head, _, gloss = line.partition(" | ")
    f = head.split()
    try:
        if f[2] != "n":
            raise WordNetError(f"not a noun synset: {line[:60]!r}")
        w_cnt = int(f[3], 16)
        lemmas = [f[4 + 2 * i].replace("_", " ") for i in range(w_cnt)]
        i = 4 + 2 * w_cnt
        p_cnt = int(f[i])
        hyper, hypo = [], []
        for k in range(p_cnt):
            sym, off, pos = f[i + 1 + 4 * k], f[i + 2 + 4 * k], f[i + 3 + 4 * k]
            if pos != "n":
                continue
            if sym in _HYPERNYM:
                hyper.append("n" + off)
            elif sym in _HYPONYM:
                hypo.append("n" + off)
    except (IndexError, ValueError) as e:
        raise WordNetError(f"malformed WordNet data line ({e}): {line[:80]!r}") from None
    gloss = gloss.strip()
    return Synset("n" + f[0], lemmas, _definition(gloss), gloss, hyper, hypo)


class WordNet:
    """WordNet 3.0 nouns: synsets by id, lemma lookups and hypernym closures.

    A synset id is the byte offset of its line in ``data.noun`` (that is how WordNet's files are
    meant to be read), so the file is held as bytes and a line is parsed only when first asked for.
    """

    def __init__(self, data: bytes, exceptions: dict[str, list[str]] | None = None, source: str = ""):
        self._data = data
        self._cache: dict[str, Synset] = {}
        self.exceptions = exceptions or {}
        self.source = source

    @classmethod
    def load(cls, directory: str = DEFAULT_WORDNET_DIR) -> "WordNet":
        data = os.path.join(directory, "data.noun")
        if not os.path.exists(data):
            raise WordNetError(
                f"no WordNet noun database at {data}: install Debian's wordnet-base "
                "(scripts/install-system-deps.sh) or pass the directory holding data.noun"
            )
        with open(data, "rb") as f:
            raw = f.read()
        exceptions: dict[str, list[str]] = {}
        exc = os.path.join(directory, "noun.exc")
        if os.path.exists(exc):
            with open(exc, encoding="utf-8", errors="replace") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 2:
                        exceptions[parts[0].replace("_", " ")] = [p.replace("_", " ") for p in parts[1:]]
        return cls(raw, exceptions, data)

    def synset(self, wnid: str) -> Synset:
        s = self._cache.get(wnid)
        if s is not None:
            return s
        off = int(wnid[1:]) if len(wnid) == 9 and wnid[0] == "n" and wnid[1:].isdigit() else -1
        if off < 0 or off >= len(self._data) or (off > 0 and self._data[off - 1:off] != b"\n") \
                or not self._data.startswith(wnid[1:].encode(), off):
            raise WordNetError(
                f"no WordNet 3.0 noun synset {wnid!r} (ids look like n03791235: 'n' + 8-digit offset)"
            )
        end = self._data.find(b"\n", off)
        s = parse_data_line(self._data[off:end if end >= 0 else None].decode("utf-8", "replace"))
        self._cache[wnid] = s
        return s

    def hypernym_closure(self, wnid: str) -> set[str]:
        """Every synset above ``wnid`` (hypernyms and instance hypernyms, transitively), itself excluded."""
        seen: set[str] = set()
        todo = list(self.synset(wnid).hypernyms)
        while todo:
            w = todo.pop()
            if w not in seen:
                seen.add(w)
                todo.extend(self.synset(w).hypernyms)
        return seen

    def synsets_under(self, root: str, among: set[str] | list[str] | None = None) -> set[str]:
        """Synsets whose hypernym closure contains ``root``, and ``root`` itself.

        With ``among`` (e.g. the 1000 ImageNet ids) only those candidates are tested, which is the
        question the subtree accuracy asks: which classes are a kind of ``root``?
        """
        self.synset(root)  # validates the id
        if among is None:
            out, todo = {root}, [root]
            while todo:
                for h in self.synset(todo.pop()).hyponyms:
                    if h not in out:
                        out.add(h)
                        todo.append(h)
            return out
        return {w for w in among if w == root or root in self.hypernym_closure(w)}

    def singulars(self, word: str) -> list[str]:
        """Candidate base forms of a noun (WordNet's morphy rules for nouns), the word included."""
        out = [word]
        out += self.exceptions.get(word, [])
        for suffix, repl in (("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
                             ("men", "man"), ("ies", "y"), ("s", "")):
            if word.endswith(suffix) and len(word) > len(suffix) + 1:
                out.append(word[: -len(suffix)] + repl)
        return out


@lru_cache(maxsize=4)
def load_wordnet(directory: str = DEFAULT_WORDNET_DIR) -> WordNet:
    """A cached WordNet (one read of data.noun; synsets are parsed on demand)."""
    return WordNet.load(directory)


def synsets_under(root_wnid: str, among=None, directory: str = DEFAULT_WORDNET_DIR) -> set[str]:
    """Synset ids under ``root_wnid`` in WordNet 3.0 (its hyponym closure, itself included).

    ``synsets_under("n03791235", among=imagenet_wnids)`` gives the ImageNet classes that are motor
    vehicles, for accuracy over a subtree as TiC-DataComp-Net reports it.
    """
    return load_wordnet(directory).synsets_under(root_wnid, among)


@lru_cache(maxsize=4)
def noun_lemmas(directory: str = DEFAULT_WORDNET_DIR) -> frozenset[str]:
    """Every WordNet 3.0 noun lemma, lower-case with ``_`` turned into spaces ("sea lion").

    Read from ``index.noun``, whose data lines start with the lemma (license lines start with two
    spaces); used to find the nouns a caption mentions (``ticlip.analysis.nouns``).
    """
    path = os.path.join(directory, "index.noun")
    if not os.path.exists(path):
        raise WordNetError(
            f"no WordNet noun index at {path}: install Debian's wordnet-base "
            "(scripts/install-system-deps.sh) or pass the directory holding index.noun"
        )
    out = set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(" ") or not line.strip():
                continue
            out.add(line.split(" ", 1)[0].replace("_", " ").lower())
    return frozenset(out)
