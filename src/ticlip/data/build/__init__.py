"""The stream builder: timestamped image-text Records -> a TimeStream of per-step webdataset shards.

A package of small modules, each one stage (see docs/DATA.md for what a build does and counts):

- ``config``: ``BuildConfig`` (one schema: YAML, flags, errors), ``BuildError``;
- ``languages``: the language-filter registry (``register_language_filter``; fastText's packaged identifier);
- ``clip_score``: CLIP-score filtering with a checkpoint (threshold or top fraction), run inside the plan;
- ``rows``: the metadata pass, records → typed ``Row``s (no pixels; in-memory images spooled);
- ``plan``: time order, drop and de-duplicate, steps, seeded eval order → ``PlannedStep``s of ``PlannedRow``s;
- ``images``: the image pass (worker pool) and shard writing;
- ``resume``: the build's identity and hash, state file and shard markers (resumable, idempotent);
- ``builder``: ``build_stream(records, out, config, ...)``, the two passes and the manifest;
- ``request``: ``check_build_request`` / ``build_stream_from``, from a source name or a table file:
  the one entry point of ``ticlip data build`` and experiments (same provenance);
- ``info``: ``format_info``, ``count_check``, ``verify_stream`` (``info --verify``).

Every input row is counted exactly once: as a pair in a train or eval shard, or under the first
reason that removed it, so that
``train + eval == input_rows - skipped - filtered - duplicates - dropped_out_of_range``.
"""

from ticlip.data.build.builder import build_stream
from ticlip.data.build.config import BUILD_DIR, EVAL_TASK, BuildConfig, BuildError
from ticlip.data.build.info import Verification, count_check, format_info, format_verification, verify_stream
from ticlip.data.build.languages import LANGUAGE_FILTERS, register_language_filter
from ticlip.data.build.plan import PlannedRow, PlannedStep, plan
from ticlip.data.build.request import TABLE_OPTIONS, BuildRequest, build_stream_from, check_build_request
from ticlip.data.build.resume import config_hash
from ticlip.data.build.rows import ImageRef, Row, normalize_caption

__all__ = [
    "BUILD_DIR",
    "BuildConfig",
    "BuildError",
    "BuildRequest",
    "EVAL_TASK",
    "ImageRef",
    "LANGUAGE_FILTERS",
    "PlannedRow",
    "PlannedStep",
    "Row",
    "TABLE_OPTIONS",
    "build_stream",
    "build_stream_from",
    "check_build_request",
    "config_hash",
    "Verification",
    "count_check",
    "format_info",
    "format_verification",
    "verify_stream",
    "normalize_caption",
    "plan",
    "register_language_filter",
]
