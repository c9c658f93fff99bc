"""The corpus index: every shard of a streamed corpus with its size and pair count, in one small file.

A training run needs the pair count of every shard before it reads an image
(:mod:`gadms.data.shardplan`). Without an index that means one metadata read
per shard (a curated shard's ``meta/NAME.parquet`` footer, a WebPerson
shard's Parquet footer): about 0.1 s per shard on S3, hours at 75k shards.
The index puts all of it in ``_shards.parquet`` at the corpus root, read in
one request and checked against one listing of the corpus (names and byte
sizes of its shards); an index that disagrees with the listing is stale and
the footers are read instead (with a warning). Only names and sizes are
compared: a shard rewritten in place to the very same size (tar files grow in
10 KiB records) is not noticed, so rerun ``gadms data index`` after rewriting
shards. The leading ``_`` keeps
Parquet dataset readers (pyarrow, Spark) and the WebPerson shard search from
taking the index for a shard.

The file (format version 1, key ``gadms.corpus_index`` of the Parquet
key-value metadata) has one row per shard, in the corpus's shard order
(path components compared one by one, as local paths sort):

- ``name`` (string): the shard file relative to the corpus root, ``/``-separated;
- ``kind`` (string): ``curated`` (a tar) or ``webperson`` (a Parquet file);
- ``size`` (int64): the shard's bytes;
- ``pairs`` (int64): nominal caption-image pairs (curated: captions listed in
  ``meta/NAME.parquet``; WebPerson: rows x 2);
- ``row_groups`` (list<int64>): rows per row group (WebPerson; empty for curated).

Writers: ``gadms curate run`` writes the index of the corpus it made (build
entries with :func:`curated_index_entry`, or :class:`CorpusIndexEntry`
directly, and call :func:`write_corpus_index`); ``gadms data index PATH``
(:func:`build_corpus_index`) writes it for a WebPerson corpus or an older
curated one from the footers.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from gadms.problems import DataError
from gadms.storage import Location, file_size, is_url, location, open_binary, parquet_metadata

logger = logging.getLogger(__name__)

CURATED, WEBPERSON = "curated", "webperson"
KINDS = (CURATED, WEBPERSON)
INDEX_NAME = "_shards.parquet"
META_DIR = "meta"
FORMAT_KEY, FORMAT_VERSION = b"gadms.corpus_index", b"1"
CAPTIONS_PER_ROW = 2  # WebPerson rows: caption1, caption2
# Local folders that are never a corpus: listing them would walk the machine (or never end, as /proc).
PSEUDO_FILE_SYSTEMS = ("/proc", "/sys", "/dev", "/run")
SYSTEM_FOLDERS = frozenset({*PSEUDO_FILE_SYSTEMS, "/usr", "/etc", "/var", "/boot", "/bin", "/sbin", "/lib", "/home"})
FOOTER_THREADS = 32  # metadata reads in flight when there is no index (object stores answer them in parallel)
SCHEMA = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("pairs", pa.int64(), nullable=False),
        pa.field("row_groups", pa.list_(pa.int64()), nullable=False),
    ],
    metadata={FORMAT_KEY: FORMAT_VERSION},
)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class CorpusIndexEntry:
    """One shard of the corpus index.

    Attributes:
        name: the shard file relative to the corpus root, ``/``-separated (``00042.tar``, ``part/3.parquet``).
        kind: ``curated`` or ``webperson``.
        size: the shard file's bytes (compared with the listing to find a stale index).
        pairs: nominal caption-image pairs.
        row_groups: rows per row group of a WebPerson shard; empty for a curated one.
    """

    name: str
    kind: str
    size: int
    pairs: int
    row_groups: tuple[int, ...] = ()


def curated_index_entry(shard: Path | str | Location, pairs: int, size: int | None = None) -> CorpusIndexEntry:
    """The index entry of one curated tar shard (its name is the file name: shards sit at the corpus root).

    Args:
        shard: the ``NAME.tar`` file.
        pairs: its caption-image pairs (the captions of its samples, as in ``meta/NAME.parquet``).
        size: its bytes; read from the file when not given.

    Returns:
        The entry.
    """
    path = location(shard)
    return CorpusIndexEntry(path.name, CURATED, file_size(path) if size is None else size, pairs)


def shard_order(name: str) -> list[str]:
    """Sort key of the corpus's shard order: the path components of ``name``, compared one by one."""
    return name.split("/")


