"""``gadms train pretrain|finetune`` and ``gadms evaluate``."""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Iterator, Optional

import typer

from gadms.cli.common import cli_params, user_errors
from gadms.cli.options import BenchmarkOpt, DeviceOpt, ParamsOpt, RootOpt, SetOpt
from gadms.config import Params
from gadms.devices import check_device, resolve_device
from gadms.results import TrainedModel

train_app = typer.Typer(
    help="Train: GA-DMS pre-training on a caption corpus, IRRA-style fine-tuning on a benchmark. "
    "Checkpoints after every epoch into --out (checkpoint.pt); --resume continues exactly; the final weights are "
    "--out/model.safetensors. With train.gpus > 1 the command relaunches itself under torchrun (DDP).",
    no_args_is_help=True,
)


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


# The options train pretrain and train finetune share (with --device, --params and --set of gadms.cli.options).
ResumeOpt = typer.Option(False, "--resume", help="Continue from --out/checkpoint.pt.")
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


def _tracked_report(p: Params, result: TrainedModel, result_json: Optional[Path]) -> None:
    """Print the tracked run's metrics, registry decision and how to open MLflow; optionally write them as JSON."""
    import json

    from gadms.tracking.store import ui_command

    for name, value in sorted(result.metrics.items()):
        typer.echo(f"{name:<32} {value:6.2f}")
    if result.promotion is not None:
        typer.echo(
            f"registered {p.tracking.registered_model} version {result.promotion.version}: {result.promotion.reason}"
        )
    typer.echo(f"model: {result.path}")
    typer.echo(f"MLflow run {result.run_id}; open the UI with: {ui_command(p)}")
    if result_json is not None:
        result_json.write_text(json.dumps(result.as_json(), indent=2, sort_keys=True), encoding="utf-8")


def _train(
    command: str,
    device: str,
    params: Optional[Path],
    overrides: Optional[list[str]],
    out: Path,
    track: bool,
    plain,
    tracked,
    result_json: Optional[Path],
) -> None:
    """Check --device, load params, hold --out, relaunch under torchrun if asked, run (tracked or not), report on
    the main process only.
    """
    import os

    from gadms.lifetime import guard

    with user_errors():
        check_device(device, "--device")
    guard(command)  # no child process (loader workers, torchrun and its ranks) outlives the command
    with user_errors():
        p = cli_params(params, overrides)
        with out_lock(out, command), _lock_env(out):
            _maybe_torchrun(p)
            if not track:
                _, history = plain(p)
                if os.environ.get("RANK", "0") == "0":
                    _report(history, out)
                return
            result = tracked(p)
            if os.environ.get("RANK", "0") == "0":
                _tracked_report(p, result, result_json)


OUT_LOCK_ENV = "GADMS_TRAIN_OUT_LOCKED"  # set for the ranks the launching process started: it holds --out for them


def out_lock(out: Path, command: str) -> AbstractContextManager:
    """The one-writer lock of --out, taken once per run: by the launching process, or by global rank 0 of a
    torchrun started by hand. The ranks of one run share --out; a second, independent run is refused.
    """
    import os

    from gadms.locks import writer_lock

    if os.environ.get(OUT_LOCK_ENV) == str(Path(out).resolve()) or os.environ.get("RANK", "0") != "0":
        return nullcontext()
    return writer_lock(out, command, "wait for it or choose another --out (--resume continues a stopped run)")


@contextmanager
def _lock_env(out: Path) -> Iterator[None]:
    """Tell the processes started in the block (torchrun's ranks) that this one holds --out."""
    import os

    saved = os.environ.get(OUT_LOCK_ENV)
    os.environ[OUT_LOCK_ENV] = str(Path(out).resolve())
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(OUT_LOCK_ENV, None)
        else:
            os.environ[OUT_LOCK_ENV] = saved


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
    resume: bool = ResumeOpt,
    device: str = DeviceOpt,
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
    from gadms.tracking.tracked_training import track_pretrain
    from gadms.train.recipes import run_pretrain

    _train(
        "gadms train pretrain",
        device,
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
    benchmark: str = BenchmarkOpt,
    root: Optional[Path] = RootOpt,
    init: Optional[Path] = typer.Option(
        None, "--init", help="Pre-trained model (model.safetensors, checkpoint.pt or a run directory)."
    ),
    out: Path = typer.Option(..., "--out", help="Run directory."),
    resume: bool = ResumeOpt,
    device: str = DeviceOpt,
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
    from gadms.tracking.tracked_training import track_finetune_and_evaluate
    from gadms.train.recipes import run_finetune

    _train(
        "gadms train finetune",
        device,
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


def evaluate(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="model.safetensors, checkpoint.pt or a run directory."),
    benchmark: str = BenchmarkOpt,
    root: Optional[Path] = RootOpt,
    split: str = typer.Option("test", "--split", help="Split to evaluate on."),
    image_to_text: bool = typer.Option(False, "--image-to-text", help="Also rank captions for each image."),
    device: str = DeviceOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Text-to-image retrieval on a benchmark split: R1, R5, R10, mAP, mINP (percent).

    Every caption is a query against every image of the split. Direct transfer and cross-domain evaluation are
    this command with a pre-trained model or another benchmark.
    """
    import json

    from gadms.data.benchmarks import load_benchmark
    from gadms.eval.evaluate import evaluate_split, format_table
    from gadms.train.recipes import load_any_model

    with user_errors():
        p = cli_params(params, set_)
        dev = resolve_device(device)
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
