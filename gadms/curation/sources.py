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

import hashlib
import itertools
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Optional

import pyarrow as pa

from gadms.config import SourceConfig
from gadms.curation.parquet_source import parquet_layout, parquet_records
from gadms.curation.records import (
    DUPLICATE_KEY,
    IMAGE_EXTENSIONS,
    MAX_SIDECAR_BYTES,
    MISSING_IMAGE,
    TOO_LARGE,
    SourceRecord,
    SourceShard,
    failed_record,
    sample_record,
)
from gadms.curation.tar_source import tar_records
from gadms.problems import DataError
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
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_DEFAULTS = SourceConfig()
_HASH_CHUNK = 1 << 20
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
    readers = {"webdataset": tar_records, "folder": _folder_records}
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
    return sample_record(key, image, relative, text, meta)


def _read_capped(path: Path, limit: int, root: Path) -> bytes:
    """The bytes of a file of the folder ``root`` through the one way in (gadms.safe_files), within ``limit``."""
    return read_file(path, root, max_bytes=limit)


def _read_if_present(path: Path, limit: int, root: Path) -> Optional[bytes]:
    """The bytes of a sidecar file, or ``None`` when there is none."""
    return _read_capped(path, limit, root) if os.path.lexists(path) else None
