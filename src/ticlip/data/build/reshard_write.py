"""The write stage of a reshard: one planned output shard → a tar of its samples' parts, in the
planned order.

The parts already hold every sample as finished tar members (``tar_stream.member``), so writing
a shard is copying byte ranges and closing the archive: no decoding, no re-encoding, and the same
bytes whatever worker writes it. Ranges are read in file order (fewer seeks), then written in the
planned order; one shard's samples are held at a time.
"""

from __future__ import annotations

import os
import tarfile

import numpy as np

from ticlip.atomic import atomic_path
from ticlip.data.build.reshard_map import part_paths

_END = b"\0" * (2 * tarfile.BLOCKSIZE)  # a tar ends with two zero blocks


def write_output(job: tuple[str, str, np.ndarray]) -> int:
    """Write ``job = (path, parts_dir, rows)`` (``reshard_plan.SOURCE_DTYPE`` rows); returns the sample count."""
    path, parts_dir, rows = job
    chunks: list[bytes | None] = [None] * len(rows)
    fds: dict[int, int] = {}
    try:
        for i in np.lexsort((rows["offset"], rows["shard"])):
            shard = int(rows["shard"][i])
            if shard not in fds:
                fds[shard] = os.open(part_paths(parts_dir, shard)[0], os.O_RDONLY)
            length = int(rows["length"][i])
            data = os.pread(fds[shard], length, int(rows["offset"][i]))
            if len(data) != length:
                raise OSError(f"{part_paths(parts_dir, shard)[0]} is shorter than its index says; "
                              "re-run with --overwrite")
            chunks[i] = data
    finally:
        for fd in fds.values():
            os.close(fd)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            for data in chunks:
                f.write(data)
            f.write(_END)
    return len(rows)


__all__ = ["write_output"]
