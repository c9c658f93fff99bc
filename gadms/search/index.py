"""The search index on disk and how it is read.

An index is a directory::

    INDEX/index.json       format, model identity, embedding width, row count, approximate-index settings
    INDEX/embeddings.f32   count x embed_dim little-endian float32, row-major, L2-normalised rows
    INDEX/sources.jsonl    one JSON line per row: {"source": path or SHARD/KEY[, "shard", "key"][, "size", "mtime_ns"]}
    INDEX/approximate.faiss  (only above the size threshold) the FAISS IVF index over the rows
    INDEX/text_encoder.safetensors  the model's text tower, what a query loads (see gadms.search.text_encoder)

``count`` in ``index.json`` is the commit point: rows are appended to the two
data files first and ``index.json`` is replaced (atomically) after each
batch, so a build stopped at any moment leaves a valid index of the rows
committed so far; bytes past the commit point are cut off when the index is
opened for writing. ``size`` and ``mtime_ns`` identify the content a row was
encoded from (see :mod:`gadms.search.sources`); an image whose file changed
is encoded again and its row replaced in place (indexes written before these
fields existed are taken as unchanged). Apart from those file stamps no
timestamps are stored: same images, files and model, same bytes. A new or
rebuilt index is built beside its folder and swapped into place (see
:mod:`gadms.search.publish`); :func:`open_index` reads again when
``index.json`` was replaced while it read, so it never mixes two versions.
"""

from __future__ import annotations

import json
import os
import sys
import time
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
OPEN_TRIES = 20


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
        meta = IndexMeta(
            ModelIdentity.from_json(raw["model"]),
            int(raw["embed_dim"]),
            int(raw["count"]),
            raw.get("approximate"),
            dict(raw.get("last_build") or {}),
        )
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, SearchError):
            raise
        raise SearchError(f"{path}: unreadable index metadata ({type(exc).__name__}: {exc})") from None
    _check_meta(meta, path)
    return meta


def _check_meta(meta: IndexMeta, path: Path) -> None:
    """Refuse values no build writes: a negative row count, a non-positive width, a malformed FAISS entry."""
    if meta.count < 0 or meta.embed_dim <= 0:
        raise SearchError(
            f"{path}: count {meta.count}, embed_dim {meta.embed_dim} (need count >= 0 and embed_dim > 0); the index "
            "metadata is damaged, rebuild the index"
        )
    if meta.approximate is not None and not isinstance(meta.approximate, dict):
        raise SearchError(f"{path}: 'approximate' is not an object; the index metadata is damaged, rebuild the index")


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
    if meta.embed_dim != identity.embed_dim:
        raise SearchError(
            f"{Path(directory) / META_FILE}: embed_dim {meta.embed_dim}, but model {identity.label} embeds in "
            f"{identity.embed_dim} dimensions; the index metadata is damaged, rebuild the index"
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
    for _ in range(OPEN_TRIES):
        before = meta_stamp(directory)
        try:
            meta = read_meta(directory)
            opened = SearchIndex(
                directory, meta, map_embeddings(directory, meta), read_records(directory, meta.count), None
            )
        except SearchError:
            if meta_stamp(directory) == before:
                raise
            opened = None  # replaced while it was read: read the new one
        if opened is not None and meta_stamp(directory) == before:
            opened.approximate = _open_approximate(directory, opened.meta)
            return opened
        time.sleep(0.05)
    raise SearchError(f"{directory}: the index kept changing while it was opened; try again")


def meta_stamp(directory: Path) -> tuple[int, int, int] | None:
    """``(inode, mtime_ns, size)`` of ``index.json``, None when it is missing: changes with every commit and swap."""
    try:
        st = os.stat(Path(directory) / META_FILE)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _open_approximate(directory: Path, meta: IndexMeta) -> ApproximateIndex | None:
    """The FAISS index when it is there and matches the rows; a damaged one is left out with a warning on stderr."""
    if not meta.approximate or not (directory / APPROX_FILE).is_file():
        return None
    try:
        approx = ApproximateIndex.load(directory, meta.approximate)
    except SearchError as exc:
        print(f"warning: {exc}; searching exactly (`gadms index` builds it again)", file=sys.stderr)
        return None
    if approx.count != meta.count or approx.dim != meta.embed_dim:
        return None  # stale: built before the last rows were committed; exact search is still right
    return approx


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
    """The first ``count`` lines of ``sources.jsonl`` (lines past the commit point are ignored).

    Raises:
        SearchError: one line naming the file when it is missing, unreadable or holds too few valid lines.
    """
    path = Path(directory) / SOURCES_FILE
    records: list[dict] = []
    if count:
        try:
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    if len(records) == count:
                        break
                    records.append(_record(line, len(records) + 1, path))
        except (OSError, UnicodeDecodeError) as exc:
            reason = "missing" if isinstance(exc, FileNotFoundError) else f"unreadable ({type(exc).__name__})"
            raise SearchError(f"{path}: {reason}; the index is damaged, rebuild it") from None
    if len(records) != count:
        raise SearchError(
            f"{path}: {len(records)} lines, index.json commits {count} rows; the index is damaged, rebuild it"
        )
    return records


def _record(line: str, number: int, path: Path) -> dict:
    """One ``sources.jsonl`` line, checked to be an object with a string ``source``."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("source"), str):
        raise SearchError(f"{path}: line {number} is not a source record; the index is damaged, rebuild it")
    return record


def write_records(directory: Path, records: list[dict]) -> None:
    """Replace ``sources.jsonl`` atomically with ``records`` (write a temporary file, then rename)."""
    path = Path(directory) / SOURCES_FILE
    tmp = path.with_name(f".{SOURCES_FILE}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    os.replace(tmp, path)


def drop_rows(directory: Path, meta: IndexMeta, records: list[dict], drop: list[int]) -> list[dict]:
    """Rewrite the index without the rows ``drop``: new data files are written, renamed into place, then committed.

    The FAISS index is removed first (its row ids no longer apply; the caller trains it again). A crash between
    the renames and the commit leaves files that :func:`open_index` reports as damaged, never silently wrong rows.

    Returns:
        The records kept, in their order.
    """
    directory, gone = Path(directory), set(drop)
    keep = [row for row in range(meta.count) if row not in gone]
    (directory / APPROX_FILE).unlink(missing_ok=True)
    meta.approximate = None
    rows = map_embeddings(directory, meta)
    emb_tmp = directory / f".{EMBEDDINGS_FILE}.tmp"
    with open(emb_tmp, "wb") as handle:
        for start in range(0, len(keep), 65536):
            handle.write(np.ascontiguousarray(rows[keep[start : start + 65536]], dtype="<f4").tobytes())
    del rows
    kept = [records[row] for row in keep]
    os.replace(emb_tmp, directory / EMBEDDINGS_FILE)
    write_records(directory, kept)
    meta.count = len(keep)
    write_meta(directory, meta)
    return kept
