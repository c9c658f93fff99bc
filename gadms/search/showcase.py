"""Search figures for a new champion: its benchmark's test gallery indexed, a few test captions as queries."""

from __future__ import annotations

from pathlib import Path

from gadms.config import Params
from gadms.search.build import build_index
from gadms.search.figures import write_search_figure
from gadms.search.index import open_index
from gadms.search.model import load_search_model
from gadms.search.publish import index_writer, staged
from gadms.search.query import run_queries
from gadms.search.sources import benchmark_gallery


def showcase_queries(benchmark: str, root: Path, count: int) -> list[str]:
    """The first caption of each of the first ``count`` test identities (distinct people, stable order)."""
    from gadms.data.benchmarks import load_benchmark

    data = load_benchmark(benchmark, root, "test", check_images=False)
    picked: dict[int, str] = {}
    for caption, identity in zip(data.captions, data.caption_ids):
        if identity not in picked:
            picked[identity] = caption
        if len(picked) == count:
            break
    return list(picked.values())


def search_showcase(
    params: Params, model: str, benchmark: str, root: Path, out_dir: Path, queries: int = 3, k: int = 5
) -> list[Path]:
    """Index ``benchmark``'s test gallery with ``model`` at ``out_dir/index`` and draw one figure per query.

    Args:
        params: selects the MLflow store when ``model`` is a URI.
        model: an MLflow model URI, a run directory or a weights file.
        benchmark: the benchmark whose test split is the gallery.
        root: the benchmarks directory.
        out_dir: where the index and the figures go. The index is rebuilt beside ``out_dir/index`` and swapped
            into place (see :mod:`gadms.search.publish`): a running ``gadms serve`` of it switches to it.
        queries: how many test captions to search for.
        k: results shown per query.

    Returns:
        The figure files, ``query_<i>.png``.
    """
    searcher = load_search_model(model, params, device="auto")
    index_dir = out_dir / "index"
    with index_writer(index_dir, "the pipeline's search showcase", wait=600), staged(index_dir, searcher, False) as new:
        build_index(new, benchmark_gallery(benchmark, root, "test"), searcher, progress=False)  # a fresh index
    index = open_index(index_dir)
    figures = []
    for i, query in enumerate(showcase_queries(benchmark, root, queries)):
        run = run_queries(index, searcher, [query], k=k)
        figures.append(write_search_figure(index, run, out_dir / f"query_{i}.png", title=f"{benchmark} test gallery"))
    return figures
