"""The ``gadms`` command line.

Every command reads params.yaml (``--params`` picks another file) and accepts
``--set section.key=value`` overrides. User errors print one line starting
with ``error:`` and exit with status 2.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
import yaml

from gadms.cli_common import ParamsOpt, SetOpt, checked_seed, cli_params, user_errors
from gadms.cli_data import data_app, validate
from gadms.cli_help import install as install_help_layout
from gadms.cli_serve_model import serve_model
from gadms.cli_train import evaluate, train_app
from gadms.search.commands import add_search_commands

install_help_layout()  # flags without <bool>, brackets kept, paragraphs reflowed (see gadms.cli_help)

app = typer.Typer(
    help="GA-DMS text-based person retrieval: curate web images into a person-caption corpus, "
    "gate its quality, version it, train and evaluate CLIP with GA-DMS.",
    epilog="Exit status: 0 done; 1 the quality gate or a pipeline stage failed; "
    "2 a user error (one line starting with error:); "
    "70 an unexpected failure (one line naming the command and a log file with the traceback, under "
    "$XDG_STATE_HOME/gadms/logs or ~/.local/state/gadms/logs); 130 interrupted (Ctrl-C); 143 stopped by SIGTERM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
synth_app = typer.Typer(
    help="The synthetic person world: the built-in data for the demo and the tests.\n\n"
    "Clothed 2-D figures are drawn from attribute sets (gender, hair colour and style, top type/colour/pattern, "
    "bottom type/colour, shoe colour, bag, hat). One attribute set is one identity; its images vary pose, scale, "
    "background, lighting and small occlusions. For every figure the exact box and the 17 COCO keypoints with "
    "visibility (0 outside the image, 1 covered, 2 seen) are known. Same seed, same bytes.",
    no_args_is_help=True,
)
params_app = typer.Typer(help="Inspect and check params.yaml.", no_args_is_help=True)
curate_app = typer.Typer(
    help="Curation (SPEC 2-3): web image shards -> YOLO11 person + pose filter -> person crops -> captions "
    "following mined templates -> curated WebDataset shards (KEY.jpg crop + KEY.json captions) with a Parquet "
    "manifest and a report of every decision. Streams shard by shard, resumes after a crash, same input + params "
    "-> same bytes.",
    no_args_is_help=True,
)
app.add_typer(synth_app, name="synth")
app.add_typer(curate_app, name="curate")
app.add_typer(params_app, name="params")
app.add_typer(train_app, name="train")
app.add_typer(data_app, name="data")
add_search_commands(app)  # gadms index / search / serve
app.command("serve-model")(serve_model)  # the champion over REST (MLflow's model server)
app.command("evaluate")(evaluate)
app.command("validate")(validate)


@params_app.command("show")
def params_show(params: Optional[Path] = ParamsOpt, set_: Optional[list[str]] = SetOpt) -> None:
    """Print the validated parameters (file + overrides + defaults) as YAML."""
    with user_errors():
        p = cli_params(params, set_)
        typer.echo(yaml.safe_dump(p.model_dump(mode="json"), sort_keys=False), nl=False)


@synth_app.command("web")
def synth_web(
    out: Path = typer.Option(..., "--out", help="Output directory for 00000.tar, 00000.parquet, ..."),
    scenes: int = typer.Option(200, "--scenes", min=1, help="Number of scenes (images) to generate."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default: params seed)."),
    shard_size: Optional[int] = typer.Option(
        None, "--shard-size", help="Samples per tar shard (default: synth.shard_size)."
    ),
    preview: Optional[Path] = typer.Option(
        None, "--preview", help="Also write a PNG of a few scenes with boxes and keypoints."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Web-like scenes as WebDataset tar shards in img2dataset's layout.

    Each scene (synth.image_width x synth.image_height) holds 0..synth.max_people people: most pass the
    SPEC section-2 filters, the others are built to fail one (too_small, aspect, low_conf, few_keypoints,
    no_hip, no_head). Each sample is KEY.jpg, KEY.txt (web alt-text) and KEY.json (img2dataset fields plus
    the ground truth under "synthetic": per person the box [x0, y0, x1, y1] (x1, y1 exclusive), the
    detector score, 17 keypoints [x, y, v], the attributes, the design and the decision the SPEC rules give).
    """
    from gadms.synth.preview import web_preview
    from gadms.synth.web import write_web_shards

    with user_errors():
        p = cli_params(params, set_, {"synth.shard_size": shard_size})
        seed = p.seed if seed is None else checked_seed(seed)
        started = time.perf_counter()
        summary = write_web_shards(out, scenes, seed, p.synth, p.curation.filter, progress=not quiet)
        typer.echo(
            f"wrote {summary.scenes} scenes ({summary.people} people) in {summary.shards} shard(s) to "
            f"{summary.out} in {time.perf_counter() - started:.1f}s"
        )
        typer.echo("expected filter decisions: " + ", ".join(f"{k}={v}" for k, v in summary.decisions.items()))
        if preview is not None:
            typer.echo(f"preview: {web_preview(out, preview)}")


