"""What each corpus-sized structure costs one process at paper scale: measured where it fits, extrapolated beyond.

    python -m gadms.bench.scale [--quick] [--json]

One table for the structures that once grew with the corpus or the shard
count (issue 21): the ``previous_epoch`` score memory (private RAM per rank,
what a checkpoint adds), training start-up against a corpus index on a local
S3 server, planning one epoch's share of every rank, the quality gate's peak
RSS and throughput, and the final manifest merge's peak RSS. Each figure
comes from its own module (:mod:`gadms.bench.scale_scores`,
:mod:`~gadms.bench.scale_shards`, :mod:`~gadms.bench.scale_gate`,
:mod:`~gadms.bench.scale_manifest`), run on synthetic ids, shard lists,
manifests and captions (one tiny reused JPEG for the gate). Sizes too large
for this machine are fitted with a straight line through the measured ones
and marked ``extrapolated``; the rest say ``measured``. The full run takes
about 10 minutes on 2 cores; ``--quick`` runs small sizes only (a smoke test).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

CAPTION_TARGETS = (1_000_000, 5_000_000, 15_000_000)
SHARD_TARGETS = (7_500, 75_000)


@dataclass(frozen=True)
class Sizes:
    """What to measure: the rest of :data:`CAPTION_TARGETS` / :data:`SHARD_TARGETS` is extrapolated."""

    score_captions: tuple[int, ...] = (100_000, 1_000_000)
    gate_captions: tuple[int, ...] = (100_000, 1_000_000)
    manifest_rows: tuple[int, ...] = (100_000, 1_000_000)
    manifest_shards: int = 100
    planning_shards: tuple[int, ...] = SHARD_TARGETS
    startup_shards: tuple[int, ...] = (2_000, 10_000)
    extrapolate: bool = True  # small sizes (below the gate's batch, say) say nothing about paper scale


QUICK = Sizes((2_000, 20_000), (2_000, 10_000), (2_000, 20_000), 10, (500, 5_000), (200, 1_000), extrapolate=False)


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    structure: str
    size: str
    figure: str
    value: float
    unit: str
    kind: str  # measured | extrapolated


def line_at(points: Sequence[tuple[float, float]], x: float) -> float:
    """The straight line through the first and last of ``points`` (sorted by x), evaluated at ``x``."""
    (x0, y0), (x1, y1) = sorted(points)[0], sorted(points)[-1]
    return y1 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def _rows_over(
    structure: str,
    unit_name: str,
    measured: list[tuple[int, dict[str, float]]],
    figures: dict[str, tuple[str, Callable[[dict[str, Any]], float]]],
    targets: tuple[int, ...],
    extrapolate: bool = True,
) -> list[Row]:
    """Measured rows, then each target not measured fitted from the measured ones."""
    rows = []
    for size, result in measured:
        for figure, (unit, value) in figures.items():
            rows.append(Row(structure, f"{size:,} {unit_name}", figure, value(result), unit, "measured"))
    done = {size for size, _ in measured}
    for target in (t for t in targets if t not in done and len(done) >= 2 and extrapolate):
        for figure, (unit, value) in figures.items():
            points = [(size, value(result)) for size, result in measured]
            # a rate stays what the largest run gave; totals follow the line through the measured sizes
            estimate = max(points)[1] if unit.endswith("/s") else line_at(points, target)
            rows.append(Row(structure, f"{target:,} {unit_name}", figure, estimate, unit, "extrapolated"))
    order = list(figures)
    return sorted(rows, key=lambda r: (int(r.size.split()[0].replace(",", "")), order.index(r.figure)))


def score_memory_rows(sizes: Sizes) -> list[Row]:
    """Private RAM per rank and checkpoint addition of the shared score store."""
    from gadms.bench.scale_scores import measure

    measured = [(r["captions"], r) for r in measure(list(sizes.score_captions))]
    figures = {
        "private RAM per rank (RssAnon growth)": ("MB", lambda r: r["rss_anon_mb"]),
        "shared store file (page cache, once per node)": ("MB", lambda r: r["file_mb"]),
        "checkpoint adds (one copy, rank 0)": ("MB", lambda r: r["checkpoint_mb"]),
    }
    return _rows_over(
        "score memory (previous_epoch)", "captions", measured, figures, CAPTION_TARGETS, sizes.extrapolate
    )


def planning_rows(sizes: Sizes) -> list[Row]:
    """Seconds a rank spends planning one epoch of an 8-GPU run."""
    from gadms.bench.scale_shards import measure_planning

    measured = [(r["shards"], r) for r in measure_planning(list(sizes.planning_shards), linear_up_to=0)]
    figures = {"planning one epoch, slowest rank": ("s", lambda r: r["plan_s_per_rank_max"])}
    return _rows_over("epoch planning", "shards", measured, figures, SHARD_TARGETS, sizes.extrapolate)


def startup_rows(sizes: Sizes) -> list[Row]:
    """Start-up against an indexed corpus on a local S3 server (moto on 127.0.0.1)."""
    from gadms.bench.scale_shards import measure_startup

    measured = [(count, measure_startup(count, fallback_count=20)) for count in sizes.startup_shards]
    figures = {
        "start-up: list + read and check the index": ("s", lambda r: r["index_s"]),
        "of which reading and checking the index": ("s", lambda r: r["index_read_check_s"]),
    }
    return _rows_over("start-up (local S3)", "shards", measured, figures, SHARD_TARGETS, sizes.extrapolate)


def gate_rows(sizes: Sizes) -> list[Row]:
    """Peak RSS and throughput of the batched quality gate."""
    from gadms.bench.scale_gate import measure

    measured = [(r["captions"], r) for r in measure(list(sizes.gate_captions))]
    figures = {
        "peak RSS": ("MB", lambda r: r["peak_rss_mb"]),
        "throughput": ("captions/s", lambda r: r["captions_per_s"]),
    }
    return _rows_over("quality gate", "captions", measured, figures, CAPTION_TARGETS, sizes.extrapolate)


def manifest_rows(sizes: Sizes) -> list[Row]:
    """Peak RSS and seconds of the streamed manifest merge (its own fit: memory follows one row group)."""
    from gadms.bench.scale_manifest import measure

    results = measure(list(sizes.manifest_rows), sizes.manifest_shards, methods=("stream",))
    rows = []
    for r in (r for r in results if sizes.extrapolate or r["kind"] == "measured"):
        kind = r["kind"]
        size = f"{r['rows']:,} rows"
        rows.append(Row("manifest merge", size, "peak RSS", r["peak_rss_mb"], "MB", kind))
        rows.append(Row("manifest merge", size, "time", r["seconds"], "s", kind))
    return rows


SECTIONS: dict[str, Callable[[Sizes], list[Row]]] = {
    "scores": score_memory_rows,
    "planning": planning_rows,
    "startup": startup_rows,
    "gate": gate_rows,
    "manifest": manifest_rows,
}


def markdown(rows: list[Row]) -> str:
    """The rows as a markdown table."""
    lines = ["| structure | size | figure | value | | |", "|---|---:|---|---:|---|---|"]
    for r in rows:
        value = f"{r.value:,.0f}" if abs(r.value) >= 100 else f"{r.value:.3g}"
        lines.append(f"| {r.structure} | {r.size} | {r.figure} | {value} | {r.unit} | {r.kind} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the sections asked for and print the table (and JSON lines with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes only (about a minute): a smoke test")
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), help="run these sections only")
    parser.add_argument("--json", action="store_true", help="also print every row as a JSON line")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    rows: list[Row] = []
    for name, section in SECTIONS.items():
        if args.only is None or name in args.only:
            print(f"measuring {name} ...", flush=True)
            rows += section(sizes)
    print(markdown(rows))
    if args.json:
        for row in rows:
            print(json.dumps(asdict(row)))


if __name__ == "__main__":
    main()
