"""Tracked training stages: what the CLI and the flows call to train, evaluate and log in one go.

:func:`track_pretrain` logs, in one run (stage ``pretrain``):
  every parameter and provenance tag (see :func:`gadms.tracking.mlflow_run.tracked_run`);
  tags ``corpus.format``, ``corpus.path``;
  per-epoch ``train/<loss>``, ``train/lr``, ``train/samples_per_s``, ``train/epoch_s`` at step = epoch number;
  ``figures/token_scores.png`` (GASS scores of a few captions of the last batch);
  direct transfer on each benchmark: ``<benchmark>/{R1,R5,R10,mAP,mINP}`` (tag ``setting=direct``) and
  ``figures/direct/<benchmark>/query_<i>.png`` (a few queries with their top-10);
  ``quality/gate_summary.md`` when a caption-quality summary is given;
  the model as the pyfunc ``model``.

:func:`track_finetune_and_evaluate` logs, in one run (stage ``finetune``):
  every parameter and provenance tag; tags ``benchmark`` and ``init`` (the pre-trained model);
  per-epoch ``train/*`` as above;
  ``<benchmark>/*`` (tag ``setting=finetuned``) and its figures, and ``cross/<other>/*`` for each cross-domain
  benchmark;
  the model as the pyfunc ``model``, registered as a new version and promoted to
  champion when its R1 beats the champion's (see :mod:`gadms.tracking.registry`);
  tags ``registry.version`` and ``registry.promoted``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gadms.config import Params
from gadms.data.benchmarks import benchmark_dir, benchmark_format, load_benchmark
from gadms.model.retrieval import PersonRetrievalModel
from gadms.results import TrainedModel
from gadms.storage import location
from gadms.tracking.examples import evaluate_with_examples
from gadms.tracking.mlflow_run import TrackedRun, tracked_run
from gadms.tracking.registry import register_and_maybe_promote

if TYPE_CHECKING:
    from gadms.train.loop import EpochLog

MODEL_NAME = "model"
EXAMPLE_QUERIES = 4


def present_benchmarks(names: Sequence[str], root: Path) -> list[str]:
    """The benchmarks of ``names`` whose annotation file exists under ``root``.

    Args:
        names: benchmark names.
        root: the directory holding the benchmarks (``paths.benchmarks_dir``).

    Returns:
        Those present, in the given order.
    """
    return [n for n in names if (benchmark_dir(n, root) / benchmark_format(n).annotation).is_file()]


def evaluate_and_log(
    run: TrackedRun,
    model: PersonRetrievalModel,
    params: Params,
    benchmark: str,
    root: Path,
    prefix: str,
    device: str,
    progress: bool = False,
) -> dict[str, float]:
    """Evaluate on a benchmark's test split; log its metrics and example figures.

    Metrics of the run's own setting (``direct``, ``finetuned``) are logged as ``<benchmark>/R1``, ... with the
    setting as the run's tag ``setting``, so runs of every setting line up in one column of the runs table;
    ``cross`` results, logged next to a fine-tuned run's own, keep their prefix (``cross/<benchmark>/R1``).

    Args:
        run: the tracked run.
        model: the model, on ``device``.
        params: ``eval.query_chunk`` is used.
        benchmark: benchmark name.
        root: the benchmark directory or its parent.
        prefix: ``direct``, ``finetuned`` or ``cross``.
        device: where to encode.
        progress: show progress bars.

    Returns:
        The logged metrics by full name.
    """
    split = load_benchmark(benchmark, root, "test")
    result = evaluate_with_examples(
        model, split, EXAMPLE_QUERIES, chunk=params.eval.query_chunk, device=device, progress=progress
    )
    run.log_retrieval_examples(result.examples, benchmark, prefix)
    if prefix == "cross":
        return run.log_metrics(benchmark, result.metrics, prefix)
    run.set_tags({"setting": prefix})
    return run.log_metrics(benchmark, result.metrics)


def _device_of(model: PersonRetrievalModel) -> str:
    """The device a model's weights are on, as a string."""
    return str(next(model.parameters()).device)


def _epoch_callback(run: TrackedRun, also: Callable[[EpochLog], None] | None) -> Callable[[EpochLog], None]:
    """Log each epoch to the run, then hand it to ``also`` (e.g. a flow's logger) when given."""

    def on_epoch(log: EpochLog) -> None:
        run.log_epoch(log)
        if also is not None:
            also(log)

    return on_epoch


def _is_main_process() -> bool:
    """False on the other ranks of a torchrun launch: they train but do not track."""
    return os.environ.get("RANK", "0") == "0"


