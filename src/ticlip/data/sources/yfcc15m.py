"""TiC-YFCC: YFCC15M metadata (``yfcc15m.csv``, YFCC100M's columns) by upload date; see
``ticlip.data.tic_formats`` for the layout and where it comes from. The default steps are TiC-YFCC's
year groups (dataset_creation/tic-yfcc15m/create_splits.py of apple/ml-tic-clip): ≤2008, 2009–2010,
2011–2012, 2013–2014."""

from ticlip.data.sources._tic_common import tic_source
from ticlip.data.tic_formats import YFCC_STEP_ENDS, check_yfcc15m, yfcc15m_records

SOURCE = tic_source(
    "yfcc15m", yfcc15m_records, check_yfcc15m, "images",
    {"path": "the YFCC15M metadata table (yfcc15m.csv or .parquet)",
     "images": "directory of the images as <key[:3]>/<key[3:6]>/<key>.jpg (default: each row's downloadurl)"},
    {"granularity": "year", "step_ends": YFCC_STEP_ENDS},
    "YFCC15M metadata by upload date (TiC-YFCC)",
)
