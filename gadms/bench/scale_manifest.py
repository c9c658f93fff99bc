"""Peak memory and time of the final manifest merge at corpus scale.

    python -m gadms.bench.scale_manifest [--rows 100000 1000000] [--shards 100] [--tmp DIR]

For each size, writes ``--shards`` synthetic per-shard manifests (the columns
of :data:`gadms.curation.manifest.MANIFEST_SCHEMA`, synthetic ids, two captions of
about 300 characters per row, as a VLM writes them) and merges them into one
``manifest.parquet`` in a fresh process, twice: ``stream`` is
:func:`gadms.curation.manifest.merge_manifests` (what ``finalize_curation`` runs),
``concat`` the earlier merge (every shard read, concatenated in memory,
written at once). Each process reports its peak resident set size
(``VmHWM``, the process's own high-water mark; ``ru_maxrss`` is reported too,
which on Linux also counts the parent's resident set at the fork), its peak
before merging (after imports), and the seconds the merge took; both must
write the same bytes. 5M and 15M rows (5M kept images, 10M+
captions at the paper's scale) are extrapolated from the measured sizes and
marked so: time grows linearly with rows for both; the concatenation's memory
too, while the streamed merge holds at most one row group (``MANIFEST_ROW_GROUP``
rows) and one shard.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gadms.curation.manifest import MANIFEST_ROW_GROUP, MANIFEST_SCHEMA

EXTRAPOLATE_TO = (5_000_000, 15_000_000)
METHODS = ("stream", "concat")
CAPTION_WORDS = 55  # about 300 characters
_VOCABULARY = np.array(
    "a the man woman person young old wearing with and carrying holding walking standing short long black white "
    "red blue green yellow grey brown dark light striped checked jacket coat shirt t-shirt sweater dress skirt "
    "jeans trousers shorts shoes sneakers boots backpack handbag bag hat cap glasses hair ponytail sleeves "
    "loose tight casual formal left right hand shoulder his her on in at of".split()
)
_CHILD = """
import hashlib, json, re, resource, sys, time
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
from gadms.curation.manifest import merge_manifests

def peak_kb():  # the process's own peak (ru_maxrss also counts the parent's resident set at fork)
    status = Path("/proc/self/status")
    found = re.search(r"VmHWM:\\s+(\\d+) kB", status.read_text()) if status.exists() else None
    return int(found.group(1)) if found else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

method, meta, dest = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
paths = sorted(meta.glob("*.parquet"))
before = peak_kb()
started = time.perf_counter()
if method == "stream":
    merge_manifests(paths, dest)
else:  # the merge before it streamed
    sink = pa.BufferOutputStream()
    pq.write_table(pa.concat_tables([pq.read_table(p) for p in paths]), sink, compression="zstd")
    dest.write_bytes(sink.getvalue().to_pybytes())
seconds = time.perf_counter() - started
maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
digest = hashlib.sha256(dest.read_bytes()).hexdigest()
result = {"seconds": seconds, "before_kb": before, "peak_kb": peak_kb(), "maxrss_kb": maxrss, "sha256": digest}
print(json.dumps(result))
"""
_WRITER = "import sys; from pathlib import Path; from gadms.bench.scale_manifest import write_manifests; "
_WRITER += "write_manifests(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))"


def synthetic_manifest(shard: int, rows: int) -> pa.Table:
    """``rows`` manifest rows of synthetic shard ``shard`` (same arguments, same rows).

    Args:
        shard: the shard's number (ids and random draws depend on it).
        rows: rows to make.

    Returns:
        A table with :data:`MANIFEST_SCHEMA`.
    """
    rng = np.random.default_rng(shard)
    source = [f"{shard:05d}{i:07d}" for i in range(rows)]
    hashes = rng.integers(0, 2**63, rows)
    words = _VOCABULARY[rng.integers(0, len(_VOCABULARY), (2 * rows, CAPTION_WORDS))]
    captions = [" ".join(sentence) + "." for sentence in words]
    pairs = np.arange(0, 2 * rows + 1, 2, dtype=np.int32)
    columns = {
        "key": [f"sample_{s}_{h:016x}_{i % 3}" for i, (s, h) in enumerate(zip(source, hashes))],
        "source_key": source,
        "person_index": pa.array(np.arange(rows) % 3, pa.int32()),
        "crop_width": pa.array(rng.integers(40, 400, rows), pa.int32()),
        "crop_height": pa.array(rng.integers(80, 800, rows), pa.int32()),
        "box": pa.ListArray.from_arrays(np.arange(0, 4 * rows + 1, 4, dtype=np.int32), rng.uniform(0, 640, 4 * rows)),
        "score": rng.uniform(0.3, 1.0, rows).round(4),
        "captions": pa.ListArray.from_arrays(pairs, pa.array(captions)),
        "template_ids": pa.ListArray.from_arrays(pairs, pa.array(rng.integers(0, 120, 2 * rows), pa.int32())),
    }
    return pa.table(columns, schema=MANIFEST_SCHEMA)


def write_manifests(meta: Path, rows: int, shards: int) -> None:
    """``shards`` per-shard manifests in ``meta`` holding ``rows`` rows in all, written as curation writes them."""
    meta.mkdir(parents=True, exist_ok=True)
    for shard in range(shards):
        count = rows // shards + (shard < rows % shards)
        pq.write_table(synthetic_manifest(shard, count), meta / f"{shard:05d}.parquet", compression="zstd")


def merge_in_subprocess(method: str, meta: Path, dest: Path) -> dict[str, Any]:
    """Run one merge (``stream`` or ``concat``) in a fresh Python process; its time, memory and output hash."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, method, str(meta), str(dest)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{method} merge failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(
    rows_list: list[int], shards: int, methods: Sequence[str] = METHODS, tmp: Path | None = None
) -> list[dict[str, Any]]:
    """Measure the merge at each size, then extrapolate to 5M and 15M rows.

    Args:
        rows_list: manifest rows to measure (e.g. ``[100_000, 1_000_000]``).
        shards: per-shard manifests the rows are spread over.
        methods: ``stream`` (the current merge) and/or ``concat`` (the earlier, in-memory one).
        tmp: where the synthetic manifests go (default: a temporary directory, deleted after).

    Returns:
        One dict per method and size: ``rows``, ``shards``, ``method``, ``kind`` (``measured`` or
        ``extrapolated``), ``seconds``, ``peak_rss_mb``, ``rss_before_mb`` (after imports, before merging),
        ``manifest_mb`` and, where measured, ``ru_maxrss_mb`` and ``same_bytes`` (the output equals the other
        method's).
    """
    with tempfile.TemporaryDirectory(dir=tmp) as scratch:
        measured = [row for rows in rows_list for row in _measure_size(Path(scratch), rows, shards, methods)]
    return measured + extrapolated(measured, EXTRAPOLATE_TO)