def track_pretrain(
    params: Params,
    data_dir: Path | str,
    out_dir: Path,
    data_hash: str | None,
    fmt: str = "curated",
    benchmarks_root: Path | None = None,
    benchmarks: Sequence[str] | None = None,
    parent_run_id: str | None = None,
    gate_summary: str | None = None,
    resume: bool = False,
    device: str = "auto",
    progress: bool = False,
    root: Path | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> TrainedModel:
    """GA-DMS pre-training with everything logged (see the module docstring), then direct-transfer evaluation.

    Args:
        params: the run's parameters.
        data_dir: the caption corpus.
        out_dir: run directory (``checkpoint.pt``, ``model.safetensors``).
        data_hash: the corpus's DVC hash (tag ``dvc.data_hash``).
        fmt: corpus format (``curated``, ``webperson`` or a benchmark name).
        benchmarks_root: where the benchmarks are (default ``paths.benchmarks_dir``).
        benchmarks: benchmarks to evaluate; default: those of ``eval.benchmarks`` present under the root.
        parent_run_id: nest under this run (e.g. a flow's run).
        gate_summary: the caption quality gate's summary, logged as ``quality/gate_summary.md``.
        resume: continue from ``out_dir/checkpoint.pt``.
        device: ``auto``, ``cpu``, ``cuda``, ...
        progress: show progress bars.
        root: directory a relative ``paths.mlruns_dir`` is resolved against.
        on_epoch: also called with each epoch's log, after it is logged to MLflow (e.g. to log it in Prefect).

    Returns:
        The run id, model path, logged model URI and direct-transfer metrics. On the other ranks of a
        torchrun launch only the training runs; run id and model URI are then empty.
    """
    from gadms.train.loop import FINAL_MODEL
    from gadms.train.recipes import run_pretrain

    if not _is_main_process():
        run_pretrain(params, data_dir, fmt, out_dir, resume, device, progress)
        return TrainedModel("", Path(out_dir) / FINAL_MODEL, "")
    bench_root = Path(benchmarks_root or params.paths.benchmarks_dir)
    names = list(benchmarks) if benchmarks is not None else present_benchmarks(params.eval.benchmarks, bench_root)
    tags = {"corpus.format": fmt, "corpus.path": str(data_dir), "direct_transfer.benchmarks": ",".join(names) or "none"}
    with tracked_run(
        params, f"pretrain {location(data_dir).name}", "pretrain", data_hash, tags, parent_run_id, root
    ) as run:
        if gate_summary is not None:
            run.log_text(gate_summary, "quality/gate_summary.md")
        model, history = run_pretrain(
            params, data_dir, fmt, out_dir, resume, device, progress, on_epoch=_epoch_callback(run, on_epoch)
        )
        if history:
            run.log_token_scores(history[-1])
        metrics: dict[str, float] = {}
        for name in names:
            metrics |= evaluate_and_log(run, model, params, name, bench_root, "direct", _device_of(model), progress)
        info = run.log_model(model.cpu(), MODEL_NAME)
    return TrainedModel(run.run_id, Path(out_dir) / FINAL_MODEL, info.model_uri, metrics)


def track_finetune_and_evaluate(
    params: Params,
    benchmark: str,
    benchmark_root: Path,
    pretrained: Path | None,
    out_dir: Path,
    data_hash: str | None,
    cross_benchmarks: Sequence[str] = (),
    parent_run_id: str | None = None,
    register: bool = True,
    resume: bool = False,
    device: str = "auto",
    progress: bool = False,
    root: Path | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> TrainedModel:
    """IRRA-style fine-tuning on ``benchmark`` with everything logged, evaluation, registration and promotion.

    Args:
        params: the run's parameters.
        benchmark: the benchmark to fine-tune and evaluate on.
        benchmark_root: its directory or parent (cross-domain benchmarks are looked up there too).
        pretrained: the pre-trained model (``model.safetensors``, ``checkpoint.pt`` or run directory);
            None: ``model.pretrained``.
        out_dir: run directory.
        data_hash: the benchmark data's DVC hash (tag ``dvc.data_hash``).
        cross_benchmarks: other benchmarks to evaluate the fine-tuned model on (``cross/<name>/*``).
        parent_run_id: nest under this run.
        register: register the model and promote it to champion on its fine-tuned R1.
        resume: continue from ``out_dir/checkpoint.pt``.
        device: ``auto``, ``cpu``, ``cuda``, ...
        progress: show progress bars.
        root: directory a relative ``paths.mlruns_dir`` is resolved against.
        on_epoch: also called with each epoch's log, after it is logged to MLflow.

    Returns:
        The run id, model path, logged model URI, metrics and the registry decision (on the other
        ranks of a torchrun launch only the training runs; run id and model URI are then empty).
    """
    from gadms.train.loop import FINAL_MODEL
    from gadms.train.recipes import run_finetune

    if not _is_main_process():
        run_finetune(params, benchmark, benchmark_root, pretrained, out_dir, resume, device, progress)
        return TrainedModel("", Path(out_dir) / FINAL_MODEL, "")
    tags = {"benchmark": benchmark, "init": str(pretrained) if pretrained else (params.model.pretrained or "none")}
    with tracked_run(params, f"finetune {benchmark}", "finetune", data_hash, tags, parent_run_id, root) as run:
        model, history = run_finetune(
            params,
            benchmark,
            benchmark_root,
            pretrained,
            out_dir,
            resume,
            device,
            progress,
            on_epoch=_epoch_callback(run, on_epoch),
        )
        if history:
            run.log_token_scores(history[-1])
        metrics = evaluate_and_log(
            run, model, params, benchmark, benchmark_root, "finetuned", _device_of(model), progress
        )
        for other in cross_benchmarks:
            metrics |= evaluate_and_log(run, model, params, other, benchmark_root, "cross", _device_of(model), progress)
        info = run.log_model(model.cpu(), MODEL_NAME)
        promotion = None
        if register:
            promotion = register_and_maybe_promote(
                run.run_id, MODEL_NAME, params, benchmark, metrics[f"{benchmark}/R1"], root
            )
            run.set_tags({"registry.version": promotion.version, "registry.promoted": str(promotion.promoted).lower()})
    return TrainedModel(run.run_id, Path(out_dir) / FINAL_MODEL, info.model_uri, metrics, promotion=promotion)
