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

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence, cast

from prefect import get_run_logger, task
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.states import Cancelled, State

from flows import report
from flows.common import (
    cache_on_inputs,
    gadms_flow,
    load,
    log_run_link,
    markdown_table,
    require_prefect_server,
    run_logger,
    safe_overrides,
    task_runner,
    unless_missing,
)
from flows.curate import curate_flow
from flows.evaluate import evaluate_flow
from flows.finetune import finetune_flow
from flows.pretrain import pretrain_flow
from flows.tracked_cache import recompute_if_gone, version_exists
from flows.validate import validate_flow
from flows.version import version_flow
from gadms.config import Params
from gadms.locks import OutputBusy, writer_lock
from gadms.storage import local_path, location
from gadms.tracking.retrain import find_unchanged, inputs_fingerprint, mark_version
from gadms.tracking.stopped import end_open_runs, is_stop

METRICS = ("R1", "R5", "R10", "mAP", "mINP")
HEADLINE = ("R1", "mAP")
PIPELINE_LOCK = ".pipeline.lock"  # its own lock file: stages lock folders of their own, the work tree included
# The deployment runs one flow run at a time; a run that comes due meanwhile is Cancelled, not queued.
ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
SYNTHETIC_BENCHMARKS = ("cuhk-pedes",)  # what pipeline.synthesize builds

_held: dict[Path, int] = {}  # pipeline lock files held by this process (value: its pid)


@contextmanager
def pipeline_lock(work_dir: Path, command: str) -> Iterator[None]:
    """Hold the pipeline lock of ``work_dir`` (``WORK/.pipeline.lock``) for the ``with`` block.

    Re-entrant within one process: ``gadms pipeline`` takes it before the flow starts (so a busy work tree is
    refused before Prefect starts) and the flow, which takes it however it is run, finds it held already.

    Raises:
        OutputBusy: another process holds it; one line naming the holder, ending ``wait for it``.
    """
    lock_file = (Path(work_dir) / PIPELINE_LOCK).absolute()
    if _held.get(lock_file) == os.getpid():
        yield
        return
    with writer_lock(Path(work_dir), command, "wait for it", lock_file=lock_file):
        _held[lock_file] = os.getpid()
        try:
            yield
        finally:
            _held.pop(lock_file, None)


@task(name="synthesize-world", persist_result=True, cache_key_fn=cache_on_inputs())
def synthesize(
    seed: int, synth: Any, rules: Any, scenes: int, identities: int, web_dir: Path, benchmarks_dir: Path
) -> dict[str, Any]:
    """Write the synthetic web shards and benchmark (the demo's stand-in for COYO shards and CUHK-PEDES)."""
    from gadms.synth.benchmark import write_benchmark
    from gadms.synth.web import write_web_shards

    shutil.rmtree(web_dir, ignore_errors=True)
    web = write_web_shards(web_dir, scenes, seed, synth, rules, progress=True)
    bench = write_benchmark(benchmarks_dir, identities, seed, synth, progress=True)
    return {"scenes": web.scenes, "people": web.people, "benchmark": str(bench.root)}


@task(
    name="register-and-promote",
    persist_result=True,
    cache_key_fn=cache_on_inputs(),
    retries=3,
    retry_delay_seconds=[2, 5, 15],
)
def promote(params: Params, run_id: str, benchmark: str, r1: float) -> dict[str, Any]:
    """Register the fine-tuned model; move the champion alias only when it beats the champion's R1 on the same
    benchmark.
    """
    from gadms.tracking.registry import register_and_maybe_promote
    from gadms.tracking.stages import MODEL_NAME

    result = register_and_maybe_promote(run_id, MODEL_NAME, params, benchmark, r1)
    decision = "promoted to champion" if result.promoted else "not promoted"
    run_logger().info(f"registry: {params.tracking.registered_model} v{result.version} {decision}: {result.reason}")
    return {"version": result.version, "promoted": result.promoted, "reason": result.reason}


@task(name="search-showcase", persist_result=True, cache_key_fn=cache_on_inputs())
def showcase(params: Params, model: str, benchmark: str, out_dir: Path) -> list[str]:
    """Index the benchmark's test gallery with the new champion and draw a few search results."""
    from gadms.search.showcase import search_showcase

    figures = search_showcase(params, model, benchmark, params.paths.benchmarks_dir, out_dir)
    run_logger().info(f"search: {benchmark} test gallery indexed at {out_dir / 'index'}; {len(figures)} figures")
    return [str(f) for f in figures]


