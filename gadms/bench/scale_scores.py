"""What the ``previous_epoch`` score memory costs per rank as the corpus grows.

    python -m gadms.bench.scale_scores [--captions 100000 1000000] [--dict-captions 10000 100000]
                                       [--targets 1000000 5000000 15000000] [--context-length 77]

For each caption count, a fresh process creates the node's score store in a
temporary directory, writes one row for every caption (synthetic ids and
scores, no model), and reports the growth of its private memory (``RssAnon``
of ``/proc/self/status``: what each rank would pay; the store's pages are
shared page cache, ``RssFile``), the store file's size, what a checkpoint
adds (the copy written beside it, plus its record in ``checkpoint.pt``) and
the time to write that copy. ``--dict-captions`` measures the former
implementation (a dict of float16 rows on every rank, pickled into every
checkpoint) the same way. Sizes in ``--targets`` that were not measured are
fitted linearly from the measured ones and marked ``extrapolated``.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gadms.model.score_memory import ScoreMemory, create_store

BATCH = 4096  # captions per store call (a large global batch)
FIELDS = ("rss_anon_mb", "rss_file_mb", "file_mb", "checkpoint_mb", "checkpoint_s", "write_us_per_caption")


def _status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (``RssAnon``, ``RssFile``) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _batches(captions: int, width: int):
    """``(ids, scores)`` batches covering every caption once; buffers made up front so they cost no RSS later."""
    ids = torch.arange(BATCH)
    scores = torch.rand(BATCH, width, generator=torch.Generator().manual_seed(0))
    for start in range(0, captions, BATCH):
        n = min(BATCH, captions - start)
        yield ids[:n] + start, scores[:n]


def _store_child(captions: int, width: int, directory: Path) -> dict:
    """One process's figures for the memory-mapped store."""
    memory, path = ScoreMemory(0.85, width), directory / "store.bin"
    batches = list(_batches(min(captions, BATCH), width))  # warm the code paths before the baseline
    anon, file = _status_mb("RssAnon"), _status_mb("RssFile")
    started = time.perf_counter()
    create_store(path, captions, width)
    memory.open(path)
    for ids, scores in _batches(captions, width):
        memory.store(ids, scores)
    write_s = time.perf_counter() - started
    grown = _status_mb("RssAnon") - anon, _status_mb("RssFile") - file
    file_bytes = path.stat().st_size
    started = time.perf_counter()
    entry = memory.save_copy(directory / "checkpoint")
    record = io.BytesIO()
    torch.save({"score_memory": entry}, record)
    checkpoint_s = time.perf_counter() - started
    memory.remove()
    del batches
    return {
        "rss_anon_mb": grown[0],
        "rss_file_mb": grown[1],
        "file_mb": file_bytes / 2**20,
        "checkpoint_mb": (entry["bytes"] + record.tell()) / 2**20,
        "checkpoint_s": checkpoint_s,
        "write_us_per_caption": write_s / captions * 1e6,
    }


def _dict_child(captions: int, width: int, directory: Path) -> dict:
    """The former implementation: a dict of float16 rows per rank, its rows pickled into the checkpoint."""
    fresh: dict[int, torch.Tensor] = {}
    anon = _status_mb("RssAnon")
    started = time.perf_counter()
    for ids, scores in _batches(captions, width):
        for index, row in zip(ids.tolist(), scores.to(torch.float16)):  # the former ScoreMemory.store
            fresh[int(index)] = row.clone()
    write_s = time.perf_counter() - started
    grown = _status_mb("RssAnon") - anon
    started = time.perf_counter()
    keys = sorted(fresh)
    state = {"indices": torch.tensor(keys, dtype=torch.long), "scores": torch.stack([fresh[k] for k in keys])}
    torch.save({"score_memory": {"epoch": 1, "settled": state}}, directory / "checkpoint.pt")
    checkpoint_s = time.perf_counter() - started
    return {
        "rss_anon_mb": grown,
        "rss_file_mb": 0.0,
        "file_mb": 0.0,
        "checkpoint_mb": (directory / "checkpoint.pt").stat().st_size / 2**20,
        "checkpoint_s": checkpoint_s,
        "write_us_per_caption": write_s / captions * 1e6,
    }


def measure(captions_list: list[int], context_length: int = 77, kind: str = "store") -> list[dict]:
    """Figures of the score memory for each caption count, each measured in a fresh process.

    Args:
        captions_list: caption counts to measure.
        context_length: positions per score row.
        kind: ``store`` (the node's memory-mapped file) or ``dict`` (the former per-rank dict).

    Returns:
        One dict per count: ``kind``, ``captions``, ``extrapolated`` (False) and :data:`FIELDS`.
    """
    rows = []
    for captions in captions_list:
        with tempfile.TemporaryDirectory(prefix="gadms-scale-scores-") as directory:
            args = ["--child", kind, "--captions", str(captions), "--context-length", str(context_length)]
            done = subprocess.run(
                [sys.executable, "-m", "gadms.bench.scale_scores", *args, "--dir", directory],
                capture_output=True,
                text=True,
                check=True,
            )
            figures = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append({"kind": kind, "captions": captions, "extrapolated": False, **figures})
    return rows


def extrapolate(measured: list[dict], targets: list[int]) -> list[dict]:
    """Rows for the ``targets`` not measured: each figure fitted as ``a + b * captions`` over ``measured``.

    Args:
        measured: rows of one kind from :func:`measure` (at least two counts).
        targets: caption counts to report.

    Returns:
        ``measured`` with the fitted rows added (``extrapolated`` True), sorted by caption count.
    """
    counts = np.array([r["captions"] for r in measured], dtype=float)
    out = list(measured)
    for target in targets:
        if target in counts or len(set(counts)) < 2:
            continue
        fitted = {f: float(np.polyval(np.polyfit(counts, [r[f] for r in measured], 1), target)) for f in FIELDS}
        fitted["write_us_per_caption"] = float(np.mean([r["write_us_per_caption"] for r in measured]))  # per caption
        out.append({"kind": measured[0]["kind"], "captions": target, "extrapolated": True, **fitted})
    return sorted(out, key=lambda r: r["captions"])


def table(rows: list[dict]) -> str:
    """A markdown table of :func:`measure` / :func:`extrapolate` rows."""
    head = "| kind | captions | RssAnon growth MB | RssFile growth MB | store file MB | checkpoint adds MB |"
    head += " checkpoint s | write us/caption | |\n|---|---:|---:|---:|---:|---:|---:|---:|---|"
    lines = [head]
    for r in rows:
        figures = " | ".join(f"{r[f]:.3g}" if abs(r[f]) < 1000 else f"{r[f]:.0f}" for f in FIELDS)
        lines.append(f"| {r['kind']} | {r['captions']:,} | {figures} | {'extrapolated' if r['extrapolated'] else ''} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Measure, extrapolate and print the table (or, with ``--child``, one measurement as JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--captions", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dict-captions", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--targets", type=int, nargs="*", default=[1_000_000, 5_000_000, 15_000_000])
    parser.add_argument("--context-length", type=int, default=77)
    parser.add_argument("--child", choices=("store", "dict"), help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child = _store_child if args.child == "store" else _dict_child
        print(json.dumps(child(args.captions[0], args.context_length, args.dir)))
        return
    rows = extrapolate(measure(args.captions, args.context_length), args.targets)
    if args.dict_captions:
        rows += extrapolate(measure(args.dict_captions, args.context_length, "dict"), args.targets)
    print(table(rows))


if __name__ == "__main__":
    main()
