"""``gadms pipeline`` (the main job as one Prefect flow), ``gadms deploy`` (it on a schedule) and ``gadms demo``
(the synthetic world only)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer

from gadms.cli.common import cli_params, user_errors
from gadms.cli.options import ParamsOpt, SetOpt
from gadms.config import Params


def pipeline(
    params: Path = typer.Option(
        Path("params.yaml"), "--params", help="Parameter file (the full-scale run: params.full.yaml)."
    ),
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """The main job as one Prefect flow: curate -> validate (gate) -> version (DVC) -> pre-train -> fine-tune per
    benchmark -> evaluate (direct transfer and fine-tuned) -> register/promote in MLflow.

    With the default params.yaml it runs offline on the synthetic world (built first), with embedded defaults only:
    Prefect without a server (its ephemeral local mode), MLflow under mlruns/, DVC with the local remote. Stages are
    cached on their inputs and parameters: a second run reuses them, a run after a failure resumes at the failed
    stage. Exit status 1 when a stage fails (e.g. the quality gate).
    """
    from gadms.lifetime import guard

    guard("gadms pipeline")  # first: no child outlives the run; Prefect's start-up waits are set before its import
    from contextlib import ExitStack

    from flows.pipeline import run_pipeline
    from gadms.locks import pipeline_lock

    held = ExitStack()  # one pipeline per work tree (the flow holds it too: taken here, Prefect need not start)
    with user_errors():
        p = cli_params(params, set_)
        held.enter_context(pipeline_lock(p.paths.work_dir, "gadms pipeline"))
        started = time.perf_counter()
    try:
        with held:
            result = run_pipeline(str(params), list(set_ or []))
    except Exception as exc:  # the flow run is marked Failed in Prefect; say why on one line
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        typer.echo(f"error: pipeline failed: {message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"\npipeline finished in {time.perf_counter() - started:.0f}s")
    _report(p, result)


def _report(p: Params, result: dict[str, Any]) -> None:
    """What the pipeline made: the corpus and its gate, then the models' metrics, registry decision and where to
    look (MLflow, Prefect); or, when nothing changed, why nothing was trained.
    """
    from gadms.tracking.store import ui_command

    typer.echo(f"curated corpus: {p.paths.data_dir} (DVC hash {result['data_hash']}, tracked by data.dvc)")
    typer.echo(f"quality gate: passed (report: {p.paths.reports_dir / 'gate'})")
    if result.get("unchanged"):
        typer.echo(f"{result['unchanged']}; nothing was trained or recorded")
        typer.echo(_prefect_ui_line(result["flow_run"]))
        return
    typer.echo("\n" + result["table"] + "\n")
    promo = result["promotion"]
    if promo:
        typer.echo(f"registered {p.tracking.registered_model} version {promo['version']}: {promo['reason']}")
    typer.echo(f"MLflow pipeline run: {result['pipeline_run']} (pre-training run {result['pretrain_run']})")
    typer.echo(f"MLflow UI:  {ui_command(p)}   then open http://127.0.0.1:5000")
    typer.echo(_prefect_ui_line(result["flow_run"]))


def _prefect_ui_line(flow_run: str) -> str:
    """Where to see the pipeline's flow run: its page on the server in use, or how to serve this machine's runs."""
    from flows.common import prefect_ui_url, server_command

    ui = prefect_ui_url()
    if ui:
        return f"Prefect UI: {ui}/runs/flow-run/{flow_run}"
    return f"Prefect UI: {server_command()}   then open http://127.0.0.1:4200 (flow runs of this machine)"


def deploy(
    params: Path = typer.Option(Path("params.yaml"), "--params", help="Parameter file the scheduled runs use."),
    name: str = typer.Option("weekly-retraining", "--name", help="Deployment name."),
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Serve the pipeline on the orchestration.schedule_cron schedule (scheduled retraining) until stopped.

    Needs a Prefect server, which keeps the schedule and the runs: `PREFECT_SERVER_ANALYTICS_ENABLED=false
    .venv/bin/prefect server start`, then `export PREFECT_API_URL=http://127.0.0.1:4200/api` before this command;
    without one (PREFECT_API_URL unset, or nothing answering there) it refuses with exit status 2. For work-pool
    based serving see prefect.yaml (`prefect deploy --all`, `prefect worker start --pool gadms-local`).

    One run at a time: a run that comes due while the previous one still runs is not started but Cancelled
    ("Deployment concurrency limit reached"), and the next slot runs as usual; slots are skipped, never queued.
    A run started by `gadms pipeline` on the same work tree counts too: a scheduled run that finds it running
    ends Cancelled ("skipped: ..."). Scheduled runs are named by their slot: `pipeline 2026-12-07 03:00` (UTC).
    """
    from gadms.lifetime import guard

    guard("gadms deploy")  # first: no child outlives the command; Prefect's waits are set before its import
    from flows.common import require_prefect_server

    with user_errors():
        p = cli_params(params, set_)
        api = require_prefect_server("gadms deploy")  # before the pipeline's imports (torch): a refusal is quick
        from flows.pipeline import serve_schedule

        typer.echo(
            f"serving deployment gadms-pipeline/{name} on cron '{p.orchestration.schedule_cron}' "
            f"({p.orchestration.timezone}) against {api}, one run at a time; Ctrl-C stops"
        )
        serve_schedule(str(params), list(set_ or []), name)


def demo(
    out: Path = typer.Option(Path("demo"), "--out", help="Where the demo writes its outputs."),
    scenes: int = typer.Option(200, "--scenes", min=1, help="Web scenes to generate."),
    identities: int = typer.Option(100, "--identities", min=3, help="Benchmark identities to generate."),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Build only the synthetic world (web shards, benchmark) with preview figures; the main job is `gadms pipeline`."""
    from gadms.synth.benchmark import write_benchmark
    from gadms.synth.preview import benchmark_preview, web_preview
    from gadms.synth.web import write_web_shards

    with user_errors():
        p = cli_params(params, set_)
        started = time.perf_counter()
        web = write_web_shards(out / "web", scenes, p.seed, p.synth, p.curation.filter)
        bench = write_benchmark(out / "benchmark", identities, p.seed, p.synth)
        web_png = web_preview(out / "web", out / "web_preview.png")
        bench_png = benchmark_preview(bench.root, out / "benchmark_preview.png")
        typer.echo(f"\ndemo finished in {time.perf_counter() - started:.1f}s; outputs:")
        typer.echo(f"  web shards      {web.out}  ({web.scenes} scenes, {web.people} people, {web.shards} shards)")
        typer.echo(
            "                  expected filter decisions: " + ", ".join(f"{k}={v}" for k, v in web.decisions.items())
        )
        typer.echo(
            f"  benchmark       {bench.root}  ({sum(bench.identities.values())} identities, "
            f"{sum(bench.images.values())} images)"
        )
        typer.echo(f"  previews        {web_png}, {bench_png}")
