"""``ticlip analyze shift``: distribution shift between every pair of a stream's steps (TiC-CLIP §2.4,
App. C.6) and the concepts that are new or grew most at each step. See docs/ANALYSIS.md."""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ticlip.analysis.config import ShiftConfig
from ticlip.analysis.files import (ANALYSIS_DIR, SHIFT_FID, SHIFT_JSON, SHIFT_TV, shift_heatmap, write_json,
                                   write_square_csv, write_thumbnail)
from ticlip.analysis.nouns import NounExtractor
from ticlip.analysis.samples import as_floats, check_split, encode_sample, load_step_sample, slug
from ticlip.analysis.shift import concept_drift, fid, noun_distribution, pairwise, top_nouns, tv_distance
from ticlip.errors import TiclipError
from ticlip.locking import DirLock

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class ModelChoice:
    """The model whose image embeddings FID compares."""

    model: str  # open_clip model name
    checkpoint: str
    source: str  # how it was named, for shift.json


def resolve_model(*, checkpoint: str | None = None, model: str | None = None, run: str | None = None,
                  step: str | None = None) -> ModelChoice:
    """``--checkpoint`` with ``--model``, or ``--run`` with ``--step`` (a step label or index of the run)."""
    from ticlip.models import model_config
    from ticlip.run_layout import RunInfo

    if checkpoint and run:
        raise TiclipError("give either --checkpoint (with --model) or --run (with --step), not both")
    if checkpoint:
        if not model:
            raise TiclipError(f"--checkpoint {checkpoint} needs --model (its open_clip model name, e.g. ViT-B-16)")
        if not os.path.exists(checkpoint):
            raise TiclipError(f"--checkpoint {checkpoint} does not exist")
        model_config(model)  # an unknown name is one line
        return ModelChoice(model, os.path.abspath(checkpoint), f"checkpoint {os.path.abspath(checkpoint)}")
    if run:
        info = RunInfo.load(run)
        done = [s for s in info.steps if s.finished]
        if not done:
            raise TiclipError(f"--run {run} has no finished step to take a model from")
        if step is None:
            raise TiclipError(f"--run {run} needs --step (one of {', '.join(s.label for s in done)})")
        rec = next((s for s in done if s.label == step or str(s.index) == step), None)
        if rec is None:
            raise TiclipError(f"--step {step!r}: run {info.name} has no finished step of that label or index "
                              f"(it has {', '.join(s.label for s in done)})")
        path = os.path.join(run, rec.checkpoint)
        if not os.path.exists(path):
            raise TiclipError(f"--step {step}: checkpoint {path} does not exist")
        return ModelChoice(info.model, os.path.abspath(path), f"run {info.name}, step {rec.label}")
    raise TiclipError("FID needs a model: give --checkpoint CKPT --model NAME or --run RUN --step LABEL "
                      "(or --no-fid for the noun part only)")


@dataclass
class ShiftResult:
    out_dir: str
    labels: list[str]
    fid: np.ndarray | None
    tv: np.ndarray
    files: list[str] = field(default_factory=list)


def default_out_dir(stream) -> str:
    """Where the report looks for a stream's analysis: ``<stream root>/analysis``."""
    return os.path.join(stream.root, ANALYSIS_DIR)


