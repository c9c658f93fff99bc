"""A GPU check ready to run: AMP gradients, NCCL DDP, ViT-B/16 step throughput and peak memory.

    python -m gadms.bench.gpu [--batch 64] [--params params.full.yaml]
    python -m gadms.bench.gpu --dry-run-cpu

The model is params.full.yaml's (CLIP ViT-B/16 at 384x128, the full recipe's masking, losses and Adam),
built by gadms with random weights (nothing is downloaded). Four parts, each within its own time budget
(about 6 minutes in all), then one table:

  (a) one GA-DMS step's gradients under the training loop's AMP (float16 autocast + GradScaler) against
      IEEE fp32 (no TF32) on the same batch, weights and masks: per parameter ||g_amp - g_fp32|| / ||g_fp32||,
      its maximum (and which parameter) and median, the same over all parameters together, the loss's
      relative difference and the largest change of a GASS token score;
  (b) a few GA-DMS steps under DDP over NCCL, one process per GPU on 127.0.0.1 (world size 1 with one
      GPU), each rank on its own batch: the largest difference between a rank's parameters and rank 0's;
  (c) samples/s of the GA-DMS and of the IRRA-style training step (forward, backward, Adam under AMP, warm-up
      excluded, CUDA synchronised around the timing) and their ratio;
  (d) peak GPU memory (torch.cuda.max_memory_allocated) of GA-DMS training steps at batch 64 and 128.

A part that fails prints one line and the others still run. With no CUDA GPU it prints one line saying so
and measures nothing. --dry-run-cpu runs every part on the CPU with the tiny backbone at 64x32, batch 4,
2 steps, gloo for DDP and bfloat16 autocast, to exercise the code paths (its numbers say nothing about a GPU).

Exit status: 0 when every part ran, and also when no CUDA GPU is present (nothing to check, one line
says so); 1 when a part failed; 2 for a bad argument or parameter file.
"""

from __future__ import annotations

import argparse
import functools
import gc
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from gadms.bench.gpu_common import FULL_PARAMS, BenchSetup, Row, dry_run_setup, gpu_setup
from gadms.bench.gpu_ddp import part_ddp
from gadms.bench.gpu_parts import part_amp, part_memory, part_throughput
from gadms.config import ConfigError

NO_GPU = (
    "no CUDA GPU is present: nothing measured; on one it would compare a GA-DMS step's AMP and fp32 "
    "gradients, run NCCL DDP over every GPU, time ViT-B/16 384x128 GA-DMS and IRRA-style steps and "
    "take peak memory at batch 64 and 128 (--dry-run-cpu exercises the code on the CPU)"
)
TABLE_TITLE = "== GPU check results =="

Part = tuple[str, str, Callable[[], list[Row]]]


def plan(setup: BenchSetup) -> list[Part]:
    """The parts in the order they run: key, title, and the call that measures.

    Args:
        setup: the set-up.

    Returns:
        The parts; (d) once per batch size, so one failing size leaves the other.
    """
    parts: list[Part] = [
        ("a", "AMP vs fp32 gradients", functools.partial(part_amp, setup)),
        ("b", "DDP weights across ranks", functools.partial(part_ddp, setup)),
        ("c", "GA-DMS and IRRA-style step throughput", functools.partial(part_throughput, setup)),
    ]
    for size in setup.memory_batches:
        parts.append(("d", f"peak memory at batch {size}", functools.partial(part_memory, setup, size)))
    return parts


def _one_line(exc: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200] if lines else 'no message'}"


def _release() -> None:
    """Free what a finished (or failed) part left behind, so the next part starts with empty device memory."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_parts(parts: list[Part], echo: Callable[[str], None] = print) -> tuple[list[Row], list[str]]:
    """Run every part, whatever the others do.

    Args:
        parts: from :func:`plan`.
        echo: where each part's progress line goes.

    Returns:
        ``(rows, failures)``: the table rows of the parts that ran, one line per part that failed.
    """
    rows: list[Row] = []
    failures: list[str] = []
    for key, title, measure in parts:
        started = time.monotonic()
        try:
            rows += measure()
            outcome = "done"
        except Exception as exc:  # noqa: BLE001 - any failure of a part is one line; the others still run
            failures.append(f"part ({key}) {title} FAILED: {_one_line(exc)}")
            outcome = "failed"
        _release()
        echo(f"({key}) {title}: {outcome} in {time.monotonic() - started:.1f} s")
    return rows, failures


def _number(value: float) -> str:
    """A value for the table: 4 significant digits."""
    return f"{value:.4g}"


def format_table(rows: list[Row]) -> list[str]:
    """The results as aligned ``part | measure | value | unit | note`` lines, under a title line."""
    header = ("part", "measure", "value", "unit", "note")
    cells = [header] + [(f"({r.part})", r.measure, _number(r.value), r.unit, r.note) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    lines = [TABLE_TITLE]
    for row in cells:
        first = [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2]), row[3].ljust(widths[3])]
        lines.append(" | ".join([*first, row[4]]).rstrip())
    return lines


def _positive(text: str) -> int:
    """argparse type: an integer of at least 2 (SDM needs more than one pair)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gadms.bench.gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dry-run-cpu",
        action="store_true",
        help="run every part on the CPU with the tiny backbone at 64x32, batch 4, 2 steps, gloo instead of NCCL "
        "and bfloat16 autocast: checks the code paths without a GPU",
    )
    parser.add_argument("--params", type=Path, default=FULL_PARAMS, help="parameter file (default: params.full.yaml)")
    parser.add_argument("--batch", type=_positive, default=64, help="per-GPU batch of part (c) (default: 64)")
    return parser


def _header(setup: BenchSetup) -> str:
    """What ran where, on one line."""
    if setup.device != "cuda":
        return f"GPU check, {setup.label}; torch {torch.__version__}"
    gpus = torch.cuda.device_count()
    name = torch.cuda.get_device_name(0)
    return f"GPU check on {gpus} x {name}, torch {torch.__version__}, CUDA {torch.version.cuda}; {setup.label}"


def main(argv: list[str] | None = None) -> int:
    """Run the check; print progress, the table and one line per failed part.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status (0: every part ran, or no GPU to check; 1: a part failed; 2: bad parameters).
    """
    args = _parser().parse_args(argv)
    if not args.dry_run_cpu and not torch.cuda.is_available():
        print(NO_GPU)
        return 0
    try:
        if args.dry_run_cpu:
            setup = dry_run_setup(args.params)
        else:
            setup = gpu_setup(args.params, torch.cuda.device_count(), args.batch)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(_header(setup), flush=True)
    rows, failures = run_parts(plan(setup), echo=lambda line: print(line, flush=True))
    print("\n".join(format_table(rows)))
    for line in failures:
        print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
