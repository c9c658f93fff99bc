"""Time retrieval metrics: ours (chunked counting) against the common full-sort evaluation.

    python -m gadms.bench.metrics [--queries 6156] [--gallery 3074] [--large 100000] [--dim 512]

The common evaluation of text-based person retrieval code argsorts every row
of the similarity matrix, gathers a query-by-gallery match matrix, takes
cumulative sums for Rank-k and AP, and loops over queries for mINP. Ours
(:func:`gadms.eval.retrieval_metrics`) counts, per positive, the gallery items
scoring at least as high, a chunk of rows at a time. Both run on the same
seeded features with identity structure, at CUHK-PEDES test scale by default;
then :func:`gadms.eval.retrieval_metrics_from_features` runs at ``--large``
queries x gallery, a size whose similarity matrix would not fit in memory.

Each measurement runs in a fresh process; its peak extra memory is the peak
RSS once the inputs are built, minus the RSS then (torch allocations are
invisible to tracemalloc).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import multiprocessing
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch
import torch.nn.functional as F

from gadms.eval import retrieval_metrics, retrieval_metrics_from_features

KS = (1, 5, 10)
METRICS = tuple(f"R{k}" for k in KS) + ("mAP", "mINP")


def common_retrieval_metrics(
    similarity: torch.Tensor, query_ids: torch.Tensor, gallery_ids: torch.Tensor
) -> dict[str, float]:
    """The evaluation most code in this field uses: full argsort, a match matrix, cumulative sums, a loop for mINP.

    Args:
        similarity: (num_queries, num_gallery); every query must have a positive.
        query_ids: (num_queries,) identities.
        gallery_ids: (num_gallery,) identities.

    Returns:
        ``{"R1", "R5", "R10", "mAP", "mINP"}`` in percent.
    """
    order = torch.argsort(similarity, dim=1, descending=True)
    matches = gallery_ids[order] == query_ids[:, None]
    found = matches.cumsum(dim=1)  # positives within the top r, for every r
    num_positives = found[:, -1]
    precision = found / torch.arange(1, similarity.shape[1] + 1)
    average_precision = (precision * matches).sum(dim=1) / num_positives
    inverse_negative_penalty = []
    for row, count in zip(matches, num_positives):
        last = int(row.nonzero().max()) + 1
        inverse_negative_penalty.append(float(count) / last)
    metrics = {f"R{k}": 100 * float((found[:, k - 1] > 0).float().mean()) for k in KS}
    metrics["mAP"] = 100 * float(average_precision.mean())
    metrics["mINP"] = 100 * sum(inverse_negative_penalty) / len(inverse_negative_penalty)
    return metrics


def synthetic_features(
    num_queries: int, num_gallery: int, dim: int, seed: int = 0, noise: float = 2.5
) -> tuple[torch.Tensor, ...]:
    """Seeded features with identity structure, like CUHK-PEDES.

    About 3 images per identity; captions of images are the queries.

    Args:
        num_queries: captions; each describes a random gallery image.
        num_gallery: images; identities drawn at random and sorted, so groups of about 3.
        dim: feature size.
        seed: generator seed.
        noise: per-dimension noise around each identity's unit-scale centre.

    Returns:
        query features, gallery features, query ids, gallery ids.
    """
    g = torch.Generator().manual_seed(seed)
    num_identities = max(1, num_gallery // 3)
    gallery_ids = torch.randint(num_identities, (num_gallery,), generator=g).sort().values
    query_ids = gallery_ids[torch.randint(num_gallery, (num_queries,), generator=g)]
    centres = torch.randn(num_identities, dim, generator=g)
    gallery = centres[gallery_ids] + noise * torch.randn(num_gallery, dim, generator=g)
    queries = centres[query_ids] + noise * torch.randn(num_queries, dim, generator=g)
    return queries, gallery, query_ids, gallery_ids


def _inputs(kind: str, num_queries: int, num_gallery: int, dim: int) -> tuple[torch.Tensor, ...]:
    """Features and ids for "features"; otherwise the cosine similarity matrix and ids."""
    queries, gallery, query_ids, gallery_ids = synthetic_features(num_queries, num_gallery, dim)
    if kind == "features":
        return queries, gallery, query_ids, gallery_ids
    return F.normalize(queries, dim=1) @ F.normalize(gallery, dim=1).T, query_ids, gallery_ids


def _run(kind: str, inputs: tuple[Any, ...], chunk: int) -> dict[str, float]:
    """One evaluation with the implementation ``kind`` names."""
    if kind == "common":
        return common_retrieval_metrics(*inputs)
    if kind == "ours":
        return retrieval_metrics(*inputs, ks=KS, chunk=chunk)  # type: ignore[misc]
    return retrieval_metrics_from_features(*inputs, ks=KS, chunk=chunk)  # type: ignore[misc]


def _measure(kind: str, num_queries: int, num_gallery: int, dim: int, chunk: int, repeats: int) -> dict:
    """In a fresh process: build the inputs, reset the peak RSS, run ``kind``; seconds (best), metrics, memory."""
    _run(kind, _inputs(kind, 50, 40, 8), chunk=7)  # warm-up: the code pages it loads would count as RSS
    inputs = _inputs(kind, num_queries, num_gallery, dim)
    reset = _reset_peak_rss()
    before = _rss_mb()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        metrics = _run(kind, inputs, chunk)
        seconds.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "seconds": min(seconds),
        "metrics": metrics,
        "peak_mb": peak,
        "extra_mb": peak - before if reset else float("nan"),
    }


def _reset_peak_rss() -> bool:
    """Return freed heap to the OS (glibc) and zero the peak-RSS mark (Linux >= 4.0), so the peak counts what
    follows.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_mb() -> float:
    """This process's resident memory now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def measure(kind: str, num_queries: int, num_gallery: int, dim: int, chunk: int = 4096, repeats: int = 1) -> dict:
    """Run one measurement in a fresh process (so peak memory is its own).

    Args:
        kind: "common" or "ours" on a similarity matrix, or "features" for the chunked feature path.
        num_queries: queries.
        num_gallery: gallery images.
        dim: feature size.
        chunk: query rows per chunk for ours.
        repeats: runs; the best time is kept.

    Returns:
        ``{"seconds", "metrics", "peak_mb", "extra_mb"}``.
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_measure, kind, num_queries, num_gallery, dim, chunk, repeats).result()


