"""The search index on disk and how it is read.

An index is a directory::

    INDEX/index.json       format, model identity, embedding width, row count, approximate-index settings
    INDEX/embeddings.f32   count x embed_dim little-endian float32, row-major, L2-normalised rows
    INDEX/sources.jsonl    one JSON line per row: {"source": path or SHARD/KEY[, "shard", "key"]}
    INDEX/approximate.faiss  (only above the size threshold) the FAISS IVF index over the rows

``count`` in ``index.json`` is the commit point: rows are appended to the two
data files first and ``index.json`` is replaced (atomically) after each
batch, so a build stopped at any moment leaves a valid index of the rows
committed so far; bytes past the commit point are cut off when the index is
opened for writing. No timestamps are stored: same images and model, same
bytes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gadms.search.model import ModelIdentity, SearchError
from gadms.search.ranking import APPROX_FILE, ApproximateIndex

FORMAT = "gadms-search-index"
FORMAT_VERSION = 1
META_FILE = "index.json"
EMBEDDINGS_FILE = "embeddings.f32"
SOURCES_FILE = "sources.jsonl"


@dataclass
class IndexMeta:
    """The contents of ``index.json``."""

    model: ModelIdentity
    embed_dim: int
    count: int = 0
    approximate: dict | None = None
    last_build: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """JSON-ready dict, keys in a fixed order."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.model.to_json(),
            "embed_dim": self.embed_dim,
            "count": self.count,
            "approximate": self.approximate,
            "last_build": self.last_build,
        }


def read_meta(directory: Path) -> IndexMeta:
    """Read and check ``INDEX/index.json``.

    Args:
        directory: the index directory.

    Returns:
        The metadata.

    Raises:
        SearchError: not an index, or a format this code does not read.
    """
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise SearchError(f"{directory}: not a search index (no {META_FILE}); build one with `gadms index`")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("format") != FORMAT or raw.get("format_version") != FORMAT_VERSION:
            raise SearchError(
                f"{path}: format {raw.get('format')!r} v{raw.get('format_version')}, expected {FORMAT} "
                f"v{FORMAT_VERSION}"
            )
        return IndexMeta(
            ModelIdentity.from_json(raw["model"]),
            int(raw["embed_dim"]),
            int(raw["count"]),
            raw.get("approximate"),
            dict(raw.get("last_build") or {}),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, SearchError):
            raise
        raise SearchError(f"{path}: unreadable index metadata ({type(exc).__name__}: {exc})") from None


def write_meta(directory: Path, meta: IndexMeta) -> None:
    """Replace ``index.json`` atomically (write a temporary file, then rename)."""
    path = Path(directory) / META_FILE
    tmp = path.with_name(f".{META_FILE}.tmp")
    tmp.write_text(json.dumps(meta.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def check_model(meta: IndexMeta, identity: ModelIdentity, directory: Path) -> None:
    """Refuse a model other than the one the index was built with.

    Raises:
        SearchError: one line naming both models and their weight digests.
    """
    if meta.model.digest != identity.digest:
        raise SearchError(
            f"{directory} was built with model {meta.model.label} (weights {meta.model.digest[:12]}), not with "
            f"{identity.label} (weights {identity.digest[:12]}); search it with its own model or build a new index"
        )


@dataclass
class SearchIndex:
    """An index opened for searching: its metadata, embeddings (memory-mapped) and sources.

    Attributes:
        directory: the index directory.
        meta: ``index.json``.
        embeddings: ``(count, embed_dim)`` float32 memmap.
        records: the ``sources.jsonl`` lines, row by row.
        approximate: the FAISS index when the index has one.
    """

    directory: Path
    meta: IndexMeta
    embeddings: np.ndarray
    records: list[dict]
    approximate: ApproximateIndex | None

    def __len__(self) -> int:
        return self.meta.count


def open_index(directory: Path) -> SearchIndex:
    """Open an index for searching (nothing is loaded into memory but the sources).

    Args:
        directory: the index directory.

    Returns:
        The index.

    Raises:
        SearchError: missing or inconsistent files.
    """
    directory = Path(directory)
    meta = read_meta(directory)
    embeddings = map_embeddings(directory, meta)
    records = read_records(directory, meta.count)
    approx = None
    if meta.approximate and (directory / APPROX_FILE).is_file():
        approx = ApproximateIndex.load(directory, meta.approximate)
        if approx.count != meta.count:
            approx = None  # stale: built before the last rows were committed; exact search is still right
    return SearchIndex(directory, meta, embeddings, records, approx)


def map_embeddings(directory: Path, meta: IndexMeta) -> np.ndarray:
    """The committed rows of ``embeddings.f32`` as a read-only memmap."""
    path = Path(directory) / EMBEDDINGS_FILE
    need = meta.count * meta.embed_dim * 4
    have = path.stat().st_size if path.is_file() else 0
    if have < need:
        raise SearchError(
            f"{path}: {have} bytes, index.json commits {meta.count} rows ({need} bytes); the index is damaged, "
            "rebuild it"
        )
    if meta.count == 0:
        return np.zeros((0, meta.embed_dim), dtype=np.float32)
    return np.memmap(path, dtype="<f4", mode="r", shape=(meta.count, meta.embed_dim))


def read_records(directory: Path, count: int) -> list[dict]:
    """The first ``count`` lines of ``sources.jsonl`` (lines past the commit point are ignored)."""
    path = Path(directory) / SOURCES_FILE
    records: list[dict] = []
    if count:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if len(records) == count:
                    break
                records.append(json.loads(line))
    if len(records) != count:
        raise SearchError(
            f"{path}: {len(records)} lines, index.json commits {count} rows; the index is damaged, rebuild it"
        )
    return records
