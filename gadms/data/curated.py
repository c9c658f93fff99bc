"""Reader for the project's curated shards: WebDataset tars of person crops with captions.

A shard directory holds ``00000.tar``, ``00001.tar``, ...; each sample is
``KEY.jpg`` (the person crop) next to ``KEY.json`` with at least
``{"captions": [str, ...]}`` (other keys, such as the source key, box,
keypoints or template ids, are allowed and ignored here). Shards are streamed
member by member; a sample's members are adjacent, as WebDataset requires.
"""

from __future__ import annotations

import json
import logging
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from gadms.data.samples import Sample, StreamTally
from gadms.problems import DataError
from gadms.safe_files import UnsafeFile, max_file_bytes, open_regular
from gadms.storage import Location, location, open_binary

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg")
MISSING_IMAGE = "samples without jpg"
MISSING_JSON = "samples without json"
MALFORMED_JSON = "samples with malformed json"
NO_CAPTIONS = "samples without captions"
TRUNCATED = "samples cut off by a truncated shard"
_END_OF_ARCHIVE = 1024  # two zero blocks close every tar written by tarfile


def curated_shards(directory: Path | str | Location) -> list[Location]:
    """The ``*.tar`` shards of a curated directory, in name order.

    Args:
        directory: the shard directory, local or a URL (``s3://bucket/curated``, see :mod:`gadms.storage`).

    Returns:
        Shard paths (hidden files, e.g. unfinished temporary shards, are left out).
    """
    directory = location(directory)
    if not directory.is_dir():
        raise DataError(f"curated shard directory not found: {directory}")
    shards = sorted(p for p in directory.glob("*.tar") if not p.name.startswith("."))
    if not shards:
        raise DataError(f"no .tar shards in {directory}")
    return shards


def iter_curated(directory: Path | str, tally: StreamTally | None = None) -> Iterator[Sample]:
    """Stream ``(image_bytes, captions, key)`` from curated shards, member by member.

    Samples missing their jpg or json, or whose json is malformed or has no
    captions, are skipped and counted. A truncated shard is read up to the
    break, counted as bad, and the next shard follows.

    Args:
        directory: the shard directory.
        tally: filled with counts of what was yielded and skipped, if given.

    Returns:
        An iterator of ``Sample`` (image bytes are not decoded here).
    """
    tally = StreamTally() if tally is None else tally
    for shard in curated_shards(directory):
        yield from read_curated_shard(shard, tally)
    if tally.problems:
        logger.warning(tally.report(f"curated shards {directory}"))


def iter_shard(shard: Path | str, tally: StreamTally | None = None) -> Iterator[Sample]:
    """Stream the samples of one curated shard (skips and counts as :func:`iter_curated` does).

    Args:
        shard: a ``.tar`` shard.
        tally: filled with counts of what was yielded and skipped, if given.

    Returns:
        An iterator of ``Sample``.
    """
    return read_curated_shard(Path(shard), StreamTally() if tally is None else tally)


def count_curated(directory: Path | str) -> StreamTally:
    """Count samples, captions, skipped samples and bad shards of a curated directory.

    Args:
        directory: the shard directory.

    Returns:
        The tally after reading every shard.
    """
    tally = StreamTally()
    for _ in iter_curated(directory, tally):
        pass
    return tally


def split_member_name(name: str) -> tuple[str, str]:
    """WebDataset naming: the key is the path up to the first dot of the file name, the rest the extension.

    Args:
        name: a tar member name such as ``"000001.jpg"`` or ``"part/000001.meta.json"``.

    Returns:
        ``(key, extension)``, e.g. ``("part/000001", "meta.json")``.
    """
    name = name[2:] if name.startswith("./") else name
    folder, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


@dataclass
class SampleMembers:
    """The members of the sample being read: its WebDataset key and its bytes by extension (None before the first)."""

    key: str | None = None
    members: dict[str, bytes] = field(default_factory=dict)


def grouped_members(
    tar: tarfile.TarFile, read: Callable[[tarfile.TarFile, tarfile.TarInfo], bytes], current: SampleMembers
) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, members)`` of each sample of a streamed tar whose next sample has begun, in file order.

    Adjacent regular members with the same key (:func:`split_member_name`) are one sample; ``read`` gives a
    member's bytes. The sample being read is kept in ``current``: after the loop it holds the last sample (not
    yielded here), and after a read error the sample the error cut off.
    """
    for member in tar:
        if not member.isfile():
            continue
        key, extension = split_member_name(member.name)
        if key != current.key:
            if current.key is not None:
                yield current.key, current.members
            current.key, current.members = key, {}
        current.members[extension] = read(tar, member)


def read_curated_shard(shard: Location, tally: StreamTally) -> Iterator[Sample]:
    """The samples of one shard (local or remote); a truncated or unreadable shard stops early and is recorded.

    Args:
        shard: the ``.tar`` shard.
        tally: receives the samples yielded and skipped, and a shard break.

    Returns:
        An iterator of ``Sample`` in file order.
    """
    tally.shards += 1
    last = SampleMembers()
    try:
        with open_regular(shard) as handle, tarfile.open(fileobj=handle, mode="r|") as tar:  # regular files only
            for key, members in grouped_members(tar, _member_bytes, last):
                yield from _sample(key, members, tally)
            end = tar.offset
        if not _has_end_marker(shard, end):
            raise tarfile.ReadError("ends without the end-of-archive marker")
    except (tarfile.TarError, OSError, EOFError, UnsafeFile) as err:
        tally.bad_shards.append(f"{shard}: {err}")
        # Members read before the break are whole; a sample still lacking its jpg or json was cut off.
        if last.key is not None and not _is_complete(last.members):
            tally.skipped[TRUNCATED] += 1
            return
    if last.key is not None:
        yield from _sample(last.key, last.members, tally)


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """A member's bytes; one over the shared byte cap is not read and stands as empty (then skipped, counted)."""
    if member.size > max_file_bytes():
        return b""
    return tar.extractfile(member).read()  # type: ignore[union-attr]


def _is_complete(members: dict[str, bytes]) -> bool:
    """Whether a sample has both its image and its json."""
    return "json" in members and any(e in members for e in IMAGE_EXTENSIONS)


def _has_end_marker(shard: Location, offset: int) -> bool:
    """True when the archive goes on, after its last member, with the two zero blocks a complete tar has."""
    with open_binary(shard) as handle:
        handle.seek(offset)
        tail = handle.read(_END_OF_ARCHIVE)
    return len(tail) == _END_OF_ARCHIVE and not any(tail)


def _sample(key: str, members: dict[str, bytes], tally: StreamTally) -> Iterator[Sample]:
    """The sample made of one key's members, if it has a jpg and a json with captions; else a count."""
    image = next((members[e] for e in IMAGE_EXTENSIONS if e in members), None)
    if image is None:
        tally.skipped[MISSING_IMAGE] += 1
        return
    if "json" not in members:
        tally.skipped[MISSING_JSON] += 1
        return
    try:
        meta = json.loads(members["json"])
    except (json.JSONDecodeError, UnicodeDecodeError):
        tally.skipped[MALFORMED_JSON] += 1
        return
    captions = meta.get("captions") if isinstance(meta, dict) else None
    if not isinstance(captions, list) or not captions or not all(isinstance(c, str) and c.strip() for c in captions):
        tally.skipped[NO_CAPTIONS] += 1
        return
    tally.samples += 1
    tally.captions += len(captions)
    yield Sample(image, captions, key)
