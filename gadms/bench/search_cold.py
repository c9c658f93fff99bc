"""Cold-start time of ``gadms search``: the whole command in a new process, as a user types it.

    python -m gadms.bench.search_cold INDEX "a woman in a red top" [--runs 7] [--top-k 5] [--gadms-root DIR]

Runs ``python -P -m gadms search INDEX QUERY --top-k K`` ``--runs`` times one
after another (after one untimed run that warms the file cache) and prints
each wall and CPU time, the medians, the machine's core count and load average, and
the libraries the command imported that a text query does not need. Run it in
the folder the command should run in (its ``params.yaml`` and MLflow store
are found there). ``--gadms-root`` measures another checkout's ``gadms`` (e.g.
an older one, for a before/after comparison); by default the one this module
belongs to.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("open_clip", "mlflow", "matplotlib", "pandas", "prefect", "torchvision", "faiss", "fastapi")
PROBE = (
    "import json, sys\nfrom gadms.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
    "print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)\n"
)


def _command(args: argparse.Namespace) -> list[str]:
    return ["search", args.index, args.query, "--top-k", str(args.top_k), *args.extra]


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def time_once(args: argparse.Namespace, root: Path) -> tuple[float, float]:
    """``(wall, CPU)`` seconds of one ``gadms search`` in a new interpreter (``-P``: the current folder's files are
    not imported). CPU time (user + system) depends less on what else the machine runs.
    """
    used = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-P", "-m", "gadms", *_command(args)], env=_env(root), capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"gadms search failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    return seconds, _children_cpu() - used


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def heavy_imports(args: argparse.Namespace, root: Path) -> list[str]:
    """The libraries of :data:`HEAVY` that one ``gadms search`` imported."""
    code = PROBE.format(heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-P", "-c", code, *_command(args)], env=_env(root), capture_output=True, text=True
    )
    return list(json.loads(done.stderr.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", help="the index directory")
    parser.add_argument("query", help="the text query")
    parser.add_argument("--runs", type=int, default=7, help="timed runs (the median is reported)")
    parser.add_argument("--top-k", type=int, default=5, help="results per query")
    parser.add_argument("--gadms-root", type=Path, default=Path(__file__).resolve().parents[2], help="gadms checkout")
    parser.add_argument("extra", nargs="*", help="more `gadms search` options (after --)")
    args = parser.parse_args(argv)
    root = args.gadms_root.resolve()
    print(f"gadms from {root}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (1 min) before")
    time_once(args, root)  # warms the file cache; not counted
    times, cpu = [], []
    for run in range(1, args.runs + 1):
        wall, used = time_once(args, root)
        times.append(wall)
        cpu.append(used)
        print(f"  run {run}: {wall:.2f} s wall, {used:.2f} s CPU")
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) after")
    print(f"heavy libraries imported: {', '.join(heavy_imports(args, root)) or 'none'}")
    print(
        f"gadms search cold start: median {statistics.median(times):.2f} s wall over {args.runs} runs "
        f"(min {min(times):.2f}, max {max(times):.2f}); median CPU {statistics.median(cpu):.2f} s"
    )


if __name__ == "__main__":
    main()
