"""WebPerson slots read only the row groups of their rows; pairs are numbered by row and caption column."""

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _stream_corpus import jpeg

from gadms.data.shardplan import Segment, Shard
from gadms.data.shardread import read_segment
from gadms.data.webperson import count_webperson, iter_webperson

ROWS, GROUP = 22, 4  # row groups of 4, 4, 4, 4, 4, 2 rows


def _shard(path: Path, bad: dict[int, dict] | None = None) -> Shard:
    """A WebPerson shard of ROWS rows in row groups of GROUP; ``bad`` replaces fields of some rows."""
    rows = [
        {"image": {"bytes": jpeg(r), "path": f"{r}.jpg"}, "caption1": f"a {r}", "caption2": f"b {r}"}
        for r in range(ROWS)
    ]
    for r, fields in (bad or {}).items():
        rows[r].update(fields)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=GROUP)
    return Shard(path.parent, path.name, "webperson", 2 * ROWS, 3, first_pair=1000)


@pytest.fixture
def reads(monkeypatch):
    """The row groups read, in order (a spy on pyarrow's reader)."""
    seen: list[int] = []
    real = pq.ParquetFile.read_row_group

    def spy(self, i, *args, **kwargs):
        seen.append(i)
        return real(self, i, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    return seen


def _read(shard: Shard, start: int, end: int, first: bool = True, problems: list | None = None) -> list:
    """The pairs of ``[start, end)`` of ``shard`` (epoch offset 500); the problems it owns go to ``problems``."""
    kept = [] if problems is None else problems

    def count(skipped, broken):
        kept.append((Counter(skipped), list(broken)))

    return list(read_segment(Segment(shard, start, end, offset=500, first=first), -1, count))


def test_a_segment_in_the_middle_of_a_shard_reads_only_its_row_groups(tmp_path, reads):
    shard = _shard(tmp_path / "s.parquet")
    pairs = _read(shard, 19, 27)  # rows 9..13: row groups 2 and 3
    assert reads == [2, 3]
    assert [p.position for p in pairs] == list(range(519, 527))
    reads.clear()
    _read(shard, 0, 2 * ROWS)  # the whole shard: every row group once
    assert reads == [0, 1, 2, 3, 4, 5]


def test_a_clean_shard_gives_the_pairs_of_a_full_read(tmp_path, reads):
    shard = _shard(tmp_path / "s.parquet")
    full = [(s.image, c, k, s.captions) for s in iter_webperson(shard.path) for k, c in enumerate(s.captions)]
    reads.clear()
    cuts = [0, 3, 8, 9, 17, 30, 31, 44]
    got = [p for a, b in zip(cuts, cuts[1:]) for p in _read(shard, a, b)]
    assert [(p.image, p.caption) for p in got] == [(image, caption) for image, caption, _, _ in full]
    assert [p.caption_id for p in got] == [1000 + n for n in range(2 * ROWS)]  # first_pair + 2 row + column
    assert [p.identity for p in got] == [(3 << 24) | (n // 2) for n in range(2 * ROWS)]  # one identity per row
    assert [p.partner for p in got] == [captions[1 - k] for _, _, k, captions in full]
    assert Counter(reads) == Counter({0: 2, 1: 2, 2: 2, 3: 3, 4: 1, 5: 1})  # a group split by a cut: once per side


def test_bad_rows_leave_holes_and_each_problem_is_counted_once(tmp_path, reads):
    bad = {1: {"image": {"bytes": b"", "path": "x"}}, 6: {"caption1": "  "}, 13: {"caption1": "", "caption2": None}}
    shard = _shard(tmp_path / "s.parquet", bad)
    problems: list = []
    cuts = [0, 3, 12, 13, 27, 44]
    got = [p for a, b in zip(cuts, cuts[1:]) for p in _read(shard, a, b, problems=problems)]
    holes = {2, 3, 12, 26, 27}  # row 1 (no bytes), row 6's caption1, row 13 (no caption)
    assert [p.position - 500 for p in got] == [n for n in range(2 * ROWS) if n not in holes]
    assert [p.caption for p in got if p.position - 500 == 13] == ["b 6"]
    assert [p.partner for p in got if p.position - 500 == 13] == [None]  # one caption left: no partner
    assert sum((c for c, _ in problems), Counter()) == count_webperson(shard.path).skipped
    assert len(problems) == 3  # each in the segment holding the row's pair 0
    later: list = []
    for a, b in zip(cuts, cuts[1:]):
        _read(shard, a, b, first=False, problems=later)
    assert later == []  # a re-reading counts nothing


def test_an_unreadable_row_group_is_counted_once_by_the_segment_of_its_first_row(tmp_path, monkeypatch):
    shard = _shard(tmp_path / "s.parquet")
    real = pq.ParquetFile.read_row_group

    def broken(self, i, *args, **kwargs):
        if i == 2:
            raise OSError("bad page")
        return real(self, i, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", broken)
    problems: list = []
    cuts = [0, 10, 18, 20, 44]  # group 2 holds rows 8..11 (pairs 16..23): split over three segments
    got = [p for a, b in zip(cuts, cuts[1:]) for p in _read(shard, a, b, problems=problems)]
    assert [p.position - 500 for p in got] == [n for n in range(2 * ROWS) if not 16 <= n < 24]
    assert len(problems) == 1 and problems[0][0] == Counter({"rows in unreadable row groups": 4})
    assert "row group 2 (rows 8 to 11): bad page" in problems[0][1][0]


def test_a_shard_that_cannot_be_opened_is_counted_by_the_segment_of_pair_0(tmp_path):
    path = tmp_path / "s.parquet"
    path.write_bytes(b"PAR1 not really")
    shard = Shard(path, "", "webperson", 8, 0)
    problems: list = []
    assert _read(shard, 0, 3, problems=problems) == [] and len(problems) == 1
    assert _read(shard, 3, 8, problems=problems) == [] and len(problems) == 1
