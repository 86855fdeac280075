"""TiC-DataComp from DataComp's metadata parquets (uid, url, text) and TiC-DataComp's uid files
(``YYYY.npy`` / ``YYYYMM.npy``); images are fetched from their URLs. See ``ticlip.data.tic_formats``.
For existing shards, reshard them by a uid → timestamp table instead (``ticlip data tic-timestamps``)."""

from ticlip.data.sources._tic_common import tic_source
from ticlip.data.tic_formats import check_tic_datacomp, tic_datacomp_records

SOURCE = tic_source(
    "tic-datacomp", tic_datacomp_records, check_tic_datacomp, "timestamps",
    {"path": "DataComp metadata: a .parquet file or a directory of them (columns uid, url, text)",
     "timestamps": "TiC-DataComp's uid files: a directory of YYYY.npy or YYYYMM.npy (or one file, or YYYY.tar)"},
    {"granularity": "year", "step_ends": [str(y) for y in range(2016, 2023)]},  # TiC-DataComp: 7 steps
    "DataComp pool by first Common Crawl time (TiC-DataComp)",
)
