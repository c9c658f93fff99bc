"""The whole pipeline as one flow: curate -> validate (gate) -> version (DVC) -> pretrain -> fine-tune per
benchmark -> evaluate (direct transfer and fine-tuned) -> register/promote in MLflow.

Every stage is cached on its inputs and parameters (Prefect task caching with
persisted results), so re-running after a failure resumes from the failed
stage; curation skips finished shards and training resumes from its last
checkpoint. A failed quality gate ends the run as Failed and nothing
downstream runs.

One pipeline at a time per work tree, however it is started (``gadms pipeline``,
``gadms deploy``, a worker running prefect.yaml's deployment): the flow holds
``WORK/.pipeline.lock`` for its whole run; a run that finds it held ends
Cancelled at once (``skipped: ...``), doing nothing. The deployment also has
Prefect's concurrency limit of one run with the CANCEL_NEW strategy
(:data:`ONE_AT_A_TIME`): a run that comes due while one is running is not
started but Cancelled by the server, so slots are skipped, never queued.
A stopped run (Ctrl-C, SIGTERM, a Prefect cancellation) ends its MLflow runs
KILLED (:mod:`gadms.tracking.stopped`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence, cast

from prefect import task
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.states import Cancelled, State

from flows import report
from flows.common import (
    cache_on_inputs,
    gadms_flow,
    load_run_params,
    require_prefect_server,
    rerun_if_missing,
    run_logger,
    safe_overrides,
    task_runner,
)
from flows.curate import curate_flow
from flows.evaluate import evaluate_flow
from flows.finetune import finetune_flow
from flows.pretrain import pretrain_flow
from flows.tracked_cache import recompute_if_gone
from flows.validate import validate_flow
from flows.version import version_flow
from gadms.config import FilterConfig, Params, SynthConfig
from gadms.locks import OutputBusy, pipeline_lock_or_busy
from gadms.results import ParamsSource, PipelineResult, Promotion, TrainedModel
from gadms.storage import local_path, location
from gadms.synth.world import SyntheticWorld, write_synthetic_world
from gadms.tracking.pipeline_run import PipelineRun, benchmarks_to_evaluate, check_inputs, pipeline_run
from gadms.tracking.pipeline_stages import promote, version_exists
from gadms.tracking.stopped import killed_when_stopped

# The deployment runs one flow run at a time; a run that comes due meanwhile is Cancelled, not queued.
ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)


def slot_name(when: datetime) -> str:
    """``pipeline YYYY-MM-DD HH:MM`` of the moment ``when``, in UTC."""
    return f"pipeline {when.astimezone(timezone.utc):%Y-%m-%d %H:%M}"


def pipeline_run_name() -> str:
    """The name of the flow run and of its MLflow run: :func:`slot_name` of the run's slot.

    The slot is Prefect's scheduled start time: for a scheduled run the schedule's time (``pipeline 2026-12-07
    03:00`` even when the run starts a little later), for a run started by hand the moment it was created.
    """
    from prefect.runtime import flow_run

    slot = flow_run.scheduled_start_time
    return slot_name(slot if isinstance(slot, datetime) else datetime.now(timezone.utc))


def flow_run_id() -> str:
    """The id of this flow run."""
    from prefect.runtime import flow_run

    return str(flow_run.id)


def flow_run_title() -> str:
    """This flow run's name (the MLflow run and the artifact take it too), or a fresh one outside a flow run."""
    from prefect.runtime import flow_run

    return str(flow_run.name or pipeline_run_name())


@gadms_flow(name="gadms-pipeline", log_prints=True, flow_run_name=pipeline_run_name)
def pipeline_flow(params_file: str = "params.yaml", overrides: Sequence[str] = ()) -> PipelineResult | State:
    """Curate, gate, version, pre-train, evaluate, fine-tune, register; returns what each stage produced.

    Holds the work tree's pipeline lock throughout; while another pipeline holds it the run ends Cancelled
    (``skipped: WORK is being written by another ...``) without doing anything.
    """
    params = load_run_params(params_file, overrides)
    source, title = ParamsSource(params_file, tuple(overrides)), flow_run_title()
    with pipeline_lock_or_busy(params.paths.work_dir, f"pipeline flow run '{title}'") as busy, killed_when_stopped():
        if busy is not None:
            return skipped(busy)
        run_logger().info(f"pipeline: {source.describe()}")
        if params.pipeline.synthesize:
            synthesize_world(params)
        corpus = curate_flow.with_options(task_runner=task_runner(params))(params)
        version = version_flow(params, validate_flow(params, corpus))
        benchmarks = benchmarks_to_evaluate(params, overrides, run_logger().log)
        inputs = check_inputs(params, version.md5)
        if inputs.unchanged:
            return report.publish_unchanged(title, PipelineResult(flow_run_id(), corpus, version, inputs.unchanged))
        with pipeline_run(params, title, version, benchmarks, inputs.fingerprint, run_logger().info) as parent:
            pretrained = pretrain_flow(params, source, version, parent.run_id)
            direct = evaluate_flow(params, pretrained, benchmarks, "direct", version.md5, parent.run_id)
            tuned = {b: finetune_flow(params, source, b, pretrained, version.md5, parent.run_id) for b in benchmarks}
            promotion = promote_best(params, parent, benchmarks, tuned)
            result = parent.finish(flow_run_id(), corpus, version, pretrained, direct, tuned, promotion)
        return report.publish_trained(title, result, parent)


