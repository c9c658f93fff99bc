"""Streaming input: loader throughput, peak memory of pre-training, and startup time.

    python -m gadms.bench.loader [--crops 5000] [--rss-gb 0.1 0.5] [--startup 10000] [--tmp DIR]

Writes curated corpora (tar shards + meta Parquet, real JPEG crops) under a
temporary directory and deletes them afterwards, then prints:

- images/s of the streaming loader (default params: 4 slots, 2,000-pair
  buffer) with 0, 1 and 2 workers, and of the in-memory loader (all crops read
  into a list first, as pre-training did before streaming);
- peak memory (PSS of the process and its loader workers) of
  ``gadms train pretrain`` on corpora of about 0.1 and 0.5 GB of large crops,
  up to a few steps in;
- seconds from launching ``gadms train pretrain`` to the end of its first
  step on a corpus of 10,000 crops, and how long reading that corpus into
  memory takes.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import DataLoader

from gadms.config import load_params
from gadms.data.pipeline import EpochSampler, PairDataset, image_transform
from gadms.data.shardplan import curated_index
from gadms.data.streaming import StreamingPairs
from gadms.model.backbone import tokenizer
from gadms.reproducible_writes import ShardWriter, json_bytes
from gadms.train.recipes import corpus_pairs


def write_crops(out: Path, count: int, size: tuple[int, int], noise: float, per_shard: int = 1000) -> int:
    """A curated corpus of ``count`` JPEG crops (2 captions each); returns its bytes on disk.

    Args:
        out: the corpus directory.
        count: crops.
        size: crop width, height.
        noise: amplitude of pixel noise over a coloured figure (larger: bigger JPEGs).
        per_shard: crops per shard.
    """
    rng = np.random.default_rng(0)
    (out / "meta").mkdir(parents=True, exist_ok=True)
    w, h = size
    for shard in range((count + per_shard - 1) // per_shard):
        keys, captions = [], []
        with ShardWriter(out / f"{shard:05d}.tar") as tar:
            for i in range(shard * per_shard, min(count, (shard + 1) * per_shard)):
                base = np.zeros((h, w, 3), np.float32) + rng.integers(0, 256, 3)
                base[h // 5 : 4 * h // 5, w // 4 : 3 * w // 4] = rng.integers(0, 256, 3)
                pixels = np.clip(base + rng.normal(0, noise, (h, w, 3)), 0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
                key, text = f"{i:08d}", [f"a person in outfit {i % 97}", f"someone with bag {i % 13}"]
                tar.add(f"{key}.jpg", buf.getvalue())
                tar.add(f"{key}.json", json_bytes({"captions": text}))
                keys.append(key)
                captions.append(text)
        pq.write_table(pa.table({"key": keys, "captions": captions}), out / "meta" / f"{shard:05d}.parquet")
    return sum(p.stat().st_size for p in out.glob("*.tar"))


def _rate(loader, batches: int) -> float:
    """Images/s over ``batches`` batches after the first (which starts the workers)."""
    it = iter(loader)
    next(it)
    started, count = time.perf_counter(), 0
    for _ in range(batches):
        count += len(next(it)[0])
    return count / (time.perf_counter() - started)


def loader_rates(corpus: Path, batch: int, batches: int) -> dict[str, float]:
    """Images/s of the streaming loader (0, 1, 2 workers) and of the in-memory one (0, 2 workers)."""
    params = load_params(None, [])
    m = params.model
    transform, tok = image_transform(m.image_height, m.image_width, params.augment), tokenizer(m.context_length)
    stream = StreamingPairs(curated_index(corpus), transform, tok, params.seed, params.train.stream)
    rates = {}
    for workers in (0, 1, 2):
        stream.plan(0, 0, 1, batch, batches + 1)
        rates[f"streaming, {workers} worker(s)"] = _rate(
            DataLoader(stream, batch_size=None, num_workers=workers), batches
        )
    started = time.perf_counter()
    dataset = PairDataset(corpus_pairs("curated", corpus), transform, tok, seed=params.seed)
    rates["in-memory: reading the corpus first, s"] = time.perf_counter() - started
    for workers in (0, 2):
        loader = DataLoader(dataset, batch_size=batch, sampler=EpochSampler(len(dataset)), num_workers=workers)
        rates[f"in-memory, {workers} worker(s)"] = _rate(loader, batches)
    return rates


def _tree_pss(process: psutil.Process) -> int:
    """Proportional set size of a process and its children (shared pages counted once overall)."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def pretrain_probe(corpus: Path, out: Path, steps: int, timeout: float = 600) -> tuple[float, float]:
    """Run ``gadms train pretrain`` until ``steps`` optimiser steps are checkpointed.

    Returns:
        ``(seconds to the end of the first step, peak PSS in MB)``.
    """
    cmd = [
        sys.executable,
        "-m",
        "gadms",
        "train",
        "pretrain",
        "--data",
        str(corpus),
        "--format",
        "curated",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--set",
        "train.checkpoint_every_steps=1",
        "--set",
        "train.epochs=1",
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "TQDM_DISABLE": "1"}
    )
    ps, peak, first = psutil.Process(proc.pid), 0, None
    checkpoint = out / "checkpoint.pt"
    try:
        while proc.poll() is None and time.perf_counter() - started < timeout:
            peak = max(peak, _tree_pss(ps))
            if checkpoint.is_file():
                first = first or time.perf_counter() - started
                state = torch.load(checkpoint, map_location="cpu", weights_only=True)
                if state.get("batch") and state["batch"] >= steps:
                    break
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(30)
    if first is None:
        raise RuntimeError(f"gadms train pretrain on {corpus} made no step (exit {proc.returncode})")
    return first, peak / 2**20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=int, default=5000, help="crops of the throughput corpus")
    parser.add_argument("--rss-gb", type=float, nargs="*", default=[0.1, 0.5], help="sizes of the memory corpora, GB")
    parser.add_argument("--startup", type=int, default=10000, help="crops of the startup corpus")
    parser.add_argument("--steps", type=int, default=5, help="steps of each memory probe")
    parser.add_argument("--tmp", type=Path, default=None, help="where to write the corpora (deleted afterwards)")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="gadms-bench-loader-", dir=args.tmp))
    try:
        size = write_crops(tmp / "rate", args.crops, (64, 128), 12.0)
        print(
            f"loader throughput, {args.crops} crops ({size / 2**20:.0f} MB), batch 32, "
            f"{torch.get_num_threads()} threads"
        )
        for label, value in loader_rates(tmp / "rate", 32, 40).items():
            print(f"  {label:<42} {value:8.1f}" + ("" if label.endswith(", s") else " images/s"))
        shutil.rmtree(tmp / "rate")
        print("gadms train pretrain (tiny, default params, 1 loader worker): peak PSS of the process and its workers")
        for gb in args.rss_gb:
            crops = int(gb * 2**30 / 75_000)  # 192x384 noisy crops are about 75 KB
            size = write_crops(tmp / "rss", crops, (192, 384), 40.0)
            first, peak = pretrain_probe(tmp / "rss", tmp / "rss-run", args.steps)
            print(
                f"  corpus {size / 2**30:.2f} GB ({crops} crops): peak {peak:7.0f} MB over the first {args.steps} steps"
            )
            shutil.rmtree(tmp / "rss")
            shutil.rmtree(tmp / "rss-run")
        write_crops(tmp / "start", args.startup, (64, 128), 12.0)
        first, _ = pretrain_probe(tmp / "start", tmp / "start-run", 1)
        started = time.perf_counter()
        corpus_pairs("curated", tmp / "start")
        read = time.perf_counter() - started
        print(
            f"startup on {args.startup} crops: {first:.1f} s from launch to the end of the first step "
            f"(reading the corpus into memory alone: {read:.1f} s)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
