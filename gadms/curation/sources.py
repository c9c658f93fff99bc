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
:func:`gadms.curation.decoding.decode_image`. Memory is bounded whatever the input: an image larger than
``max_member_bytes`` (a text or JSON larger than :data:`MAX_SIDECAR_BYTES`)
fails its sample as ``too_large`` without being read, an image announcing more
than ``max_image_pixels`` is refused before it is decoded, and a Parquet shard
is read one row group at a time (a corrupt group fails its rows, the others
are read).
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import os
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO, Callable, Iterator, Optional

import pyarrow as pa

from gadms.config import SourceConfig
from gadms.curation.parquet_source import parquet_layout, parquet_records
from gadms.curation.records import (
    BAD_JSON,
    BAD_TEXT,
    DUPLICATE_KEY,
    EMPTY_FILE,
    MISSING_IMAGE,
    TOO_LARGE,
    TRUNCATED_SHARD,
    UNSAFE_MEMBER,
    SourceRecord,
    SourceShard,
    failed_record,
)
from gadms.data.curated import split_member_name
from gadms.data.problems import DataError
from gadms.safe_files import UnsafeFile, read_file
from gadms.storage import (
    Location,
    file_size,
    is_url,
    local_path,
    location,
    open_binary,
    parquet_schema,
)

FORMATS = ("auto", "webdataset", "parquet", "folder")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_DEFAULTS = SourceConfig()
# Text and JSON sidecars are small; a JSON of many MB can expand tenfold as Python objects, so they get a fixed cap.
MAX_SIDECAR_BYTES = 1 << 20
# GNU long names and PAX headers are read whole by tarfile; a hostile one could announce gigabytes.
_MAX_EXTENDED_HEADER_BYTES = 1 << 20
_HASH_CHUNK = 1 << 20
_END_OF_ARCHIVE = 1024  # two zero blocks close every complete tar
_GZIP_MAGIC = b"\x1f\x8b"
_WHAT_IS_LOOKED_FOR = {
    "auto": ".tar / .tar.gz shards, parquet files with an image column, or image files",
    "webdataset": ".tar / .tar.gz shards",
    "parquet": "parquet files with an image column",
    "folder": "image files (" + ", ".join(IMAGE_EXTENSIONS) + ")",
}


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
            layout = parquet_layout(parquet_schema(path))
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
        return parquet_records(shard, problems, max_member_bytes, max_row_group_bytes)
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


def _sample_record(
    key: str, image: Optional[bytes], image_name: str, text: Optional[bytes], meta: Optional[bytes]
) -> SourceRecord:
    """The record of one sample from its raw image, text and JSON bytes (``None`` when absent)."""
    if image is None:
        return failed_record(key, MISSING_IMAGE, f"sample {key!r} has no image ({', '.join(IMAGE_EXTENSIONS)})")
    if not image:
        return failed_record(key, EMPTY_FILE, f"{image_name} is empty")
    try:
        decoded_text = None if text is None else text.decode("utf-8")
    except UnicodeDecodeError as err:
        return failed_record(key, BAD_TEXT, f"text of {key!r} is not UTF-8 (byte {err.start})")
    parsed = {} if meta is None else _json_object(meta)
    if parsed is None:
        return failed_record(key, BAD_JSON, f"json of {key!r} is not a JSON object")
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
            return failed_record(self.key, *self.error)
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
    except (tarfile.TarError, OSError, EOFError, zlib.error, UnsafeFile) as err:
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


# ---------------------------------------------------------------- folders


def _folder_records(shard: SourceShard, problems: list[str], max_member_bytes: int) -> Iterator[SourceRecord]:
    """Records of a folder chunk, one file at a time."""
    seen: set[str] = set()
    for relative in shard.members:
        key = str(PurePosixPath(relative).with_suffix(""))
        if key in seen:
            yield failed_record(key, DUPLICATE_KEY, f"{relative} has the same name as another image of {shard.path}")
            continue
        seen.add(key)
        yield _folder_record(local_path(shard.path, "a folder of images"), relative, key, problems, max_member_bytes)


def _folder_record(root: Path, relative: str, key: str, problems: list[str], max_member_bytes: int) -> SourceRecord:
    """The record of one image file, with ``KEY.txt`` / ``KEY.json`` beside it as text and meta."""
    path = root / relative
    try:
        image = _read_capped(path, max_member_bytes, root)
        text = _read_if_present(root / f"{key}.txt", min(max_member_bytes, MAX_SIDECAR_BYTES), root)
        meta = _read_if_present(root / f"{key}.json", min(max_member_bytes, MAX_SIDECAR_BYTES), root)
    except UnsafeFile as err:
        if err.reason == TOO_LARGE:
            return failed_record(key, TOO_LARGE, err.detail.removeprefix(f"{root}/"))
        problems.append(f"{path}: cannot read ({err.reason.replace('_', ' ')})")
        return failed_record(key, MISSING_IMAGE, err.detail)
    return _sample_record(key, image, relative, text, meta)


def _read_capped(path: Path, limit: int, root: Path) -> bytes:
    """The bytes of a file of the folder ``root`` through the one way in (gadms.safe_files), within ``limit``."""
    return read_file(path, root, max_bytes=limit)


def _read_if_present(path: Path, limit: int, root: Path) -> Optional[bytes]:
    """The bytes of a sidecar file, or ``None`` when there is none."""
    return _read_capped(path, limit, root) if os.path.lexists(path) else None
