"""Rows compared seed by seed, and whether the testbed can show a difference at all (issue 22).

The bounds: ``clean`` (no masking on the corpus without its wrong words) is the upper bound, ``none`` on the
noisy corpus the lower one; their gap is all a masking row could win back. A difference between rows counts only
where that gap is over three times the seed standard deviation (the rows' sample std over seeds, averaged over
rows): otherwise the noise costs less than seeds move, and no row can be told from another. Each pair of rows is
compared on the seeds both finished: per seed the R1 difference, and how many seeds the first row wins.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

SIGMAS = 3.0


def by_seed(results: Sequence[dict[str, Any]], row: str, benchmark: str, metric: str) -> dict[int, float]:
    """``{seed: metric}`` of one row's finished cells on ``benchmark``."""
    return {
        int(r["seed"]): float(r["metrics"][benchmark][metric])
        for r in results
        if r["row"] == row and benchmark in r["metrics"]
    }


def seed_std(results: Sequence[dict[str, Any]], rows: Sequence[str], benchmark: str, metric: str) -> float:
    """The rows' sample std over seeds, averaged over the rows with at least two seeds (nan without any)."""
    stds = [np.std(list(v.values()), ddof=1) for row in rows if len(v := by_seed(results, row, benchmark, metric)) > 1]
    return float(np.mean(stds)) if stds else float("nan")


def bounds_line(results: Sequence[dict[str, Any]], rows: Sequence[str], benchmark: str, metric: str = "R1") -> str:
    """One line: the clean-to-noisy gap against three seed stds, and whether row differences can count."""
    clean, noisy = by_seed(results, "clean", benchmark, metric), by_seed(results, "none", benchmark, metric)
    if not clean or not noisy:
        return f"bounds: no clean and none rows on {benchmark}: the gap a masking row could close is unknown"
    gap = float(np.mean(list(clean.values())) - np.mean(list(noisy.values())))
    std = seed_std(results, rows, benchmark, metric)
    counts = bool(gap > SIGMAS * std)
    verdict = "row differences can count" if counts else "too small: no difference between rows counts"
    head = f"bounds ({benchmark} {metric}): clean - none = {gap:.2f}"
    return f"{head}, {SIGMAS:g} x seed std = {SIGMAS * std:.2f}: {verdict}"


def pairwise_lines(
    results: Sequence[dict[str, Any]], pairs: Sequence[tuple[str, str]], benchmark: str, metric: str = "R1"
) -> list[str]:
    """Per pair ``(a, b)`` with common seeds: a - b per seed, the mean and how many seeds ``a`` wins."""
    lines = []
    for a, b in pairs:
        va, vb = by_seed(results, a, benchmark, metric), by_seed(results, b, benchmark, metric)
        seeds = sorted(set(va) & set(vb))
        if not seeds:
            continue
        diffs = [va[s] - vb[s] for s in seeds]
        per_seed = " ".join(f"{d:+.2f}" for d in diffs)
        wins = sum(d > 0 for d in diffs)
        lines.append(
            f"{a} - {b} ({benchmark} {metric}) per seed: {per_seed}; mean {np.mean(diffs):+.2f}, "
            f"{a} ahead on {wins}/{len(seeds)} seeds{paired_t(diffs)}"
        )
    return lines


def paired_t(diffs: Sequence[float]) -> str:
    """``; paired t 2.54 (4 df)``: the mean difference over its standard error; empty under two seeds.

    Read against Student's t: with 5 seeds (4 df) |t| > 2.78 is p < 0.05 two-sided. Identical differences on
    every seed give an infinite t.
    """
    if len(diffs) < 2:
        return ""
    sd = float(np.std(diffs, ddof=1))
    mean = float(np.mean(diffs))
    t = mean / (sd / np.sqrt(len(diffs))) if sd > 0 else (float("inf") if mean else 0.0)
    return f"; paired t {t:.2f} ({len(diffs) - 1} df)"


def comparison(results: Sequence[dict[str, Any]], rows: Sequence[str]) -> list[str]:
    """The bounds line and the seed-by-seed comparisons: each GASS row with cosine, random and none; the baselines
    with none; each noise-masking-only row with random's."""
    benchmarks = sorted({b for r in results for b in r["metrics"]})
    gass = [r for r in ("gass", "gass-official") if r in rows]
    others = [r for r in ("cosine", "random", "none") if r in rows]
    pairs = [(g, o) for g in gass for o in others]
    pairs += [(b, "none") for b in ("random", "cosine") if b in rows and "none" in rows]
    pairs += [("gass-no-mtp", "random-no-mtp")] if {"gass-no-mtp", "random-no-mtp"} <= set(rows) else []
    lines = []
    for bench in benchmarks:
        if "clean" in rows or "none" in rows:
            lines.append(bounds_line(results, rows, bench))
        lines += pairwise_lines(results, pairs, bench)
    return lines
