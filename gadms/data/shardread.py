"""Reading one segment of a shard as numbered caption-image pairs, with the bad-input accounting of the readers.

A shard's good pairs are numbered 0, 1, ... in reading order (each caption
of a good sample is one pair). Bad samples and shard breaks are counted by
the same readers as ``gadms data`` (:mod:`gadms.data.curated`,
:mod:`gadms.data.webperson`); each one is attributed to the good pair that
follows it (trailing ones to the shard's last pair), so when several slots
share a shard every problem is counted once, by the slot that owns that pair.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator

from gadms.data.shardplan import CURATED, Segment, Shard
from gadms.data.stream import Sample, StreamTally


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
        from gadms.data.curated import _shard_samples

        yield from _shard_samples(shard.path, tally)
        return
    from gadms.data.webperson import _row_groups, _samples

    for table, first_row in _row_groups(shard.path, tally, columns=None):
        yield from _samples(shard.path, table, first_row, tally)


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
