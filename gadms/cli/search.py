"""``gadms index``, ``gadms search`` and ``gadms serve``: a searchable gallery, queried from the command line or a
web page.

Imports stay inside the commands: ``gadms search`` starts without loading the libraries it does not need
(mlflow, open_clip, matplotlib, pandas, fastapi, prefect; see ``python -m gadms.bench.search_cold``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from gadms.cli.common import cli_params, user_errors
from gadms.cli.options import DeviceOpt, ParamsOpt, QuietOpt, SearchSetOpt

SearchModelOpt = typer.Option(
    None, "--model", help="Model for the queries (default: the one the index was built with); another model is refused."
)


def index_command(
    out: Path = typer.Option(..., "--out", help="Index directory (created, or extended with the new images)."),
    model: Optional[str] = typer.Option(
        None,
        "--model",
        help="MLflow model URI, run directory, model.safetensors or checkpoint.pt "
        "(default: models:/<tracking.registered_model>@<tracking.champion_alias>, i.e. "
        "models:/gadms-person-retrieval@champion).",
    ),
    images: Optional[Path] = typer.Option(None, "--images", help="A folder of images, read recursively."),
    benchmark: Optional[str] = typer.Option(
        None, "--benchmark", help="cuhk-pedes | icfg-pedes | rstpreid (with --root)."
    ),
    root: Optional[Path] = typer.Option(None, "--root", help="The benchmark directory or its parent."),
    split: str = typer.Option("test", "--split", help="Benchmark split whose images are indexed."),
    curated: Optional[Path] = typer.Option(None, "--curated", help="A directory of curated shards (KEY.jpg crops)."),
    batch: int = typer.Option(64, "--batch", min=1, help="Images encoded at once."),
    workers: int = typer.Option(2, "--workers", min=1, help="Threads decoding images."),
    approx_threshold: int = typer.Option(
        100_000, "--approx-threshold", min=0, help="Rows from which a FAISS approximate index is built."
    ),
    prune: bool = typer.Option(
        False, "--prune", help="Remove indexed images that are gone from the --images folder or --curated directory."
    ),
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SearchSetOpt,
) -> None:
    """Encode a gallery into a search index (embeddings, each image's source, the model's identity).

    Give exactly one of --images, --benchmark (with --root) and --curated. A new index is built in .OUT.building
    next to --out and renamed into place when complete (a stopped build is resumed by the next one). Indexing
    again into the same --out encodes only images not indexed yet and images whose file changed (size or
    modification time); an index is extended only with the model that built it. Images that cannot be decoded
    are skipped and counted; indexed images gone from the folder are reported, and removed with --prune. One
    build at a time per --out (lock file .OUT.lock next to it): a second one stops with a line naming the running
    one (while an index is extended, searches see the rows committed so far).
    """
    from gadms.lifetime import guard
    from gadms.search.model import SearchError, load_search_model
    from gadms.search.publish import check_target

    guard("gadms index")  # no child process outlives the command
    with user_errors():
        p = cli_params(params, set_)
        gallery = _gallery(images, benchmark, root, split, curated)
        if prune and gallery.root is None:
            raise SearchError("--prune works with --images or --curated (a benchmark split is not checked)")
        check_target(out)
        # the model first: one that fails to load leaves nothing behind
        searcher = load_search_model(
            model or f"models:/{p.tracking.registered_model}@{p.tracking.champion_alias}", p, device
        )
        report = _build(out, gallery, searcher, (batch, workers, approx_threshold, p.seed), not quiet, prune)
        typer.echo(
            f"index {out}: {report.count} images, model {searcher.identity.label} (weights "
            f"{searcher.identity.digest[:12]})"
        )
        typer.echo("\n".join(build_summary(report, searcher.device)))


def _build(out: Path, gallery, searcher, args: tuple[int, int, int, int], progress: bool, prune: bool):
    """Build the index at --out, or extend the one there, holding its lock; ``args`` are the rest of
    :func:`~gadms.search.build.build_index`'s (batch, workers, approx_threshold, seed).

    Returns:
        The :class:`~gadms.search.build.BuildReport`.
    """
    from gadms.search.build import build_index
    from gadms.search.publish import index_writer, is_index, staged

    with index_writer(out, "gadms index"):  # one build per --out: two would interleave their rows
        if is_index(out):  # extended in place, batch by batch (each batch committed)
            return build_index(out, gallery, searcher, *args, progress=progress, prune=prune)
        with staged(out, searcher) as new:  # built beside --out, then renamed into place: never seen half-written
            return build_index(new, gallery, searcher, *args, progress=progress, prune=prune)


def build_summary(report, device: str) -> list[str]:
    """The lines describing a :class:`~gadms.search.build.BuildReport` (after the index line)."""
    encoded = report.added + report.changed
    rate = encoded / report.seconds if report.seconds > 0 else 0.0
    lines = [
        f"this run: {report.found} found = {report.already} already indexed + {report.added} added "
        f"+ {report.changed} changed + {sum(report.skipped.values())} skipped; {report.seconds:.1f}s "
        f"({rate:.1f} images/s on {device})"
    ]
    lines += [f"  skipped {n} ({reason})" for reason, n in sorted(report.skipped.items())]
    lines += [f"    e.g. {example}" for example in report.examples]
    examples = ", ".join(report.gone_examples) + (", ..." if report.gone > len(report.gone_examples) else "")
    if report.pruned:
        lines.append(f"pruned {report.pruned} indexed images gone from the gallery: {examples}")
    elif report.gone:
        lines.append(f"{report.gone} indexed images are gone from the gallery: {examples}; --prune removes them")
    if report.approximate:
        a = report.approximate
        lines.append(
            f"approximate index: FAISS IVF-Flat, {a['nlist']} cells, nprobe {a['nprobe']}, "
            f"recall@10 vs exact {a['recall_at_10']:.3f} on {a['probe_queries']} probe queries"
        )
    return lines


def _gallery(
    images: Optional[Path], benchmark: Optional[str], root: Optional[Path], split: str, curated: Optional[Path]
):
    """The one gallery source the options name."""
    from gadms.search.model import SearchError
    from gadms.search.sources import benchmark_gallery, curated_gallery, folder_gallery

    given = [
        name
        for name, value in (("--images", images), ("--benchmark", benchmark), ("--curated", curated))
        if value is not None
    ]
    if len(given) != 1:
        raise SearchError(f"give exactly one of --images, --benchmark, --curated (got {', '.join(given) or 'none'})")
    if images is not None:
        return folder_gallery(images)
    if curated is not None:
        return curated_gallery(curated)
    if root is None:
        raise SearchError("--benchmark needs --root (the benchmark directory or its parent)")
    return benchmark_gallery(benchmark, root, split)  # type: ignore[arg-type]


def read_query_file(path: Path) -> list[str]:
    """One query per line; blank lines and lines starting with ``#`` are left out."""
    from gadms.safe_files import UnsafeFile, read_text
    from gadms.search.model import SearchError

    try:
        lines = read_text(path, "text file of one query per line").splitlines()
    except UnsafeFile as exc:
        raise SearchError(f"--queries {exc}") from None
    queries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not queries:
        raise SearchError(f"--queries {path}: no queries in the file")
    return queries


