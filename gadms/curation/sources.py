"""Source shards of the curation stage (SPEC 2, 7, 8): list them, stream their samples, decode images.

Three input layouts are read:

* ``webdataset``: img2dataset's tars (``00000.tar``, ``00000.tar.gz`` or
  ``00000.tgz``; a gzip-compressed ``.tar`` is recognised by its bytes) holding
  ``KEY.jpg`` (or png / webp), ``KEY.txt`` and ``KEY.json`` side by side; the
  ``00000.parquet`` status files next to the tars are not samples and are ignored.
* ``parquet``: rows with an image column, as the published WebPerson (SPEC 7).
* ``folder``: image files anywhere under a directory, cut into shards of
  ``folder_shard_size`` files in path order; ``NAME.txt`` and ``NAME.json``
  next to ``NAME.jpg`` are its text and meta.

Every sample read yields exactly one :class:`SourceRecord`, usable or failed
with one of :data:`REASONS`, so a run can account for seen = ok + failed.
Trouble with a whole shard (not a tar, cut off, unreadable) goes to the
caller's ``problems`` list as ``"PATH: what"``. Readers stream one sample at a
time, never extract, follow or write anything, and leave image content to
:func:`decode_image`. Memory is bounded whatever the input: an image larger than
``max_member_bytes`` (a text or JSON larger than :data:`MAX_SIDECAR_BYTES`)
fails its sample as ``too_large`` without being read, an image announcing more
than ``max_image_pixels`` is refused before it is decoded, and a Parquet shard
is read one row group at a time (a corrupt group fails its rows, the others
are read).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import os
import tarfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO, Callable, Iterator, Literal, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image, ImageOps, UnidentifiedImageError

from gadms.config import SourceConfig
from gadms.curation.records import SourceRecord
from gadms.data.curated import split_member_name
from gadms.data.problems import DataError
from gadms.storage import (
    Location,
    file_size,
    is_url,
    local_path,
    location,
    open_binary,
    parquet_file,
    parquet_schema,
)

MISSING_IMAGE = "missing_image"
EMPTY_FILE = "empty_file"
UNSAFE_MEMBER = "unsafe_member"
BAD_TEXT = "bad_text"
BAD_JSON = "bad_json"
DUPLICATE_KEY = "duplicate_key"
TRUNCATED_SHARD = "truncated_shard"
CORRUPT_IMAGE = "corrupt_image"
TRUNCATED_IMAGE = "truncated_image"
TOO_LARGE = "too_large"
CORRUPT_ROW_GROUP = "corrupt_row_group"
REASONS = (
    MISSING_IMAGE,
    EMPTY_FILE,
    UNSAFE_MEMBER,
    BAD_TEXT,
    BAD_JSON,
    DUPLICATE_KEY,
    TRUNCATED_SHARD,
    CORRUPT_IMAGE,
    TRUNCATED_IMAGE,
    TOO_LARGE,
    CORRUPT_ROW_GROUP,
)

SourceKind = Literal["webdataset", "folder", "parquet"]
FORMATS = ("auto", "webdataset", "parquet", "folder")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
TEXT_COLUMNS = ("caption", "text", "caption1")
KEY_COLUMNS = ("key", "image_path")
BINARY_IMAGE_COLUMNS = ("jpg", "image")
# Formats a web crawl legitimately holds; others (EPS, PSD, ...) widen the attack surface for nothing.
DECODE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_DEFAULTS = SourceConfig()
# Text and JSON sidecars are small; a JSON of many MB can expand tenfold as Python objects, so they get a fixed cap.
MAX_SIDECAR_BYTES = 1 << 20
# GNU long names and PAX headers are read whole by tarfile; a hostile one could announce gigabytes.
_MAX_EXTENDED_HEADER_BYTES = 1 << 20
_PARQUET_BATCH_ROWS = 64
_PARQUET_BATCH_BYTES = 8 * 2**20
_HASH_CHUNK = 1 << 20
_END_OF_ARCHIVE = 1024  # two zero blocks close every complete tar
_GZIP_MAGIC = b"\x1f\x8b"
_WHAT_IS_LOOKED_FOR = {
    "auto": ".tar / .tar.gz shards, parquet files with an image column, or image files",
    "webdataset": ".tar / .tar.gz shards",
    "parquet": "parquet files with an image column",
    "folder": "image files (" + ", ".join(IMAGE_EXTENSIONS) + ")",
}


@dataclass(frozen=True)
class SourceShard:
    """One unit of source input, read and curated as a whole.

    Attributes:
        name: stable output name of the curated shard (``"00000"``: the tar or
            parquet stem, or the chunk number for folders).
        path: the tar or parquet file; for folders, the input directory.
        kind: the input layout.
        members: for folders, the image paths (relative, POSIX) of this chunk.
    """

    name: str
    path: Location
    kind: SourceKind
    members: tuple[str, ...] = ()


class ImageDecodeError(ValueError):
    """Image bytes that cannot be turned into pixels.

    Attributes:
        reason: one of ``empty_file``, ``corrupt_image``, ``truncated_image``, ``too_large``.
        detail: what exactly is wrong, for a person reading the report.
    """

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        # Keeps the exception picklable across Dask / Ray workers despite the two-argument constructor.
        return (type(self), (self.reason, self.detail))


# ---------------------------------------------------------------- listing


def list_source_shards(
    input_dir: Path | str | Location, fmt: str = "auto", folder_shard_size: int = 1000
) -> list[SourceShard]:
    """The source shards of an input directory, sorted by name.

    ``auto`` picks the first layout present: ``*.tar`` files (webdataset; the
    img2dataset ``*.parquet`` status files beside them are then ignored), else
    ``*.parquet`` files with an image column, else image files found
    recursively (folder). Hidden files and directories are ignored.

    Args:
        input_dir: the directory to read, local or a URL (``s3://bucket/shards``; tars and Parquet only).
        fmt: ``"auto"``, ``"webdataset"``, ``"parquet"`` or ``"folder"``.
        folder_shard_size: images per shard for folder input.

    Returns:
        The shards, sorted by name.

    Raises:
        DataError: the directory is missing, the format unknown, or nothing readable is there.
    """
    input_dir = location(input_dir)
    if fmt not in FORMATS:
        raise DataError(f"unknown source format {fmt!r} for {input_dir}; expected one of {', '.join(FORMATS)}")
    if folder_shard_size < 1:
        raise DataError(f"folder_shard_size must be at least 1, got {folder_shard_size}")
    if not input_dir.is_dir():
        raise DataError(f"source directory not found: {input_dir}")
    if is_url(input_dir) and fmt == "folder":
        raise DataError(f"{input_dir}: a folder of images is read from a local directory only (tars or Parquet here)")
    listers: dict[str, Callable[[], list[SourceShard]]] = {
        "webdataset": lambda: _tar_shards(input_dir),
        "parquet": lambda: _parquet_shards(input_dir),
        "folder": lambda: _folder_shards(local_path(input_dir, "a folder of images"), folder_shard_size),
    }
    auto = ("webdataset", "parquet") if is_url(input_dir) else ("webdataset", "parquet", "folder")
    for kind in auto if fmt == "auto" else (fmt,):
        shards = listers[kind]()
        if shards:
            return _unique_names(sorted(shards, key=lambda s: (s.name, s.path)))
    raise DataError(f"no {_WHAT_IS_LOOKED_FOR[fmt]} in {input_dir}")


def _unique_names(shards: list[SourceShard]) -> list[SourceShard]:
    """The shards, refusing two that would be curated under one name (``a.tar`` next to ``a.tar.gz``)."""
    for first, second in itertools.pairwise(shards):
        if first.name == second.name:
            raise DataError(f"{first.path} and {second.path} would both be curated as shard {first.name!r}; keep one")
    return shards


def _visible_files(input_dir: Location, pattern: str) -> list[Location]:
    """Non-hidden regular files directly in ``input_dir`` matching ``pattern``."""
    return [p for p in input_dir.glob(pattern) if not p.name.startswith(".") and p.is_file()]


def _tar_shards(input_dir: Location) -> list[SourceShard]:
    """One shard per ``*.tar``, ``*.tar.gz`` or ``*.tgz`` file, named without the suffix."""
    found = [p for suffix in TAR_SUFFIXES for p in _visible_files(input_dir, f"*{suffix}")]
    return [SourceShard(_tar_stem(p.name), p, "webdataset") for p in found]


def _tar_stem(name: str) -> str:
    """``00000`` for ``00000.tar``, ``00000.tar.gz`` and ``00000.tgz``."""
    suffix = next(s for s in sorted(TAR_SUFFIXES, key=len, reverse=True) if name.endswith(s))
    return name[: -len(suffix)]


def _parquet_shards(input_dir: Location) -> list[SourceShard]:
    """One shard per ``*.parquet`` with an image column (plus unreadable ones, so their trouble is reported)."""
    with_images, unreadable = [], []
    for path in _visible_files(input_dir, "*.parquet"):
        try:
            layout = _parquet_layout(parquet_schema(path))
        except (pa.ArrowException, OSError):
            unreadable.append(path)
            continue
        if layout is not None:
            with_images.append(path)
    if not with_images:
        return []
    return [SourceShard(p.stem, p, "parquet") for p in with_images + unreadable]


def _folder_shards(input_dir: Path, shard_size: int) -> list[SourceShard]:
    """Consecutive chunks of ``shard_size`` images in sorted relative-path order."""
    images = sorted(_image_files(input_dir))
    return [
        SourceShard(f"{number:05d}", input_dir, "folder", tuple(images[start : start + shard_size]))
        for number, start in enumerate(range(0, len(images), shard_size))
    ]


def _image_files(input_dir: Path) -> Iterator[str]:
    """Relative POSIX paths of the non-hidden image files under ``input_dir`` (directory links not followed)."""
    for folder, dirs, files in os.walk(input_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(folder, name)
            if not name.startswith(".") and _image_extension(name) and path.is_file():
                yield path.relative_to(input_dir).as_posix()


def _image_extension(name: str) -> bool:
    """Whether a file name ends with one of the image extensions (any case)."""
    return "." in name and name.rpartition(".")[2].lower() in IMAGE_EXTENSIONS


# ---------------------------------------------------------------- reading


def iter_source(
    shard: SourceShard,
    problems: Optional[list[str]] = None,
    max_member_bytes: int = _DEFAULTS.max_member_bytes,
    max_row_group_bytes: int = _DEFAULTS.max_row_group_bytes,
) -> Iterator[SourceRecord]:
    """Stream the samples of one source shard, one record per sample, in shard order.

    Nothing is read before the first ``next()``, and only one sample (one
    Parquet row group) is held at a time.

    Args:
        shard: a shard from :func:`list_source_shards`.
        problems: shard-level trouble is appended here as ``"PATH: what"``.
        max_member_bytes: an image (tar member, file or Parquet cell) larger than this fails as ``too_large``
            without being read.
        max_row_group_bytes: a Parquet row group whose image column holds more bytes than this (by the
            file's footer) is not read: its rows fail as ``too_large`` (Parquet cannot read part of a group).

    Returns:
        An iterator of records: usable (``error`` is ``None``, image bytes set) or
        failed (``image`` is ``None``, ``error`` one of :data:`REASONS`).
    """
    problems = [] if problems is None else problems
    if shard.kind == "parquet":
        return _parquet_records(shard, problems, max_member_bytes, max_row_group_bytes)
    readers = {"webdataset": _tar_records, "folder": _folder_records}
    if shard.kind not in readers:
        raise DataError(f"unknown source shard kind {shard.kind!r} for {shard.path}")
    return readers[shard.kind](shard, problems, max_member_bytes)


def shard_digest(shard: SourceShard) -> str:
    """SHA-256 of the bytes a shard is read from (for folders: each image and its sidecars, with their names).

    Args:
        shard: a shard from :func:`list_source_shards`.

    Returns:
        The hex digest; it changes whenever any byte of the input changes.

    Raises:
        OSError: a file cannot be read.
    """
    digest = hashlib.sha256()
    if shard.kind != "folder":
        _hash_file(digest, shard.path)
        return digest.hexdigest()
    for relative in shard.members:
        key = str(PurePosixPath(relative).with_suffix(""))
        for name in (relative, f"{key}.txt", f"{key}.json"):
            path = shard.path / name
            present = name == relative or path.is_file()
            digest.update(json.dumps([name, present]).encode("utf-8"))
            if present:
                _hash_file(digest, path)
    return digest.hexdigest()


def _hash_file(digest: Any, path: Location) -> None:
    """Feed a file's length and bytes to ``digest``, a chunk at a time."""
    with open_binary(path) as handle:
        digest.update(str(file_size(path)).encode("ascii") + b":")
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)


def _failed(key: str, reason: str, detail: str) -> SourceRecord:
    """A record for a sample that cannot be used."""
    return SourceRecord(key=key, image=None, error=reason, detail=detail)


def _sample_record(
    key: str, image: Optional[bytes], image_name: str, text: Optional[bytes], meta: Optional[bytes]
) -> SourceRecord:
    """The record of one sample from its raw image, text and JSON bytes (``None`` when absent)."""
    if image is None:
        return _failed(key, MISSING_IMAGE, f"sample {key!r} has no image ({', '.join(IMAGE_EXTENSIONS)})")
    if not image:
        return _failed(key, EMPTY_FILE, f"{image_name} is empty")
    try:
        decoded_text = None if text is None else text.decode("utf-8")
    except UnicodeDecodeError as err:
        return _failed(key, BAD_TEXT, f"text of {key!r} is not UTF-8 (byte {err.start})")
    parsed = {} if meta is None else _json_object(meta)
    if parsed is None:
        return _failed(key, BAD_JSON, f"json of {key!r} is not a JSON object")
    return SourceRecord(key=key, image=image, text=decoded_text, meta=parsed)


def _json_object(data: bytes) -> Optional[dict[str, Any]]:
    """The JSON object in ``data``, or ``None`` when it is malformed or not an object."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return value if isinstance(value, dict) else None


# ---------------------------------------------------------------- webdataset tars


@dataclass
class _TarSample:
    """The members of one sample collected so far, or why the sample already failed."""

    key: str
    members: dict[str, bytes] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    error: Optional[tuple[str, str]] = None

    def fail(self, reason: str, detail: str) -> None:
        """Mark the sample failed, keeping the first reason found."""
        if self.error is None:
            self.error = (reason, detail)

    def record(self) -> SourceRecord:
        """The record for this sample."""
        if self.error is not None:
            return _failed(self.key, *self.error)
        image_ext = next((e for e in IMAGE_EXTENSIONS if e in self.members), None)
        image = None if image_ext is None else self.members[image_ext]
        image_name = self.names.get(image_ext or "", self.key)
        return _sample_record(self.key, image, image_name, self.members.get("txt"), self.members.get("json"))


class _CappedTarInfo(tarfile.TarInfo):
    """A tar header that refuses GNU long-name and PAX extended headers beyond a small size before reading them."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        extended = (
            tarfile.GNUTYPE_LONGNAME,
            tarfile.GNUTYPE_LONGLINK,
            tarfile.XHDTYPE,
            tarfile.XGLTYPE,
            tarfile.SOLARIS_XHDTYPE,
        )
        if self.type in extended and self.size > _MAX_EXTENDED_HEADER_BYTES:
            raise tarfile.ReadError(f"extended header of {self.size} bytes, more than {_MAX_EXTENDED_HEADER_BYTES}")
        return super()._proc_member(tarfile_)  # type: ignore[misc]


