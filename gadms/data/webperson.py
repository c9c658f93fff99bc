"""Reader for WebPerson as published: Parquet shards of images with two captions (SPEC section 7).

Columns: ``image`` (struct with ``bytes`` and ``path``), ``image_path``,
``caption1``, ``caption2``. Shards are streamed one row group at a time, so
memory holds at most one row group whatever the size of the shard set.
Pre-training data has no identities: each image is its own identity.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from upath import UPath

from gadms.data.samples import Sample, StreamTally
from gadms.problems import DataError
from gadms.storage import Location, location, parquet_file

logger = logging.getLogger(__name__)

CAPTION_COLUMNS = ("caption1", "caption2")
NO_BYTES = "rows without image bytes"
NO_CAPTIONS = "rows without captions"
EMPTY_CAPTION = "empty captions dropped"
UNREADABLE_ROWS = "rows in unreadable row groups"


def parquet_files(root_or_files: Path | str | Location | Iterable[Path | str]) -> list[Location]:
    """The Parquet shards to read, in a fixed order.

    Args:
        root_or_files: a directory (searched recursively for ``*.parquet``), one file, or a list of files;
            local or URLs (``s3://bucket/webperson``, see :mod:`gadms.storage`).

    Returns:
        The shard paths (sorted when found in a directory).
    """
    if isinstance(root_or_files, (str, Path, UPath)):
        root = location(root_or_files)
        if root.is_dir():
            from gadms.data.corpus_index import INDEX_NAME  # the corpus index is not a shard

            index = root / INDEX_NAME
            files = sorted(p for p in root.rglob("*.parquet") if not p.name.startswith(".") and p != index)
            if not files:
                raise DataError(f"no .parquet files under {root}")
            return files
        if not root.is_file():
            raise DataError(f"WebPerson path not found: {root}")
        return [root]
    files = [location(p) for p in root_or_files]
    for path in files:
        if not path.is_file():
            raise DataError(f"WebPerson shard not found: {path}")
    return files


def iter_webperson(
    root_or_files: Path | str | Iterable[Path | str], tally: StreamTally | None = None
) -> Iterator[Sample]:
    """Stream ``(image_bytes, captions, key)`` from WebPerson Parquet shards, row group by row group.

    A row without image bytes or without any non-empty caption is skipped; an
    empty caption next to a good one is dropped. A shard that cannot be opened
    is skipped, and so is an unreadable row group (counted; the shard's other
    row groups are read). Image bytes are not decoded here.

    Args:
        root_or_files: a directory of shards, one shard, or a list of shards.
        tally: filled with counts of what was yielded and skipped, if given.

    Returns:
        An iterator of ``Sample``; the key is ``image_path`` (else ``image.path``, else ``SHARD/ROW``).
    """
    tally = StreamTally() if tally is None else tally
    for path in parquet_files(root_or_files):
        yield from read_webperson_shard(path, tally)
    if tally.problems:
        logger.warning(tally.report(f"WebPerson {root_or_files}"))


def count_webperson(root_or_files: Path | str | Iterable[Path | str]) -> StreamTally:
    """Count samples, captions and skipped rows without turning image bytes into Python objects.

    Args:
        root_or_files: a directory of shards, one shard, or a list of shards.

    Returns:
        The tally ``iter_webperson`` would fill.
    """
    tally = StreamTally()
    for path in parquet_files(root_or_files):
        for table, _ in _row_groups(path, tally, columns=["image.bytes", *CAPTION_COLUMNS]):
            has_bytes, caption_ok = _row_checks(table)
            for row, ok in enumerate(has_bytes):
                _kept_captions(tally, ok, [col[row] for col in caption_ok])
    return tally


def read_webperson_shard(path: Location, tally: StreamTally) -> Iterator[Sample]:
    """The good samples of one WebPerson shard, in row order; bad rows and unreadable row groups are counted.

    Args:
        path: the Parquet shard (local or remote).
        tally: receives the samples yielded and skipped, and the shard's problems.

    Returns:
        An iterator of ``Sample``.
    """
    for table, first_row in _row_groups(path, tally, columns=None):
        yield from _samples(path, table, first_row, tally)


def _row_groups(path: Location, tally: StreamTally, columns: list[str] | None) -> Iterator[tuple[pa.Table, int]]:
    """Each readable row group of one shard with the index of its first row; an unreadable group is skipped."""
    for first_row, table in row_group_tables(path, tally, columns):
        if table is not None:
            yield table, first_row


def row_group_tables(
    path: Location, tally: StreamTally, columns: list[str] | None = None, rows: tuple[int, int] | None = None
) -> Iterator[tuple[int, pa.Table | None]]:
    """The row groups of one shard, each read once, with the number of its first row.

    A shard that cannot be opened yields nothing and an unreadable row group yields None, both counted
    into ``tally`` (the shard's other row groups are still read).

    Args:
        path: the shard.
        tally: receives the shard and its problems.
        columns: the columns to read (default: the WebPerson columns the shard has).
        rows: only the row groups holding some of the rows ``[first, end)``; the others are not read.

    Returns:
        An iterator of ``(first row, table or None)`` in file order.
    """
    tally.shards += 1
    try:
        shard = parquet_file(path)
    except (pa.ArrowException, OSError) as err:
        tally.bad_shards.append(f"{path}: {err}")
        return
    _check_schema(path, shard.schema_arrow)
    names = (
        [n for n in ("image", "image_path", *CAPTION_COLUMNS) if n in shard.schema_arrow.names]
        if columns is None
        else columns
    )
    first_row = 0
    for group in range(shard.num_row_groups):
        count = shard.metadata.row_group(group).num_rows
        if rows is not None and first_row >= rows[1]:
            return
        if rows is None or first_row + count > rows[0]:
            yield first_row, _read_group(shard, path, group, first_row, count, names, tally)
        first_row += count


def _read_group(
    shard: pq.ParquetFile, path: Location, group: int, first_row: int, rows: int, names: list[str], tally: StreamTally
) -> pa.Table | None:
    """One row group, or None (counted) when it cannot be read."""
    try:
        return shard.read_row_group(group, columns=names)
    except (pa.ArrowException, OSError) as err:
        tally.bad_shards.append(f"{path}: row group {group} (rows {first_row} to {first_row + rows - 1}): {err}")
        tally.skipped[UNREADABLE_ROWS] += rows
        return None


def _check_schema(path: Location, schema: pa.Schema) -> None:
    """A shard without the WebPerson columns is the wrong data, not a bad row: one-line ``DataError``."""
    missing = [n for n in ("image", *CAPTION_COLUMNS) if n not in schema.names]
    if missing:
        raise DataError(
            f"{path}: not a WebPerson shard, missing column(s) {', '.join(missing)} (has {', '.join(schema.names)})"
        )
    image = schema.field("image").type
    if not pa.types.is_struct(image) or image.get_field_index("bytes") < 0:
        raise DataError(f"{path}: column 'image' must be a struct with a 'bytes' field, got {image}")
    for name in CAPTION_COLUMNS:
        kind = schema.field(name).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise DataError(f"{path}: column {name!r} must be a string column, got {kind}")


def _row_checks(table: pa.Table) -> tuple[list[bool], list[list[bool]]]:
    """Per row: has non-empty image bytes; per caption column and row: has a non-blank caption."""
    image_bytes = pc.struct_field(table.column("image"), "bytes")
    has_bytes = pc.fill_null(pc.greater(pc.binary_length(image_bytes), 0), False).to_pylist()
    caption_ok = []
    for name in CAPTION_COLUMNS:
        text = table.column(name)
        ok = pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0)
        caption_ok.append(pc.fill_null(ok, False).to_pylist())
    return has_bytes, caption_ok


def _kept_captions(tally: StreamTally, has_bytes: bool, caption_ok: list[bool]) -> list[int] | None:
    """Which caption columns to keep for one row, or None to skip the row; counts either way."""
    if not has_bytes:
        tally.skipped[NO_BYTES] += 1
        return None
    kept = [k for k, ok in enumerate(caption_ok) if ok]
    if not kept:
        tally.skipped[NO_CAPTIONS] += 1
        return None
    if len(kept) < len(caption_ok):
        tally.skipped[EMPTY_CAPTION] += len(caption_ok) - len(kept)
    tally.samples += 1
    tally.captions += len(kept)
    return kept


def _samples(path: Location, table: pa.Table, first_row: int, tally: StreamTally) -> Iterator[Sample]:
    """The good rows of one row group as samples."""
    for _, _, sample in table_rows(path, table, first_row, tally):
        if sample is not None:
            yield sample


def table_rows(
    path: Location, table: pa.Table, first_row: int, tally: StreamTally
) -> Iterator[tuple[int, list[int], Sample | None]]:
    """Every row of a table read from a shard, bad ones counted into ``tally``.

    Args:
        path: the shard.
        table: rows ``first_row, first_row + 1, ...`` of it.
        first_row: the shard's number of the table's first row.
        tally: receives the samples and what was skipped.

    Returns:
        An iterator of ``(row number, kept caption columns, sample)``; the sample is None for a skipped row.
    """
    has_bytes, caption_ok = _row_checks(table)
    image_bytes = pc.struct_field(table.column("image"), "bytes").to_pylist()
    captions = [table.column(name).to_pylist() for name in CAPTION_COLUMNS]
    keys = _keys(path, table, first_row)
    for row, ok in enumerate(has_bytes):
        kept = _kept_captions(tally, ok, [col[row] for col in caption_ok])
        if kept is None:
            yield first_row + row, [], None
        else:
            yield first_row + row, kept, Sample(image_bytes[row], [captions[k][row] for k in kept], keys[row])


def _keys(path: Location, table: pa.Table, first_row: int) -> list[str]:
    """``image_path``, else ``image.path``, else ``SHARD/ROW`` for each row."""
    by_column = (
        table.column("image_path").to_pylist() if "image_path" in table.column_names else [None] * table.num_rows
    )
    image_type = table.schema.field("image").type
    by_struct = (
        pc.struct_field(table.column("image"), "path").to_pylist()
        if image_type.get_field_index("path") >= 0
        else [None] * table.num_rows
    )
    return [a or b or f"{path.stem}/{first_row + row}" for row, (a, b) in enumerate(zip(by_column, by_struct))]
