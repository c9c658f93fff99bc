"""The ``gadms`` command line.

Every command reads params.yaml (``--params`` picks another file) and accepts
``--set section.key=value`` overrides. User errors print one line starting
with ``error:`` and exit with status 2.
"""

from __future__ import annotations

import shlex
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
import yaml

from gadms.cli_help import install as install_help_layout
from gadms.config import MAX_SEED, ConfigError, Params, load_params
from gadms.search.commands import add_search_commands

install_help_layout()  # flags without <bool>, brackets kept, paragraphs reflowed (see gadms.cli_help)

app = typer.Typer(
    help="GA-DMS text-based person retrieval: curate web images into a person-caption corpus, "
    "gate its quality, version it, train and evaluate CLIP with GA-DMS.",
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
train_app = typer.Typer(
    help="Train: GA-DMS pre-training on a caption corpus, IRRA-style fine-tuning on a benchmark. "
    "Checkpoints after every epoch into --out (checkpoint.pt); --resume continues exactly; the final weights are "
    "--out/model.safetensors. With train.gpus > 1 the command relaunches itself under torchrun (DDP).",
    no_args_is_help=True,
)
data_app = typer.Typer(
    help="Datasets: statistics of the benchmark and corpus formats, and versioning of the curated corpus with DVC "
    "(data.dvc at the repository root tracks paths.data_dir; the default remote is the local directory "
    "versioning.remote_url, any DVC remote URL works).",
    no_args_is_help=True,
)
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

ParamsOpt = typer.Option(None, "--params", help="Parameter file (default: ./params.yaml, else built-in defaults).")
SetOpt = typer.Option(
    None, "--set", metavar="KEY=VALUE", help="Override one parameter, e.g. --set train.optimizer.lr=3e-4 (repeatable)."
)


RootOpt = typer.Option(None, "--root", help="The benchmark directory or its parent (default: paths.benchmarks_dir).")


class UserError(Exception):
    """A problem with the user's input, reported as one line."""


@contextmanager
def _user_errors() -> Iterator[None]:
    """Report expected failures as ``error: ...`` on one line, exit status 2."""
    from gadms.curation.chat import ChatError
    from gadms.versioning.dvc import VersioningError

    try:
        yield
    except (ConfigError, UserError, ValueError, OSError, VersioningError, ChatError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2) from None
    except RecursionError:  # a last resort: every input limit should stop deep structures before this
        typer.echo("error: input nested too deeply to process (maximum recursion depth exceeded)", err=True)
        raise typer.Exit(2) from None


def _params(path: Optional[Path], overrides: Optional[list[str]], extra: dict[str, object] | None = None) -> Params:
    """Load parameters; ``extra`` maps keys to command-line values (None = not given)."""
    from gadms.tracking.redact import reveal_override_secrets

    sets = reveal_override_secrets(list(overrides or []))  # a flow's torchrun launch passes credentials by reference
    for key, value in (extra or {}).items():
        if value is not None:
            sets.append(f"{key}={value}")
    return load_params(path, sets)


def _checked_seed(seed: int) -> int:
    """A ``--seed`` value, refused unless it lies in 0..MAX_SEED (what the parameter file's ``seed`` allows)."""
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"--seed {seed}: must be between 0 and {MAX_SEED} (2**64 - 1)")
    return seed


@params_app.command("show")
def params_show(params: Optional[Path] = ParamsOpt, set_: Optional[list[str]] = SetOpt) -> None:
    """Print the validated parameters (file + overrides + defaults) as YAML."""
    with _user_errors():
        p = _params(params, set_)
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

    with _user_errors():
        p = _params(params, set_, {"synth.shard_size": shard_size})
        seed = p.seed if seed is None else _checked_seed(seed)
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

    with _user_errors():
        p = _params(params, set_, {"synth.caption_noise": caption_noise})
        seed = p.seed if seed is None else _checked_seed(seed)
        started = time.perf_counter()
        s = write_benchmark(out, identities, seed, p.synth, progress=not quiet)
        typer.echo(f"wrote {s.root} in {time.perf_counter() - started:.1f}s")
        typer.echo(f"{'split':<6} {'identities':>10} {'images':>7} {'captions':>8}")
        for split in ("train", "val", "test"):
            typer.echo(f"{split:<6} {s.identities[split]:>10} {s.images[split]:>7} {s.captions[split]:>8}")
        typer.echo(f"noisy captions: {s.noisy_captions}")
        if preview is not None:
            typer.echo(f"preview: {benchmark_preview(s.root, preview)}")


