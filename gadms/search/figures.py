"""Search figures: each query above its top-k gallery images, with rank and score under each image.

The layout follows the retrieval-examples figure of :mod:`gadms.tracking.figures`
(there frames say right or wrong; a search has no ground truth, so the frame is
neutral and the score is shown). Several queries are stacked, one row each.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gadms.search.index import SearchIndex
from gadms.search.query import SearchRun
from gadms.search.sources import read_source
from gadms.tracking.figures import as_array

FRAME_COLOUR = "#2b83ba"
ROW_HEIGHT = 3.3  # inches per query row (heading, images, labels)


def _pixels(index: SearchIndex, row: int) -> np.ndarray:
    """The indexed image's pixels, or a grey tile when it cannot be read any more."""
    try:
        return as_array(read_source(index.records[row]))
    except (OSError, ValueError):
        return np.full((128, 64, 3), 200, dtype=np.uint8)


def search_figure(index: SearchIndex, run: SearchRun, title: str = "") -> Figure:
    """One row per query: the wrapped query text, then its ranked images labelled ``#rank score``.

    Args:
        index: the index searched (its images are read back for the figure).
        run: the results.
        title: a heading over the whole figure, e.g. the model version.

    Returns:
        The figure (Agg canvas).
    """
    k = max([len(r.hits) for r in run.results] + [1])
    figure = Figure(figsize=(max(1.25 * k, 5.0), ROW_HEIGHT * len(run.results) + (0.3 if title else 0)))
    FigureCanvasAgg(figure)
    rows = figure.subfigures(len(run.results), 1, squeeze=False)[:, 0]
    for number, (panel, result) in enumerate(zip(rows, run.results)):
        heading = ([title] if title and number == 0 else []) + textwrap.wrap(f'"{result.query}"', 11 * max(k, 4))
        panel.suptitle("\n".join(heading), fontsize=9, parse_math=False)  # a query is text, never $math$
        for hit in result.hits:
            axes = panel.add_subplot(1, k, hit.rank)
            axes.imshow(_pixels(index, hit.row))
            axes.set_xticks([])
            axes.set_yticks([])
            for spine in axes.spines.values():
                spine.set_edgecolor(FRAME_COLOUR)
                spine.set_linewidth(3)
            axes.set_xlabel(f"#{hit.rank}  {hit.score:.3f}", fontsize=8)
    return figure


def write_search_figure(index: SearchIndex, run: SearchRun, path: Path, title: str = "") -> Path:
    """Draw :func:`search_figure` and save it as a PNG.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    search_figure(index, run, title).savefig(path, dpi=110)
    return path