def results_table(direct: dict[str, dict[str, float]], tuned: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row per benchmark and setting: R1, R5, R10, mAP, mINP."""
    rows = []
    for name in sorted(set(direct) | set(tuned)):
        for setting, metrics in (("direct", direct.get(name)), ("finetuned", (tuned.get(name) or {}).get("metrics"))):
            if metrics:
                rows.append((name, setting, *(f"{metrics[f'{name}/{m}']:.2f}" for m in METRICS)))
    return rows


def headline_metrics(direct: dict[str, dict[str, float]], tuned: dict[str, dict[str, Any]]) -> dict[str, float]:
    """R1 and mAP per setting and benchmark (``finetuned/cuhk-pedes/R1``), copied onto the pipeline run.

    One name per setting and benchmark, so successive pipeline runs compare in one column and one chart.
    """
    out = {}
    for name in sorted(set(direct) | set(tuned)):
        for setting, metrics in (("direct", direct.get(name)), ("finetuned", (tuned.get(name) or {}).get("metrics"))):
            out.update({f"{setting}/{name}/{m}": float(metrics[f"{name}/{m}"]) for m in HEADLINE if metrics})
    return out


def format_results(rows: list[tuple[str, ...]]) -> str:
    """The evaluation table as plain text."""
    header = ("benchmark", "setting", *METRICS)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(v).rjust(w) if i > 1 else str(v).ljust(w) for i, (v, w) in enumerate(zip(row, widths)))
        for row in [header, *rows]
    )


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


def flow_run_title() -> str:
    """This flow run's name (the MLflow run and the artifact take it too), or a fresh one outside a flow run."""
    from prefect.runtime import flow_run

    return str(flow_run.name or pipeline_run_name())


def explicitly_set(overrides: Sequence[str], key: str) -> bool:
    """Whether one of the ``--set`` overrides sets ``key``."""
    return any(item.split("=", 1)[0].strip() == key for item in overrides)


def benchmarks_notice(params: Params, overrides: Sequence[str], present: Sequence[str]) -> tuple[int, str] | None:
    """The log level and line about the ``eval.benchmarks`` not found (None when all are there).

    A WARNING when none is there, when this run's ``--set`` named ``eval.benchmarks``, or when the benchmarks are
    real data (``pipeline.synthesize`` false): then a missing one is a problem. With the synthetic world, which
    builds CUHK-PEDES only, the others are expected to be absent: one INFO line says what is evaluated.
    """
    missing = [name for name in params.eval.benchmarks if name not in present]
    where = params.paths.benchmarks_dir
    if not present:
        return logging.WARNING, f"no benchmark of eval.benchmarks is under {where}: nothing to fine-tune or evaluate"
    if not missing:
        return None
    line = f"evaluating on {', '.join(present)}; not under {where}, skipped: {', '.join(missing)}"
    expected = params.pipeline.synthesize and set(present) <= set(SYNTHETIC_BENCHMARKS)
    if expected and not explicitly_set(overrides, "eval.benchmarks"):
        return logging.INFO, f"{line} (the synthetic world builds {', '.join(SYNTHETIC_BENCHMARKS)} only)"
    return logging.WARNING, line


@gadms_flow(name="gadms-pipeline", log_prints=True, flow_run_name=pipeline_run_name)
def pipeline_flow(params_file: str = "params.yaml", overrides: Sequence[str] = ()) -> dict[str, Any] | State:
    """Curate, gate, version, pre-train, fine-tune, evaluate, register; returns the results and run ids.

    Holds the work tree's pipeline lock throughout; while another pipeline holds it the run ends Cancelled
    (``skipped: WORK is being written by another ...``) without doing anything.
    """
    params = load(params_file, overrides)
    with ExitStack() as held:
        try:
            held.enter_context(pipeline_lock(params.paths.work_dir, f"pipeline flow run '{flow_run_title()}'"))
        except OutputBusy as busy:
            get_run_logger().warning(f"skipped: {busy}")
            return Cancelled(message=f"skipped: {busy}")
        try:
            return run_stages(params_file, params, list(overrides))
        except BaseException as exc:
            if is_stop(exc):  # Ctrl-C, SIGTERM, a cancellation: runs still open (another thread's) end KILLED
                end_open_runs()
            raise


def run_stages(params_file: str, params: Params, overrides: list[str]) -> dict[str, Any]:
    """The pipeline's stages, in the flow run of :func:`pipeline_flow` that holds the lock."""
    from prefect.runtime import flow_run

    from gadms.tracking.links import run_link
    from gadms.tracking.mlflow_run import git_state, tracked_run
    from gadms.tracking.stages import present_benchmarks
    from gadms.tracking.store import ui_command

    logger = get_run_logger()
    logger.info(f"pipeline: {params_file}" + (f" with {' '.join(overrides)}" if overrides else ""))
    if params.pipeline.synthesize:
        synthesize_once = unless_missing(synthesize, params.paths.benchmarks_dir / "CUHK-PEDES" / "reid_raw.json")
        synthesize_once(
            params.seed,
            params.synth,
            params.curation.filter,
            params.pipeline.web_scenes,
            params.pipeline.benchmark_identities,
            local_path(location(params.paths.web_dir), "paths.web_dir with pipeline.synthesize"),
            params.paths.benchmarks_dir,
        )
    curation = curate_flow.with_options(task_runner=task_runner(params))(params_file, overrides)
    gate = validate_flow(params_file, overrides)
    version = version_flow(params_file, overrides)
    md5 = version["md5"]
    benchmarks = present_benchmarks(params.eval.benchmarks, params.paths.benchmarks_dir)
    notice = benchmarks_notice(params, overrides, benchmarks)
    if notice is not None:
        logger.log(*notice)
    fingerprint = inputs_fingerprint(params, md5, git_state().commit)
    unchanged = find_unchanged(params, fingerprint)
    title = flow_run_title()
    if unchanged is not None:
        logger.info(unchanged.message())
        report.publish(report.unchanged_summary(title, md5, unchanged.message()), "GA-DMS pipeline: inputs unchanged")
        return {
            "curation": curation["totals"],
            "gate": gate["summary"],
            "data_hash": md5,
            "unchanged": unchanged.message(),
            "flow_run": str(flow_run.id),
        }
    with tracked_run(params, title, "pipeline", md5, {"benchmarks": ",".join(benchmarks)}) as parent:
        links = [("pipeline", parent.run_id, log_run_link(params, "pipeline", parent.run_id))]
        if gate.get("report") and Path(gate["report"]).is_file():
            parent.log_artifact(Path(gate["report"]), "quality")  # quality/<fingerprint>-<thresholds>.html
        pre = pretrain_flow(
            params_file, overrides, data_hash=md5, parent_run_id=parent.run_id, gate_summary=gate["summary"]
        )
        direct = evaluate_flow(pre["model"], benchmarks, "direct", params_file, overrides, md5, parent.run_id)
        tuned = {
            name: finetune_flow(name, pre["model"], params_file, overrides, md5, parent.run_id) for name in benchmarks
        }
        links.append(("pretrain", pre["run_id"], pre["link"]))
        links += [(f"evaluate direct {n}", str(m["run_id"]), str(m["link"])) for n, m in direct.items()]
        links += [(f"finetune {n}", t["run_id"], t["link"]) for n, t in tuned.items()]
        promotion = None
        if benchmarks:
            primary = benchmarks[0]
            promotion = recompute_if_gone(
                promote,
                lambda cached: version_exists(params, cached["version"]),
                *(params, tuned[primary]["run_id"], primary, tuned[primary]["metrics"][f"{primary}/R1"]),
            )
            parent.set_tags(
                {"registry.version": promotion["version"], "registry.promoted": str(promotion["promoted"]).lower()}
            )
            mark_version(params, promotion["version"], fingerprint)
            if promotion["promoted"]:
                out = params.paths.work_dir / "search" / primary
                for figure in unless_missing(showcase, out / "query_0.png")(
                    params, f"models:/{params.tracking.registered_model}/{promotion['version']}", primary, out
                ):
                    parent.log_artifact(Path(figure), "figures/search")
        rows = results_table(direct, tuned)
        parent.log_values(headline_metrics(direct, tuned))
        parent.log_text(format_results(rows), "results.txt")
    summary = report.pipeline_summary(
        title,
        md5,
        gate.get("report") or gate["report_dir"],
        params.tracking.registered_model,
        promotion,
        links,
        markdown_table(("benchmark", "setting", *METRICS), rows),
        "" if run_link(params, parent.run_id).served else ui_command(params),
    )
    report.publish(summary, "GA-DMS pipeline: data version, model version and decision, MLflow runs, results")
    return {
        "curation": curation["totals"],
        "gate": gate["summary"],
        "data_hash": md5,
        "pretrain_run": pre["run_id"],
        "pipeline_run": parent.run_id,
        "gate_report": gate.get("report"),
        "finetune_runs": {k: v["run_id"] for k, v in tuned.items()},
        "table": format_results(rows),
        "promotion": promotion,
        "flow_run": str(flow_run.id),
    }


def run_pipeline(params_file: str = "params.yaml", overrides: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Run :func:`pipeline_flow` in-process (Prefect's ephemeral local mode when no server is configured).

    Raises:
        prefect.exceptions.CancelledRun: the work tree's pipeline lock was held (the run was skipped).
    """
    # a flow run that returns a Cancelled state raises here, so what comes back is the results
    return cast(dict[str, Any], pipeline_flow(params_file, safe_overrides(overrides)))


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
    params = load(params_file, overrides)
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
