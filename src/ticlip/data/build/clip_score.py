"""CLIP-score filtering: keep the pairs whose image-text cosine similarity under a given CLIP
checkpoint is at least a threshold, or among the highest ``top_fraction`` of the pool.

This is DataComp's "CLIP score" filtering (Gadre et al. 2023, "DataComp: In search of the next
generation of multimodal datasets", section 4 / Table 3: OpenAI ViT-L/14 scores, top 30 % or a
threshold), which TiC-CLIP (Garg et al. 2024, section 3 and appendix) applies on top of basic filtering
for its "bestpool" TiC-DataComp variant.

The builder calls ``ClipScoreFilter.keep`` in the plan, after de-duplication and before the rows are
split into steps, so the top fraction is taken over the whole de-duplicated pool and the eval,
validation and train sizes are planned on what is kept. Rows removed here are counted as filtered
``clip_score``. Scores are computed in this process, in batches of ``BATCH`` pairs, on
``BuildConfig.clip_score_device``; an image that cannot be decoded gets no score and is left for the
image pass (which counts it as ``corrupt_image``); it does not count toward the pool of the top fraction.
"""

from __future__ import annotations

import io
import os

from ticlip.data.build.config import BuildConfig
from ticlip.data.build.rows import Counts, ImageRef, Row
from ticlip.data.table import read_image_bytes
from ticlip.errors import TiclipError

BATCH = 256  # pairs per forward pass
REASON = "clip_score"  # the filtered-count key


def _open_ref(ref: ImageRef, spool, cache_dir: str):
    """The RGB PIL image a row refers to (the image pass's sources: spool pixels or bytes, file, URL)."""
    from PIL import Image, ImageOps

    if ref.kind == "pixels":
        spool.seek(ref.offset)
        image = Image.frombytes(ref.mode, (ref.width, ref.height), spool.read(ref.length))
    else:
        if ref.kind == "bytes":
            spool.seek(ref.offset)
            data = spool.read(ref.length)
        else:
            data = read_image_bytes(ref.location, cache_dir=cache_dir if ref.kind == "url" else None)
        image = Image.open(io.BytesIO(data))
        image.load()
        image = ImageOps.exif_transpose(image)
    return image.convert("RGB")


class ClipScorer:
    """The cosine similarity of image and caption embeddings under one open_clip checkpoint."""

    def __init__(self, checkpoint: str, model_name: str | None = None, device: str = "cpu"):
        from ticlip.models import create_model, read_checkpoint

        if model_name is None:
            stored = read_checkpoint(checkpoint, what="clip_score_checkpoint")
            model_name = stored.get("name") if isinstance(stored, dict) else None
            if not model_name:
                raise TiclipError(f"clip_score_checkpoint {checkpoint} does not name its model; "
                                  "set clip_score_model (an open_clip model name)")
        self.bundle = create_model(str(model_name), init=checkpoint, device=device)
        self.bundle.model.eval()
        self.device = device

    def score(self, images: list, captions: list[str]):
        """Cosine similarities (a float32 numpy array) of ``images[i]`` (PIL) and ``captions[i]``."""
        import torch

        b = self.bundle
        pixels = torch.stack([b.preprocess_val(im) for im in images]).to(self.device)
        tokens = b.tokenizer(captions).to(self.device)
        with torch.no_grad():
            img = torch.nn.functional.normalize(b.model.encode_image(pixels).float(), dim=-1)
            txt = torch.nn.functional.normalize(b.model.encode_text(tokens).float(), dim=-1)
        return (img * txt).sum(dim=-1).cpu().numpy()


def selected(scores: list[float | None], threshold: float | None, top_fraction: float | None) -> list[bool]:
    """Which rows stay: score ≥ ``threshold``, or among the ``round(top_fraction × n)`` highest of the
    ``n`` scored rows (ties: the earlier row first). Unscored rows (None) stay."""
    if threshold is not None:
        return [s is None or s >= threshold for s in scores]
    scored = [i for i, s in enumerate(scores) if s is not None]
    k = round(top_fraction * len(scored))
    best = set(sorted(scored, key=lambda i: (-scores[i], i))[:k])
    return [scores[i] is None or i in best for i in range(len(scores))]


class ClipScoreFilter:
    """``keep(rows, counts)``: the rows that pass, in order; the others counted as ``clip_score``."""

    def __init__(self, config: BuildConfig, spool_path: str, cache_dir: str, progress: bool = False):
        self.config, self.spool_path, self.cache_dir, self.progress = config, spool_path, cache_dir, progress
        self.scorer: ClipScorer | None = None

    def scores(self, rows: list[Row]) -> list[float | None]:
        if self.scorer is None:
            c = self.config
            self.scorer = ClipScorer(c.clip_score_checkpoint, c.clip_score_model, c.clip_score_device)
        from ticlip.data.build.progress import progress_bar

        out: list[float | None] = [None] * len(rows)
        bar = progress_bar(self.progress, total=len(rows), desc="CLIP scores", unit=" pairs")
        spool = open(self.spool_path, "rb") if os.path.exists(self.spool_path) else None
        try:
            for start in range(0, len(rows), BATCH):
                images, captions, where = [], [], []
                for i, row in enumerate(rows[start:start + BATCH], start):
                    try:
                        images.append(_open_ref(row.ref, spool, self.cache_dir))
                    except Exception:  # noqa: BLE001 - any undecodable image: the image pass counts it
                        continue
                    captions.append(row.caption)
                    where.append(i)
                if images:
                    for i, s in zip(where, self.scorer.score(images, captions)):
                        out[i] = float(s)
                bar.update(min(BATCH, len(rows) - start))
        finally:
            bar.close()
            if spool is not None:
                spool.close()
        return out

    def keep(self, rows: list[Row], counts: Counts) -> list[Row]:
        c = self.config
        flags = selected(self.scores(rows), c.clip_score_threshold, c.clip_score_top_fraction)
        removed = flags.count(False)
        if removed:
            counts.filtered[REASON] += removed
        return [r for r, ok in zip(rows, flags) if ok]


__all__ = ["BATCH", "ClipScoreFilter", "ClipScorer", "REASON", "selected"]