def _measure_size(scratch: Path, rows: int, shards: int, methods: Sequence[str]) -> list[dict[str, Any]]:
    """Both merges of one synthetic corpus of ``rows`` rows."""
    meta = scratch / f"rows-{rows}" / "meta"
    # written by another process, so that this one stays small: its children's ru_maxrss starts at its size
    subprocess.run([sys.executable, "-c", _WRITER, str(meta), str(rows), str(shards)], check=True)
    results = []
    for method in methods:
        dest = meta.parent / f"manifest-{method}.parquet"
        run = merge_in_subprocess(method, meta, dest)
        results.append(
            {
                "rows": rows,
                "shards": shards,
                "method": method,
                "kind": "measured",
                "seconds": round(run["seconds"], 2),
                "peak_rss_mb": round(run["peak_kb"] / 1024),
                "ru_maxrss_mb": round(run["maxrss_kb"] / 1024),
                "rss_before_mb": round(run["before_kb"] / 1024),
                "manifest_mb": round(dest.stat().st_size / 2**20, 1),
                "sha256": run["sha256"],
            }
        )
        dest.unlink()
    same = len({r.pop("sha256") for r in results}) == 1
    return [dict(r, same_bytes=same) for r in results]


def extrapolated(measured: list[dict[str, Any]], targets: Sequence[int]) -> list[dict[str, Any]]:
    """Estimates at ``targets`` rows from the two largest measured sizes of each method.

    Time and file size are linear in rows. Memory is linear in rows for ``concat``; for ``stream`` it is
    linear in the rows held at once, at most one row group (:data:`MANIFEST_ROW_GROUP`).

    Args:
        measured: from :func:`measure`'s measured rows.
        targets: row counts to estimate.

    Returns:
        One dict per method and target, ``kind`` ``extrapolated``.
    """
    estimates = []
    for method in dict.fromkeys(r["method"] for r in measured):
        points = sorted((r for r in measured if r["method"] == method), key=lambda r: r["rows"])[-2:]
        if len(points) < 2 or points[0]["rows"] == points[1]["rows"]:
            continue
        held = (lambda n: min(n, MANIFEST_ROW_GROUP)) if method == "stream" else (lambda n: n)
        for rows in targets:
            estimate = {"rows": rows, "shards": points[1]["shards"], "method": method, "kind": "extrapolated"}
            estimate["seconds"] = round(_line(points, "rows", "seconds", rows), 1)
            estimate["manifest_mb"] = round(_line(points, "rows", "manifest_mb", rows))
            held_points = [dict(p, held=held(p["rows"])) for p in points]
            estimate["peak_rss_mb"] = round(_line(held_points, "held", "peak_rss_mb", held(rows)))
            estimate["rss_before_mb"] = points[1]["rss_before_mb"]
            estimates.append(estimate)
    return estimates


def _line(points: list[dict[str, Any]], x: str, y: str, at: float) -> float:
    """The straight line through two points, evaluated at ``at``."""
    (x0, y0), (x1, y1) = ((p[x], p[y]) for p in points)
    return y0 + (y1 - y0) * (at - x0) / (x1 - x0) if x1 != x0 else y1


def main() -> None:
    """Print the table (and the rows as JSON lines with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--tmp", type=Path, default=None, help="Scratch directory (needs ~1 GB per 1M rows).")
    parser.add_argument("--json", action="store_true", help="Also print each row as JSON.")
    args = parser.parse_args()
    if any(rows < 1 for rows in args.rows) or args.shards < 1:
        parser.error("--rows and --shards must be at least 1")
    line = "{:>11} {:<7} {:<13} {:>8} {:>12} {:>10} {:>8}"
    print(line.format("rows", "method", "kind", "seconds", "peak RSS MB", "before MB", "file MB"))
    for row in measure(args.rows, args.shards, args.methods, args.tmp):
        cells = [f"{row['rows']:,}", row["method"], row["kind"], row["seconds"], row["peak_rss_mb"]]
        differ = "" if row.get("same_bytes", True) else "  BYTES DIFFER"
        print(line.format(*cells, row["rss_before_mb"], row["manifest_mb"]) + differ)
        if args.json:
            print(json.dumps(row))


if __name__ == "__main__":
    main()
