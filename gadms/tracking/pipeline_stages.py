"""The pipeline's tracked stages, one call each, typed in and out (see :mod:`gadms.results`).

:func:`pretrain_stage` and :func:`finetune_stage` train in this process on one device, resuming from the run
directory's checkpoint, or run ``gadms train`` (torchrun) when ``train.gpus`` > 1; :func:`evaluation_stage` loads
a model on the best device and evaluates it in a run of stage ``evaluate``; :func:`promote` registers a fine-tuned
model and moves the champion alias when it is better. :func:`run_exists` and :func:`version_exists` tell whether
what a cached stage result points at is still in the store. Nothing here needs Prefect.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gadms.config import Params
from gadms.devices import resolve_device
from gadms.results import CorpusVersion, Evaluation, ParamsSource, Promotion, TrainedModel, plain
from gadms.train.launch import finetune_options, pretrain_options, run_train_command, train_command

if TYPE_CHECKING:
    from gadms.train.loop import EpochLog

RESULT_JSON = "result.json"  # what a torchrun launch writes into its run directory


def stage_dir(work_dir: Path, stage: str, *inputs: Any) -> Path:
    """``work_dir/runs/STAGE-HASH`` named by what decides the stage's result, so a rerun after a crash resumes there."""
    text = json.dumps(plain(list(inputs)), sort_keys=True, default=str)
    return Path(work_dir) / "runs" / f"{stage}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]}"


def pretrain_dir(params: Params, data_hash: str) -> Path:
    """Where the pre-training of this corpus with these settings lives."""
    settings = (params.seed, params.model, params.loss, params.train, params.augment)
    return stage_dir(params.paths.work_dir, "pretrain", data_hash, *settings)


def finetune_dir(params: Params, benchmark: str, pretrained: Path) -> Path:
    """Where the fine-tuning of this pre-trained model on this benchmark lives."""
    settings = (params.seed, params.model, params.loss, params.finetune, params.augment)
    return stage_dir(params.paths.work_dir, f"finetune-{benchmark}", str(pretrained), *settings)


def _resume(out_dir: Path, what: str, log: Callable[[str], None]) -> bool:
    """Whether ``out_dir`` holds a checkpoint to resume from (said in one line when it does)."""
    from gadms.train.loop import CHECKPOINT

    resume = (Path(out_dir) / CHECKPOINT).is_file()
    if resume:
        log(f"resuming {what} from {Path(out_dir) / CHECKPOINT}")
    return resume


def _launched(stage: str, options: list[str], source: ParamsSource, out_dir: Path) -> TrainedModel:
    """Train under torchrun in a ``gadms train`` command; the model it reports."""
    result = Path(out_dir) / RESULT_JSON
    return TrainedModel.from_json(run_train_command(train_command(stage, options, source, result), result))


def pretrain_stage(
    params: Params,
    source: ParamsSource,
    corpus: CorpusVersion,
    out_dir: Path,
    parent_run_id: str | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
    log: Callable[[str], None] = print,
) -> TrainedModel:
    """Pre-train on the versioned corpus, tracked (stage ``pretrain``, the gate's summary logged with it).

    Args:
        params: the run's parameters.
        source: where they came from (for the torchrun launch when ``train.gpus`` > 1).
        corpus: the versioned corpus (its folder, DVC hash and gate).
        out_dir: the run directory; a checkpoint there is resumed from.
        parent_run_id: nest the MLflow run under this one.
        on_epoch: also called with each epoch's log (in this process only).
        log: where the resume line goes.

    Returns:
        The trained model.
    """
    from gadms.tracking.tracked_training import track_pretrain

    resume = _resume(out_dir, "pre-training", log)
    if params.train.gpus > 1:
        options = pretrain_options(corpus.path, out_dir, corpus.md5, parent_run_id, resume)
        return _launched("pretrain", options, source, out_dir)
    return track_pretrain(
        params,
        corpus.path,
        out_dir,
        corpus.md5,
        benchmarks=[],
        parent_run_id=parent_run_id,
        gate_summary=corpus.gate.summary,
        resume=resume,
        progress=True,
        on_epoch=on_epoch,
    )


