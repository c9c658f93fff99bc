"""Planning by prefix sums and bisection gives the segments the linear walk gave, and does not grow quadratically."""

import time
from pathlib import Path

import numpy as np
import pytest

from gadms.data.shardplan import Segment, Shard, epoch_order, numbered, order_ends, slot_segments
from gadms.problems import DataError


def reference_segments(order: list[Shard], start: int, length: int) -> list[Segment]:
    """The planner as it was: a walk over the shard list from its start for every segment (quadratic)."""
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


def _shards(pairs: list[int]) -> list[Shard]:
    return numbered([Shard(Path("corpus"), f"{i:05d}.tar", "curated", n, i) for i, n in enumerate(pairs)])


@pytest.mark.parametrize("seed", range(40))
def test_segments_are_those_of_the_linear_walk(seed):
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 60))
    pairs = [int(n) for n in rng.integers(0, 30, count)]  # empty shards included
    if not sum(pairs):
        pairs[-1] = 1
    total = sum(pairs)
    order = epoch_order(_shards(pairs), seed, int(rng.integers(0, 5)))
    ends = order_ends(order)
    for _ in range(25):
        start = int(rng.integers(0, 3 * total))  # later laps too
        length = int(rng.integers(0, 3 * total))  # ranges that wrap around the corpus, several times
        expected = reference_segments(order, start, length)
        assert slot_segments(order, start, length) == expected
        assert slot_segments(order, start, length, ends) == expected
        assert sum(s.end - s.start for s in expected) == length


def test_ranges_laid_end_to_end_cover_the_epoch_once():
    order = epoch_order(_shards([5, 0, 7, 3, 0, 9]), 1, 2)
    ranges = [slot_segments(order, start, 4) for start in range(0, 24, 4)]
    read = sorted((s.shard.index, p) for segments in ranges for s in segments for p in range(s.start, s.end))
    assert read == sorted((s.index, p) for s in order for p in range(s.pairs))
    assert all(s.first for segments in ranges for s in segments)
    assert not slot_segments(order, 24, 1)[0].first  # the next lap is a re-reading


def test_a_corpus_without_pairs_is_a_one_line_error():
    with pytest.raises(DataError, match="no caption-image pairs"):
        slot_segments(_shards([0, 0]), 0, 4)
    assert slot_segments(_shards([0, 0]), 0, 0) == []


def test_planning_75k_shards_for_8_ranks_takes_seconds_not_minutes():
    rng = np.random.default_rng(0)
    shards = _shards([int(n) for n in rng.integers(1500, 2500, 75_000)])
    total = shards[-1].first_pair + shards[-1].pairs
    slots, world, micro = 4, 8, 64
    batches = total // (micro * world)
    began = time.perf_counter()
    covered = 0
    for _rank in range(world):
        order = epoch_order(shards, 0, 3)
        ends = order_ends(order)
        for slot in range(slots):
            segments = slot_segments(order, covered, batches // slots * micro, ends)
            covered += sum(s.end - s.start for s in segments)
    elapsed = time.perf_counter() - began
    assert covered == world * slots * (batches // slots) * micro
    assert elapsed < 20  # target under 2 s on a quiet machine; the linear walk took about 150 s per rank
