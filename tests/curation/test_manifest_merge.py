"""The streamed manifest merge writes the bytes the in-memory concatenation wrote, in bounded memory."""

import hashlib
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gadms.curation.manifest import MANIFEST_ROW_GROUP, MANIFEST_SCHEMA, merge_manifests
from gadms.curation.output import CurationError


def _reference(paths: list[Path], row_group_rows: int | None = None) -> bytes:
    """How manifest.parquet was written before it streamed: every shard in memory, concatenated, one write."""
    tables = [pq.read_table(p) for p in paths]
    table = pa.concat_tables(tables) if tables else MANIFEST_SCHEMA.empty_table()
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=row_group_rows)
    return sink.getvalue().to_pybytes()


def _rows(shard: int, count: int, caption_chars: int, rng: random.Random) -> list[dict]:
    words = ["red", "blue", "jacket", "jeans", "backpack", "short", "hair", "woman", "man", "white", "shoes"]
    caption = lambda: " ".join(rng.choice(words) for _ in range(caption_chars // 5))[:caption_chars]  # noqa: E731
    return [
        {
            "key": f"sample{shard:05d}{i:06d}_{rng.getrandbits(64):016x}_{i % 3}",
            "source_key": f"{shard:05d}{i:06d}",
            "person_index": i % 3,
            "crop_width": rng.randrange(40, 400),
            "crop_height": rng.randrange(80, 800),
            "box": [round(rng.uniform(0, 500), 2) for _ in range(4)],
            "score": round(rng.random(), 4),
            "captions": [caption(), caption()],
            "template_ids": [rng.randrange(100), rng.randrange(100)],
        }
        for i in range(count)
    ]


def _manifests(tmp_path: Path, sizes: list[int], caption_chars: int = 120) -> list[Path]:
    rng = random.Random(7)
    paths = []
    for shard, size in enumerate(sizes):
        path = tmp_path / f"{shard:05d}.parquet"
        pq.write_table(
            pa.Table.from_pylist(_rows(shard, size, caption_chars, rng), MANIFEST_SCHEMA), path, compression="zstd"
        )
        paths.append(path)
    return paths


@pytest.mark.parametrize("row_group_rows", [1, 5, 40, 41, 97, 1000])
def test_the_bytes_equal_the_in_memory_merge_wherever_row_groups_are_cut(tmp_path, row_group_rows):
    paths = _manifests(tmp_path, [40, 0, 17, 1, 40])
    assert merge_manifests(paths, tmp_path / "manifest.parquet", row_group_rows) == 98
    assert (tmp_path / "manifest.parquet").read_bytes() == _reference(paths, row_group_rows)


def test_multi_page_columns_keep_their_bytes(tmp_path):
    """Captions over the 1 MB page size: pages are cut where the in-memory write cut them."""
    paths = _manifests(tmp_path, [3000, 2500, 3100], caption_chars=400)
    merge_manifests(paths, tmp_path / "manifest.parquet", 4000)
    data = (tmp_path / "manifest.parquet").read_bytes()
    assert data == _reference(paths, 4000)
    meta = pq.ParquetFile(tmp_path / "manifest.parquet").metadata
    assert meta.num_row_groups == 3 and meta.row_group(0).column(7).total_uncompressed_size > 2**20


def test_a_manifest_within_one_row_group_keeps_the_earlier_bytes(tmp_path):
    """Up to MANIFEST_ROW_GROUP rows the manifest is what the in-memory write (pyarrow's 1M-row default) gave."""
    paths = _manifests(tmp_path, [30, 12])
    merge_manifests(paths, tmp_path / "manifest.parquet")
    assert (tmp_path / "manifest.parquet").read_bytes() == _reference(paths)
    assert MANIFEST_ROW_GROUP < 1024 * 1024  # larger manifests are cut into smaller groups: bounded merge memory


def test_an_empty_corpus_gets_an_empty_manifest_as_before(tmp_path):
    merge_manifests([], tmp_path / "none.parquet")
    assert (tmp_path / "none.parquet").read_bytes() == _reference([])
    paths = _manifests(tmp_path, [0, 0])
    assert merge_manifests(paths, tmp_path / "empty.parquet") == 0
    assert (tmp_path / "empty.parquet").read_bytes() == _reference(paths)
    assert pq.read_table(tmp_path / "empty.parquet").schema.equals(MANIFEST_SCHEMA)


def test_a_manifest_with_other_columns_is_refused_and_nothing_is_left(tmp_path):
    paths = _manifests(tmp_path, [5])
    odd = tmp_path / "odd.parquet"
    pq.write_table(pa.table({"key": ["a"]}), odd)
    before = hashlib.sha256(b"").hexdigest()
    (tmp_path / "manifest.parquet").write_bytes(b"")
    with pytest.raises(CurationError, match="odd.parquet: its columns differ"):
        merge_manifests([*paths, odd], tmp_path / "manifest.parquet")
    assert hashlib.sha256((tmp_path / "manifest.parquet").read_bytes()).hexdigest() == before  # the old one stays
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def _point(method: str, rows: int, seconds: float, peak: int) -> dict:
    return {"rows": rows, "shards": 100, "method": method, "seconds": seconds, "peak_rss_mb": peak}


def test_the_scale_estimate_bounds_the_streamed_merge_by_one_row_group():
    from gadms.bench.scale_manifest import extrapolated

    def held(method: str, rows: int) -> int:  # rows in memory at once: one row group when streamed
        return min(rows, MANIFEST_ROW_GROUP) if method == "stream" else rows

    measured = [
        _point(method, rows, rows / 100_000, 100 + held(method, rows) // 1000)
        | {"manifest_mb": rows / 5000, "rss_before_mb": 90}
        for method in ("stream", "concat")
        for rows in (100_000, 1_000_000)
    ]
    estimates = {(e["method"], e["rows"]): e for e in extrapolated(measured, [5_000_000, 15_000_000])}
    assert {e["kind"] for e in estimates.values()} == {"extrapolated"}
    assert estimates["concat", 15_000_000]["peak_rss_mb"] == 100 + 15_000
    assert estimates["stream", 5_000_000]["peak_rss_mb"] == estimates["stream", 15_000_000]["peak_rss_mb"]
    assert estimates["stream", 15_000_000]["peak_rss_mb"] == round(100 + MANIFEST_ROW_GROUP / 1000)
    assert estimates["stream", 5_000_000]["seconds"] == 50 and estimates["stream", 5_000_000]["manifest_mb"] == 1000


@pytest.mark.slow
def test_the_scale_benchmark_measures_both_merges_in_their_own_processes(tmp_path):
    from gadms.bench.scale_manifest import measure

    results = measure([3000, 6000], shards=3, tmp=tmp_path)
    measured = [r for r in results if r["kind"] == "measured"]
    assert [(r["rows"], r["method"]) for r in measured] == [
        (3000, "stream"),
        (3000, "concat"),
        (6000, "stream"),
        (6000, "concat"),
    ]
    assert all(r["same_bytes"] and r["peak_rss_mb"] >= r["rss_before_mb"] > 0 for r in measured)
    assert {(r["rows"], r["method"]) for r in results if r["kind"] == "extrapolated"} == {
        (rows, method) for rows in (5_000_000, 15_000_000) for method in ("stream", "concat")
    }
    assert list(tmp_path.iterdir()) == []  # the synthetic manifests are gone