def write_corpus_index(root: Path | str | Location, entries: Sequence[CorpusIndexEntry]) -> None:
    """Write ``ROOT/_shards.parquet``: the same entries always give the same bytes, whatever their order.

    A local index is written to a hidden temporary file and renamed over the old one; a remote one is
    one upload (an object appears whole or not at all).

    Args:
        root: the corpus root (local or a URL).
        entries: one per shard; names must be distinct.

    Raises:
        DataError: an entry is malformed or named twice.
    """
    ordered = sorted(entries, key=lambda e: shard_order(e.name))
    check_entries(ordered)
    data = _index_bytes(ordered)
    target = location(root) / INDEX_NAME
    if is_url(target):
        fs, inner = _filesystem(target)
        fs.pipe_file(inner, data)
        return
    temporary = Path(str(target)).with_name(f".{INDEX_NAME}.tmp-{os.getpid()}")
    temporary.write_bytes(data)
    os.replace(temporary, Path(str(target)))


def check_entries(entries: Sequence[CorpusIndexEntry]) -> None:
    """A one-line ``DataError`` for a malformed entry or a name listed twice (entries in shard order)."""
    for before, entry in zip([None, *entries], entries):
        _check_entry(entry)
        if before is not None and before.name == entry.name:
            raise DataError(f"corpus index: shard {entry.name!r} is listed twice")


def _index_bytes(entries: list[CorpusIndexEntry]) -> bytes:
    """The Parquet bytes of sorted, checked entries."""
    columns = {
        "name": [e.name for e in entries],
        "kind": [e.kind for e in entries],
        "size": [e.size for e in entries],
        "pairs": [e.pairs for e in entries],
        "row_groups": [list(e.row_groups) for e in entries],
    }
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns, schema=SCHEMA), sink, compression="zstd")
    return bytes(sink.getvalue())


def _check_entry(entry: CorpusIndexEntry) -> None:
    """A one-line ``DataError`` for an entry that cannot describe a shard."""
    parts = entry.name.split("/")
    if not entry.name or entry.name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise DataError(f"corpus index: shard name {entry.name!r} is not a relative path")
    if entry.kind not in KINDS:
        raise DataError(f"corpus index: {entry.name}: kind {entry.kind!r} is not one of {', '.join(KINDS)}")
    if entry.size < 0 or entry.pairs < 0 or any(rows < 0 for rows in entry.row_groups):
        raise DataError(f"corpus index: {entry.name}: negative size, pairs or row count")
    if entry.kind == WEBPERSON and entry.pairs != CAPTIONS_PER_ROW * sum(entry.row_groups):
        raise DataError(f"corpus index: {entry.name}: {entry.pairs} pairs but {sum(entry.row_groups)} rows")


