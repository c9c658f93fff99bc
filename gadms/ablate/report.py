"""The ablation's summary: mean +- std of R1, R5, R10, mAP, mINP per row (and benchmark), as CSV, markdown,
a printed table and a bar chart with error bars.

The standard deviation is the sample one (n - 1 in the denominator) over the row's seeds; 0 with one seed.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

METRICS = ("R1", "R5", "R10", "mAP", "mINP")


@dataclass(frozen=True)
class RowSummary:
    """One row of the table: a row's metrics on one benchmark over its seeds."""

    row: str
    benchmark: str
    seeds: tuple[int, ...]
    mean: dict[str, float]
    std: dict[str, float]
    # the row's masking after training, mean over seeds (``rate``, ``selectivity``); empty for a row without
    masking: dict[str, float] = field(default_factory=dict)

    def masking_cells(self) -> tuple[str, str]:
        """The end-of-training noise-mask rate and selectivity as table cells (``-`` for a row without)."""
        if not self.masking:
            return "-", "-"
        return f"{self.masking['rate']:.3f}", f"{self.masking['selectivity']:.2f}x"


def summarise(results: Sequence[dict[str, Any]], rows: Sequence[str]) -> list[RowSummary]:
    """Mean and sample std per (row, benchmark) over the results' seeds, rows in the given order.

    Args:
        results: cell results (``row``, ``seed``, ``metrics``: benchmark -> metric -> value).
        rows: the rows to report, in order.

    Returns:
        One summary per row and benchmark that has results.
    """
    out = []
    for row in rows:
        mine = sorted((r for r in results if r["row"] == row), key=lambda r: r["seed"])
        benchmarks = sorted({b for r in mine for b in r["metrics"]})
        for bench in benchmarks:
            have = [r for r in mine if bench in r["metrics"]]
            values = {m: np.array([r["metrics"][bench][m] for r in have], dtype=float) for m in METRICS}
            mean = {m: float(v.mean()) for m, v in values.items()}
            std = {m: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for m, v in values.items()}
            out.append(RowSummary(row, bench, tuple(r["seed"] for r in have), mean, std, masking_mean(mine)))
    return out


def masking_mean(results: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The mean of the cells' end-of-training masking (``rate``, ``selectivity``); empty when none has it."""
    ends = [r["masking_end"] for r in results if r.get("masking_end")]
    return {k: float(np.mean([e[k] for e in ends])) for k in ("rate", "selectivity")} if ends else {}


def to_csv(summary: Sequence[RowSummary]) -> str:
    """The table as CSV: row, benchmark, seeds, ``<metric>_mean`` and ``<metric>_std`` columns, then the masking
    after training (``p_mask_end``, ``selectivity_end``; empty for a row without)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    metric_columns = [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    writer.writerow(["row", "benchmark", "seeds", *metric_columns, "p_mask_end", "selectivity_end"])
    for s in summary:
        cells = [f"{s.mean[m]:.4f}" if k == "mean" else f"{s.std[m]:.4f}" for m in METRICS for k in ("mean", "std")]
        ends = [f"{s.masking[k]:.4f}" if s.masking else "" for k in ("rate", "selectivity")]
        writer.writerow([s.row, s.benchmark, " ".join(map(str, s.seeds)), *cells, *ends])
    return buf.getvalue()


def to_markdown(summary: Sequence[RowSummary]) -> str:
    """The table as markdown, each metric as ``mean ± std``, then the masking after training."""
    head = "| row | benchmark | seeds | " + " | ".join(METRICS) + " | p(mask) end | selectivity end |"
    lines = [head, "|---|---|---|" + "---:|" * (len(METRICS) + 2)]
    for s in summary:
        cells = " | ".join([*(f"{s.mean[m]:.2f} ± {s.std[m]:.2f}" for m in METRICS), *s.masking_cells()])
        lines.append(f"| {s.row} | {s.benchmark} | {len(s.seeds)} | {cells} |")
    return "\n".join(lines) + "\n"


def to_text(summary: Sequence[RowSummary]) -> str:
    """The table for a terminal."""
    head = f"{'row':<14} {'benchmark':<11} {'n':>2} " + " ".join(f"{m:>13}" for m in METRICS)
    lines = [f"{head} {'p(mask) end':>11} {'select. end':>11}"]
    for s in summary:
        cells = " ".join(f"{s.mean[m]:>6.2f} ± {s.std[m]:<4.2f}" for m in METRICS)
        rate, selectivity = s.masking_cells()
        lines.append(f"{s.row:<14} {s.benchmark:<11} {len(s.seeds):>2} {cells} {rate:>11} {selectivity:>11}")
    return "\n".join(lines)


def table_columns(summary: Sequence[RowSummary]) -> dict[str, list[Any]]:
    """The table as columns (for ``MlflowClient.log_table``)."""
    columns: dict[str, list[Any]] = {"row": [], "benchmark": [], "seeds": []}
    for m in METRICS:
        columns[f"{m}_mean"], columns[f"{m}_std"] = [], []
    for s in summary:
        columns["row"].append(s.row)
        columns["benchmark"].append(s.benchmark)
        columns["seeds"].append(len(s.seeds))
        for m in METRICS:
            columns[f"{m}_mean"].append(round(s.mean[m], 4))
            columns[f"{m}_std"].append(round(s.std[m], 4))
        for key, name in (("rate", "p_mask_end"), ("selectivity", "selectivity_end")):
            columns.setdefault(name, []).append(round(s.masking[key], 4) if s.masking else None)
    return columns


def bar_chart(summary: Sequence[RowSummary], path: Path, title: str = "GA-DMS ablation") -> Path:
    """Grouped bars (one group per metric, one bar per row) with std error bars; one panel per benchmark.

    Args:
        summary: the table.
        path: the PNG to write.
        title: the figure's title.

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    benchmarks = sorted({s.benchmark for s in summary})
    rows = list(dict.fromkeys(s.row for s in summary))
    figure = Figure(figsize=(2.2 + 1.6 * len(METRICS) * max(1, len(rows)) / 4, 3.6 * len(benchmarks)), dpi=110)
    FigureCanvasAgg(figure)
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(METRICS))
    for panel, bench in enumerate(benchmarks):
        ax = figure.add_subplot(len(benchmarks), 1, panel + 1)
        for k, row in enumerate(rows):
            s = next((s for s in summary if s.row == row and s.benchmark == bench), None)
            if s is None:
                continue
            means = [s.mean[m] for m in METRICS]
            stds = [s.std[m] for m in METRICS]
            ax.bar(x + (k - (len(rows) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=row)
        ax.set_xticks(x, METRICS)
        ax.set_ylabel("percent")
        ax.set_title(f"{title}: {bench} (mean ± std over seeds)", fontsize=9)
        ax.legend(fontsize=7, ncol=min(len(rows), 4))
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