def finetune_stage(
    params: Params,
    source: ParamsSource,
    benchmark: str,
    pretrained: Path,
    out_dir: Path,
    data_hash: str,
    parent_run_id: str | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
    log: Callable[[str], None] = print,
) -> TrainedModel:
    """Fine-tune ``pretrained`` on ``benchmark`` (under ``paths.benchmarks_dir``) and evaluate it, tracked (stage
    ``finetune``, ``<benchmark>/*``); not registered: the pipeline registers the model it promotes.

    Args:
        params: the run's parameters.
        source: where they came from (for the torchrun launch when ``train.gpus`` > 1).
        benchmark: the benchmark.
        pretrained: the pre-trained model file.
        out_dir: the run directory; a checkpoint there is resumed from.
        data_hash: the corpus's DVC hash (tag ``dvc.data_hash``).
        parent_run_id: nest the MLflow run under this one.
        on_epoch: also called with each epoch's log (in this process only).
        log: where the resume line goes.

    Returns:
        The fine-tuned model with its metrics.
    """
    from gadms.tracking.tracked_training import track_finetune_and_evaluate

    resume = _resume(out_dir, "fine-tuning", log)
    root = params.paths.benchmarks_dir
    if params.train.gpus > 1:
        options = finetune_options(benchmark, root, pretrained, out_dir, data_hash, parent_run_id, resume)
        return _launched("finetune", options, source, out_dir)
    return track_finetune_and_evaluate(
        params,
        benchmark,
        root,
        pretrained,
        out_dir,
        data_hash,
        parent_run_id=parent_run_id,
        register=False,
        resume=resume,
        progress=True,
        on_epoch=on_epoch,
    )


def file_digest(path: Path) -> str:
    """Size and modification time of a model file: a changed model must not hit the evaluation cache."""
    stat = Path(path).stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


def evaluation_stage(
    params: Params,
    model_path: Path,
    benchmark: str,
    setting: str,
    data_hash: str,
    parent_run_id: str | None = None,
    device: str | None = None,
) -> Evaluation:
    """Evaluate the model at ``model_path`` on ``benchmark``'s test split (under ``paths.benchmarks_dir``).

    Logs ``<benchmark>/*`` and example figures in a run of stage ``evaluate`` named ``evaluate SETTING BENCHMARK``,
    tagged with the benchmark, the setting and the model.

    Args:
        params: the run's parameters.
        model_path: a model file or run directory.
        benchmark: the benchmark.
        setting: ``direct`` (a pre-trained model) or ``finetuned``.
        data_hash: the corpus's DVC hash (tag ``dvc.data_hash``).
        parent_run_id: nest the MLflow run under this one.
        device: where to evaluate (default: CUDA when a GPU is visible, else the CPU).

    Returns:
        The evaluation.
    """
    from gadms.tracking.mlflow_run import tracked_run
    from gadms.tracking.tracked_training import evaluate_and_log
    from gadms.train.recipes import load_any_model

    device = resolve_device(device or "auto")
    root = params.paths.benchmarks_dir
    model = load_any_model(model_path).eval().to(device)
    tags = {"benchmark": benchmark, "setting": setting, "model": str(model_path)}
    with tracked_run(params, f"evaluate {setting} {benchmark}", "evaluate", data_hash, tags, parent_run_id) as run:
        metrics = evaluate_and_log(run, model, params, benchmark, root, setting, device, progress=True)
    return Evaluation(benchmark, setting, run.run_id, metrics)


def promote(params: Params, tuned: TrainedModel, benchmark: str) -> Promotion:
    """Register the fine-tuned model; the champion alias moves to it only when it beats the champion's R1 on
    ``benchmark`` (see :func:`gadms.tracking.registry.register_and_maybe_promote`).
    """
    from gadms.tracking.registry import register_and_maybe_promote
    from gadms.tracking.tracked_training import MODEL_NAME

    return register_and_maybe_promote(tuned.run_id, MODEL_NAME, params, benchmark, tuned.metric(benchmark, "R1"))


def run_exists(params: Params, run_id: str) -> bool:
    """Whether MLflow run ``run_id`` is in the store and not deleted."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from gadms.tracking.store import using_store

    with using_store(params) as uri:
        try:
            return MlflowClient(uri).get_run(run_id).info.lifecycle_stage == "active"
        except MlflowException:
            return False


def version_exists(params: Params, version: int | str) -> bool:
    """Whether version ``version`` of ``tracking.registered_model`` is in the registry."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from gadms.tracking.store import using_store

    with using_store(params) as uri:
        try:
            MlflowClient(uri).get_model_version(params.tracking.registered_model, str(version))
            return True
        except MlflowException:
            return False