class _RecentBytes:
    """A forward-only byte stream (plain or gunzipped) that keeps the last bytes it gave out.

    The tar stream reader reads ahead of the archive's end; what it read is kept
    so that the end-of-archive blocks can still be checked.
    """

    def __init__(self, source: BinaryIO, keep: int = 1 << 16):
        self.source = source
        self.keep = keep
        self.position = 0
        self.tail = b""

    def read(self, size: int = -1) -> bytes:
        """Read like a file (a short read at most once per call), remembering the last ``keep`` bytes."""
        # read1: a gzip stream cut off raises on the read after the last good bytes instead of losing them
        data = self.source.read1(size) if hasattr(self.source, "read1") else self.source.read(size)
        self.position += len(data)
        self.tail = (self.tail + data)[-self.keep :]
        return data

    def bytes_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from absolute ``offset`` (at most ``keep`` back), reading on as needed."""
        while self.position < offset + length and self.read(length):
            pass
        start = offset - (self.position - len(self.tail))
        return self.tail[start : start + length] if start >= 0 else b""


def _open_tar_bytes(handle: IO[bytes]) -> _RecentBytes:
    """The archive bytes of a shard file, gunzipped when it starts with the gzip magic."""
    compressed = handle.read(2) == _GZIP_MAGIC
    handle.seek(0)
    return _RecentBytes(gzip.GzipFile(fileobj=handle, mode="rb") if compressed else handle)  # type: ignore[arg-type]


def _tar_records(shard: SourceShard, problems: list[str], max_member_bytes: int) -> Iterator[SourceRecord]:
    """Records of a (gzipped) WebDataset tar, streamed member by member; a break ends the shard and is reported."""
    seen: set[str] = set()
    sample: Optional[_TarSample] = None
    try:
        with open_binary(shard.path) as handle:
            stream = _open_tar_bytes(handle)
            try:
                tar = tarfile.open(fileobj=stream, mode="r|", tarinfo=_CappedTarInfo)  # type: ignore[call-overload]
            except (tarfile.TarError, EOFError, zlib.error) as err:
                problems.append(f"{shard.path}: not a tar archive ({err})")
                return
            with tar:
                for member in tar:
                    if member.isdir():  # directory entries are not samples and are never created
                        continue
                    key, _ = split_member_name(member.name)
                    if sample is None or key != sample.key:
                        if sample is not None:
                            seen.add(sample.key)
                            yield sample.record()
                        sample = _TarSample(key)
                        if key in seen:
                            sample.fail(DUPLICATE_KEY, f"key {key!r} appears again after other samples")
                    _add_member(sample, tar, member, max_member_bytes)
                complete = _has_end_marker(stream, tar.offset)
        if not complete:
            raise tarfile.ReadError("ends without the end-of-archive marker")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        done = len(seen)
        problems.append(f"{shard.path}: truncated or unreadable after {done} complete samples ({err})")
        if sample is not None:
            sample.error = (TRUNCATED_SHARD, f"sample {sample.key!r} is cut off by the end of {shard.path.name}")
    if sample is not None:
        yield sample.record()


def _add_member(sample: _TarSample, tar: tarfile.TarFile, member: tarfile.TarInfo, max_member_bytes: int) -> None:
    """Read one member into its sample, or fail the sample when the member is unsafe, repeated or too large.

    Members of other types than image, ``txt`` and ``json`` are not used and not read.
    """
    if sample.error is not None:
        return  # the member is skipped by the stream without being read
    name = member.name
    if not _is_utf8(name):
        sample.fail(UNSAFE_MEMBER, f"member name {name.encode('utf-8', 'surrogateescape')!r} is not UTF-8")
    elif not _is_safe_name(name):
        sample.fail(UNSAFE_MEMBER, f"member {name!r} has an absolute or '..' path")
    elif not member.isreg():
        sample.fail(UNSAFE_MEMBER, f"member {name!r} is a {_member_type(member)}, not a regular file")
    else:
        _, extension = split_member_name(name)
        if extension in sample.names:
            sample.fail(DUPLICATE_KEY, f"member {name!r} appears twice in sample {sample.key!r}")
            return
        sample.names[extension] = name
        limit = max_member_bytes if extension in IMAGE_EXTENSIONS else min(max_member_bytes, MAX_SIDECAR_BYTES)
        if extension not in (*IMAGE_EXTENSIONS, "txt", "json"):
            return
        if member.size > limit:
            sample.fail(TOO_LARGE, f"member {name!r} holds {member.size} bytes, more than the limit of {limit}")
            return
        sample.members[extension] = tar.extractfile(member).read()  # type: ignore[union-attr]


def _is_utf8(name: str) -> bool:
    """False for a name tarfile could only decode with escaped (non-UTF-8) bytes."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_safe_name(name: str) -> bool:
    """False for absolute names and names with a ``..`` component (either slash)."""
    return not name.startswith(("/", "\\")) and ".." not in name.replace("\\", "/").split("/")


