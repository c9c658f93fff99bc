"""Which pairs of a sharded corpus each rank and stream slot reads in an epoch, known before reading any image.

A corpus is a list of shards, each with a nominal number of caption-image
pairs taken from metadata only: the corpus index ``_shards.parquet`` when it
matches a listing of the corpus (one read, :mod:`gadms.data.corpus_index`),
else a curated shard's ``meta/NAME.parquet`` (the leaf count of its
``captions`` column) and a WebPerson shard's Parquet footer (rows x 2
captions), read concurrently. An epoch orders the shards by a permutation
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

Planning costs O(shards) per epoch and rank plus O(log shards) per segment:
the positions where the shards of the order end are summed once and each
segment's shard is found by bisection.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Sequence

import numpy as np

from gadms.data.corpus_index import CURATED, WEBPERSON, CorpusIndexEntry, indexed_entries, list_shards, webperson_entry
from gadms.problems import DataError
from gadms.storage import Location, location


@dataclass(frozen=True)
class Shard:
    """One shard of a streamed corpus.

    Attributes:
        root: the corpus root (for a corpus of one file, that file).
        name: the shard file relative to ``root``, ``/``-separated (empty when ``root`` is the shard).
        kind: ``curated`` or ``webperson``.
        pairs: nominal caption-image pairs, from metadata.
        index: position in the corpus's shard list (part of each image's identity).
        first_pair: the corpus-wide number of the shard's pair 0 (pairs numbered shard after shard in list
            order), so every caption has a stable id whatever the epoch's order.
    """

    root: Location
    name: str
    kind: str
    pairs: int
    index: int
    first_pair: int = 0

    @property
    def path(self) -> Location:
        """The tar (curated) or Parquet (WebPerson) file; made when asked, as a remote path costs 0.2 ms to make."""
        return self.root / self.name if self.name else self.root


@dataclass(frozen=True)
class Segment:
    """Pairs ``[start, end)`` (numbered within the shard) of one shard; ``first`` when this is their first reading."""

    shard: Shard
    start: int
    end: int
    offset: int  # epoch position of the shard's pair 0 (in this lap over the corpus)
    first: bool = True


def curated_index(directory: Path | str | Location) -> list[Shard]:
    """The shards of a curated corpus with their pair counts: from its index, else the ``meta`` footers.

    The index ``_shards.parquet`` is used when it lists exactly the ``*.tar`` files of the directory with
    their sizes; otherwise (a warning names the first difference) each shard's ``meta/NAME.parquet`` footer
    is read, several at a time. A shard without its meta file (a corpus not written by ``gadms curate``) is
    counted by one pass of the curated reader over it instead (one sample in memory at a time), with a warning.

    Args:
        directory: the curated directory (``NAME.tar`` shards, ``meta/NAME.parquet``), local or a URL.

    Returns:
        The shards in name order.
    """
    listing = list_shards(directory, CURATED)
    if not listing:
        from gadms.data.curated import curated_shards

        curated_shards(directory)  # raises the reader's one-line error (no directory, no shards)
        raise DataError(f"no .tar shards in {directory}")
    return _shards(location(directory), CURATED, indexed_entries(directory, CURATED, listing))


def webperson_index(root: Path | str | Location) -> list[Shard]:
    """The shards of a WebPerson corpus with their pair counts (rows x 2): from its index, else the footers.

    As :func:`curated_index`: the index is used when it matches a listing of the ``*.parquet`` files under
    ``root`` (names and sizes), else each Parquet footer is read, several at a time.

    Args:
        root: a directory of shards or one shard.

    Returns:
        The shards in path order.
    """
    from gadms.data.webperson import parquet_files

    listing = list_shards(root, WEBPERSON)
    if listing:
        return _shards(location(root), WEBPERSON, indexed_entries(root, WEBPERSON, listing))
    (path,) = parquet_files(root)  # one file (or the reader's one-line error)
    entry = webperson_entry(path, "", None)
    return numbered([Shard(path, "", WEBPERSON, entry.pairs, 0)])


def _shards(root: Location, kind: str, entries: Sequence[CorpusIndexEntry]) -> list[Shard]:
    """Numbered shards of the entries, in entry order."""
    firsts = accumulate((e.pairs for e in entries), initial=0)
    return [Shard(root, e.name, kind, e.pairs, i, first) for (i, e), first in zip(enumerate(entries), firsts)]


def numbered(shards: list[Shard]) -> list[Shard]:
    """The shards with ``first_pair`` set: their pairs numbered 0..P-1 shard after shard in list order."""
    out, first = [], 0
    for shard in shards:
        out.append(Shard(shard.root, shard.name, shard.kind, shard.pairs, shard.index, first))
        first += shard.pairs
    return out


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


def order_ends(order: Sequence[Shard]) -> list[int]:
    """Where each shard of an epoch's order ends: the running sum of the pair counts."""
    return list(accumulate(s.pairs for s in order))


def slot_segments(order: list[Shard], start: int, length: int, ends: Sequence[int] | None = None) -> list[Segment]:
    """The shard segments covering epoch positions ``[start, start + length)``, wrapping around the corpus.

    Args:
        order: the epoch's shard order.
        start: first epoch position.
        length: number of positions.
        ends: :func:`order_ends` of ``order``, when already computed (planning several slots).

    Returns:
        Segments in reading order; those past the end of the corpus (wrapped) have ``first=False``.
    """
    ends = order_ends(order) if ends is None else ends
    total = ends[-1] if ends else 0
    if total <= 0 and length > 0:
        raise DataError("the corpus has no caption-image pairs")
    segments: list[Segment] = []
    position, end = start, start + length
    while position < end:
        lap, local = divmod(position, total)
        i = bisect_right(ends, local)  # the first shard ending after ``local`` (empty shards end where they start)
        shard = order[i]
        first = local - (ends[i] - shard.pairs)
        take = min(ends[i] - local, end - position)
        segments.append(Segment(shard, first, first + take, position - first, lap == 0))
        position += take
    return segments
