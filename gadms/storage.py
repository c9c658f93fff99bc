"""Where shards live: local folders, or object storage and web servers (``s3://``, ``gs://``, ``https://``).

A location is a :class:`pathlib.Path` for a local folder or file, and a
:class:`upath.UPath` (universal_pathlib, on fsspec) for a URL, so readers use
one interface for both: ``/``, ``name``, ``stem``, ``glob``, ``is_file``,
``open("rb")`` (streamed: remote files are read in blocks, never fetched
whole). Credentials and endpoints come from the usual environment of each
backend: for S3 ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and
``AWS_ENDPOINT_URL`` (an S3-compatible store such as MinIO); ``gs://`` needs
the ``gcsfs`` package and Google credentials. Outputs (curated corpus,
checkpoints, MLflow) stay local.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import IO, Any, Union, cast

import fsspec
import pyarrow.parquet as pq
from upath import UPath

from gadms.problems import DataError

Location = Union[Path, UPath]
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_LOCAL_PROTOCOLS = ("", "file", "local")
READ_BLOCK = 8 << 20  # bytes fetched per remote read: large enough for few requests, small next to a shard


def is_url(value: Any) -> bool:
    """Whether ``value`` names a URL (``s3://...``) rather than a local path."""
    if isinstance(value, UPath):
        return value.protocol not in _LOCAL_PROTOCOLS
    return isinstance(value, str) and bool(_URL.match(value))


def location(value: str | Path | UPath) -> Location:
    """A local path or a URL as a path object (URLs keep their ``//``, which :class:`Path` would collapse).

    Raises:
        DataError: the URL's scheme has no installed filesystem (e.g. ``gs://`` without gcsfs).
    """
    if not is_url(value):
        return Path(str(value)) if isinstance(value, UPath) else Path(value)
    try:
        return value if isinstance(value, UPath) else UPath(str(value))
    except (ImportError, ValueError) as err:
        scheme = str(value).split("://", 1)[0]
        raise DataError(f"{value}: cannot read {scheme}:// locations here ({err})") from None


def open_binary(path: Location) -> IO[bytes]:
    """The file opened for reading bytes; remote files are streamed in :data:`READ_BLOCK` blocks.

    A local file goes through :func:`gadms.safe_files.open_regular`: a FIFO, device or socket is refused
    (``UnsafeFile``) instead of hanging the reader; a missing one raises ``OSError`` as ``open`` does.

    The filesystem is looked up afresh (fsspec caches one per process), not taken from the path object: a path
    pickled into a DataLoader worker would otherwise bring its parent's event loop, which is not fork-safe.
    """
    if isinstance(path, UPath) and is_url(path):
        fs, inner = fsspec.core.url_to_fs(str(path), **path.storage_options)
        return cast(IO[bytes], fs.open(inner, "rb", block_size=READ_BLOCK))
    from gadms.safe_files import open_regular  # the one way in for local files; it builds on this module

    return open_regular(cast(Path, path))


def local_path(path: Location, what: str) -> Path:
    """``path`` as a local path, or a one-line :class:`DataError` saying that ``what`` must be local."""
    if is_url(path):
        raise DataError(f"{path}: {what} must be a local path, not a URL")
    return Path(str(path))


def file_size(path: Location) -> int:
    """The size of a file in bytes."""
    return int(path.stat().st_size)


def parquet_file(path: Location) -> pq.ParquetFile:
    """A Parquet file to read row group by row group (a remote one through ranged reads).

    Column chunks are read through a 1 MiB buffer, page by page, rather than whole. The file is opened by
    :func:`open_binary` (a local FIFO or device is refused, never waited on).
    """
    return pq.ParquetFile(open_binary(path), buffer_size=2**20)


def parquet_metadata(path: Location) -> pq.FileMetaData:
    """The footer of a Parquet file (a remote one fetches only its tail)."""
    with open_binary(path) as handle:
        return pq.read_metadata(handle)


def parquet_schema(path: Location) -> Any:
    """The Arrow schema of a Parquet file."""
    with open_binary(path) as handle:
        return pq.read_schema(handle)