def _member_type(member: tarfile.TarInfo) -> str:
    """A word for a non-regular tar member."""
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "fifo"
    return f"member of type {member.type!r}"


def _has_end_marker(stream: _RecentBytes, offset: int) -> bool:
    """Whether the archive goes on, after its last member, with the two zero blocks a complete tar ends with."""
    tail = stream.bytes_at(offset, _END_OF_ARCHIVE)
    return len(tail) == _END_OF_ARCHIVE and not any(tail)


# ---------------------------------------------------------------- parquet


@dataclass(frozen=True)
class _ParquetLayout:
    """Which columns of a Parquet file hold the image, key, text and meta."""

    image: str
    image_is_struct: bool
    key: Optional[str]
    text: Optional[str]
    meta: tuple[str, ...]

    @property
    def columns(self) -> list[str]:
        """The columns to read."""
        return list(dict.fromkeys([self.image, *self.meta]))


def _is_binary(kind: pa.DataType) -> bool:
    """Whether an Arrow type holds raw bytes."""
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind)


def _is_string(kind: pa.DataType) -> bool:
    """Whether an Arrow type holds text."""
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _is_scalar(kind: pa.DataType) -> bool:
    """Whether an Arrow type converts to a JSON scalar (bool, number, string)."""
    return pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind) or _is_string(kind)


