"""Curation flow: source shards fan out over the task runner (threads, or Dask), then one finalize step.

On Dask the shards run as plain Dask tasks, so the workers never call the Prefect API (see ``_curate_shards``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.futures import as_completed
from tqdm import tqdm

from flows.common import gadms_flow, load_run_params, task_runner, with_retries
from gadms.config import Params
from gadms.curation.cluster import finished_reports, submit_shards
from gadms.curation.output import open_output
from gadms.curation.records import SourceShard
from gadms.curation.report import CurationReport, ShardReport
from gadms.curation.run import curate_shard, finalize_curation
from gadms.curation.sources import list_source_shards
from gadms.results import CuratedCorpus
from gadms.storage import Location, location


@task(name="list-source-shards")
def list_shards(input_dir: Path | Location, params: Params) -> list[SourceShard]:
    """The source shards to curate, in name order."""
    return list_source_shards(input_dir, params.curation.source.format, params.curation.source.folder_shard_size)


@task(name="curate-shard", task_run_name="curate-shard-{shard.name}")
def curate_one(shard: SourceShard, out: Path, params: Params) -> ShardReport:
    """Curate one shard (a no-op when its done marker matches); idempotent, so safe to retry."""
    return curate_shard(shard, out, params)


@task(name="finalize-curation")
def finalize(out: Path, reports: list[ShardReport], params: Params) -> CurationReport:
    """Join the per-shard manifests and reports (of this run and of earlier runs into ``out``)."""
    return finalize_curation(out, reports, params)


@gadms_flow(name="curate", log_prints=True, flow_run_name="curate")
def curate_flow(params: Params, input_dir: Optional[str] = None, out_dir: Optional[str] = None) -> CuratedCorpus:
    """Curate ``input_dir`` (default paths.web_dir) into ``out_dir`` (default paths.data_dir)."""
    source = location(input_dir or params.paths.web_dir)
    out = Path(out_dir or params.paths.data_dir)
    shards = list_shards(source, params)
    with open_output(source, out, shards):  # refuses an unsafe --out, and a second run on the same one
        with tqdm(total=len(shards), desc="curate", unit="shard") as bar:
            reports = _curate_shards(shards, out, params, _progress(bar))
        result = finalize(out, reports, params)
    get_run_logger().info(result.summary())
    create_markdown_artifact(
        key="curation-report", description="Curation: counts per shard", markdown=result.markdown()
    )
    return CuratedCorpus(out, result.totals(), result.summary())


def _progress(bar: tqdm) -> Callable[[ShardReport], None]:
    """Each finished shard: one step of ``bar`` and one line in the run log."""
    logger = get_run_logger()

    def finished(report: ShardReport) -> None:
        bar.update(1)
        state = "already done" if report.skipped else f"{sum(report.timings.values()):.1f}s"
        logger.info(
            f"shard {report.shard}: {report.seen} seen, {report.kept} kept, {report.rejected} rejected, "
            f"{report.failed} failed, {report.crops} crops ({state})"
        )

    return finished


def _curate_shards(
    shards: Sequence[SourceShard], out: Path, params: Params, on_shard: Callable[[ShardReport], None]
) -> list[ShardReport]:
    """Curate the shards over the flow's task runner; ``on_shard`` gets each report as it finishes.

    On threads each shard is a Prefect task (a task run in the UI; captioning
    over a VLM is retried with back-off). On Dask each shard is a plain Dask
    task of the runner's cluster (retried by Dask, without the delays; the
    captioning client backs off on its own): a Prefect task there would talk
    to the Prefect API from the worker, which, without ``PREFECT_API_URL``,
    starts a Prefect server in every worker process. The flow run, its log and
    the finalize step stay in Prefect either way.
    """
    from prefect.context import FlowRunContext
    from prefect_dask import DaskTaskRunner

    context = FlowRunContext.get()
    runner = context.task_runner if context is not None else None
    if isinstance(runner, DaskTaskRunner):
        return finished_reports(submit_shards(runner.client, shards, out, params), on_shard)
    shard_task = with_retries(curate_one, params) if params.curation.captioning.backend == "vlm" else curate_one
    reports = []
    for future in as_completed([shard_task.submit(shard, out, params) for shard in shards]):
        reports.append(future.result())
        on_shard(reports[-1])
    return reports


def run_curation(
    params_file: str = "params.yaml",
    overrides: Sequence[str] = (),
    input_dir: Optional[str] = None,
    out_dir: Optional[str] = None,
) -> CuratedCorpus:
    """Run :func:`curate_flow` with the task runner params.yaml asks for (threads or Dask)."""
    params = load_run_params(params_file, overrides)
    return curate_flow.with_options(task_runner=task_runner(params))(params, input_dir, out_dir)
