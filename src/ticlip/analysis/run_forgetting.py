"""``ticlip analyze forgetting RUN``: which concepts the run forgot (``ticlip.analysis.forgetting``).

Cost: the per-sample results this needs are not in eval.jsonl (it keeps scores, not features), so
the eval pairs are encoded again: step s's (subsampled) eval set once by the model after step s and
once by the last model, i.e. two passes over each step's eval set and one model load per step,
about what ``ticlip eval`` spends on the diagonal and last row of E. See docs/ANALYSIS.md.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import os
import shutil
import sys
from typing import Callable

import numpy as np

from ticlip.analysis.config import ForgettingConfig
from ticlip.analysis.files import ANALYSIS_DIR, FORGETTING_CSV, FORGETTING_JSON, write_json, write_thumbnail
from ticlip.analysis.forgetting import ConceptForgetting, concept_forgetting, image_to_text_hits
from ticlip.analysis.nouns import NounExtractor
from ticlip.analysis.samples import check_split, encode_sample, load_step_sample, slug
from ticlip.atomic import write_text_atomic
from ticlip.errors import TiclipError
from ticlip.locking import DirLock

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _stream_path(path: str, run_dir: str) -> str:
    """run.json's stream: absolute (or a URL), or (older runs) relative to the run or the working dir."""
    if "://" in path or os.path.isabs(path):
        return path
    here = os.path.join(run_dir, path)
    return here if os.path.exists(here) else path


def _hits(bundle, sample, cfg) -> np.ndarray:
    """Per pair of a step's sample: does the model retrieve its caption first (none for an empty set)."""
    if not sample.images:
        return np.zeros(0, dtype=bool)
    return image_to_text_hits(*encode_sample(bundle, sample, batch_size=cfg.batch_size, device=cfg.device,
                                             texts=True))


def _rate(hits: np.ndarray) -> str:
    return f"{hits.mean():.3f}" if len(hits) else "–"


def forgetting_csv(rows: list[ConceptForgetting], labels: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["concept", "step", "n", "recall_intro", "recall_last", "drop"])
    for r in rows:
        w.writerow([r.noun, labels[r.step], r.n, f"{r.recall_intro:.6g}", f"{r.recall_last:.6g}", f"{r.drop:.6g}"])
    return buf.getvalue()


def analyze_forgetting(run_dir: str, config: ForgettingConfig | None = None, *, log: Log = _stderr) -> dict:
    """Write RUN/analysis/forgetting.csv and forgetting.json (with example thumbnails); returns the JSON."""
    from ticlip.data.stream import TimeStream
    from ticlip.models import create_model, quiet_open_clip
    from ticlip.run_layout import RunInfo

    cfg = config or ForgettingConfig()
    if not os.path.isdir(run_dir):
        raise TiclipError(f"no run directory {run_dir}")
    info = RunInfo.load(run_dir)
    stream = TimeStream.load(_stream_path(info.stream, run_dir))
    check_split(stream, "eval", cfg.task)
    done = sorted((s for s in info.steps if s.finished and s.index < len(stream.steps)), key=lambda s: s.index)
    if len(done) < 2:
        raise TiclipError(f"run {info.name} has {len(done)} finished step(s); forgetting needs at least two models")
    for s in done:
        if not os.path.exists(os.path.join(run_dir, s.checkpoint)):
            raise TiclipError(f"run {info.name}, step {s.label}: checkpoint {os.path.join(run_dir, s.checkpoint)} "
                              "does not exist")
    extractor = NounExtractor(cfg.wordnet_dir)
    last, earlier = done[-1], done[:-1]
    labels = stream.labels
    out_dir = os.path.join(run_dir, ANALYSIS_DIR)

    def load(rec):
        with quiet_open_clip():
            b = create_model(info.model, init=os.path.join(run_dir, rec.checkpoint), device=cfg.device)
        b.model.eval()
        return b

    with DirLock(out_dir, what="analysis"):
        samples, nouns, last_hits, intro_hits = [], [], [], []
        bundle = load(last)
        for rec in earlier:
            s = load_step_sample(stream, rec.index, split="eval", task=cfg.task, max_samples=cfg.max_samples,
                                 seed=cfg.seed)
            samples.append(s)
            nouns.append([extractor.nouns(c) for c in s.captions])
            last_hits.append(_hits(bundle, s, cfg))
        for rec, s in zip(earlier, samples):
            bundle = load(rec)
            intro_hits.append(_hits(bundle, s, cfg))
            log(f"step {rec.label}: {len(s.captions)} of {s.total} eval pairs; recall@1 (image→text) "
                f"{_rate(intro_hits[-1])} then, {_rate(last_hits[len(intro_hits) - 1])} under the last model")
        rows = concept_forgetting(nouns, intro_hits, last_hits, min_count=cfg.min_count, examples=cfg.examples)
        for r in rows:  # local index (steps with a model before the last) -> the stream's step index
            r.step = earlier[r.step].index
        by_index = {s.index: s for s in samples}

        shutil.rmtree(os.path.join(out_dir, "thumbs"), ignore_errors=True)
        files = [write_text_atomic(os.path.join(out_dir, FORGETTING_CSV), forgetting_csv(rows, labels))]
        shown = []
        for r in [r for r in rows if r.drop > 0][: cfg.show]:
            s = by_index[r.step]
            ex = []
            for j, i in enumerate(r.examples):
                rel = os.path.join("thumbs", f"{slug(r.noun)}-{j}.png")
                files.append(write_thumbnail(s.images[i], os.path.join(out_dir, rel)))
                ex.append({"path": rel, "caption": s.captions[i]})
            shown.append({"concept": r.noun, "step": labels[r.step], "n": r.n, "recall_intro": r.recall_intro,
                          "recall_last": r.recall_last, "drop": r.drop, "examples": ex})
        meta = {
            "run": info.name, "method": info.method, "model": info.model, "stream": stream.name,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "settings": cfg.to_dict(), "metric": "image→text recall@1 within the step's (subsampled) eval set",
            "last_step": last.label, "steps": [r.label for r in earlier],
            "pairs": {s.label: {"used": len(s.captions), "total": s.total} for s in samples},
            "concepts": len(rows), "file": FORGETTING_CSV, "dropped_most": shown,
        }
        files.append(write_json(os.path.join(out_dir, FORGETTING_JSON), meta))
    meta["files"], meta["out_dir"] = files, out_dir
    return meta


__all__ = ["analyze_forgetting", "forgetting_csv"]
