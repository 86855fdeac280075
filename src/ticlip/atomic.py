"""Atomic file writes: write to a temporary file beside the target, then rename it over the target.

An interrupted command never leaves a half-written file that looks finished: the target either keeps
its old content or gets the whole new one, and the temporary file is removed on failure.
"""

from __future__ import annotations

import errno
import json
import os
from contextlib import contextmanager
from typing import Iterator

from ticlip.errors import TiclipError


class DiskFull(TiclipError, OSError):
    """A write failed because the disk (or quota) is full; the message names the path."""


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` says the device or quota is full (torch.save reports it as a RuntimeError)."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(e) or "Disk quota exceeded" in str(e)


def disk_full(path: str) -> DiskFull:
    return DiskFull(f"the disk is full: cannot write {path} (no space left on device); free space there "
                    "(or point the output elsewhere) and re-run the same command: it resumes")


@contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path to write; on success it replaces ``path``, on failure it is removed.

    ``suffix`` keeps an extension on the temporary name for writers that infer the format from it."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}{suffix}"
    try:
        yield tmp
        fsync_path(tmp)  # the data is on disk before the name points at it
        os.replace(tmp, path)
        fsync_dir(directory)  # and the rename itself survives a power cut
    except Exception as e:
        if is_disk_full(e) and not isinstance(e, DiskFull):
            raise disk_full(path) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def fsync_path(path: str) -> None:
    """Flush a written file's data to disk (a no-op for a path that is not a regular file)."""
    if not os.path.isfile(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: str) -> None:
    """Flush a directory's entries (a rename into it) to disk; skipped where the OS cannot (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: str, text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return path


def write_json_atomic(path: str, obj) -> str:
    """``obj`` as indented JSON (non-ASCII kept) with a final newline, written atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def torch_save_atomic(obj, path: str) -> str:
    """``torch.save(obj)`` to ``path`` atomically (fsynced before the rename, the directory after)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path
