"""Curation flow: source shards fan out over the task runner (threads, or Dask), then one finalize step."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.futures import as_completed
from tqdm import tqdm

from flows.common import gadms_flow, load, markdown_table, safe_overrides, task_runner
from gadms.config import Params
from gadms.curation.output import open_output
from gadms.curation.records import SourceShard
from gadms.curation.report import CurationReport, ShardReport
from gadms.curation.run import curate_shard, finalize_curation
from gadms.curation.sources import list_source_shards
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
def curate_flow(
    params_file: str = "params.yaml",
    overrides: Sequence[str] = (),
    input_dir: Optional[str] = None,
    out_dir: Optional[str] = None,
) -> dict[str, Any]:
    """Curate ``input_dir`` (default paths.web_dir) into ``out_dir`` (default paths.data_dir)."""
    params = load(params_file, overrides)
    source = location(input_dir or params.paths.web_dir)
    out = Path(out_dir or params.paths.data_dir)
    logger = get_run_logger()
    shards = list_shards(source, params)
    with open_output(source, out, shards):  # refuses an unsafe --out, and a second run on the same one
        # Tasks that call the captioning endpoint are retried with back-off.
        retries = params.orchestration.retries if params.curation.captioning.backend == "vlm" else 0
        delays = list(params.orchestration.retry_delays_s)
        shard_task = curate_one.with_options(retries=retries, retry_delay_seconds=delays)
        futures = [shard_task.submit(shard, out, params) for shard in shards]
        reports = []
        for future in tqdm(as_completed(futures), total=len(futures), desc="curate", unit="shard"):
            report = future.result()
            reports.append(report)
            state = "already done" if report.skipped else f"{sum(report.timings.values()):.1f}s"
            logger.info(
                f"shard {report.shard}: {report.seen} seen, {report.kept} kept, {report.rejected} rejected, "
                f"{report.failed} failed, {report.crops} crops ({state})"
            )
        result = finalize(out, reports, params)
    logger.info(result.summary())
    create_markdown_artifact(
        key="curation-report", description="Curation: counts per shard", markdown=_report_markdown(result)
    )
    return {"out": str(out), "totals": result.totals(), "summary": result.summary()}


def _report_markdown(report: CurationReport) -> str:
    rows = [
        (
            s.shard,
            s.seen,
            s.kept,
            s.rejected,
            s.failed,
            s.crops,
            ", ".join(f"{k} {v}" for k, v in sorted(s.boxes.items())),
        )
        for s in report.shards
    ]
    return "# Curation\n\n" + markdown_table(("shard", "seen", "kept", "rejected", "failed", "crops", "boxes"), rows)


def run_curation(
    params_file: str = "params.yaml",
    overrides: Sequence[str] = (),
    input_dir: Optional[str] = None,
    out_dir: Optional[str] = None,
) -> dict[str, Any]:
    """Run :func:`curate_flow` with the task runner params.yaml asks for (threads or Dask)."""
    overrides = safe_overrides(overrides)
    params = load(params_file, overrides)
    return curate_flow.with_options(task_runner=task_runner(params))(params_file, overrides, input_dir, out_dir)