def open_checked(index_dir: Path, model: Optional[str], p, device: str):
    """Open an index and load its model (or ``model``, which must have the same weights).

    Returns:
        ``(index, searcher)``.
    """
    from gadms.search.index import open_index

    index = open_index(index_dir)
    return index, load_checked(index, model, p, device)


def load_checked(index, model: Optional[str], p, device: str):
    """The model for ``index``'s queries: ``model`` when given (it must have the index's weights), else the
    index's own (its stored text tower, see :func:`~gadms.search.model.load_query_model`).
    """
    from gadms.search.index import check_model
    from gadms.search.model import SearchModel, load_query_model, load_search_model

    if model is None:
        searcher = load_query_model(index.directory, index.meta.model, index.meta.embed_dim, p, device)
    else:
        searcher = load_search_model(model, p, device)
    if isinstance(searcher, SearchModel):
        check_model(index.meta, searcher.identity, index.directory)
    return searcher


def search_command(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="The index directory (from gadms index)."),
    query: Optional[str] = typer.Argument(
        None, help='The text query, e.g. "a woman in a red jacket and orange trousers".'
    ),
    queries: Optional[Path] = typer.Option(
        None, "--queries", help="A file of queries, one per line (with or without QUERY)."
    ),
    top_k: int = typer.Option(10, "--top-k", "-k", min=1, help="Results per query."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: one object for one query, a list for several."),
    figure: Optional[Path] = typer.Option(
        None, "--figure", help="Also draw the queries with their top-k images to this PNG."
    ),
    mode: str = typer.Option("auto", "--mode", help="auto (approximate when the index has one) | exact | approximate."),
    check_recall: bool = typer.Option(
        False, "--check-recall", help="With approximate search, also search exactly and print recall@k."
    ),
    model: Optional[str] = SearchModelOpt,
    device: str = DeviceOpt,
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SearchSetOpt,
) -> None:
    """Rank the indexed images for text queries: the top-k with cosine scores, as a table, JSON or a figure."""
    from gadms.search.model import SearchError
    from gadms.search.query import format_results, run_queries

    with user_errors():
        p = cli_params(params, set_)
        texts = ([query] if query is not None else []) + (read_query_file(queries) if queries is not None else [])
        if not texts:
            raise SearchError("give a QUERY or --queries FILE")
        index, searcher = open_checked(index_dir, model, p, device)
        run = run_queries(index, searcher, texts, top_k, mode, check_recall)
        label = index.meta.model.label
        if as_json:
            objects = run.to_json(label)
            typer.echo(json.dumps(objects[0] if len(objects) == 1 else objects, indent=2, ensure_ascii=False))
        else:
            typer.echo(format_results(run, label, len(index)))
        if figure is not None:
            from gadms.search.figures import write_search_figure  # matplotlib: only when a figure is asked for

            written = write_search_figure(index, run, figure, f"model {label}")
            typer.echo(f"figure: {written}", err=as_json)


