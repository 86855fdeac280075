"""TiC-RedCaps: RedCaps annotation files (``annotations/<subreddit>_<year>.json``) by ``created_utc``;
see ``ticlip.data.tic_formats``. The default steps are the annotation files' years, as TiC-RedCaps
groups them (dataset_creation/tic-redcaps/create_splits.py of apple/ml-tic-clip): ≤2017, 2018, 2019, 2020."""

from ticlip.data.sources._tic_common import tic_source
from ticlip.data.tic_formats import REDCAPS_STEP_ENDS, check_redcaps, redcaps_records

SOURCE = tic_source(
    "redcaps", redcaps_records, check_redcaps, "images",
    {"path": "the RedCaps annotations/ directory (or one <subreddit>_<year>.json)",
     "images": "directory of the images as <subreddit>/<image_id>.jpg (default: each annotation's url)"},
    {"granularity": "year", "step_ends": REDCAPS_STEP_ENDS},
    "RedCaps annotations by Reddit post time (TiC-RedCaps)",
)
