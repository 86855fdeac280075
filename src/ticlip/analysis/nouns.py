"""The WordNet nouns a caption mentions (TiC-CLIP App. C.6 compares steps by their distributions).

A caption is lower-cased and split into word tokens (``ticlip.data.classify.normalise``); at each
position the longest run of up to three tokens that is a WordNet 3.0 noun lemma is taken ("sea
lion" before "sea"), the last word folded to its singular by WordNet's noun rules ("dogs" → "dog").
Function words that WordNet also lists as nouns ("a" is vitamin A, "in" is inch, "it" information
technology) are dropped, and so are numbers. No part-of-speech tagger is used: a word that is a
noun in WordNet counts wherever it appears ("red" in "a red car" counts as the noun red). That keeps
the extraction deterministic, fast and free of another model; we assume it is close enough to the
paper's (whose exact extractor we have not seen) for comparing steps with each other.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from ticlip.data.classify import normalise
from ticlip.data.wordnet import DEFAULT_WORDNET_DIR, load_wordnet, noun_lemmas

MAX_WORDS = 3  # longest lemma matched, in words
# Function words WordNet also lists as nouns (hand-picked: a general stop-word list would also drop
# real nouns such as "may" or "will" less predictably).
STOP_WORDS = frozenset("""
a an the and or but nor of in on at to for from by with without into onto over under about above below
between through during after before as is are was were be been being am do does did done have has had
it its this that these those there here i me my we us our you your he him his she her they them their
what which who whom whose when where why how all any both each few more most other some such no not
only own same so than too very can will just should now one two three four five six seven eight nine
ten up down out off again further then once per via vs
""".split())


class NounExtractor:
    """Finds WordNet nouns in captions; ``wordnet_dir`` holds ``index.noun`` (and ``data.noun`` and
    ``noun.exc`` for the singular forms)."""

    def __init__(self, wordnet_dir: str = DEFAULT_WORDNET_DIR, *, lemmas: Iterable[str] | None = None,
                 stop_words: Iterable[str] = STOP_WORDS):
        self.lemmas = frozenset(lemmas) if lemmas is not None else noun_lemmas(wordnet_dir)
        self.wordnet = load_wordnet(wordnet_dir)
        self.stop_words = frozenset(stop_words)

    def _lemma(self, words: list[str]) -> str | None:
        head = " ".join(words[:-1])
        for form in self.wordnet.singulars(words[-1]):
            cand = f"{head} {form}" if head else form
            if cand in self.lemmas:
                return cand
        return None

    def nouns(self, caption: str) -> list[str]:
        """The nouns of one caption in order of appearance (repeats kept)."""
        toks = normalise(caption)
        out: list[str] = []
        i = 0
        while i < len(toks):
            hit = None
            for n in range(min(MAX_WORDS, len(toks) - i), 0, -1):
                words = toks[i:i + n]
                if n == 1 and (words[0] in self.stop_words or words[0].isdigit() or len(words[0]) < 2):
                    break
                lemma = self._lemma(words)
                if lemma is not None:
                    hit = (n, lemma)
                    break
            if hit:
                out.append(hit[1])
                i += hit[0]
            else:
                i += 1
        return out

    def counts(self, captions: Iterable[str]) -> Counter:
        """How many captions mention each noun (a noun counts once per caption)."""
        c: Counter = Counter()
        for cap in captions:
            c.update(set(self.nouns(cap)))
        return c


__all__ = ["MAX_WORDS", "NounExtractor", "STOP_WORDS"]
