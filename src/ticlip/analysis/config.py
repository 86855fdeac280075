"""Settings of ``ticlip analyze shift`` and ``ticlip analyze forgetting`` (one schema each; their
flags derive from them)."""

from __future__ import annotations

from typing import Literal

from ticlip.data.wordnet import DEFAULT_WORDNET_DIR
from ticlip.schema import Field, Schema


class _Common(Schema):
    task: str = Field("retrieval", description="eval set of each step to analyse (with --split eval)")
    max_samples: int = Field(1000, ge=2, description="pairs per step at most, drawn at random (fixed by --seed) "
                             "when a step has more")
    seed: int = Field(0, description="seed of the per-step subsample")
    batch_size: int = Field(256, ge=1, description="images/texts encoded at once")
    device: str = Field("cpu", description="cpu or cuda")
    wordnet_dir: str = Field(DEFAULT_WORDNET_DIR, description="directory holding WordNet 3.0's index.noun and "
                             "data.noun (Debian's wordnet-base)")
    min_count: int = Field(3, ge=1, description="a concept counts at a step only when at least this many "
                           "captions mention it (fewer are noise)")
    examples: int = Field(3, ge=0, description="sample images kept per concept")


class ShiftConfig(_Common):
    """``ticlip analyze shift``: FID and noun TV distance between every pair of steps, and the concepts
    that are new or grew most at each step (TiC-CLIP §2.4, App. C.6)."""

    split: Literal["eval", "validation", "train"] = Field(
        "eval", description="which pairs of each step: its eval set (--task), its validation set, or a sample "
        "of its train pairs (train reads every train shard of the step)")
    top_k: int = Field(100, ge=1, description="nouns whose distribution the TV distance compares: the k most "
                       "mentioned over the whole stream")
    fid: bool = Field(True, description="compute FID on image embeddings (needs --checkpoint/--model or "
                      "--run/--step); --no-fid computes only the noun part")
    drift_top: int = Field(5, ge=1, description="concepts listed per step (new ones first, then those that grew most)")


class ForgettingConfig(_Common):
    """``ticlip analyze forgetting``: per-concept image→text recall@1 under the model that introduced the
    concept and under the last model."""

    min_count: int = Field(5, ge=1, description="a concept is scored only when at least this many eval pairs "
                           "of its introducing step mention it (fewer are noise)")
    show: int = Field(10, ge=1, description="concepts (those that dropped most) whose example images are kept")


__all__ = ["ForgettingConfig", "ShiftConfig"]
