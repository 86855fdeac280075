"""Streams, shards and tables in object storage: fsspec URLs (``s3://``, ``gs://``, ``https://``,
``memory://``, ...) opened with one-line errors.

fsspec picks the file system from the URL's protocol; each back-end is its own package (s3fs for
``s3://``, gcsfs for ``gs://``, aiohttp for ``https://``) and reads its credentials and endpoint from
its usual environment variables: s3fs through botocore (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL`` for MinIO, Ceph or a local test server), gcsfs through Google's
``GOOGLE_APPLICATION_CREDENTIALS``. ticlip passes no options of its own, so whatever configures
``aws``/``gsutil`` configures ticlip. A back-end that is not installed is one line saying what to
install (``require_backend``), raised when a manifest is loaded, not in a DataLoader worker.

Writing: streams are built in a local directory (atomic renames, resume markers and a lock need a
file system) and uploaded afterwards (docs/DATA.md); ``local_output`` refuses a URL as ``--out``.
"""

from __future__ import annotations

import os
import posixpath
import re

from ticlip.errors import TiclipError

# What to install for a protocol's fsspec back-end; other protocols name fsspec's own hint.
INSTALL = {
    "s3": "install ticlip[s3] (pip install 'ticlip[s3]', which adds s3fs) to read s3:// URLs",
    "s3a": "install ticlip[s3] (pip install 'ticlip[s3]', which adds s3fs) to read s3a:// URLs",
    "gs": "pip install gcsfs to read gs:// URLs",
    "gcs": "pip install gcsfs to read gcs:// URLs",
    "http": "pip install aiohttp to read http:// URLs",
    "https": "pip install aiohttp to read https:// URLs",
    "az": "pip install adlfs to read az:// URLs",
    "abfs": "pip install adlfs to read abfs:// URLs",
}
_PROTOCOL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


class MissingBackend(TiclipError, ImportError):
    """The fsspec back-end of a URL's protocol is not installed."""


def url_protocol(path: str) -> str | None:
    """The protocol of an fsspec URL (``"s3"`` for ``s3://b/k``), None for a local path."""
    m = _PROTOCOL.match(str(path))
    return m.group(1).lower() if m else None


def is_url(path: str) -> bool:
    return url_protocol(path) is not None


def require_backend(url: str, what: str = "") -> None:
    """MissingBackend (one line) when the fsspec back-end for ``url``'s protocol cannot be imported;
    nothing for local paths and installed back-ends. ``what`` names what the URL is for."""
    protocol = url_protocol(url)
    if protocol is None:
        return
    import fsspec

    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as e:
        hint = INSTALL.get(protocol) or str(e) or f"install the fsspec back-end for {protocol}://"
        raise MissingBackend(f"{what + ': ' if what else ''}{url} needs the fsspec back-end for {protocol}://, "
                             f"which is not installed: {hint}") from None
    except ValueError:
        raise TiclipError(f"{what + ': ' if what else ''}{url}: fsspec knows no protocol {protocol!r}; give a "
                          "local path or an fsspec URL (s3://, gs://, https://, ...)") from None


def open_url(path: str, mode: str = "rb", **kwargs):
    """An open file object for a local path or an fsspec URL (its back-end checked first)."""
    if not is_url(path):
        return open(path, mode, **kwargs)
    require_backend(path)
    import fsspec

    return fsspec.open(path, mode, **kwargs).open()


def url_exists(path: str) -> bool:
    """Whether a local file or the object at an fsspec URL exists (its back-end checked first)."""
    if not is_url(path):
        return os.path.isfile(path)
    require_backend(path)
    import fsspec

    fs, inner = fsspec.core.url_to_fs(path)
    return bool(fs.isfile(inner))


def url_dirname(path: str) -> str:
    """The directory of a URL (``s3://b/d`` for ``s3://b/d/t.csv``) or of a local path (absolute)."""
    return posixpath.dirname(path) if is_url(path) else os.path.dirname(os.path.abspath(path))


def local_output(out: str | os.PathLike, flag: str = "--out") -> str:
    """``out`` as a local path, or a one-line TiclipError for a URL: builds write locally, then upload."""
    out = os.fspath(out)
    if is_url(out):
        raise TiclipError(f"{flag} must be a local directory, not {out}: build the stream locally, then upload the "
                          f"directory (e.g. `aws s3 cp --recursive DIR {out}`) and train or evaluate from {out}")
    return out


__all__ = ["INSTALL", "MissingBackend", "is_url", "local_output", "open_url", "require_backend", "url_dirname",
           "url_exists", "url_protocol"]