def skipped(busy: OutputBusy) -> State:
    """The Cancelled state of a run that found its work tree busy (``skipped: ...``), said in its log."""
    run_logger().warning(f"skipped: {busy}")
    return Cancelled(message=f"skipped: {busy}")


@task(name="synthesize-world", persist_result=True, cache_key_fn=cache_on_inputs())
def synthesize(
    seed: int,
    synth: SynthConfig,
    rules: FilterConfig,
    scenes: int,
    identities: int,
    web_dir: Path,
    benchmarks_dir: Path,
) -> SyntheticWorld:
    """Write the synthetic web shards and benchmark (the demo's stand-in for COYO shards and CUHK-PEDES)."""
    return write_synthetic_world(web_dir, benchmarks_dir, scenes, identities, seed, synth, rules)


def synthesize_world(params: Params) -> None:
    """Build the synthetic world once: again only when its benchmark is gone or its settings changed."""
    web_dir = local_path(location(params.paths.web_dir), "paths.web_dir with pipeline.synthesize")
    built = params.paths.benchmarks_dir / "CUHK-PEDES" / "reid_raw.json"
    world = (params.pipeline.web_scenes, params.pipeline.benchmark_identities, web_dir, params.paths.benchmarks_dir)
    rerun_if_missing(synthesize, built)(params.seed, params.synth, params.curation.filter, *world)


@task(
    name="register-and-promote",
    persist_result=True,
    cache_key_fn=cache_on_inputs(),
    retries=3,
    retry_delay_seconds=[2, 5, 15],
)
def register(params: Params, tuned: TrainedModel, benchmark: str) -> Promotion:
    """Register the fine-tuned model; move the champion alias only when it beats the champion's R1 on the same
    benchmark.
    """
    promotion = promote(params, tuned, benchmark)
    run_logger().info(f"registry: {promotion.model} v{promotion.version} {promotion.decision}: {promotion.reason}")
    return promotion


@task(name="search-showcase", persist_result=True, cache_key_fn=cache_on_inputs())
def showcase(params: Params, model: str, benchmark: str, out_dir: Path) -> list[Path]:
    """Index the benchmark's test gallery with the new champion and draw a few search results."""
    from gadms.search.showcase import search_showcase

    figures = search_showcase(params, model, benchmark, params.paths.benchmarks_dir, out_dir)
    run_logger().info(f"search: {benchmark} test gallery indexed at {out_dir / 'index'}; {len(figures)} figures")
    return figures


def promote_best(
    params: Params, parent: PipelineRun, benchmarks: Sequence[str], tuned: Mapping[str, TrainedModel]
) -> Promotion | None:
    """Register the first benchmark's fine-tuned model and record the decision on the pipeline run; a new
    champion's search results (``figures/search``) go with it. None when there is no benchmark.
    """
    if not benchmarks:
        return None
    benchmark = benchmarks[0]

    def still_registered(cached: Promotion) -> bool:
        return version_exists(params, cached.version)

    promotion = recompute_if_gone(register, still_registered, params, tuned[benchmark], benchmark)
    parent.record_promotion(promotion)
    if promotion.promoted:
        out = params.paths.work_dir / "search" / benchmark
        parent.log_search_figures(
            rerun_if_missing(showcase, out / "query_0.png")(params, promotion.uri, benchmark, out)
        )
    return promotion


def run_pipeline(params_file: str = "params.yaml", overrides: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Run :func:`pipeline_flow` in-process (Prefect's ephemeral local mode when no server is configured); its
    result in the plain form ``gadms pipeline`` prints (:meth:`PipelineResult.as_dict`).

    Raises:
        prefect.exceptions.CancelledRun: the work tree's pipeline lock was held (the run was skipped).
    """
    # a flow run that returns a Cancelled state raises here, so what comes back is the results
    return cast(PipelineResult, pipeline_flow(params_file, safe_overrides(overrides))).as_dict()


def serve_schedule(
    params_file: str = "params.yaml", overrides: Optional[Sequence[str]] = None, name: str = "weekly-retraining"
) -> None:
    """Serve the pipeline on params.yaml's cron schedule from this process (no work pool needed).

    Raises:
        ValueError: no Prefect server is configured or answering (one line saying how to start one).
    """
    from prefect import serve

    require_prefect_server("gadms deploy")
    overrides = safe_overrides(overrides)
    params = load_run_params(params_file, overrides)
    serve(deployment_of(params, params_file, overrides, name))


def deployment_of(params: Params, params_file: str, overrides: Sequence[str], name: str = "weekly-retraining") -> Any:
    """The scheduled deployment of the pipeline (a Prefect ``RunnerDeployment``), as ``gadms deploy`` serves it.

    One run at a time (:data:`ONE_AT_A_TIME`): a run that comes due while one runs is Cancelled by the server.
    """
    from prefect.schedules import Cron

    return pipeline_flow.to_deployment(
        name=name,
        schedule=Cron(params.orchestration.schedule_cron, timezone=params.orchestration.timezone),
        parameters={"params_file": params_file, "overrides": list(overrides)},
        tags=["gadms", "retraining"],
        concurrency_limit=ONE_AT_A_TIME,
    )