def _maybe_torchrun(p: Params) -> None:
    """Relaunch this command under torchrun with train.gpus processes (once, from the parent)."""
    import os
    import subprocess

    if p.train.gpus > 1 and "WORLD_SIZE" not in os.environ:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={p.train.gpus}",
            "-m",
            "gadms",
            *sys.argv[1:],
        ]
        raise typer.Exit(subprocess.call(cmd))


TrackOpt = typer.Option(
    True,
    "--track/--no-track",
    help="Log the run to MLflow (params, git commit, data hash, losses, figures, metrics, model).",
)
DataHashOpt = typer.Option(None, "--data-hash", help="DVC hash of the training data, logged as the tag dvc.data_hash.")
ParentRunOpt = typer.Option(None, "--parent-run-id", help="Nest the MLflow run under this run (e.g. a pipeline's).")
ResultJsonOpt = typer.Option(None, "--result-json", help="Also write run id, model path and metrics to this JSON file.")


def _report(history, out: Path) -> None:
    """Print one line per epoch and where the model is."""
    for log in history:
        losses = "  ".join(f"{k} {v:.4f}" for k, v in log.losses.items())
        typer.echo(
            f"epoch {log.epoch + 1}: {losses}  lr {log.lr:.2e}  {log.samples_per_s:.1f} samples/s  {log.seconds:.1f}s"
        )
    typer.echo(f"model: {out / 'model.safetensors'}")


def _tracked_report(p: Params, result, result_json: Optional[Path]) -> None:
    """Print the tracked run's metrics, registry decision and how to open MLflow; optionally write them as JSON."""
    import json

    from gadms.tracking.store import ui_command

    for name, value in sorted(result.metrics.items()):
        typer.echo(f"{name:<32} {value:6.2f}")
    if result.promotion is not None:
        typer.echo(
            f"registered {p.tracking.registered_model} version {result.promotion.version}: {result.promotion.reason}"
        )
    typer.echo(f"model: {result.model_path}")
    typer.echo(f"MLflow run {result.run_id}; open the UI with: {ui_command(p)}")
    if result_json is not None:
        payload = {
            "run_id": result.run_id,
            "model": str(result.model_path),
            "model_uri": result.model_uri,
            "metrics": result.metrics,
        }
        result_json.write_text(json.dumps(payload, indent=2, sort_keys=True), encoding="utf-8")


def _train(
    params: Optional[Path],
    overrides: Optional[list[str]],
    out: Path,
    track: bool,
    plain,
    tracked,
    result_json: Optional[Path],
) -> None:
    """Load params, relaunch under torchrun if asked, run (tracked or not), report on the main process only."""
    import os

    with _user_errors():
        p = _params(params, overrides)
        _maybe_torchrun(p)
        if not track:
            _, history = plain(p)
            if os.environ.get("RANK", "0") == "0":
                _report(history, out)
            return
        result = tracked(p)
        if os.environ.get("RANK", "0") == "0":
            _tracked_report(p, result, result_json)