def _image_column(schema: pa.Schema) -> Optional[tuple[str, bool]]:
    """``(name, is_struct)`` of the image column: a struct with ``bytes``, else a binary ``jpg`` / ``image``."""
    for column in schema:
        if pa.types.is_struct(column.type):
            index = column.type.get_field_index("bytes")
            if index >= 0 and _is_binary(column.type.field(index).type):
                return column.name, True
    for name in BINARY_IMAGE_COLUMNS:
        if name in schema.names and _is_binary(schema.field(name).type):
            return name, False
    return None


def _parquet_layout(schema: pa.Schema) -> Optional[_ParquetLayout]:
    """How to read samples from a Parquet schema; ``None`` when it has no image column."""
    image = _image_column(schema)
    if image is None:
        return None
    scalars = tuple(c.name for c in schema if c.name != image[0] and _is_scalar(c.type))
    key = next((c for c in KEY_COLUMNS if c in scalars), None)
    text = next((c for c in TEXT_COLUMNS if c in scalars and _is_string(schema.field(c).type)), None)
    return _ParquetLayout(image[0], image[1], key, text, scalars)


def _parquet_records(
    shard: SourceShard, problems: list[str], max_member_bytes: int, max_row_group_bytes: int
) -> Iterator[SourceRecord]:
    """Records of a Parquet shard, a few rows at a time; a corrupt or oversized row group fails its rows only."""
    row = 0
    try:
        with parquet_file(shard.path) as parquet:
            layout = _parquet_layout(parquet.schema_arrow)
            if layout is None:
                problems.append(f"{shard.path}: no image column (a struct with 'bytes', or binary 'jpg' / 'image')")
                return
            seen: set[str] = set()
            for group in range(parquet.num_row_groups):
                rows = parquet.metadata.row_group(group).num_rows
                span = f"row group {group} (rows {row} to {row + rows - 1})"
                size = _image_bytes_in_group(parquet.metadata.row_group(group), layout.image)
                if size > max_row_group_bytes:
                    detail = f"{size} bytes of images, more than curation.source.max_row_group_bytes"
                    problems.append(f"{shard.path}: {span} holds {detail} ({max_row_group_bytes}); not read")
                    yield from _unread_rows(shard.path, group, row, rows, TOO_LARGE, f"its group holds {detail}")
                    row += rows
                    continue
                done, batch_rows = 0, _batch_rows(size, rows)
                try:
                    batches = parquet.iter_batches(batch_rows, row_groups=[group], columns=layout.columns)
                    for batch in batches:
                        for values in _rows_within_cap(batch, layout.image, max_member_bytes):
                            yield _parquet_record(values, row + done, layout, seen, max_member_bytes)
                            done += 1
                except (pa.ArrowException, OSError) as err:
                    problems.append(f"{shard.path}: {span} is unreadable ({_one_line(err)})")
                    reason = "is unreadable"
                    yield from _unread_rows(shard.path, group, row + done, rows - done, CORRUPT_ROW_GROUP, reason)
                row += rows
    except (pa.ArrowException, OSError) as err:
        problems.append(f"{shard.path}: unreadable parquet after {row} rows ({_one_line(err)})")