def analyze_shift(stream_path: str, out_dir: str | None = None, config: ShiftConfig | None = None, *,
                  checkpoint: str | None = None, model: str | None = None, run: str | None = None,
                  step: str | None = None, log: Log = _stderr) -> ShiftResult:
    """Everything is checked (stream, split, model, WordNet) before any file is written."""
    from ticlip.data.stream import TimeStream

    cfg = config or ShiftConfig()
    stream = TimeStream.load(stream_path)
    if len(stream.steps) < 2:
        raise TiclipError(f"stream {stream.name} has {len(stream.steps)} step(s); shift needs at least two")
    check_split(stream, cfg.split, cfg.task)
    choice = resolve_model(checkpoint=checkpoint, model=model, run=run, step=step) if cfg.fid else None
    extractor = NounExtractor(cfg.wordnet_dir)
    out_dir = out_dir or default_out_dir(stream)
    labels = stream.labels

    with DirLock(out_dir, what="analysis"):
        shutil.rmtree(os.path.join(out_dir, "thumbs"), ignore_errors=True)  # a previous run's examples
        bundle = None
        if choice is not None:
            from ticlip.models import create_model, quiet_open_clip

            with quiet_open_clip():
                bundle = create_model(choice.model, init=choice.checkpoint, device=cfg.device)
            bundle.model.eval()
        samples, feats, step_nouns = [], [], []
        for k in range(len(stream.steps)):
            s = load_step_sample(stream, k, split=cfg.split, task=cfg.task, max_samples=cfg.max_samples, seed=cfg.seed)
            if bundle is not None and len(s.images) < 2:
                raise TiclipError(f"step {s.label} has {len(s.images)} {cfg.split} pair(s); FID needs at least two "
                                  "(use another --split or --no-fid)")
            samples.append(s)
            step_nouns.append([extractor.nouns(c) for c in s.captions])
            if bundle is not None:
                feats.append(encode_sample(bundle, s, batch_size=cfg.batch_size, device=cfg.device))
            log(f"step {s.label}: {len(s.captions)} of {s.total} {cfg.split} pairs")

        counts = []
        for nouns in step_nouns:
            c: dict[str, int] = {}
            for caption_nouns in nouns:
                for w in set(caption_nouns):
                    c[w] = c.get(w, 0) + 1
            counts.append(c)
        vocab = top_nouns(counts, cfg.top_k)
        dists = [noun_distribution(c, vocab) for c in counts]
        TV = pairwise(dists, tv_distance)
        FID = pairwise(feats, fid) if bundle is not None else None

        files = [write_square_csv(os.path.join(out_dir, SHIFT_TV), labels, TV),
                 shift_heatmap(TV, labels, os.path.join(out_dir, "shift_tv.png"),
                               title=f"TV distance of top-{len(vocab)} noun distributions", unit="TV distance")]
        if FID is not None:
            files += [write_square_csv(os.path.join(out_dir, SHIFT_FID), labels, FID),
                      shift_heatmap(FID, labels, os.path.join(out_dir, "shift_fid.png"),
                                    title=f"FID of image embeddings ({choice.model})", unit="FID")]
        elif os.path.exists(os.path.join(out_dir, SHIFT_FID)):
            os.remove(os.path.join(out_dir, SHIFT_FID))  # an old FID would not match this run's settings

        drift = concept_drift(step_nouns, top=cfg.drift_top, min_count=cfg.min_count, examples=cfg.examples)
        drift_json = []
        for s, changes in zip(samples, drift):
            concepts = []
            for ch in changes:
                thumbs = []
                for j, i in enumerate(ch.examples):
                    rel = os.path.join("thumbs", f"{s.index}-{slug(s.label)}", f"{slug(ch.noun)}-{j}.png")
                    files.append(write_thumbnail(s.images[i], os.path.join(out_dir, rel)))
                    thumbs.append({"path": rel, "caption": s.captions[i]})
                concepts.append({"noun": ch.noun, "n": ch.n, "share": ch.share, "previous_share": ch.previous_share,
                                 "growth": ch.growth, "new": ch.new, "examples": thumbs})
            drift_json.append({"step": s.label, "index": s.index, "captions": len(s.captions), "concepts": concepts})

        meta = {
            "stream": stream.name, "stream_root": stream.root, "steps": labels,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "settings": cfg.to_dict(),
            "model": None if choice is None else {"name": choice.model, "checkpoint": choice.checkpoint,
                                                  "source": choice.source},
            "pairs": {s.label: {"used": len(s.captions), "total": s.total} for s in samples},
            "fid": None if FID is None else {"file": SHIFT_FID, "matrix": as_floats(FID),
                                             "embeddings": "L2-normalised image features of the model"},
            "tv": {"file": SHIFT_TV, "matrix": as_floats(TV), "top_k": len(vocab), "nouns": vocab,
                   "counting": "captions mentioning each noun, normalised over the top-k nouns"},
            "drift": drift_json,
        }
        files.append(write_json(os.path.join(out_dir, SHIFT_JSON), meta))
    return ShiftResult(out_dir, labels, FID, TV, files)


__all__ = ["ModelChoice", "ShiftResult", "analyze_shift", "default_out_dir", "resolve_model"]
