"""The per-shard tables of a curation run and their merge: ``KEY.json`` of a sample, the manifest and decision
rows, and :func:`merge_manifests`, which streams every shard's manifest into ``OUT/manifest.parquet``.

Everything here is a function of its input: the same rows give the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gadms.config import Params
from gadms.curation.filter import visible_keypoints
from gadms.curation.output import CurationError
from gadms.curation.records import Crop, PersonDetection
from gadms.curation.stages import captioner_name
from gadms.reproducible_writes import atomic_path


def _rounded(values: Iterable[float], digits: int = 2) -> list[float]:
    return [round(float(v), digits) for v in values]


def sample_json(crop: Crop, captions: list[str], params: Params) -> dict[str, Any]:
    """The ``KEY.json`` of a curated sample."""
    x0, y0, x1, y1 = crop.box
    return {
        "captions": captions,
        "template_ids": [t.id for t in crop.templates],
        "source_key": crop.record.key,
        "source_shard": crop.shard,
        "person_index": crop.person_index,
        "box": _rounded(crop.person.box),
        "crop_box": [x0, y0, x1, y1],
        "crop_size": [x1 - x0, y1 - y0],
        "score": round(crop.person.score, 4),
        "keypoints": [_rounded(k, 3) for k in np.asarray(crop.person.keypoints)],
        "captioner": captioner_name(params),
    }


MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("source_key", pa.string()),
        ("person_index", pa.int32()),
        ("crop_width", pa.int32()),
        ("crop_height", pa.int32()),
        ("box", pa.list_(pa.float64())),
        ("score", pa.float64()),
        ("captions", pa.list_(pa.string())),
        ("template_ids", pa.list_(pa.int32())),
    ]
)
DECISIONS_SCHEMA = pa.schema(
    [
        ("source_key", pa.string()),
        ("person_index", pa.int32()),
        ("decision", pa.string()),
        ("box", pa.list_(pa.float64())),
        ("score", pa.float64()),
        ("visible_keypoints", pa.int32()),
    ]
)


def manifest_row(crop: Crop, captions: list[str]) -> dict[str, Any]:
    x0, y0, x1, y1 = crop.box
    return {
        "key": crop.key,
        "source_key": crop.record.key,
        "person_index": crop.person_index,
        "crop_width": x1 - x0,
        "crop_height": y1 - y0,
        "box": _rounded(crop.person.box),
        "score": round(crop.person.score, 4),
        "captions": captions,
        "template_ids": [t.id for t in crop.templates],
    }


def decision_row(key: str, index: int, person: PersonDetection, decision: str, params: Params) -> dict[str, Any]:
    seen = visible_keypoints(person.keypoints, params.curation.filter.keypoint_confidence)
    return {
        "source_key": key,
        "person_index": index,
        "decision": decision,
        "box": _rounded(person.box),
        "score": round(person.score, 4),
        "visible_keypoints": int(seen.sum()),
    }


def parquet_bytes(rows: list[dict[str, Any]], schema: pa.Schema) -> bytes:
    """Rows as a Parquet file with a fixed schema (the same rows give the same bytes)."""
    table = pa.Table.from_pylist(rows, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


# Rows per row group of manifest.parquet: what the streamed merge holds at once (about 0.4 GB at two long captions a
# row). Manifests up to this size keep the bytes of the earlier in-memory write (pyarrow's default, 1M rows).
MANIFEST_ROW_GROUP = 128 * 1024


def merge_manifests(paths: Sequence[Path], dest: Path, row_group_rows: int = MANIFEST_ROW_GROUP) -> int:
    """Append the per-shard manifests ``paths``, in order, into one Parquet file, written atomically.

    Streams: one shard's manifest and at most one output row group are in
    memory at a time, never the whole corpus. The bytes are those of
    ``pq.write_table(pa.concat_tables(tables), compression="zstd")`` (how the
    manifest was written before it streamed): each row group holds the same
    rows, cut from the same per-shard chunks, so a corpus keeps its DVC hash.

    Args:
        paths: the per-shard manifests (``OUT/meta/NAME.parquet``), in the corpus's order.
        dest: the merged manifest to write.
        row_group_rows: rows per row group (the last holds the rest).

    Returns:
        The number of rows written.

    Raises:
        CurationError: a manifest's columns differ from the first one's.
    """
    rows, pending, held = 0, [], 0
    with atomic_path(Path(dest)) as tmp:
        writer: pq.ParquetWriter | None = None
        try:
            for path in paths:
                table = pq.read_table(path)
                writer = writer or pq.ParquetWriter(tmp, table.schema, compression="zstd")
                if not table.schema.equals(writer.schema):
                    raise CurationError(f"{path}: its columns differ from the other shards' manifests")
                for piece in _row_group_pieces(table, row_group_rows, held):
                    pending.append(piece)
                    held += piece.num_rows
                    if held == row_group_rows:
                        writer.write_table(pa.concat_tables(pending), row_group_size=row_group_rows)
                        rows, pending, held = rows + held, [], 0
            writer = writer or pq.ParquetWriter(tmp, MANIFEST_SCHEMA, compression="zstd")
            if held or not rows:  # the rest; an empty corpus gets one empty row group, as write_table gives
                writer.write_table(_concat_or_empty(pending, writer.schema), row_group_size=row_group_rows)
                rows += held
        finally:
            if writer is not None:
                writer.close()
    return rows


def _row_group_pieces(table: pa.Table, row_group_rows: int, held: int) -> Iterator[pa.Table]:
    """``table`` cut where row groups end, the first row group already holding ``held`` rows."""
    start = 0
    while start < table.num_rows:
        size = min(row_group_rows - held, table.num_rows - start)
        yield table.slice(start, size)
        start, held = start + size, (held + size) % row_group_rows


def _concat_or_empty(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else schema.empty_table()