def serve_command(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="The index directory (from gadms index)."),
    port: int = typer.Option(8765, "--port", min=1, max=65535, help="Port on 127.0.0.1."),
    top_k: int = typer.Option(10, "--top-k", "-k", min=1, help="Results shown per query."),
    model: Optional[str] = SearchModelOpt,
    device: str = DeviceOpt,
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SearchSetOpt,
) -> None:
    """A search page on http://127.0.0.1:PORT/: type a query, see the ranked images with scores and the model
    version.

    When INDEX is rebuilt in place (e.g. by the pipeline for a new champion) or extended, the server switches to
    the new index and its model within a few seconds, without a restart; requests in flight finish on the old one.
    """
    import uvicorn

    from gadms.lifetime import guard
    from gadms.search.live import LiveIndex
    from gadms.search.web import create_app

    guard("gadms serve")  # no child process outlives the command
    with user_errors():
        p = cli_params(params, set_)
        index, searcher = open_checked(index_dir, model, p, device)
        live = LiveIndex(index, searcher, lambda newer: load_checked(newer, model, p, device))
        app = create_app(index, searcher, top_k, live)
    typer.echo(f"serving {index_dir} ({len(index)} images, model {index.meta.model.label}) on http://127.0.0.1:{port}/")
    typer.echo(f"  follows {index_dir}: a rebuilt or extended index is served within {live.every:g} s, no restart")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
