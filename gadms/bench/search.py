"""Search throughput and latency: index build, text encoding, exact and approximate top-10 at 10k..1M rows.

    python -m gadms.bench.search [--sizes 10000 100000 1000000] [--queries 200] [--skip-vit]

1. Index build: images/s of ``build_index`` on synthetic person images with
   the tiny model and with ViT-B-16 shapes (random weights, nothing downloaded).
2. Text encoding: ms per single query for both models.
3. Ranking: p50/p95 ms per single top-10 query over N random 512-d unit
   embeddings, exact (blocked matrix products) and approximate (the FAISS
   IVF-Flat index ``gadms index`` builds, ``nprobe`` tuned as it tunes it),
   and the approximate index's recall@10 against exact on held-out queries.
   Two kinds of random gallery: ``clustered`` (person-like: 8 attributes of
   12 random values each, an identity is one value per attribute plus its own
   random offset, an image is its identity plus noise, about 4 images per
   identity; a query is another noisy view of an identity) and ``isotropic`` (pure
   Gaussian, the worst case for any index: no structure to exploit; sizes up
   to 100k only, since its tuned ``nprobe`` approaches a full scan).
   "incl. text" adds the tiny model's p50 text encoding time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gadms.config import ModelConfig, SynthConfig, params_from_dict
from gadms.model.retrieval import Architecture, PersonRetrievalModel, save_model
from gadms.search.build import build_index
from gadms.search.model import load_search_model
from gadms.search.query import embed_queries
from gadms.search.ranking import (
    exact_top_k,
    probe_queries_from,
    recall_at_k,
    train_approximate,
    tune_nprobe,
)
from gadms.search.sources import folder_gallery
from gadms.synth.benchmark import write_benchmark

DIM = 512
K = 10


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def random_gallery(kind: str, count: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(gallery (count, 512), queries (queries, 512))`` float32 unit rows of the given kind."""
    rng = np.random.default_rng(seed)
    if kind == "isotropic":
        return _unit(rng.standard_normal((count, DIM), dtype=np.float32)), _unit(
            rng.standard_normal((queries, DIM), dtype=np.float32)
        )
    # person-like structure: 8 attributes of 12 values each (as in the synthetic world), an identity is one value per
    # attribute plus its own offset, an image is its identity plus noise; about 4 images per identity
    attributes, values = 8, 12
    vocab = _unit(rng.standard_normal((attributes * values, DIM), dtype=np.float32)).reshape(attributes, values, DIM)
    identities = max(count // 4, 1)
    centres = np.empty((identities, DIM), dtype=np.float32)
    for start in range(0, identities, 100_000):  # bounded temporary memory
        stop = min(start + 100_000, identities)
        picked = vocab[np.arange(attributes), rng.integers(0, values, (stop - start, attributes))].sum(1) / np.sqrt(
            attributes
        )
        centres[start:stop] = _unit(picked + 0.7 * _unit(rng.standard_normal((stop - start, DIM), dtype=np.float32)))
    gallery = np.empty((count, DIM), dtype=np.float32)
    for start in range(0, count, 100_000):
        stop = min(start + 100_000, count)
        noise = 0.6 * _unit(rng.standard_normal((stop - start, DIM), dtype=np.float32))
        gallery[start:stop] = _unit(centres[rng.integers(0, identities, stop - start)] + noise)
    noise = 0.6 * _unit(rng.standard_normal((queries, DIM), dtype=np.float32))
    return gallery, _unit(centres[rng.integers(0, identities, queries)] + noise)


def _latency_ms(search, queries: np.ndarray) -> tuple[float, float]:
    """p50 and p95 milliseconds of ``search(one query)`` over the queries."""
    times = []
    for q in queries:
        started = time.perf_counter()
        search(q[None])
        times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def ranking_rows(kind: str, count: int, queries: int, text_ms: float) -> list[str]:
    """Table rows (exact, approximate) for one gallery kind and size."""
    gallery, held_out = random_gallery(kind, count, queries)
    exact_queries = held_out[: min(queries, 50 if count >= 1_000_000 else queries)]
    ex50, ex95 = _latency_ms(lambda q: exact_top_k(gallery, q, K), exact_queries)
    started = time.perf_counter()
    approx = tune_nprobe(train_approximate(gallery), gallery, probe_queries_from(gallery))
    build_s = time.perf_counter() - started
    ap50, ap95 = _latency_ms(lambda q: approx.search(q, K), held_out)
    recall = recall_at_k(approx.search(held_out, K)[1], exact_top_k(gallery, held_out, K)[1])
    head = f"{kind:<9} {count:>9,}"
    return [
        f"{head} {'exact':<28} {ex50:>8.2f} {ex95:>8.2f} {ex50 + text_ms:>10.2f} {'1.000':>10}",
        f"{head} {f'IVF {approx.nlist} cells, nprobe {approx.nprobe}':<28} {ap50:>8.2f} {ap95:>8.2f} "
        f"{ap50 + text_ms:>10.2f} "
        f"{recall:>10.3f}   (build+tune {build_s:.0f}s, probe recall {approx.recall:.3f})",
    ]


def build_rate(backbone: str, images: Path, work: Path) -> tuple[float, float]:
    """``(images/s of gadms index, p50 ms of one text query)`` for a random-weight model of ``backbone``."""
    height, width = (384, 128) if backbone == "ViT-B-16" else (128, 64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = PersonRetrievalModel(
            Architecture.from_config(ModelConfig(backbone=backbone, image_height=height, image_width=width))
        )
    searcher = load_search_model(
        str(save_model(model, work / backbone / "model.safetensors")), params_from_dict({}), "auto"
    )
    report = build_index(work / f"index-{backbone}", folder_gallery(images), searcher, progress=False)
    embed_queries(searcher, ["warm up"])
    times = []
    for i in range(20):
        started = time.perf_counter()
        embed_queries(searcher, [f"a woman in a beige puffer coat carrying a bag number {i}"])
        times.append((time.perf_counter() - started) * 1000)
    return report.added / report.seconds, float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="gallery sizes")
    parser.add_argument("--queries", type=int, default=200, help="held-out queries per size")
    parser.add_argument("--identities", type=int, default=60, help="synthetic identities for the build benchmark")
    parser.add_argument("--skip-vit", action="store_true", help="leave out the ViT-B-16 build and text timing")
    args = parser.parse_args(argv)
    print(f"torch threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_benchmark(work / "bench", args.identities, 0, SynthConfig(), progress=False)
        images = work / "bench" / "CUHK-PEDES" / "imgs"
        count = sum(1 for _ in images.rglob("*.jpg"))
        print(f"\nindex build over {count} synthetic images (decode + encode + write)")
        text_ms = {}
        for backbone in ["tiny"] + ([] if args.skip_vit else ["ViT-B-16"]):
            rate, text_ms[backbone] = build_rate(backbone, images, work)
            print(f"  {backbone:<9} {rate:8.1f} images/s   text query encoding p50 {text_ms[backbone]:.2f} ms")
    print(f"\ntop-{K} latency per single query (ms); 'incl. text' adds the tiny model's text encoding")
    print(f"{'gallery':<9} {'rows':>9} {'method':<28} {'p50':>8} {'p95':>8} {'incl. text':>10} {'recall@10':>10}")
    for kind in ("clustered", "isotropic"):
        for size in args.sizes:
            if kind == "isotropic" and size > 100_000:
                continue
            for row in ranking_rows(kind, size, args.queries, text_ms["tiny"]):
                print(row, flush=True)


if __name__ == "__main__":
    main()
