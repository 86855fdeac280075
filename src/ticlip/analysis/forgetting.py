"""Per-concept forgetting, as pure functions: for each noun, image→text recall@1 on the eval pairs
whose caption mentions it, under the model of the step that introduced it and under the last model.

A concept is *introduced* at the first step whose eval set holds at least ``min_count`` pairs
mentioning it (fewer are too noisy to score); it is scored on those pairs of that step, each pair's
image retrieving among all captions of the same eval set (the candidate pool the evaluation matrix
uses). The drop is recall under the introducing model minus recall under the last model: the
concept-level view of TiC-CLIP's backward transfer (E[T−1, j] against E[j, j]).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

_CHUNK = 2048


def image_to_text_hits(image_features, text_features) -> np.ndarray:
    """Per aligned pair i, whether image i ranks its own caption i first among all captions.

    Ties count against the model, as in ``ticlip.eval.retrieval`` (a collapsed model whose features
    are all equal hits nothing)."""
    img = torch.as_tensor(np.asarray(image_features), dtype=torch.float32)
    txt = torch.as_tensor(np.asarray(text_features), dtype=torch.float32)
    if img.shape != txt.shape or img.ndim != 2:
        raise ValueError(f"need aligned (n, d) features, got images {tuple(img.shape)}, texts {tuple(txt.shape)}")
    out = []
    for s in range(0, len(img), _CHUNK):
        sims = img[s:s + _CHUNK] @ txt.T
        right = sims[torch.arange(sims.shape[0]), torch.arange(s, s + sims.shape[0])]
        out.append((sims >= right[:, None]).sum(dim=1) == 1)  # only the right caption scores that high
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=bool)


@dataclass
class ConceptForgetting:
    noun: str
    step: int  # index of the step that introduced it
    n: int  # eval pairs of that step mentioning it
    recall_intro: float  # image→text recall@1 on them, model after `step`
    recall_last: float  # the same pairs, last model
    examples: list[int] = field(default_factory=list)  # pairs the introducing model got right, the last wrong

    @property
    def drop(self) -> float:
        return self.recall_intro - self.recall_last


def concept_forgetting(step_nouns: Sequence[Sequence[Sequence[str]]], intro_hits: Sequence, last_hits: Sequence, *,
                       min_count: int = 5, examples: int = 3) -> list[ConceptForgetting]:
    """Concepts sorted by drop (largest first, then by name).

    ``step_nouns[s][i]``: nouns of pair i of step s's eval set; ``intro_hits[s][i]``: whether the model
    after step s retrieves pair i's caption first; ``last_hits[s][i]``: the same under the last model.
    Pass only the steps before the last model's own step (its concepts cannot have been forgotten).
    """
    if not (len(step_nouns) == len(intro_hits) == len(last_hits)):
        raise ValueError("step_nouns, intro_hits and last_hits must cover the same steps")
    seen: set[str] = set()
    out: list[ConceptForgetting] = []
    for s, caps in enumerate(step_nouns):
        hi, hl = np.asarray(intro_hits[s], dtype=bool), np.asarray(last_hits[s], dtype=bool)
        if not (len(caps) == len(hi) == len(hl)):
            raise ValueError(f"step {s}: {len(caps)} captions, {len(hi)} and {len(hl)} hits")
        where: dict[str, list[int]] = {}
        for i, nouns in enumerate(caps):
            for w in set(nouns):
                where.setdefault(w, []).append(i)
        for w in sorted(where):
            idx = np.array(where[w])
            if w in seen or len(idx) < min_count:
                continue
            seen.add(w)
            lost = [int(i) for i in idx if hi[i] and not hl[i]][:examples]
            out.append(ConceptForgetting(w, s, len(idx), float(hi[idx].mean()), float(hl[idx].mean()), lost))
    out.sort(key=lambda c: (-c.drop, c.noun))
    return out


__all__ = ["ConceptForgetting", "concept_forgetting", "image_to_text_hits"]