def main(argv: list[str] | None = None) -> None:
    """Print the comparison table, then the large feature-path run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--queries", type=int, default=6156, help="queries of the comparison (CUHK-PEDES test: 6,156 captions)"
    )
    parser.add_argument(
        "--gallery", type=int, default=3074, help="gallery images of the comparison (CUHK-PEDES test: 3,074)"
    )
    parser.add_argument(
        "--large", type=int, default=100_000, help="queries = gallery images of the feature-path run; 0 skips it"
    )
    parser.add_argument("--dim", type=int, default=512, help="feature size")
    parser.add_argument("--chunk", type=int, default=4096, help="query rows per chunk")
    parser.add_argument("--repeats", type=int, default=5, help="runs per comparison measurement; the best time is kept")
    args = parser.parse_args(argv)

    matrix_mb = args.queries * args.gallery * 4 / 2**20
    print(
        f"{args.queries:,} queries x {args.gallery:,} gallery, {args.dim}-d features; similarity matrix "
        f"{matrix_mb:.1f} MB (float32)"
    )
    print(
        f"best of {args.repeats}; torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f} "
        "before (other work competing for the cores slows both)\n"
    )
    runs = {
        kind: measure(kind, args.queries, args.gallery, args.dim, args.chunk, args.repeats)
        for kind in ("common", "ours")
    }
    print("| implementation | seconds | peak extra RSS (MB) | x matrix size |")
    print("|---|---:|---:|---:|")
    names = {"common": "common: argsort, match matrix, mINP loop", "ours": "retrieval_metrics (chunked counting)"}
    for kind, run in runs.items():
        print(f"| {names[kind]} | {run['seconds']:.3f} | {run['extra_mb']:.1f} | {run['extra_mb'] / matrix_mb:.2f} |")
    difference = max(abs(runs["common"]["metrics"][m] - runs["ours"]["metrics"][m]) for m in METRICS)
    print(
        f"\nspeed-up {runs['common']['seconds'] / runs['ours']['seconds']:.1f}x; max |difference| over "
        f"{', '.join(METRICS)}: {difference:.2e}"
    )
    print("metrics: " + "  ".join(f"{m} {runs['ours']['metrics'][m]:.2f}" for m in METRICS))

    if args.large:
        print(
            f"\n{args.large:,} queries x {args.large:,} gallery via retrieval_metrics_from_features "
            f"(the float32 matrix would be {args.large**2 * 4 / 1e9:.1f} GB)"
        )
        run = measure("features", args.large, args.large, args.dim, args.chunk)
        print(
            "| seconds | peak RSS (MB) | peak extra RSS (MB), of which one chunk of similarities is "
            f"{min(args.chunk, args.large) * args.large * 4 / 2**20:.0f} |"
        )
        print("|---:|---:|---:|")
        print(f"| {run['seconds']:.1f} | {run['peak_mb']:.0f} | {run['extra_mb']:.0f} |")
        print("metrics: " + "  ".join(f"{m} {run['metrics'][m]:.2f}" for m in METRICS))


if __name__ == "__main__":
    main()