def _batch_rows(group_bytes: int, rows: int) -> int:
    """Rows per Arrow batch: up to 64, fewer when images are large (a batch holds about 8 MiB of them)."""
    per_row = max(1, group_bytes // max(1, rows))
    return max(1, min(_PARQUET_BATCH_ROWS, _PARQUET_BATCH_BYTES // per_row))


def _one_line(err: BaseException) -> str:
    """An error's text on one line (Arrow's messages span several)."""
    return " ".join(str(err).split())


def _image_bytes_in_group(group: pq.RowGroupMetaData, image_column: str) -> int:
    """Bytes of the image column in one row group, as the footer states (the larger of stored and decoded)."""
    total = 0
    for index in range(group.num_columns):
        column = group.column(index)
        if column.path_in_schema.split(".")[0] == image_column:
            total += max(column.total_compressed_size, column.total_uncompressed_size)
    return total


def _rows_within_cap(batch: pa.RecordBatch, image_column: str, max_member_bytes: int) -> Iterator[dict[str, Any]]:
    """The rows of a batch as dicts; an image over the cap is replaced by its size (an int), never copied."""
    images = batch.column(image_column)
    cells = pc.struct_field(images, "bytes") if pa.types.is_struct(images.type) else images
    lengths = pc.fill_null(pc.binary_length(cells), 0).to_pylist()
    others = batch.drop_columns([image_column]).to_pylist()
    for index, values in enumerate(others):
        large = lengths[index] > max_member_bytes
        values[image_column] = lengths[index] if large else _cell(images, index)
        yield values


def _cell(column: pa.Array, index: int) -> Any:
    """One cell of an Arrow column as a Python value (the only place image bytes are copied out of Arrow)."""
    return column[index].as_py()


def _unread_rows(path: Location, group: int, first: int, rows: int, reason: str, why: str) -> Iterator[SourceRecord]:
    """One failed record per row of a row group that is not read (its row count is believed up to the file's size)."""
    for row in range(first, first + min(rows, path.stat().st_size)):
        yield _failed(f"{row:09d}", reason, f"row {row} is in row group {group} of {path.name}, which {why}")


def _parquet_record(
    values: dict[str, Any], row: int, layout: _ParquetLayout, seen: set[str], max_member_bytes: int
) -> SourceRecord:
    """The record of one Parquet row."""
    key_value = values.get(layout.key) if layout.key else None
    key = f"{row:09d}" if key_value is None else str(key_value)
    if key in seen:
        return _failed(key, DUPLICATE_KEY, f"key {key!r} appears again in row {row}")
    seen.add(key)
    image = values[layout.image]
    if isinstance(image, int):  # the size of an image over the cap, which was not read
        detail = f"row {row} holds an image of {image} bytes, more than the limit of {max_member_bytes}"
        return _failed(key, TOO_LARGE, detail)
    if layout.image_is_struct and image is not None:
        image = image.get("bytes")
    if not image:
        return _failed(key, EMPTY_FILE, f"row {row} has no image bytes in column {layout.image!r}")
    text = values.get(layout.text) if layout.text else None
    meta = {c: values[c] for c in layout.meta}
    return SourceRecord(key=key, image=bytes(image), text=text, meta=meta)


# ---------------------------------------------------------------- folders


def _folder_records(shard: SourceShard, problems: list[str], max_member_bytes: int) -> Iterator[SourceRecord]:
    """Records of a folder chunk, one file at a time."""
    seen: set[str] = set()
    for relative in shard.members:
        key = str(PurePosixPath(relative).with_suffix(""))
        if key in seen:
            yield _failed(key, DUPLICATE_KEY, f"{relative} has the same name as another image of {shard.path}")
            continue
        seen.add(key)
        yield _folder_record(local_path(shard.path, "a folder of images"), relative, key, problems, max_member_bytes)


def _folder_record(root: Path, relative: str, key: str, problems: list[str], max_member_bytes: int) -> SourceRecord:
    """The record of one image file, with ``KEY.txt`` / ``KEY.json`` beside it as text and meta."""
    path = root / relative
    try:
        image = _read_capped(path, max_member_bytes)
        text = _read_if_present(root / f"{key}.txt", min(max_member_bytes, MAX_SIDECAR_BYTES))
        meta = _read_if_present(root / f"{key}.json", min(max_member_bytes, MAX_SIDECAR_BYTES))
    except _TooLarge as err:
        return _failed(key, TOO_LARGE, str(err))
    except OSError as err:
        problems.append(f"{path}: cannot read ({err.strerror or err})")
        return _failed(key, MISSING_IMAGE, f"{path} cannot be read ({err.strerror or err})")
    return _sample_record(key, image, relative, text, meta)


class _TooLarge(Exception):
    """A file larger than its byte cap (not read)."""


def _read_capped(path: Path, limit: int) -> bytes:
    """The bytes of a file, refusing one of more than ``limit`` bytes before reading it."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        data = b"" if size > limit else handle.read(limit + 1)
        if size > limit or len(data) > limit:
            raise _TooLarge(f"{path.name} holds {max(size, len(data))} bytes, more than the limit of {limit}")
        return data


def _read_if_present(path: Path, limit: int) -> Optional[bytes]:
    """The bytes of a sidecar file, or ``None`` when there is none."""
    return _read_capped(path, limit) if path.is_file() else None


# ---------------------------------------------------------------- decoding


class _WatchedBytes(io.BytesIO):
    """In-memory image data that remembers whether a reader asked for bytes past its end."""

    read_past_end = False

    def read(self, size: Optional[int] = -1) -> bytes:
        """Read like ``BytesIO.read``, noting an empty answer to a non-empty request."""
        chunk = super().read(size)
        if not chunk and size != 0:
            self.read_past_end = True
        return chunk


def open_image(stream: BinaryIO) -> Image.Image:
    """``Image.open`` for the decode formats, without Pillow's decompression-bomb warning (our pixel cap applies).

    Pillow still raises ``DecompressionBombError`` past twice its own limit.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(stream, formats=DECODE_FORMATS)


def decode_image(data: bytes, max_pixels: int = _DEFAULTS.max_image_pixels) -> np.ndarray:
    """Decode image bytes to RGB pixels, refusing anything empty, broken, cut off or too large.

    Decoding is deterministic. Palette, grey, 16-bit, CMYK and images with
    transparency (composited over white) all become RGB; the EXIF orientation
    is applied. A cut-off JPEG is refused even if some other code switched on
    ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``; no global state is changed.

    Args:
        data: encoded image bytes (JPEG, PNG, WebP, GIF, BMP or TIFF).
        max_pixels: largest width * height accepted, checked before pixels are allocated.

    Returns:
        A ``uint8`` array of shape ``(height, width, 3)``.

    Raises:
        ImageDecodeError: with reason ``empty_file``, ``corrupt_image``, ``truncated_image`` or ``too_large``.
    """
    if not data:
        raise ImageDecodeError(EMPTY_FILE, "image data is empty")
    stream = _WatchedBytes(data)
    try:
        with open_image(stream) as image:
            _check_pixels(image.size, max_pixels)
            image.load()
            if image.format in ("JPEG", "MPO") and stream.read_past_end:
                raise ImageDecodeError(TRUNCATED_IMAGE, "JPEG data ends before the image does")
            return np.array(_to_rgb(_upright(image)), dtype=np.uint8)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageDecodeError(TOO_LARGE, str(err)) from None
    except UnidentifiedImageError:
        raise ImageDecodeError(CORRUPT_IMAGE, f"not a {', '.join(DECODE_FORMATS)} image") from None
    except (
        Exception
    ) as err:  # Pillow's plugins raise assorted types (OSError, SyntaxError, struct.error, ...) on bad data
        reason = TRUNCATED_IMAGE if "truncated" in str(err).lower() else CORRUPT_IMAGE
        raise ImageDecodeError(reason, f"{type(err).__name__}: {err}") from None


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    """Refuse an image whose header announces more than ``max_pixels`` pixels."""
    width, height = size
    if width * height > max_pixels:
        raise ImageDecodeError(
            TOO_LARGE, f"{width}x{height} is {width * height} pixels, more than the limit of {max_pixels}"
        )


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; unchanged without one or with unreadable EXIF."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # malformed EXIF must not cost a usable picture
        return image
    return ImageOps.exif_transpose(image) if orientation in range(2, 9) else image


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB version of an image of any mode: alpha over white, 16-bit grey scaled to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16"):
        grey = np.round(np.asarray(image, dtype=np.float64) / 257.0).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")  # convert() would copy an RGBA image
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        white.alpha_composite(rgba)  # in place: one full-size copy fewer than Image.alpha_composite
        del rgba
        return white.convert("RGB")
    return image.convert("RGB")
