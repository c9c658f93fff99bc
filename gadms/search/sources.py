"""Gallery items to index: a folder of images (recursive), a benchmark split, or curated shards.

Each item has a ``source`` string that names it for people and is its key in
the index: the absolute path of an image file, or ``SHARD/KEY`` (the absolute
shard path, a slash, the sample key) for a sample of a curated shard. Items
come as a stream in a fixed order (folders walked in name order), so memory
stays bounded and the same input gives the same index.

Each item also carries a cheap content identity, its ``stamp``: the size and
modification time (ns) of the file it is read from (the image file, or the
whole shard for a shard sample). An indexed item whose stamp changed is
encoded again. A folder or curated gallery also names its ``root``: indexed
sources under it that the stream no longer yields are gone from the gallery.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from gadms.safe_files import CHANGED, MISSING, UnsafeFile, check_stamp, max_file_bytes, open_regular, read_file
from gadms.search.model import SearchError
from gadms.storage import local_path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class GalleryItem:
    """One gallery image: its source string, and either a file or a shard member to read it from.

    Attributes:
        source: the path, or ``SHARD/KEY``.
        path: the image file (None for a shard sample).
        data: the encoded image bytes when already read (shard samples).
        shard: the shard path of a shard sample.
        key: the sample key in the shard.
        stamp: ``(size, mtime_ns)`` of the file read (the shard for a shard sample); None when it cannot be read.
        root: the real path of the folder the file came from; reading it later refuses a real location outside.
    """

    source: str
    path: Path | None = None
    data: bytes | None = field(default=None, repr=False)
    shard: str | None = None
    key: str | None = None
    stamp: tuple[int, int] | None = None
    root: str | None = None

    def record(self) -> dict:
        """The line stored in the index's ``sources.jsonl`` (``size`` and ``mtime_ns`` when the stamp is known)."""
        out: dict = {"source": self.source}
        if self.shard is not None:
            out |= {"shard": self.shard, "key": self.key}
        if self.stamp is not None:
            out |= {"size": self.stamp[0], "mtime_ns": self.stamp[1]}
        if self.root is not None:
            out["root"] = self.root
        return out


def record_stamp(record: dict) -> tuple[int, int] | None:
    """The stamp stored in a ``sources.jsonl`` line; None for lines written before stamps were recorded."""
    if "size" not in record or "mtime_ns" not in record:
        return None
    return int(record["size"]), int(record["mtime_ns"])


def file_stamp(path: Path | str) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a file, or None when it cannot be read (left to the decoder to report)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


@dataclass
class Gallery:
    """A stream of items and, when known up front, how many there are (for the progress bar).

    Attributes:
        items: the stream.
        total: the number of items (None when not known up front).
        description: for the progress bar.
        root: an absolute directory ending in a separator: indexed sources under it that the stream does not
            yield are gone from the gallery (None: not tracked, e.g. a benchmark split).
    """

    items: Iterator[GalleryItem]
    total: int | None
    description: str
    root: str | None = None


def folder_gallery(directory: Path) -> Gallery:
    """Every image file under ``directory`` (any depth, by suffix), in name order.

    Args:
        directory: the folder.

    Returns:
        The gallery; its total is the number of image files found.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise SearchError(f"--images {directory}: not a directory")
    resolved = directory.resolve()
    paths = list(_image_files(resolved))
    return Gallery(_file_items(paths, str(resolved)), len(paths), f"folder {directory}", os.path.join(resolved, ""))


def _file_items(paths: list[Path], root: str) -> Iterator[GalleryItem]:
    """Items for image files under the real folder ``root``, stamped as they are streamed."""
    for path in paths:
        yield GalleryItem(str(path), path=path, stamp=file_stamp(path), root=root)


def _image_files(directory: Path) -> Iterator[Path]:
    """Image files below ``directory``, directories and files visited in name order."""
    for parent, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                yield Path(parent) / name


def benchmark_gallery(name: str, root: Path, split: str) -> Gallery:
    """The gallery images of a benchmark split (a missing image is left to the encoder to count as bad).

    Args:
        name: ``cuhk-pedes``, ``icfg-pedes`` or ``rstpreid``.
        root: the benchmark directory or its parent.
        split: ``train``, ``val`` or ``test``.

    Returns:
        The gallery of the split's images, in file order.
    """
    from gadms.data.benchmarks import benchmark_dir, load_benchmark

    data = load_benchmark(name, root, split, check_images=False)
    paths = [Path(p).resolve() for p in data.images]
    images = str((benchmark_dir(name, root) / "imgs").resolve())
    return Gallery(_file_items(paths, images), len(paths), f"{data.name} {split}")


def curated_gallery(directory: Path) -> Gallery:
    """The person crops of curated shards, streamed shard by shard (the total is not known up front).

    Args:
        directory: the curated shard directory.

    Returns:
        The gallery of its samples.
    """
    from gadms.data.curated import curated_shards

    shards = [local_path(s, "a gallery's curated corpus").resolve() for s in curated_shards(directory)]
    real = local_path(directory, "a gallery's curated corpus").resolve()
    return Gallery(_shard_items(shards, str(real)), None, f"curated {directory}", os.path.join(real, ""))


def _shard_items(shards: list[Path], root: str) -> Iterator[GalleryItem]:
    """The samples of each shard (under the real folder ``root``) as items named ``SHARD/KEY``."""
    from gadms.data.curated import iter_shard

    for shard in shards:
        stamp = file_stamp(shard)
        for sample in iter_shard(shard):
            key = sample.key
            yield GalleryItem(f"{shard}/{key}", data=sample.image, shard=str(shard), key=key, stamp=stamp, root=root)


def read_source(record: dict) -> bytes:
    """The encoded image of an indexed item, only while it is what was indexed (for figures and the web page).

    The file (or shard) is read through :mod:`gadms.safe_files`: a regular file whose real location is under the
    indexed root (for indexes that recorded none, the folder the source names), and whose size and modification
    time are still the ones recorded.

    Args:
        record: a line of ``sources.jsonl``.

    Returns:
        The image's bytes.

    Raises:
        UnsafeFile: the file is gone, changed, not a regular file, outside its root, or was never stamped.
    """
    stamp = record_stamp(record)
    path = record.get("shard", record["source"])
    if stamp is None:
        raise UnsafeFile(CHANGED, f"{path}: indexed without a size and time, so it cannot be checked")
    root = record.get("root") or os.path.dirname(path)
    if "shard" not in record:
        return read_file(path, root, stamp=stamp)
    offset, size = _shard_members(path, root, stamp).get(record["key"], (None, 0))
    if offset is None or size > max_file_bytes():
        raise UnsafeFile(MISSING, f"{path}: no image for key {record['key']}")
    with open_regular(path, root) as handle:
        check_stamp(path, os.fstat(handle.fileno()), stamp)
        handle.seek(offset)
        return handle.read(size)


@lru_cache(maxsize=64)
def _shard_members(shard: str, root: str, stamp: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """Key -> (data offset, size) of each sample's jpg in a shard, read once per shard and stamp."""
    from gadms.data.curated import IMAGE_EXTENSIONS, split_member_name

    out: dict[str, tuple[int, int]] = {}
    with open_regular(shard, root) as handle:
        check_stamp(shard, os.fstat(handle.fileno()), stamp)
        with tarfile.open(fileobj=handle, mode="r") as tar:
            for member in tar:
                key, extension = split_member_name(member.name)
                if member.isfile() and extension in IMAGE_EXTENSIONS and key not in out:
                    out[key] = (member.offset_data, member.size)
    return out
