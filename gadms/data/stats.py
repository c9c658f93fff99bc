"""Per-split counts of a dataset (identities, images, captions) and a small text table of them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from gadms.data.benchmarks import BENCHMARKS, read_benchmark
from gadms.data.curated import count_curated
from gadms.data.samples import StreamTally
from gadms.data.webperson import count_webperson
from gadms.problems import DataError

DATASETS = (*BENCHMARKS, "webperson", "curated")
_COLUMNS = ("identities", "images", "captions")


def dataset_stats(name: str, root: Path | str, check_images: bool = True) -> dict[str, Any]:
    """Count identities, images and captions per split, and the bad records skipped.

    Totals add images and captions over splits; total identities are the
    distinct original ids over splits (the sum, where splits share no identity,
    as in the three benchmarks). Pre-training data (``webperson``, ``curated``)
    has one split, ``train``, where every image is its own identity.

    Args:
        name: one of ``DATASETS``.
        root: benchmark directory or its parent; WebPerson Parquet directory or file; curated shard directory.
        check_images: for benchmarks, count a record whose image file is missing as a problem.

    Returns:
        A JSON-ready dict: ``dataset``, ``source``, ``splits`` (split -> counts),
        ``total`` (counts), ``problems`` (number skipped) and ``problem_reasons`` (reason -> number).
    """
    key = name.lower()
    if key in BENCHMARKS:
        return _benchmark_stats(key, root, check_images)
    if key == "webperson":
        return _stream_stats(key, root, count_webperson(root))
    if key == "curated":
        return _stream_stats(key, root, count_curated(root))
    raise DataError(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)})")


def format_stats(stats: dict[str, Any]) -> str:
    """Render ``dataset_stats`` output as an aligned text table.

    Args:
        stats: what ``dataset_stats`` returned.

    Returns:
        A few lines: a title, one row per split, a total row and the problems line.
    """
    rows = [("split", *_COLUMNS)]
    for split, counts in [*stats["splits"].items(), ("total", stats["total"])]:
        rows.append((split, *(f"{counts[c]:,}" for c in _COLUMNS)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"{stats['dataset']}  {stats['source']}"]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells))
    reasons = ", ".join(f"{n:,} {why}" for why, n in stats["problem_reasons"].items())
    lines.append(f"problems: {stats['problems']:,}" + (f" ({reasons})" if reasons else ""))
    return "\n".join(lines)


def _benchmark_stats(name: str, root: Path | str, check_images: bool) -> dict[str, Any]:
    """Counts of a benchmark, read in one pass over its annotation file."""
    data = read_benchmark(name, root, check_images=check_images)
    splits = {
        split: {"identities": part.num_identities, "images": len(part.images), "captions": len(part.captions)}
        for split, part in data.splits.items()
    }
    total = {
        "identities": len({i for part in data.splits.values() for i in part.original_ids}),
        "images": sum(s["images"] for s in splits.values()),
        "captions": sum(s["captions"] for s in splits.values()),
    }
    reasons = Counter(p.reason for p in data.problems)
    return _result(name, data.annotation_file, splits, total, len(data.problems), reasons)


def _stream_stats(name: str, root: Path | str, tally: StreamTally) -> dict[str, Any]:
    """Counts of pre-training data: one split, one identity per image."""
    counts = {"identities": tally.samples, "images": tally.samples, "captions": tally.captions}
    reasons = Counter(tally.skipped)
    if tally.bad_shards:
        reasons["bad shards"] = len(tally.bad_shards)
    return _result(name, root, {"train": counts}, dict(counts), tally.problems, reasons)


def _result(
    name: str, source: Path | str, splits: dict, total: dict, problems: int, reasons: Counter
) -> dict[str, Any]:
    """The stats dict, reasons ordered by count (most frequent first)."""
    return {
        "dataset": name,
        "source": str(source),
        "splits": splits,
        "total": total,
        "problems": problems,
        "problem_reasons": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
    }
