"""Progress bars of the build (tqdm on stderr; silent when ``progress`` is false)."""

from __future__ import annotations

import sys


def progress_bar(progress: bool, **kw):
    from tqdm import tqdm

    return tqdm(disable=not progress, file=sys.stderr, dynamic_ncols=True, mininterval=0.5, **kw)
