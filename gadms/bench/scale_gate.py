"""Peak memory and throughput of the caption quality gate as the corpus grows.

    python -m gadms.bench.scale_gate [--captions 100000 1000000] [--batch-captions 20000] [--tmp DIR]

For each size, :func:`measure` writes a synthetic corpus in the curated shard
format (two captions a sample, built from a vocabulary of people, colours and
garments; one tiny JPEG reused), runs ``run_quality_gate`` on it in a fresh
Python process and reports that process's peak resident set size (its
``VmHWM``) and captions per second of gate time (Great Expectations'
import is left out). The corpus fails realistically: 1.5% of the captions
talk about the scene (``no_background`` allows 1%, so it fails), 0.5% hedge
and 0.5% are copies of a few fixed captions (both within their tolerances).
A bounded gate's peak RSS is flat in the corpus size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from gadms.reproducible_writes import ShardWriter, jpeg_bytes, json_bytes

SAMPLES_PER_SHARD = 5000
CAPTIONS_PER_SAMPLE = 2
PEOPLE = ("man", "woman", "young man", "young woman", "girl", "boy", "gentleman", "lady", "pedestrian", "person")
COLOURS = ("black", "white", "gray", "red", "blue", "green", "yellow", "navy", "beige", "brown", "pink", "purple")
TOPS = ("t-shirt", "shirt", "hoodie", "jacket", "sweater", "coat", "blouse", "cardigan", "vest", "windbreaker")
BOTTOMS = ("jeans", "trousers", "shorts", "skirt", "pants", "leggings")
SHOES = ("sneakers", "boots", "sandals", "shoes", "loafers")
BAGS = ("backpack", "handbag", "shoulder bag", "tote bag", "messenger bag", "suitcase")
HAIR = ("short black", "long brown", "curly blonde", "short gray", "long black", "shoulder-length red")
ACTIONS = ("walking forward", "standing still", "looking at a phone", "holding a cup", "waiting", "turning left")
SCENE = " Tall buildings fill the background."
HEDGE = " The person seems to be in a hurry."
COPIES = tuple(f"A {p} in a black jacket and blue jeans." for p in PEOPLE[:5])


def synthetic_caption(rng: random.Random, index: int) -> str:
    """One caption: mostly clean and varied; every 200th a copy, some hedging or about the scene.

    Args:
        rng: the random source.
        index: the caption's number in the corpus (decides its defect).

    Returns:
        The caption.
    """
    if index % 200 == 7:
        return COPIES[index // 200 % len(COPIES)]
    pick = rng.choice
    text = (
        f"A {pick(PEOPLE)} with {pick(HAIR)} hair, {pick(ACTIONS)}, wearing a {pick(COLOURS)} {pick(TOPS)}, "
        f"{pick(COLOURS)} {pick(BOTTOMS)} and {pick(COLOURS)} {pick(SHOES)}, with a {pick(COLOURS)} {pick(BAGS)}."
    )
    if index % 200 in (11, 53, 97):
        return text + SCENE
    return text + HEDGE if index % 200 == 151 else text


def write_corpus(folder: Path, captions: int, seed: int = 0) -> Path:
    """A curated corpus of about ``captions`` captions (whole samples of two).

    Args:
        folder: where the shards go (created).
        captions: how many captions.
        seed: the random seed (same seed, same bytes).

    Returns:
        ``folder``.
    """
    rng = random.Random(seed)
    image = jpeg_bytes(np.full((16, 8, 3), 128, dtype=np.uint8), quality=80)
    samples = -(-captions // CAPTIONS_PER_SAMPLE)
    folder.mkdir(parents=True, exist_ok=True)
    for shard, start in enumerate(range(0, samples, SAMPLES_PER_SHARD)):
        with ShardWriter(folder / f"{shard:05d}.tar") as writer:
            for index in range(start, min(samples, start + SAMPLES_PER_SHARD)):
                texts = [synthetic_caption(rng, index * CAPTIONS_PER_SAMPLE + k) for k in range(CAPTIONS_PER_SAMPLE)]
                width = rng.randint(100, 220)
                meta = {"captions": texts, "crop_size": [width, round(width / rng.uniform(0.3, 0.6))]}
                writer.add(f"{index:09d}.jpg", image)
                writer.add(f"{index:09d}.json", json_bytes(meta))
    return folder


def _child(data_dir: Path, report_dir: Path, batch_captions: int) -> None:
    """Run the gate once (in the child process) and print its timing and verdict as JSON."""
    from gadms.config import ValidationConfig
    from gadms.validation import suite  # noqa: F401  (import Great Expectations before the clock starts)
    from gadms.validation.gate import run_quality_gate

    start = time.perf_counter()
    result = run_quality_gate(data_dir, ValidationConfig(batch_captions=batch_captions), report_dir)
    seconds = time.perf_counter() - start
    run = {"seconds": seconds, "captions": result.captions, "failed_checks": result.failed_checks}
    print(json.dumps(run | {"own_peak_mb": _own_peak_mb()}))


def _own_peak_mb() -> float | None:
    """This process's own peak RSS (``VmHWM``; ``ru_maxrss`` also keeps the parent's size at the fork)."""
    status = Path("/proc/self/status")
    found = re.search(r"VmHWM:\s+(\d+) kB", status.read_text()) if status.exists() else None
    return int(found.group(1)) / 1024 if found else None


def run_gate_process(data_dir: Path, report_dir: Path, batch_captions: int) -> dict[str, Any]:
    """Run the gate in a fresh Python process.

    Args:
        data_dir: the corpus.
        report_dir: the gate's report folder.
        batch_captions: ``validation.batch_captions``.

    Returns:
        The child's JSON line plus ``peak_rss_mb`` (its own ``VmHWM`` where /proc has it, else its ``ru_maxrss``).
    """
    command = [sys.executable, "-m", "gadms.bench.scale_gate", "--child", str(data_dir), str(report_dir)]
    command += ["--batch-captions", str(batch_captions)]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(command, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        lines = out.read().decode().strip().splitlines()
        if child.returncode != 0 or not lines:
            message = err.read().decode().strip().splitlines()
            raise RuntimeError(f"gate process failed ({child.returncode}): {message[-1] if message else ''}")
    run = json.loads(lines[-1])
    return run | {"peak_rss_mb": run.pop("own_peak_mb") or usage.ru_maxrss / 1024}


def measure(caption_counts: list[int], batch_captions: int = 20000, tmp: Path | None = None) -> list[dict]:
    """Peak RSS and throughput of the gate at each corpus size.

    Args:
        caption_counts: corpus sizes in captions.
        batch_captions: ``validation.batch_captions`` for the runs.
        tmp: scratch folder (default: the system's temporary directory).

    Returns:
        One dict per size: ``captions``, ``peak_rss_mb``, ``captions_per_s``, ``gate_s``,
        ``write_s`` and ``failed_checks``.
    """
    rows = []
    for count in caption_counts:
        with tempfile.TemporaryDirectory(dir=tmp, prefix="gadms-scale-gate-") as scratch:
            start = time.perf_counter()
            data = write_corpus(Path(scratch) / "corpus", count)
            written = time.perf_counter() - start
            run = run_gate_process(data, Path(scratch) / "report", batch_captions)
        rows.append(
            {
                "captions": run["captions"],
                "peak_rss_mb": round(run["peak_rss_mb"], 1),
                "captions_per_s": round(run["captions"] / run["seconds"]),
                "gate_s": round(run["seconds"], 1),
                "write_s": round(written, 1),
                "failed_checks": run["failed_checks"],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command line: print one line per corpus size."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--batch-captions", type=int, default=20000)
    parser.add_argument("--tmp", type=Path, default=None, help="scratch folder (default: system temp)")
    parser.add_argument("--child", nargs=2, type=Path, metavar=("DATA", "REPORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], args.child[1], args.batch_captions)
        return
    for row in measure(args.captions, args.batch_captions, args.tmp):
        print(
            f"{row['captions']:>9,} captions  peak RSS {row['peak_rss_mb']:7.1f} MB  {row['captions_per_s']:>7,} "
            f"captions/s  gate {row['gate_s']:.1f} s (corpus written in {row['write_s']:.1f} s)  "
            f"failed: {', '.join(row['failed_checks']) or 'none'}"
        )


if __name__ == "__main__":
    main()
