"""Gallery items to index: a folder of images (recursive), a benchmark split, or curated shards.

Each item has a ``source`` string that names it for people and is its key in
the index: the absolute path of an image file, or ``SHARD/KEY`` (the absolute
shard path, a slash, the sample key) for a sample of a curated shard. Items
come as a stream in a fixed order (folders walked in name order), so memory
stays bounded and the same input gives the same index.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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
    """

    source: str
    path: Path | None = None
    data: bytes | None = None
    shard: str | None = None
    key: str | None = None

    def record(self) -> dict:
        """The line stored in the index's ``sources.jsonl``."""
        if self.shard is None:
            return {"source": self.source}
        return {"source": self.source, "shard": self.shard, "key": self.key}


@dataclass
class Gallery:
    """A stream of items and, when known up front, how many there are (for the progress bar)."""

    items: Iterator[GalleryItem]
    total: int | None
    description: str


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
    paths = list(_image_files(directory.resolve()))
    return Gallery((GalleryItem(str(p), path=p) for p in paths), len(paths), f"folder {directory}")


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
    from gadms.data.benchmarks import load_benchmark

    data = load_benchmark(name, root, split, check_images=False)
    paths = [Path(p).resolve() for p in data.images]
    return Gallery((GalleryItem(str(p), path=p) for p in paths), len(paths), f"{data.name} {split}")


def curated_gallery(directory: Path) -> Gallery:
    """The person crops of curated shards, streamed shard by shard (the total is not known up front).

    Args:
        directory: the curated shard directory.

    Returns:
        The gallery of its samples.
    """
    from gadms.data.curated import curated_shards

    shards = [local_path(s, "a gallery's curated corpus").resolve() for s in curated_shards(directory)]
    return Gallery(_shard_items(shards), None, f"curated {directory}")


def _shard_items(shards: list[Path]) -> Iterator[GalleryItem]:
    """The samples of each shard as items named ``SHARD/KEY``."""
    from gadms.data.curated import iter_shard

    for shard in shards:
        for sample in iter_shard(shard):
            yield GalleryItem(f"{shard}/{sample.key}", data=sample.image, shard=str(shard), key=sample.key)


def read_source(record: dict) -> bytes:
    """The encoded image of an indexed item (for figures and the web page).

    Args:
        record: a line of ``sources.jsonl``.

    Returns:
        The image file's bytes.

    Raises:
        OSError: the file or shard member cannot be read any more.
    """
    if "shard" not in record:
        return Path(record["source"]).read_bytes()
    offset, size = _shard_members(record["shard"]).get(record["key"], (None, 0))
    if offset is None:
        raise OSError(f"{record['shard']}: no image for key {record['key']}")
    with open(record["shard"], "rb") as handle:
        handle.seek(offset)
        return handle.read(size)


@lru_cache(maxsize=64)
def _shard_members(shard: str) -> dict[str, tuple[int, int]]:
    """Key -> (data offset, size) of each sample's jpg in a shard, read once per shard."""
    from gadms.data.curated import IMAGE_EXTENSIONS, split_member_name

    out: dict[str, tuple[int, int]] = {}
    with tarfile.open(shard, mode="r") as tar:
        for member in tar:
            key, extension = split_member_name(member.name)
            if member.isfile() and extension in IMAGE_EXTENSIONS and key not in out:
                out[key] = (member.offset_data, member.size)
    return out
