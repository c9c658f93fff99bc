"""Parquet source shards: rows with an image column (the published WebPerson, SPEC 7), read a few rows at a time.

A corrupt row group fails its rows (``corrupt_row_group``) and the next group
is read; a group whose image column holds more than ``max_row_group_bytes``
(by the file's footer) is not read at all (Parquet cannot read part of a
group): its rows fail as ``too_large``. Cells over ``max_member_bytes`` are
never copied out of Arrow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gadms.curation.records import (
    CORRUPT_ROW_GROUP,
    DUPLICATE_KEY,
    EMPTY_FILE,
    TOO_LARGE,
    SourceRecord,
    SourceShard,
    failed_record,
)
from gadms.storage import Location, parquet_file

TEXT_COLUMNS = ("caption", "text", "caption1")
KEY_COLUMNS = ("key", "image_path")
BINARY_IMAGE_COLUMNS = ("jpg", "image")
_PARQUET_BATCH_ROWS = 64
_PARQUET_BATCH_BYTES = 8 * 2**20


@dataclass(frozen=True)
class _ParquetLayout:
    """Which columns of a Parquet file hold the image, key, text and meta."""

    image: str
    image_is_struct: bool
    key: Optional[str]
    text: Optional[str]
    meta: tuple[str, ...]

    @property
    def columns(self) -> list[str]:
        """The columns to read."""
        return list(dict.fromkeys([self.image, *self.meta]))


def _is_binary(kind: pa.DataType) -> bool:
    """Whether an Arrow type holds raw bytes."""
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind)


def _is_string(kind: pa.DataType) -> bool:
    """Whether an Arrow type holds text."""
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _is_scalar(kind: pa.DataType) -> bool:
    """Whether an Arrow type converts to a JSON scalar (bool, number, string)."""
    return pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind) or _is_string(kind)


def _image_column(schema: pa.Schema) -> Optional[tuple[str, bool]]:
    """``(name, is_struct)`` of the image column: a struct with ``bytes``, else a binary ``jpg`` / ``image``."""
    for column in schema:
        if pa.types.is_struct(column.type):
            index = column.type.get_field_index("bytes")
            if index >= 0 and _is_binary(column.type.field(index).type):
                return column.name, True
    for name in BINARY_IMAGE_COLUMNS:
        if name in schema.names and _is_binary(schema.field(name).type):
            return name, False
    return None


def parquet_layout(schema: pa.Schema) -> Optional[_ParquetLayout]:
    """How to read samples from a Parquet schema; ``None`` when it has no image column."""
    image = _image_column(schema)
    if image is None:
        return None
    scalars = tuple(c.name for c in schema if c.name != image[0] and _is_scalar(c.type))
    key = next((c for c in KEY_COLUMNS if c in scalars), None)
    text = next((c for c in TEXT_COLUMNS if c in scalars and _is_string(schema.field(c).type)), None)
    return _ParquetLayout(image[0], image[1], key, text, scalars)


def parquet_records(
    shard: SourceShard, problems: list[str], max_member_bytes: int, max_row_group_bytes: int
) -> Iterator[SourceRecord]:
    """Records of a Parquet shard, a few rows at a time; a corrupt or oversized row group fails its rows only."""
    row = 0
    try:
        with parquet_file(shard.path) as parquet:
            layout = parquet_layout(parquet.schema_arrow)
            if layout is None:
                problems.append(f"{shard.path}: no image column (a struct with 'bytes', or binary 'jpg' / 'image')")
                return
            seen: set[str] = set()
            for group in range(parquet.num_row_groups):
                rows = parquet.metadata.row_group(group).num_rows
                span = f"row group {group} (rows {row} to {row + rows - 1})"
                size = _image_bytes_in_group(parquet.metadata.row_group(group), layout.image)
                if size > max_row_group_bytes:
                    detail = f"{size} bytes of images, more than curation.source.max_row_group_bytes"
                    problems.append(f"{shard.path}: {span} holds {detail} ({max_row_group_bytes}); not read")
                    yield from _unread_rows(shard.path, group, row, rows, TOO_LARGE, f"its group holds {detail}")
                    row += rows
                    continue
                done, batch_rows = 0, _batch_rows(size, rows)
                try:
                    batches = parquet.iter_batches(batch_rows, row_groups=[group], columns=layout.columns)
                    for batch in batches:
                        for values in _rows_within_cap(batch, layout.image, max_member_bytes):
                            yield _parquet_record(values, row + done, layout, seen, max_member_bytes)
                            done += 1
                except (pa.ArrowException, OSError) as err:
                    problems.append(f"{shard.path}: {span} is unreadable ({_one_line(err)})")
                    reason = "is unreadable"
                    yield from _unread_rows(shard.path, group, row + done, rows - done, CORRUPT_ROW_GROUP, reason)
                row += rows
    except (pa.ArrowException, OSError) as err:
        problems.append(f"{shard.path}: unreadable parquet after {row} rows ({_one_line(err)})")


def _batch_rows(group_bytes: int, rows: int) -> int:
    """Rows per Arrow batch: up to 64, fewer when images are large (a batch holds about 8 MiB of them)."""
    per_row = max(1, group_bytes // max(1, rows))
    return max(1, min(_PARQUET_BATCH_ROWS, _PARQUET_BATCH_BYTES // per_row))


def _one_line(err: BaseException) -> str:
    """An error's text on one line (Arrow's messages span several)."""
    return " ".join(str(err).split())


def _image_bytes_in_group(group: pq.RowGroupMetaData, image_column: str) -> int:
    """Bytes of the image column in one row group, as the footer states (the larger of stored and decoded)."""
    total = 0
    for index in range(group.num_columns):
        column = group.column(index)
        if column.path_in_schema.split(".")[0] == image_column:
            total += max(column.total_compressed_size, column.total_uncompressed_size)
    return total


def _rows_within_cap(batch: pa.RecordBatch, image_column: str, max_member_bytes: int) -> Iterator[dict[str, Any]]:
    """The rows of a batch as dicts; an image over the cap is replaced by its size (an int), never copied."""
    images = batch.column(image_column)
    cells = pc.struct_field(images, "bytes") if pa.types.is_struct(images.type) else images
    lengths = pc.fill_null(pc.binary_length(cells), 0).to_pylist()
    others = batch.drop_columns([image_column]).to_pylist()
    for index, values in enumerate(others):
        large = lengths[index] > max_member_bytes
        values[image_column] = lengths[index] if large else _cell(images, index)
        yield values


def _cell(column: pa.Array, index: int) -> Any:
    """One cell of an Arrow column as a Python value (the only place image bytes are copied out of Arrow)."""
    return column[index].as_py()


def _unread_rows(path: Location, group: int, first: int, rows: int, reason: str, why: str) -> Iterator[SourceRecord]:
    """One failed record per row of a row group that is not read (its row count is believed up to the file's size)."""
    for row in range(first, first + min(rows, path.stat().st_size)):
        yield failed_record(f"{row:09d}", reason, f"row {row} is in row group {group} of {path.name}, which {why}")


def _parquet_record(
    values: dict[str, Any], row: int, layout: _ParquetLayout, seen: set[str], max_member_bytes: int
) -> SourceRecord:
    """The record of one Parquet row."""
    key_value = values.get(layout.key) if layout.key else None
    key = f"{row:09d}" if key_value is None else str(key_value)
    if key in seen:
        return failed_record(key, DUPLICATE_KEY, f"key {key!r} appears again in row {row}")
    seen.add(key)
    image = values[layout.image]
    if isinstance(image, int):  # the size of an image over the cap, which was not read
        detail = f"row {row} holds an image of {image} bytes, more than the limit of {max_member_bytes}"
        return failed_record(key, TOO_LARGE, detail)
    if layout.image_is_struct and image is not None:
        image = image.get("bytes")
    if not image:
        return failed_record(key, EMPTY_FILE, f"row {row} has no image bytes in column {layout.image!r}")
    text = values.get(layout.text) if layout.text else None
    meta = {c: values[c] for c in layout.meta}
    return SourceRecord(key=key, image=bytes(image), text=text, meta=meta)