@train_app.command("pretrain")
def train_pretrain(
    data: str = typer.Option(
        ...,
        "--data",
        help="The caption corpus: curated shards, WebPerson Parquet (a folder, or a URL such as "
        "s3://bucket/webperson), or a benchmark root.",
    ),
    fmt: str = typer.Option(
        "curated", "--format", help="curated | webperson | cuhk-pedes | icfg-pedes | rstpreid (its train split)."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Run directory: checkpoint.pt after each epoch, model.safetensors at the end."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from --out/checkpoint.pt."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    track: bool = TrackOpt,
    data_hash: Optional[str] = DataHashOpt,
    parent_run_id: Optional[str] = ParentRunOpt,
    result_json: Optional[Path] = ResultJsonOpt,
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """GA-DMS pre-training (SPEC 5): GASS token scores, noise-masked SDM, informative-masked MTP.

    Settings come from params.yaml: model.* (backbone, masking), loss.*, train.* (epochs, batch_size, optimizer,
    warmup_epochs, grad_clip, grad_accumulation, amp, num_workers, gpus). Tracked runs also evaluate direct transfer
    on the eval.benchmarks found under paths.benchmarks_dir.
    """
    from gadms.tracking.stages import track_pretrain
    from gadms.train.runs import run_pretrain

    _train(
        params,
        set_,
        out,
        track,
        lambda p: run_pretrain(p, data, fmt, out, resume=resume, device=device),
        lambda p: track_pretrain(
            p, data, out, data_hash, fmt=fmt, parent_run_id=parent_run_id, resume=resume, device=device, progress=True
        ),
        result_json,
    )


@train_app.command("finetune")
def train_finetune(
    benchmark: str = typer.Option(..., "--benchmark", help="cuhk-pedes | icfg-pedes | rstpreid."),
    root: Optional[Path] = RootOpt,
    init: Optional[Path] = typer.Option(
        None, "--init", help="Pre-trained model (model.safetensors, checkpoint.pt or a run directory)."
    ),
    out: Path = typer.Option(..., "--out", help="Run directory."),
    resume: bool = typer.Option(False, "--resume", help="Continue from --out/checkpoint.pt."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    track: bool = TrackOpt,
    register: bool = typer.Option(
        True,
        "--register/--no-register",
        help="Register the model in MLflow and promote it to champion if it beats the champion's R1.",
    ),
    data_hash: Optional[str] = DataHashOpt,
    parent_run_id: Optional[str] = ParentRunOpt,
    result_json: Optional[Path] = ResultJsonOpt,
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """IRRA-style fine-tuning: SDM + 15% masked language modelling (+ identity loss with finetune.id_loss).

    Identity-aware batches (2 images per identity); settings under finetune.* in params.yaml. Tracked runs evaluate
    the fine-tuned model on the benchmark's test split and register it.
    """
    from gadms.tracking.stages import track_finetune_and_evaluate
    from gadms.train.runs import run_finetune

    _train(
        params,
        set_,
        out,
        track,
        lambda p: run_finetune(p, benchmark, root or p.paths.benchmarks_dir, init, out, resume=resume, device=device),
        lambda p: track_finetune_and_evaluate(
            p,
            benchmark,
            root or p.paths.benchmarks_dir,
            init,
            out,
            data_hash,
            parent_run_id=parent_run_id,
            register=register,
            resume=resume,
            device=device,
            progress=True,
        ),
        result_json,
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
    OUT/manifest.parquet and OUT/report.json. Finished shards are skipped on a rerun.
    """
    from gadms.curation.run import curate

    with _user_errors():
        p = _params(params, set_)
        source = input_dir or p.paths.web_dir
        target = out or p.paths.data_dir
        started = time.perf_counter()
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

    with _user_errors():
        p = _params(params, set_, {"curation.templates.extractor": extractor, "curation.templates.clusters": clusters})
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


@app.command("evaluate")
def evaluate(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="model.safetensors, checkpoint.pt or a run directory."),
    benchmark: str = typer.Option(..., "--benchmark", help="cuhk-pedes | icfg-pedes | rstpreid."),
    root: Optional[Path] = RootOpt,
    split: str = typer.Option("test", "--split", help="Split to evaluate on."),
    image_to_text: bool = typer.Option(False, "--image-to-text", help="Also rank captions for each image."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Text-to-image retrieval on a benchmark split: R1, R5, R10, mAP, mINP (percent).

    Every caption is a query against every image of the split. Direct transfer and cross-domain evaluation are
    this command with a pre-trained model or another benchmark.
    """
    import json

    import torch

    from gadms.data.benchmarks import load_benchmark
    from gadms.eval.evaluate import evaluate_split, format_table
    from gadms.train.runs import load_any_model

    with _user_errors():
        p = _params(params, set_)
        dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        model = load_any_model(checkpoint).to(dev)
        data = load_benchmark(benchmark, root or p.paths.benchmarks_dir, split)
        rows = {
            f"{benchmark} {split} text-to-image": evaluate_split(
                model, data, chunk=p.eval.query_chunk, device=dev, progress=True
            )
        }
        if image_to_text or p.eval.image_to_text:
            rows[f"{benchmark} {split} image-to-text"] = evaluate_split(
                model, data, image_to_text=True, chunk=p.eval.query_chunk, device=dev
            )
        typer.echo(json.dumps(rows, indent=2) if as_json else format_table(rows))


@data_app.command("stats")
def data_stats(
    benchmark: str = typer.Argument(..., help="cuhk-pedes | icfg-pedes | rstpreid | webperson | curated."),
    root: Optional[Path] = typer.Option(
        None,
        "--root",
        help="The dataset directory or a benchmark's parent (default: paths.data_dir for curated, "
        "paths.benchmarks_dir for a benchmark; webperson needs --root).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Identities, images and captions per split (skipped records are counted and reported)."""
    import json

    from gadms.data.stats import dataset_stats, format_stats

    with _user_errors():
        p = _params(params, set_)
        if root is None and benchmark == "webperson":
            raise UserError("data stats webperson: --root is required (the folder of WebPerson Parquet files)")
        default = p.paths.data_dir if benchmark == "curated" else p.paths.benchmarks_dir
        stats = dataset_stats(benchmark, root or default)
        typer.echo(json.dumps(stats, indent=2, sort_keys=True) if as_json else format_stats(stats))


@app.command("validate")
def validate(
    data: Optional[Path] = typer.Option(None, "--data", help="The curated corpus (default: paths.data_dir)."),
    report: Optional[Path] = typer.Option(
        None,
        "--report",
        help="Where report.html (kept per corpus under history/), summary.txt, gate.json and the GX Data Docs go "
        "(default: paths.reports_dir/gate).",
    ),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """The caption quality gate (SPEC 4): a Great Expectations suite over the curated captions and crops.

    Checks: non_empty, valid_text, word_count, no_speculation, no_background, mentions_person,
    mentions_attribute, no_placeholder, crop_size, crop_aspect (each passes when at least validation.mostly.<check>
    of the rows pass) and duplicates (at most validation.max_duplicate_rate). Exit status 0 when the gate passes,
    1 when it fails; nothing may be versioned or trained from data that failed.
    """
    from gadms.validation.gate import run_quality_gate

    with _user_errors():
        p = _params(params, set_)
        target = data or p.paths.data_dir
        report_dir = report or p.paths.reports_dir / "gate"
        result = run_quality_gate(target, p.validation, report_dir)
        typer.echo(result.summary)
    if not result.passed:
        raise typer.Exit(1)


def _repo_root() -> Path:
    """The git work tree holding the current directory (DVC keeps data.dvc at its root)."""
    import subprocess

    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise UserError(
            f"{Path.cwd()} is not inside a git repository; DVC versioning needs one (run git init)"
        ) from None
    return Path(top)


def _dvc_repo(p: Params) -> Path:
    """The repository root, set up for DVC with the configured default remote."""
    from gadms.versioning.dvc import ensure_repo

    root = _repo_root()
    ensure_repo(root, p.versioning.remote_name, p.versioning.remote_url)
    return root


def _data_dir(data: Optional[Path], p: Params) -> Path:
    return (data or p.paths.data_dir).resolve()


@data_app.command("version")
def data_version(
    data: Optional[Path] = typer.Option(None, "--data", help="The curated corpus (default: paths.data_dir)."),
    push_: bool = typer.Option(True, "--push/--no-push", help="Also push it to the DVC remote."),
    skip_gate: bool = typer.Option(
        False, "--skip-gate", help="Version even without a passing quality gate on this exact data."
    ),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Track the corpus with DVC (data.dvc) after checking that the quality gate passed on exactly this data.

    Prints the DVC hash: `gadms data checkout --hash HASH` brings this corpus back byte for byte.
    """
    from gadms.validation.gate import require_passed_gate
    from gadms.versioning.dvc import describe, push, track

    with _user_errors():
        p = _params(params, set_)
        target = _data_dir(data, p)
        if not skip_gate:
            require_passed_gate(target, p.paths.reports_dir / "gate")
        root = _dvc_repo(p)
        version = track(root, target)
        typer.echo(f"versioned {describe(version)}")
        if push_:
            push(root, p.versioning.remote_name)
            typer.echo(f"pushed to DVC remote '{p.versioning.remote_name}'")
        typer.echo(f"commit the pointer with: git add {version.path}.dvc && git commit -m 'data {version.md5[:8]}'")


@data_app.command("push")
def data_push(params: Optional[Path] = ParamsOpt, set_: Optional[list[str]] = SetOpt) -> None:
    """Upload the tracked corpus to the DVC remote (versioning.remote_name)."""
    from gadms.versioning.dvc import push

    with _user_errors():
        p = _params(params, set_)
        root = _dvc_repo(p)
        push(root, p.versioning.remote_name)
        typer.echo(f"pushed to DVC remote '{p.versioning.remote_name}'")


@data_app.command("pull")
def data_pull(
    data: Optional[Path] = typer.Option(None, "--data", help="The corpus directory (default: paths.data_dir)."),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Download the corpus data.dvc points at from the DVC remote and check it out."""
    from gadms.versioning.dvc import describe, pull

    with _user_errors():
        p = _params(params, set_)
        root = _dvc_repo(p)
        typer.echo(f"pulled {describe(pull(root, _data_dir(data, p), p.versioning.remote_name))}")


@data_app.command("checkout")
def data_checkout(
    md5: str = typer.Option(
        ...,
        "--hash",
        help="The DVC directory hash of the corpus (as printed by `gadms data version`, "
        "logged in MLflow as dvc.data_hash).",
    ),
    data: Optional[Path] = typer.Option(None, "--data", help="The corpus directory (default: paths.data_dir)."),
    force: bool = typer.Option(
        False, "--force", help="Overwrite files in the corpus directory that are not in the DVC cache."
    ),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Bring back exactly the corpus whose DVC hash is --hash (from the cache, else the remote); data.dvc follows."""
    from gadms.versioning.dvc import checkout_hash, describe

    with _user_errors():
        p = _params(params, set_)
        root = _dvc_repo(p)
        version = checkout_hash(root, _data_dir(data, p), md5, p.versioning.remote_name, force=force)
        typer.echo(f"checked out {describe(version)}")


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
    from flows.pipeline import run_pipeline
    from gadms.tracking.store import executable, ui_command

    with _user_errors():
        p = _params(params, set_)
        started = time.perf_counter()
    try:
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
        return
    typer.echo("\n" + result["table"] + "\n")
    promo = result["promotion"]
    if promo:
        typer.echo(f"registered {p.tracking.registered_model} version {promo['version']}: {promo['reason']}")
    typer.echo(f"MLflow pipeline run: {result['pipeline_run']} (pre-training run {result['pretrain_run']})")
    typer.echo(f"MLflow UI:  {ui_command(p)}   then open http://127.0.0.1:5000")
    typer.echo(
        f"Prefect UI: {shlex.quote(executable('prefect'))} server start   then open http://127.0.0.1:4200 "
        "(flow runs of this machine are listed)"
    )


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

    with _user_errors():
        extra: dict[str, object] = {"ablate.out_dir": out}
        if rows is not None:
            extra["ablate.rows"] = "[" + ",".join(r.strip() for r in rows.split(",") if r.strip()) + "]"
        if seeds is not None:
            extra["ablate.seeds"] = str(list(range(seeds)))
        p = _params(params, set_, extra)
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

    Needs a Prefect server to schedule against: `.venv/bin/prefect server start`, then
    `export PREFECT_API_URL=http://127.0.0.1:4200/api` before this command. For work-pool based serving see prefect.yaml
    (`prefect deploy --all`, `prefect worker start --pool gadms-local`).
    """
    from flows.pipeline import serve_schedule

    with _user_errors():
        p = _params(params, set_)
        typer.echo(
            f"serving deployment gadms-pipeline/{name} on cron '{p.orchestration.schedule_cron}' "
            f"({p.orchestration.timezone}); Ctrl-C stops"
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

    with _user_errors():
        p = _params(params, set_)
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


def main() -> None:
    """Entry point of the ``gadms`` console script."""
    import os

    for key, value in NO_TELEMETRY.items():
        os.environ.setdefault(key, value)
    app(prog_name="gadms")


if __name__ == "__main__":
    main()
