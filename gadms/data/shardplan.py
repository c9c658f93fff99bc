"""Which pairs of a sharded corpus each rank and stream slot reads in an epoch, known before reading any image.

A corpus is a list of shards, each with a nominal number of caption-image
pairs taken from metadata only: a curated shard's ``meta/NAME.parquet``
(the leaf count of its ``captions`` column) and a WebPerson shard's Parquet
footer (rows x 2 captions). An epoch orders the shards by a permutation
seeded by ``(seed, epoch)`` and numbers their pairs 0..P-1 in that order.
The micro-batches of a rank are dealt round-robin to its ``slots`` (batch
``k`` belongs to slot ``k % slots``); every slot of every rank gets a
contiguous range of positions as long as its batches need, the ranges
laid end to end in (rank, slot) order. So every rank runs the same number
of steps, and within an epoch every pair is read by at most one slot.

Resampling rule: an epoch has ``floor(P / global batch)`` steps (at least
one), so the last ``P mod global batch`` positions of the epoch's order are
not read in that epoch (the order changes every epoch); a corpus smaller than
one global batch wraps around (position ``p`` is pair ``p mod P``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gadms.data.problems import DataError
from gadms.storage import Location, location, parquet_metadata

logger = logging.getLogger(__name__)

CURATED, WEBPERSON = "curated", "webperson"
META_DIR = "meta"


@dataclass(frozen=True)
class Shard:
    """One shard of a streamed corpus.

    Attributes:
        path: the tar (curated) or Parquet (WebPerson) file.
        kind: ``curated`` or ``webperson``.
        pairs: nominal caption-image pairs, from metadata.
        index: position in the corpus's shard list (part of each image's identity).
        first_pair: the corpus-wide number of the shard's pair 0 (pairs numbered shard after shard in list
            order), so every caption has a stable id whatever the epoch's order.
    """

    path: Location
    kind: str
    pairs: int
    index: int
    first_pair: int = 0


@dataclass(frozen=True)
class Segment:
    """Pairs ``[start, end)`` (numbered within the shard) of one shard; ``first`` when this is their first reading."""

    shard: Shard
    start: int
    end: int
    offset: int  # epoch position of the shard's pair 0 (in this lap over the corpus)
    first: bool = True


def curated_index(directory: Path | str) -> list[Shard]:
    """The shards of a curated corpus with their pair counts from ``meta/NAME.parquet`` footers.

    A shard without its meta file (a corpus not written by ``gadms curate``) is
    counted by one pass of the curated reader over it instead (one sample in
    memory at a time), with a warning.

    Args:
        directory: the curated directory (``NAME.tar`` shards, ``meta/NAME.parquet``).

    Returns:
        The shards in name order.
    """
    from gadms.data.curated import curated_shards

    shards = []
    for index, tar in enumerate(curated_shards(directory)):
        meta = location(directory) / META_DIR / f"{tar.stem}.parquet"
        pairs = _leaf_count(meta, "captions") if meta.is_file() else _scanned_pairs(tar)
        shards.append(Shard(tar, CURATED, pairs, index))
    return numbered(shards)


def _scanned_pairs(tar: Location) -> int:
    """Caption-image pairs of a curated shard counted by reading it (when its meta file is missing)."""
    from gadms.data.curated import _shard_samples
    from gadms.data.stream import StreamTally

    logger.warning("%s: no %s/%s.parquet, counting its pairs by reading the shard", tar, META_DIR, tar.stem)
    return sum(len(sample.captions) for sample in _shard_samples(tar, StreamTally()))


def webperson_index(root: Path | str) -> list[Shard]:
    """The shards of a WebPerson corpus with their pair counts (rows x 2) from the Parquet footers.

    Args:
        root: a directory of shards or one shard.

    Returns:
        The shards in path order.
    """
    from gadms.data.webperson import CAPTION_COLUMNS, parquet_files

    shards = [
        Shard(path, WEBPERSON, _footer(path).num_rows * len(CAPTION_COLUMNS), i)
        for i, path in enumerate(parquet_files(root))
    ]
    return numbered(shards)


def numbered(shards: list[Shard]) -> list[Shard]:
    """The shards with ``first_pair`` set: their pairs numbered 0..P-1 shard after shard in list order."""
    out, first = [], 0
    for shard in shards:
        out.append(Shard(shard.path, shard.kind, shard.pairs, shard.index, first))
        first += shard.pairs
    return out


def _footer(path: Location) -> pq.FileMetaData:
    try:
        return parquet_metadata(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: cannot read the Parquet footer ({err})") from err


def _leaf_count(path: Location, column: str) -> int:
    """Values of a list column summed over row groups, from the footer alone (no data is read)."""
    meta = _footer(path)
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    matches = [i for i, name in enumerate(names) if name.split(".")[0] == column]
    if not matches:
        raise DataError(f"{path}: no {column!r} column")
    return sum(meta.row_group(g).column(matches[0]).num_values for g in range(meta.num_row_groups))


def epoch_order(shards: list[Shard], seed: int, epoch: int) -> list[Shard]:
    """The shards in the order of ``epoch``: a permutation seeded by ``(seed, epoch)``."""
    order = np.random.default_rng([seed, epoch, 0x5EED]).permutation(len(shards))
    return [shards[i] for i in order]


def slot_batches(batches: int, slots: int) -> list[int]:
    """How many of a rank's ``batches`` each slot makes: batch ``k`` belongs to slot ``k % slots``."""
    return [batches // slots + (s < batches % slots) for s in range(slots)]


def steps_per_epoch(total_pairs: int, global_batch: int) -> int:
    """Optimiser steps of an epoch: ``floor(pairs / global batch)``, at least 1."""
    if total_pairs <= 0:
        raise DataError("the corpus has no caption-image pairs")
    return max(1, total_pairs // global_batch)


def slot_segments(order: list[Shard], start: int, length: int) -> list[Segment]:
    """The shard segments covering epoch positions ``[start, start + length)``, wrapping around the corpus.

    Args:
        order: the epoch's shard order.
        start: first epoch position.
        length: number of positions.

    Returns:
        Segments in reading order; those past the end of the corpus (wrapped) have ``first=False``.
    """
    total = sum(s.pairs for s in order)
    segments: list[Segment] = []
    position, end = start, start + length
    while position < end:
        lap, local = divmod(position, total)
        offset = 0
        for shard in order:
            if offset + shard.pairs > local:
                break
            offset += shard.pairs
        take = min(shard.pairs - (local - offset), end - position)
        segments.append(Segment(shard, local - offset, local - offset + take, position - (local - offset), lap == 0))
        position += take
    return segments