def read_corpus_index(root: Path | str | Location) -> list[CorpusIndexEntry] | None:
    """The entries of ``ROOT/_shards.parquet`` (one request), or None when the corpus has no index.

    Args:
        root: the corpus root (local or a URL).

    Returns:
        The entries in shard order, or None.

    Raises:
        DataError: the file is not a corpus index (one line, saying how to rebuild it).
    """
    path = location(root) / INDEX_NAME
    try:
        data = _read_whole(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise DataError(f"{path}: cannot read the corpus index ({err})") from err
    try:
        table = pq.read_table(pa.BufferReader(data))
        if (table.schema.metadata or {}).get(FORMAT_KEY) != FORMAT_VERSION:
            raise ValueError(f"no {FORMAT_KEY.decode()} version {FORMAT_VERSION.decode()} in its metadata")
        rows = table.select(SCHEMA.names).to_pylist()
        entries = [CorpusIndexEntry(r["name"], r["kind"], r["size"], r["pairs"], tuple(r["row_groups"])) for r in rows]
        check_entries(entries)
    except (pa.ArrowException, ValueError, KeyError, TypeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: not a gadms corpus index ({reason}); rebuild it: gadms data index {root}") from None
    return entries


def _filesystem(path: Location) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of a location and the path within it."""
    options = getattr(path, "storage_options", {}) if is_url(path) else {}
    return fsspec.core.url_to_fs(str(path), **options)


def _read_whole(path: Location) -> bytes:
    """All bytes of a small file, in one request when remote (no separate size query)."""
    if is_url(path):
        fs, inner = _filesystem(path)
        return bytes(fs.cat_file(inner))
    with open_binary(path) as handle:  # regular files only (gadms.safe_files): a FIFO is refused, not waited on
        return handle.read()


def list_shards(root: Path | str | Location, kind: str) -> dict[str, int | None] | None:
    """One listing of the corpus: shard name -> bytes (None where the store gives no size, as web servers).

    Curated shards are the ``*.tar`` files at the root, WebPerson shards the ``*.parquet`` files below it
    (hidden files and the index left out), both as the readers find them.

    Args:
        root: the corpus root.
        kind: ``curated`` or ``webperson``.

    Returns:
        The shards in shard order (empty when there are none, or the root does not exist), or None when
        ``root`` is a file itself.
    """
    fs, inner = _filesystem(location(root))
    fs.invalidate_cache(inner)  # list what is there now, not what this process listed before
    found: dict[str, Any] = fs.find(inner, maxdepth=1 if kind == CURATED else None, detail=True)
    base = inner.rstrip("/")
    if base in {name.rstrip("/") for name in found}:
        return None
    listing: dict[str, int | None] = {}
    for name, info in found.items():
        relative = name[len(base) + 1 :] if name.startswith(base + "/") else None
        if relative is not None and _is_shard(relative, kind):
            listing[relative] = None if info.get("size") is None else int(info["size"])
    return {name: listing[name] for name in sorted(listing, key=shard_order)}


def _is_shard(relative: str, kind: str) -> bool:
    """Whether a file found under the root is a shard of ``kind``."""
    base = relative.rsplit("/", 1)[-1]
    if base.startswith(".") or relative == INDEX_NAME:
        return False
    if kind == CURATED:
        return "/" not in relative and base.endswith(".tar")
    return base.endswith(".parquet")


def stale_shard(entries: Sequence[CorpusIndexEntry], listing: dict[str, int | None], kind: str) -> str | None:
    """The first shard where the index and the listing disagree, with why; None when they agree.

    Args:
        entries: the index.
        listing: :func:`list_shards` of the corpus.
        kind: the kind the corpus is read as.

    Returns:
        ``"NAME: why"`` or None.
    """
    for entry in entries:
        if entry.kind != kind:
            return f"{entry.name}: a {entry.kind} shard, the corpus is read as {kind}"
        if entry.name not in listing:
            return f"{entry.name}: in the index, not in the corpus"
        listed = listing[entry.name]
        if listed is not None and listed != entry.size:
            return f"{entry.name}: {listed} bytes, the index says {entry.size}"
    indexed = {e.name for e in entries}
    extra = [name for name in listing if name not in indexed]
    return f"{extra[0]}: in the corpus, not in the index" if extra else None


def indexed_entries(root: Path | str | Location, kind: str, listing: dict[str, int | None]) -> list[CorpusIndexEntry]:
    """The corpus's entries: from its index when that matches ``listing``, else from the shards' footers.

    Args:
        root: the corpus root.
        kind: ``curated`` or ``webperson``.
        listing: :func:`list_shards` of the corpus (not empty).

    Returns:
        The entries in shard order.
    """
    entries = read_corpus_index(root)
    if entries is not None:
        why = stale_shard(entries, listing, kind)
        if why is None:
            return entries
        logger.warning(
            "%s is stale (%s); reading the shard footers instead (rebuild it: gadms data index %s)",
            location(root) / INDEX_NAME,
            why,
            root,
        )
    return footer_entries(root, listing, kind)


def footer_entries(root: Path | str | Location, listing: dict[str, int | None], kind: str) -> list[CorpusIndexEntry]:
    """The entries of the listed shards from their metadata, :data:`FOOTER_THREADS` reads in flight.

    Args:
        root: the corpus root.
        listing: shard name -> bytes (None: asked of the store).
        kind: ``curated`` (pairs from ``meta/NAME.parquet``) or ``webperson`` (rows from the Parquet footer).

    Returns:
        The entries in listing order.
    """
    base = location(root)
    read = curated_entry if kind == CURATED else webperson_entry
    return in_parallel(lambda item: read(base, item[0], item[1]), list(listing.items()))


def in_parallel(function: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``function`` over ``items`` on a bounded thread pool; results (and the first error) in list order."""
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(FOOTER_THREADS, len(items))) as pool:
        return list(pool.map(function, items))


def curated_entry(root: Location, name: str, size: int | None) -> CorpusIndexEntry:
    """A curated shard's entry from its ``meta/NAME.parquet`` footer (without one: counted by reading the tar)."""
    tar = root / name
    meta = root / META_DIR / f"{tar.stem}.parquet"
    try:
        footer = parquet_metadata(meta)
    except FileNotFoundError:
        pairs = _scanned_pairs(tar)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{meta}: cannot read the Parquet footer ({err})") from err
    else:
        pairs = leaf_count(meta, footer, "captions")
    return CorpusIndexEntry(name, CURATED, file_size(tar) if size is None else size, pairs)


def webperson_entry(root: Location, name: str, size: int | None) -> CorpusIndexEntry:
    """A WebPerson shard's entry from its Parquet footer (``name`` empty: ``root`` is the shard)."""
    path = root / name if name else root
    try:
        footer = parquet_metadata(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: cannot read the Parquet footer ({err})") from err
    rows = tuple(footer.row_group(g).num_rows for g in range(footer.num_row_groups))
    size = file_size(path) if size is None else size
    return CorpusIndexEntry(name or path.name, WEBPERSON, size, CAPTIONS_PER_ROW * sum(rows), rows)


def leaf_count(path: Location, footer: pq.FileMetaData, column: str) -> int:
    """Values of a list column summed over row groups, from the footer alone (no data is read)."""
    names = [footer.schema.column(i).path for i in range(footer.num_columns)]
    matches = [i for i, name in enumerate(names) if name.split(".")[0] == column]
    if not matches:
        raise DataError(f"{path}: no {column!r} column")
    return sum(footer.row_group(g).column(matches[0]).num_values for g in range(footer.num_row_groups))


def _scanned_pairs(tar: Location) -> int:
    """Caption-image pairs of a curated shard counted by reading it (when its meta file is missing)."""
    from gadms.data.curated import read_curated_shard
    from gadms.data.samples import StreamTally

    logger.warning("%s: no %s/%s.parquet, counting its pairs by reading the shard", tar, META_DIR, tar.stem)
    return sum(len(sample.captions) for sample in read_curated_shard(tar, StreamTally()))


def corpus_kind(root: Path | str | Location) -> str:
    """``curated`` when the root holds ``*.tar`` shards, else ``webperson``."""
    return CURATED if list_shards(root, CURATED) else WEBPERSON


def refuse_system_folder(root: Path | str | Location) -> None:
    """Refuse a local root that is the file system's root or a system folder: a corpus is never there, and
    listing one would walk the whole machine (WebPerson shards are searched for at any depth).

    Raises:
        DataError: one line naming the folder.
    """
    place = location(root)
    if is_url(place):
        return
    real = os.path.realpath(str(place))
    if real == os.path.sep or real in SYSTEM_FOLDERS or any(real.startswith(f"{s}/") for s in PSEUDO_FILE_SYSTEMS):
        raise DataError(f"{root}: a system folder ({real}), not a corpus folder; give the folder that holds the shards")


def build_corpus_index(root: Path | str | Location, kind: str | None = None) -> list[CorpusIndexEntry]:
    """Write the index of an existing corpus from its shards' metadata (an existing index is not read).

    Args:
        root: the corpus directory (local or a URL).
        kind: ``curated`` or ``webperson``; by default curated when the root holds ``*.tar`` shards.

    Returns:
        The entries written.

    Raises:
        DataError: no shards of that kind under ``root``, or a shard's metadata cannot be read.
    """
    refuse_system_folder(root)
    kind = kind or corpus_kind(root)
    if kind not in KINDS:
        raise DataError(f"corpus kind {kind!r} is not one of {', '.join(KINDS)}")
    listing = list_shards(root, kind)
    if not listing:
        what = "*.tar shards at" if kind == CURATED else "*.parquet shards under"
        raise DataError(f"no {what} {root} (a corpus index is written for a directory of shards)")
    entries = footer_entries(root, listing, kind)
    write_corpus_index(root, entries)
    return entries
