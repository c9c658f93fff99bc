"""Reading a WebDataset source shard (img2dataset's ``.tar``, ``.tar.gz`` or ``.tgz``) one sample at a time.

Members are read in order and grouped by key (``KEY.jpg`` + ``KEY.txt`` + ``KEY.json``); nothing is extracted,
followed or written. A member larger than its cap fails its sample as ``too_large`` without being read, an
extended header larger than :data:`MAX_EXTENDED_HEADER_BYTES` ends the shard, and a tar cut off before its end
marker is reported in ``problems`` (see :mod:`gadms.curation.sources`).
"""

from __future__ import annotations

import gzip
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import IO, BinaryIO, Iterator, Optional

from gadms.curation.records import (
    DUPLICATE_KEY,
    IMAGE_EXTENSIONS,
    MAX_SIDECAR_BYTES,
    TOO_LARGE,
    TRUNCATED_SHARD,
    UNSAFE_MEMBER,
    SourceRecord,
    SourceShard,
    failed_record,
    sample_record,
)
from gadms.data.curated import split_member_name
from gadms.safe_files import UnsafeFile
from gadms.storage import open_binary

# GNU long names and PAX headers are read whole by tarfile; a hostile one could announce gigabytes.
MAX_EXTENDED_HEADER_BYTES = 1 << 20
_END_OF_ARCHIVE = 1024  # two zero blocks close every complete tar
_GZIP_MAGIC = b"\x1f\x8b"


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
        return sample_record(self.key, image, image_name, self.members.get("txt"), self.members.get("json"))


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
        if self.type in extended and self.size > MAX_EXTENDED_HEADER_BYTES:
            raise tarfile.ReadError(f"extended header of {self.size} bytes, more than {MAX_EXTENDED_HEADER_BYTES}")
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


def tar_records(shard: SourceShard, problems: list[str], max_member_bytes: int) -> Iterator[SourceRecord]:
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
