"""``gadms curate run|templates``: web image shards to a curated person-caption corpus, and caption templates."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from gadms.cli.common import cli_params, user_errors
from gadms.cli.options import ParamsOpt, QuietBarsOpt, SetOpt
from gadms.config import Params

if TYPE_CHECKING:
    from gadms.curation.report import CurationReport

curate_app = typer.Typer(
    help="Curation (SPEC 2-3): web image shards -> YOLO11 person + pose filter -> person crops -> captions "
    "following mined templates -> curated WebDataset shards (KEY.jpg crop + KEY.json captions) with a Parquet "
    "manifest and a report of every decision. Streams shard by shard, resumes after a crash, same input + params "
    "-> same bytes.",
    no_args_is_help=True,
)


@curate_app.command("run")
def curate_run(
    input_dir: Optional[str] = typer.Option(
        None,
        "--input",
        help="Source shards: img2dataset WebDataset tars, Parquet, or a folder of images; tars and Parquet may be a "
        "URL such as s3://bucket/shards (default: paths.web_dir).",
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Curated output directory (default: paths.data_dir)."),
    dask_address: Optional[str] = typer.Option(
        None,
        "--dask-address",
        metavar="ADDRESS",
        help="Curate the shards on the Dask scheduler at ADDRESS (tcp://host:8786): the same as --set "
        "orchestration.task_runner=dask --set orchestration.dask_address=ADDRESS. Every worker must see --input and "
        "--out at the same paths.",
    ),
    quiet: bool = QuietBarsOpt,
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Run detection, filtering, cropping and captioning over every shard of --input.

    Backends come from params.yaml: curation.detector.backend (precomputed: boxes and keypoints from each sample's
    JSON, e.g. the synthetic ground truth; yolo: YOLO11 + YOLO11-Pose from local weights) and
    curation.captioning.backend (attributes: templates filled from known attributes; vlm: an OpenAI-compatible
    vision-language endpoint, key from the environment variable named by curation.captioning.api_key_env).
    Writes OUT/NAME.tar per source shard, OUT/meta/ (per-shard manifests, decisions, done markers),
    OUT/manifest.parquet, OUT/_shards.parquet (the corpus index: each shard's bytes and caption count) and
    OUT/report.json. Finished shards are skipped on a rerun.

    Shards run one after another in this process, or as tasks of a Dask cluster with orchestration.task_runner
    dask (the scheduler at orchestration.dask_address or --dask-address; without an address a local cluster of
    orchestration.max_workers processes). The output is the same bytes either way.
    """
    from gadms.lifetime import guard

    guard("gadms curate run")  # no child process (a local Dask cluster's workers) outlives the command
    with user_errors():
        dask = {"orchestration.task_runner": "dask", "orchestration.dask_address": dask_address}
        p = cli_params(params, set_, dask if dask_address is not None else None)
        target = out or p.paths.data_dir
        started = time.perf_counter()
        report = _curate(p, input_dir or p.paths.web_dir, target, progress=not quiet)
        typer.echo(report.summary())
        typer.echo(f"finished in {time.perf_counter() - started:.1f}s; report: {target / 'report.json'}")


def _curate(p: Params, source: str | Path, target: Path, progress: bool) -> CurationReport:
    """Curate in this process, or on the Dask cluster orchestration.task_runner names (saying which)."""
    from gadms.curation.cluster import curate_on_dask
    from gadms.curation.run import curate

    if p.orchestration.task_runner != "dask":
        return curate(source, target, p, progress=progress)
    cluster = (
        f"the Dask cluster at {p.orchestration.dask_address}"
        if p.orchestration.dask_address
        else (f"a local Dask cluster of {p.orchestration.max_workers} processes")
    )
    typer.echo(f"curating on {cluster}")
    return curate_on_dask(source, target, p, progress=progress)


@curate_app.command("templates")
def curate_templates(
    captions: Path = typer.Option(
        ...,
        "--captions",
        help="Captions to mine: a text file (one per line), a JSON list, or a benchmark root (its train captions).",
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Templates file to write (default: paths.templates_file)."),
    extractor: Optional[str] = typer.Option(
        None, "--extractor", help="rule (offline) | llm (OpenAI-compatible endpoint at curation.templates.llm_url)."
    ),
    clusters: Optional[int] = typer.Option(
        None, "--clusters", help="k of k-means (default: curation.templates.clusters)."
    ),
    quiet: bool = QuietBarsOpt,
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Mine caption templates (SPEC 3.1-3.2): attribute words -> placeholders, k-means over CLIP text embeddings.

    Keeps per cluster the template closest to the centroid plus curation.templates.random_members random ones;
    with curation.templates.diversify the LLM writes new templates from each cluster. The output is canonical
    JSON (same input + params -> same bytes); point curation.captioning.templates_file at it.
    """
    from gadms.curation.templates import captions_from_source, mine_templates, write_templates

    with user_errors():
        given = {"curation.templates.extractor": extractor, "curation.templates.clusters": clusters}
        p = cli_params(params, set_, given)
        target = out or p.paths.templates_file
        client = None
        if p.curation.templates.extractor == "llm" or p.curation.templates.diversify:
            from gadms.curation.chat import ChatClient

            t = p.curation.templates
            client = ChatClient(t.llm_url, t.llm_model, t.api_key_env)
        sentences = captions_from_source(captions)
        result = mine_templates(
            sentences, p.curation.templates, p.seed, client=client, progress=not quiet, source=str(captions)
        )
        write_templates(target, result)
        typer.echo(f"mined {len(result.templates)} templates from {len(sentences)} captions into {target}")
