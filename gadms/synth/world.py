"""The synthetic world of the default pipeline: web shards (the stand-in for COYO) and a CUHK-PEDES-format
benchmark, written together from one seed.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from gadms.config import FilterConfig, SynthConfig


@dataclass(frozen=True)
class SyntheticWorld:
    """What :func:`write_synthetic_world` wrote: web scenes, people in them, the benchmark's folder."""

    scenes: int
    people: int
    benchmark: Path


def write_synthetic_world(
    web_dir: Path,
    benchmarks_dir: Path,
    scenes: int,
    identities: int,
    seed: int,
    synth: SynthConfig,
    rules: FilterConfig,
) -> SyntheticWorld:
    """Write ``scenes`` web scenes into ``web_dir`` (emptied first) and a benchmark of ``identities`` people under
    ``benchmarks_dir``, with progress bars.
    """
    from gadms.synth.benchmark import write_benchmark
    from gadms.synth.web import write_web_shards

    shutil.rmtree(web_dir, ignore_errors=True)
    web = write_web_shards(web_dir, scenes, seed, synth, rules, progress=True)
    bench = write_benchmark(benchmarks_dir, identities, seed, synth, progress=True)
    return SyntheticWorld(web.scenes, web.people, Path(bench.root))