@synth_app.command("benchmark")
def synth_benchmark(
    out: Path = typer.Option(..., "--out", help="Output directory; the benchmark goes to OUT/CUHK-PEDES."),
    identities: int = typer.Option(100, "--identities", min=3, help="Number of identities (split train/val/test)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default: params seed)."),
    caption_noise: Optional[float] = typer.Option(
        None,
        "--caption-noise",
        metavar="P",
        help="Fraction of train captions in which one attribute word is replaced by a wrong one "
        "(simulated MLLM hallucination); the wrong words' character spans go to synthetic_truth.json.",
    ),
    preview: Optional[Path] = typer.Option(
        None, "--preview", help="Also write a PNG of a few images with their captions."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """A text-to-person retrieval benchmark in the real CUHK-PEDES format.

    Writes OUT/CUHK-PEDES/reid_raw.json (records: id, file_path, captions, split, processed_tokens) and
    OUT/CUHK-PEDES/imgs/. Identities are disjoint across train/val/test (synth.split_fractions), each with
    synth.min..max_images_per_identity images and synth.captions_per_image captions per image.
    OUT/CUHK-PEDES/synthetic_truth.json holds attributes, poses, keypoints and noise spans.
    """
    from gadms.synth.benchmark import write_benchmark
    from gadms.synth.preview import benchmark_preview

    with user_errors():
        p = cli_params(params, set_, {"synth.caption_noise": caption_noise})
        seed = p.seed if seed is None else checked_seed(seed)
        started = time.perf_counter()
        s = write_benchmark(out, identities, seed, p.synth, progress=not quiet)
        typer.echo(f"wrote {s.root} in {time.perf_counter() - started:.1f}s")
        typer.echo(f"{'split':<6} {'identities':>10} {'images':>7} {'captions':>8}")
        for split in ("train", "val", "test"):
            typer.echo(f"{split:<6} {s.identities[split]:>10} {s.images[split]:>7} {s.captions[split]:>8}")
        typer.echo(f"noisy captions: {s.noisy_captions}")
        if preview is not None:
            typer.echo(f"preview: {benchmark_preview(s.root, preview)}")


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
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
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
    from gadms.curation.cluster import curate_on_dask
    from gadms.curation.run import curate
    from gadms.lifetime import guard

    guard("gadms curate run")  # no child process (a local Dask cluster's workers) outlives the command
    with user_errors():
        dask = {"orchestration.task_runner": "dask", "orchestration.dask_address": dask_address}
        p = cli_params(params, set_, dask if dask_address is not None else None)
        source = input_dir or p.paths.web_dir
        target = out or p.paths.data_dir
        started = time.perf_counter()
        if p.orchestration.task_runner == "dask":
            cluster = (
                f"the Dask cluster at {p.orchestration.dask_address}"
                if p.orchestration.dask_address
                else (f"a local Dask cluster of {p.orchestration.max_workers} processes")
            )
            typer.echo(f"curating on {cluster}")
            report = curate_on_dask(source, target, p, progress=not quiet)
        else:
            report = curate(source, target, p, progress=not quiet)
        typer.echo(report.summary())
        typer.echo(f"finished in {time.perf_counter() - started:.1f}s; report: {target / 'report.json'}")


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
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
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


@app.command("pipeline")
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

    from flows.pipeline import pipeline_lock, run_pipeline
    from gadms.tracking.store import ui_command

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


@app.command("ablate")
def ablate(
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default ablate.out_dir)."),
    rows: Optional[str] = typer.Option(
        None,
        "--rows",
        metavar="ROW,ROW",
        help="Rows to run (default ablate.rows): none, random, cosine, gass, gass-official, gass-no-mtp, "
        "random-no-mtp.",
    ),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, metavar="N", help="Run seeds 0..N-1 of every row."),
    corpus: Optional[Path] = typer.Option(
        None, "--corpus", help="Pre-training corpus to use instead of the synthetic noisy one (ablate.corpus)."
    ),
    fmt: str = typer.Option("cuhk-pedes", "--format", help="--corpus format: curated | webperson | a benchmark."),
    benchmarks_root: Optional[Path] = typer.Option(
        None,
        "--benchmarks-root",
        help="Evaluate on the eval.benchmarks found here instead of the synthetic held-out identities.",
    ),
    no_track: bool = typer.Option(False, "--no-track", help="Do not log to MLflow."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """The paper's Table 4 as one command: each masking row x each seed, GA-DMS pre-training, evaluation.

    Rows: none (no masking, no MTP), random / cosine (CSS) / gass (paper formulas) / gass-official (official
    code's formulas) scores for dual masking + MTP, gass-no-mtp and random-no-mtp (noise masking only).
    Every row starts from the same base weights: model.pretrained, or (when that is null) the base stage, the
    tiny model pre-trained on clean synthetic captions as a stand-in for public CLIP weights, built once and
    cached in ablate.base.cache_dir by a hash of its inputs. Rows train on the noisy synthetic corpus
    (ablate.corpus) and are evaluated on identities never trained on (ablate.held_out's test split).

    Writes OUT/results/<row>-seed<s>.json per finished cell (a rerun skips those; a killed cell resumes from its
    checkpoint), then OUT/results.{csv,md,txt} (mean +- std of R1, R5, R10, mAP, mINP per row) and
    OUT/ablation.png (bars with error bars). MLflow: one parent run `ablate <date>` with a child per (row, seed),
    the table and the chart. The testbed of the README is `gadms ablate --params params.ablate.yaml`.
    """
    import torch

    from gadms.ablate.run import run_ablation
    from gadms.lifetime import guard

    guard("gadms ablate")  # no child process outlives the command
    with user_errors():
        extra: dict[str, object] = {"ablate.out_dir": out}
        if rows is not None:
            extra["ablate.rows"] = "[" + ",".join(r.strip() for r in rows.split(",") if r.strip()) + "]"
        if seeds is not None:
            extra["ablate.seeds"] = str(list(range(seeds)))
        p = cli_params(params, set_, extra)
        dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        summary, text, ablation = run_ablation(p, corpus, fmt, benchmarks_root, not no_track, dev, typer.echo)
        typer.echo("\n" + text + "\n")
        folder = ablation.plan.out
        typer.echo(f"results: {folder / 'results.md'}, {folder / 'results.csv'}; chart: {folder / 'ablation.png'}")
        if ablation.tracker is not None:
            typer.echo(f"MLflow parent run: {ablation.tracker.parent_id}")


@app.command("deploy")
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


@app.command("demo")
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


# Nothing leaves this machine unasked: the usage reporting of the tools we drive stays off.
NO_TELEMETRY = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
}

# Idle OpenMP threads sleep instead of spinning (set before torch loads its OpenMP runtime). Beside two CPU-bound
# processes on 2 cores, spinning made a pre-training batch 0.8-15 s (mean 5.0 s); sleeping, 0.7-1.0 s (mean 0.79 s).
# Alone it costs nothing measurable (0.44 vs 0.45 s a batch) and changes no result. A user's own setting wins.
SHARE_CORES = {"OMP_WAIT_POLICY": "PASSIVE"}


def main(args: Optional[list[str]] = None) -> None:
    """Entry point of the ``gadms`` console script and of ``python -m gadms``.

    Args:
        args: the command line after ``gadms`` (default: ``sys.argv[1:]``).
    """
    import os
    import sys

    from gadms.crash import command_words, last_line_of_defence, run_app

    for key, value in {**NO_TELEMETRY, **SHARE_CORES}.items():
        os.environ.setdefault(key, value)
    words = list(sys.argv[1:] if args is None else args)
    with last_line_of_defence(lambda: command_words(typer.main.get_command(app), words)):
        status = run_app(app, words)
    sys.exit(status)


if __name__ == "__main__":
    main()
