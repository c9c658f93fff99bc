"""Reading one segment of a shard as numbered caption-image pairs, with the bad-input accounting of the readers.

Pair numbers within a shard:

- curated tar shard: its good pairs are numbered 0, 1, ... in reading order
  (each caption of a good sample is one pair), so a segment is read from the
  start of the tar (a tar has no index to seek by);
- WebPerson Parquet shard: pairs are numbered nominally, row ``r``'s caption
  column ``k`` being pair ``2 r + k``, so a segment reads only the row groups
  holding its rows, each once (a row group that two segments share is read by
  both, never one before the segment's first row). A bad row or a dropped
  empty caption leaves a hole in the numbers: the slot gets fewer pairs than
  its range and reads the range again, as for any short slot.

Bad samples and shard breaks are counted by the same readers as ``gadms data``
(:mod:`gadms.data.curated`, :mod:`gadms.data.webperson`) and attributed to one
pair, so when several slots share a shard every problem is counted once, by
the slot that owns that pair: in a tar shard the good pair that follows the
problem (trailing ones the shard's last pair); in a Parquet shard the bad
row's pair ``2 r``, an unreadable row group's first row, a shard that cannot
be opened its pair 0.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator

from gadms.data.samples import Sample, StreamTally
from gadms.data.shardplan import CURATED, Segment, Shard
from gadms.data.webperson import CAPTION_COLUMNS, read_webperson_shard, row_group_tables, table_rows


@dataclass(frozen=True)
class StreamPair:
    """One caption-image pair of the stream."""

    position: int  # epoch position
    image: bytes
    caption: str
    identity: int  # unique per image: shard index and sample number
    countable: bool  # its problems count (first reading of this position in the epoch)
    caption_id: int = 0  # stable corpus-wide number of the caption (the same in every epoch)
    partner: str | None = None  # another caption of the same image (TIC), None when it has one only


def shard_samples(shard: Shard, tally: StreamTally) -> Iterator[Sample]:
    """The good samples of one shard, bad ones counted into ``tally``.

    Args:
        shard: the shard.
        tally: receives skipped samples and shard breaks.

    Returns:
        An iterator of samples in file order.
    """
    if shard.kind == CURATED:
        from gadms.data.curated import read_curated_shard

        yield from read_curated_shard(shard.path, tally)
        return
    yield from read_webperson_shard(shard.path, tally)


def _delta(tally: StreamTally, seen: tuple[Counter, int]) -> tuple[Counter, list[str], tuple[Counter, int]]:
    """What ``tally`` gained since ``seen``, and the new mark."""
    skipped = tally.skipped - seen[0]
    return skipped, tally.bad_shards[seen[1] :], (Counter(tally.skipped), len(tally.bad_shards))


def read_segment(segment: Segment, skip_to: int, count: Callable[[Counter, list[str]], None]) -> Iterator[StreamPair]:
    """The pairs of ``segment`` from epoch position ``skip_to`` on.

    Args:
        segment: shard and pair range.
        skip_to: epoch position of the first pair wanted (earlier ones are read and dropped).
        count: called with the problems this segment owns (only on a segment's first reading).

    Returns:
        An iterator of pairs in position order.
    """
    if segment.shard.kind == CURATED:
        return _tar_pairs(segment, skip_to, count)
    return _parquet_pairs(segment, skip_to, count)


def _tar_pairs(segment: Segment, skip_to: int, count: Callable[[Counter, list[str]], None]) -> Iterator[StreamPair]:
    """A curated shard's segment: read from the start of the tar, good pairs numbered in reading order."""
    shard, reader_tally = segment.shard, StreamTally()
    mark: tuple[Counter, int] = (Counter(), 0)
    local = 0  # number of the next good pair in the shard
    for number, sample in enumerate(shard_samples(shard, reader_tally)):
        skipped, broken, mark = _delta(reader_tally, mark)
        if (skipped or broken) and segment.first and segment.start <= local < segment.end:
            count(skipped, broken)
        if local >= segment.end:
            return
        captions = sample.captions
        for j, caption in enumerate(captions):
            position = segment.offset + local
            if segment.start <= local < segment.end and position >= skip_to:
                partner = captions[(j + 1) % len(captions)] if len(captions) > 1 else None
                image_id = (shard.index << 24) | number
                yield StreamPair(
                    position, sample.image, caption, image_id, segment.first, shard.first_pair + local, partner
                )
            local += 1
    skipped, broken, mark = _delta(reader_tally, mark)
    owner = segment.start < local <= segment.end if local else segment.start == 0
    if (skipped or broken) and segment.first and owner:
        count(skipped, broken)


def _parquet_pairs(segment: Segment, skip_to: int, count: Callable[[Counter, list[str]], None]) -> Iterator[StreamPair]:
    """A WebPerson shard's segment: only the row groups holding its rows, pairs numbered ``2 row + column``."""
    shard, tally, width = segment.shard, StreamTally(), len(CAPTION_COLUMNS)
    mark: tuple[Counter, int] = (Counter(), 0)
    first, end = segment.start // width, -(-segment.end // width)  # the rows holding the segment's pairs

    def settle(row: int) -> None:
        """Hand the problems found since the last call to ``count`` when this segment owns ``row``'s pair 0."""
        nonlocal mark
        skipped, broken, mark = _delta(tally, mark)
        if (skipped or broken) and segment.first and segment.start <= row * width < segment.end:
            count(skipped, broken)

    for first_row, table in row_group_tables(shard.path, tally, rows=(first, end)):
        settle(first_row)  # an unreadable row group
        if table is None:
            continue
        lo = max(first, first_row)
        part = table.slice(lo - first_row, end - lo)
        for row, kept, sample in table_rows(shard.path, part, lo, tally):
            settle(row)
            if sample is not None:
                yield from _row_pairs(segment, skip_to, row * width, kept, sample)
    settle(0)  # a shard that cannot be opened


def _row_pairs(segment: Segment, skip_to: int, row_pair: int, kept: list[int], sample: Sample) -> Iterator[StreamPair]:
    """The pairs of one good Parquet row inside the segment; ``row_pair`` is the number of its caption column 0."""
    shard, captions = segment.shard, sample.captions
    for j, column in enumerate(kept):
        local = row_pair + column
        position = segment.offset + local
        if segment.start <= local < segment.end and position >= skip_to:
            partner = captions[(j + 1) % len(captions)] if len(captions) > 1 else None
            identity = (shard.index << 24) | (row_pair // len(CAPTION_COLUMNS))
            yield StreamPair(
                position, sample.image, captions[j], identity, segment.first, shard.first_pair + local, partner
            )
