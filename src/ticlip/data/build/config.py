"""``BuildConfig``: how records become a stream (one schema: YAML, flags and errors come from it)."""

from __future__ import annotations

import os
from typing import Literal

from ticlip.data.build.languages import check_language
from ticlip.data.timestamps import GRANULARITIES, normalize_period, plan_steps
from ticlip.errors import TiclipError
from ticlip.schema import Field, Schema, field_validator, model_validator

BUILD_DIR = ".build"  # <out>/.build: the state file, shard markers, the spool and the URL image cache
EVAL_TASK = "retrieval"  # the held-out set every step gets
VALIDATION_FIELDS = ("validation_size", "validation_ratio")  # left out of the records when validation_size is 0
CLIP_SCORE_FIELDS = ("clip_score_checkpoint", "clip_score_model", "clip_score_threshold", "clip_score_top_fraction",
                     "clip_score_device")  # left out of the records when clip_score_checkpoint is unset


class BuildError(TiclipError):
    """A build that cannot go ahead as asked (conflicting output directory, nothing left to build)."""


def _not_bool(value, what: str):
    if isinstance(value, bool):
        raise ValueError(f"must be {what}")
    return value


class BuildConfig(Schema):
    """How records become a stream. YAML in/out with ``from_yaml``/``to_yaml``; flags of
    ``ticlip data build`` come from the field descriptions.

    ``min_image_side`` defaults to 0 (off) because the embedded sources render small images;
    DataComp's basic filtering uses 200 (``--min-image-side 200``).

    The field order is the order of ``to_dict()`` and of the manifest's ``provenance.config``; the
    values (and their types: an ``eval_fraction`` written as ``0`` stays an int) feed the config hash
    that resumable builds compare, so neither may change for existing configurations.
    ``record_dict()`` (the manifest's ``provenance.config`` and the hash) leaves out the validation
    fields when ``validation_size`` is 0, so such a build is recorded, hashed and written exactly as
    by the builder before validation sets existed.
    """

    granularity: Literal[GRANULARITIES] = Field(
        "year", description="length of a step's periods")
    aggregate_until: str | None = Field(
        None, description="merge this period and earlier ones into the first step (e.g. 2014)")
    step_ends: list[str] | None = Field(
        None, description="the last period of each step, e.g. 2014,2015,2016,2018; "
        "later periods are dropped (and counted)")
    eval_size: int = Field(1000, ge=0, strict=True, description="held-out retrieval pairs per step")
    eval_fraction: float | int | None = Field(
        None, description="for small steps: eval = min(eval size, fraction x pairs), in [0, 1)")
    seed: int = Field(0, ge=0, strict=True, description="seed of the eval sampling")
    min_caption_words: int = Field(2, ge=0, strict=True, description="fewest words a caption may have")
    min_caption_chars: int = Field(5, ge=0, strict=True, description="fewest characters a caption may have")
    min_image_side: int = Field(
        0, ge=0, strict=True, description="smallest image side in pixels (0 = off; DataComp: 200)")
    max_aspect_ratio: float | int | None = Field(
        3.0, description="longest/shortest side bound (0 on the command line, or null: no limit)")
    language: str | None = Field(None, description="keep captions in this language: english (fastText's lid.176, "
        "needs ticlip[lang]), fasttext:CODES (e.g. fasttext:en,de), ascii-english (a heuristic), or a "
        "registered hook")
    max_image_side: int = Field(
        256, ge=1, strict=True, description="resize images to this longest side on write")
    shard_size: int = Field(1000, ge=1, strict=True, description="rows per shard")
    dedup: bool = Field(True, strict=True, description="drop duplicates, keeping the first in time")
    image_cache_dir: str | None = Field(
        None, description="cache of URL images (default OUT/.build/image-cache); does not change the output")
    validation_size: int = Field(
        1000, ge=0, strict=True, description="most held-out validation pairs per step (the data methods tune "
        "on, e.g. patching's coefficient; never evaluated); 0: no validation sets")
    validation_ratio: float | int = Field(
        0.5, description="validation pairs per eval pair of the step: validation = min(validation size, "
        "round(ratio x eval pairs), half the pairs left after eval)")
    clip_score_checkpoint: str | None = Field(
        None, description="CLIP-score filtering (DataComp): an open_clip checkpoint whose image-text cosine "
        "similarity decides which pairs stay; with clip_score_threshold or clip_score_top_fraction")
    clip_score_model: str | None = Field(
        None, description="open_clip model name of clip_score_checkpoint (default: the name stored in it)")
    clip_score_threshold: float | None = Field(
        None, description="keep pairs whose CLIP score (cosine similarity) is at least this")
    clip_score_top_fraction: float | None = Field(
        None, description="keep this fraction, in (0, 1], of the pairs with the highest CLIP scores "
        "(DataComp's CLIP-score baseline keeps 0.3)")
    clip_score_device: str = Field(
        "cpu", description="device that computes the CLIP scores (cpu, cuda); does not change which pairs stay "
        "beyond floating-point ties")
    eval_uids: str | None = Field(
        None, description="a file of uids that are the eval sets (TiC's eval uid lists: *year2uids.pkl/.json, "
        "<year>.npy files, or one uid a line): each step's eval set is its pairs with those uids, instead of "
        "a seeded random sample (eval_size and eval_fraction then do not apply); a year -> synset -> uids list "
        "(TiC-DataCompNet) also adds each step's labelled eval set 'datacompnet'")

    @field_validator("aggregate_until", mode="before")
    @classmethod
    def _period_as_text(cls, value):
        return value if value is None else str(_not_bool(value, "a period such as 2014"))

    @field_validator("step_ends", mode="before")
    @classmethod
    def _periods_as_text(cls, value):
        if isinstance(value, str):  # "2014, 2015,2016"
            value = [s for s in value.replace(" ", "").split(",") if s]
        if isinstance(value, (list, tuple)):
            value = [str(_not_bool(v, "a period such as 2014")) for v in value]
            if not value:
                raise ValueError("is empty; give the last period of each step, e.g. 2014,2015,2016")
        return value

    @field_validator("aggregate_until", "step_ends")
    @classmethod
    def _periods_fit(cls, value, info):
        granularity = info.data.get("granularity")
        if value is None or granularity is None:
            return value
        for period in value if isinstance(value, list) else [value]:
            normalize_period(period, granularity)  # ValueError: names the period and the granularity
        if isinstance(value, list):
            plan_steps([], granularity, step_ends=value)  # ValueError: ends that do not increase
        return value

    @field_validator("eval_fraction", mode="before")
    @classmethod
    def _fraction(cls, value):
        _not_bool(value, "a number in [0, 1)")
        if value is not None and isinstance(value, (int, float)) and not 0.0 <= float(value) < 1.0:
            raise ValueError("must be in [0, 1)")
        return value

    @field_validator("max_aspect_ratio", mode="before")
    @classmethod
    def _ratio(cls, value):
        _not_bool(value, "a number >= 1 or null")
        if value is not None and isinstance(value, (int, float)) and float(value) < 1.0:
            raise ValueError("must be >= 1 (or null for no limit)")
        return value

    @field_validator("validation_ratio", mode="before")
    @classmethod
    def _ratio_positive(cls, value):
        _not_bool(value, "a number > 0")
        if isinstance(value, (int, float)) and not float(value) > 0.0:
            raise ValueError("must be > 0 (set validation_size 0 for no validation sets)")
        return value

    @field_validator("eval_uids")
    @classmethod
    def _eval_uids_file(cls, value):
        import os

        if value is not None and not os.path.exists(value):
            raise ValueError(f"no such file: {value} (a list of eval uids, e.g. "
                             "tic-datacomp_retrieval_evals_year2uids.pkl)")
        return value

    @field_validator("language")
    @classmethod
    def _known_language(cls, value):
        if value is not None:
            check_language(value)  # ValueError: an unknown name, or the fastText package is missing
        return value

    @field_validator("clip_score_top_fraction")
    @classmethod
    def _top_fraction(cls, value):
        if value is not None and not 0.0 < value <= 1.0:
            raise ValueError("must be in (0, 1]")
        return value

    @field_validator("clip_score_threshold")
    @classmethod
    def _threshold(cls, value):
        if value is not None and not -1.0 <= value <= 1.0:
            raise ValueError("must be a cosine similarity in [-1, 1]")
        return value

    @field_validator("clip_score_checkpoint")
    @classmethod
    def _checkpoint_exists(cls, value):
        if value is not None and not os.path.isfile(value):
            raise ValueError(f"no such checkpoint file: {value}")
        return value

    @model_validator(mode="after")
    def _clip_score_rule(self):
        rules = [k for k in ("clip_score_threshold", "clip_score_top_fraction") if getattr(self, k) is not None]
        if self.clip_score_checkpoint is None and (rules or self.clip_score_model is not None):
            key = (rules or ["clip_score_model"])[0]
            raise ValueError(f"{key} needs clip_score_checkpoint (the CLIP model that scores the pairs)")
        if self.clip_score_checkpoint is not None and len(rules) != 1:
            raise ValueError("clip_score_checkpoint needs exactly one of clip_score_threshold and "
                             f"clip_score_top_fraction (given: {', '.join(rules) or 'neither'})")
        return self

    def record_dict(self) -> dict:
        """``to_dict()`` as the manifest records it: without the validation fields when
        ``validation_size`` is 0 (absent there means no validation sets)."""
        d = self.to_dict()
        if self.validation_size == 0:
            for key in VALIDATION_FIELDS:
                d.pop(key)
        if self.clip_score_checkpoint is None:  # absent: no CLIP-score filtering (hashes as before the option)
            for key in CLIP_SCORE_FIELDS:
                d.pop(key)
        if self.eval_uids is None:  # absent when unused: earlier builds hash as before
            d.pop("eval_uids")
        return d

    def output_dict(self) -> dict:
        """The fields that shape the output (what the resume check compares)."""
        d = self.record_dict()
        d.pop("image_cache_dir")
        d.pop("clip_score_device", None)
        return d


__all__ = ["BUILD_DIR", "CLIP_SCORE_FIELDS", "EVAL_TASK", "VALIDATION_FIELDS", "BuildConfig", "BuildError"]
