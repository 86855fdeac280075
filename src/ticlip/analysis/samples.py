"""The pairs an analysis looks at, per step, and their CLIP features.

Each step contributes its eval set ``task`` (or its validation set, or a sample of its train pairs),
subsampled to ``max_samples`` pairs by ``ticlip.eval.retrieval.subsample_indices`` with the step
index as key: the same seed gives the same pairs for every model and every re-run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ticlip.errors import TiclipError
from ticlip.eval.retrieval import subsample_indices


@dataclass
class StepSample:
    index: int
    label: str
    images: list  # PIL images
    captions: list[str]
    total: int  # pairs the step holds in this split (before subsampling)


def check_split(stream, split: str, task: str) -> None:
    """Every step has the pairs ``split`` asks for; one line naming what is missing otherwise."""
    if split == "eval":
        missing = [s.label for s in stream.steps if task not in s.eval]
        if missing:
            raise TiclipError(f"--task {task!r}: steps {', '.join(missing)} have no such eval set "
                              f"(the stream has: {', '.join(stream.eval_tasks()) or 'none'})")
    elif split == "validation":
        missing = [s.label for s in stream.steps if s.validation is None]
        if missing:
            raise TiclipError(f"--split validation: steps {', '.join(missing)} have no validation set; "
                              "use --split eval or train")


def load_step_sample(stream, k: int, *, split: str, task: str, max_samples: int, seed: int) -> StepSample:
    st = stream.steps[k]
    if split == "train":
        total = st.train.count
        keep = set(subsample_indices(total, max_samples, seed, k).tolist())
        images, captions = [], []
        for i, s in enumerate(stream.iter_samples(stream.train_urls(k))):
            if i in keep:
                images.append(s["image"])
                captions.append(s["caption"])
        return StepSample(k, st.label, images, captions, total)
    es = stream.validation_set(k) if split == "validation" else stream.eval_set(k, task)
    idx = subsample_indices(len(es), max_samples, seed, k)
    return StepSample(k, st.label, [es.images[i] for i in idx], [es.captions[i] for i in idx], len(es))


def encode_sample(bundle, sample: StepSample, *, batch_size: int, device: str, texts: bool = False):
    """Normalised image features (and text features when ``texts``) of a step's sample, as numpy."""
    from ticlip.eval.encode import encode_pixels, encode_texts, eval_transform, images_to_pixels

    px = images_to_pixels(sample.images, eval_transform(bundle), batch_size=batch_size)
    img = encode_pixels(bundle.model, px, batch_size=batch_size, device=device).numpy()
    if not texts:
        return img
    txt = encode_texts(bundle.model, bundle.tokenizer, sample.captions, batch_size=batch_size, device=device)
    return img, txt.numpy()


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def as_floats(M) -> list:
    """A matrix as nested lists with NaN as None (JSON)."""
    return [[None if np.isnan(v) else float(v) for v in row] for row in np.asarray(M, dtype=float)]


__all__ = ["StepSample", "as_floats", "check_split", "encode_sample", "load_step_sample", "slug"]
