"""Fine-tuning flow: IRRA-style on one benchmark from the pre-trained model, evaluated and tracked in MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from prefect import task

from flows.common import (
    cache_on_inputs,
    epoch_logger,
    gadms_flow,
    load,
    log_run_link,
    run_logger,
    stage_dir,
    unless_missing,
)
from flows.pretrain import launch_torchrun
from flows.tracked_cache import recompute_if_gone, run_exists
from gadms.config import Params
from gadms.train.loop import CHECKPOINT, FINAL_MODEL


@task(
    name="finetune",
    task_run_name="finetune-{benchmark}",
    persist_result=True,
    cache_key_fn=cache_on_inputs(ignore=("parent_run_id",)),
)
def finetune(
    params: Params,
    params_file: str,
    overrides: Sequence[str],
    benchmark: str,
    benchmark_root: Path,
    pretrained: Path,
    out_dir: Path,
    data_hash: str,
    parent_run_id: Optional[str],
) -> dict[str, Any]:
    """Fine-tune and evaluate (``finetuned/<benchmark>/*``); resumes from ``out_dir/checkpoint.pt`` after a crash."""
    resume = (out_dir / CHECKPOINT).is_file()
    if resume:
        run_logger().info(f"resuming fine-tuning from {out_dir / CHECKPOINT}")
    if params.train.gpus > 1:
        command = [
            "train",
            "finetune",
            "--benchmark",
            benchmark,
            "--root",
            str(benchmark_root),
            "--init",
            str(pretrained),
            "--out",
            str(out_dir),
            "--data-hash",
            data_hash,
            "--no-register",
            *(["--parent-run-id", parent_run_id] if parent_run_id else []),
            *(["--resume"] if resume else []),
        ]
        return launch_torchrun(command, params_file, overrides, out_dir / "result.json")
    from gadms.tracking.stages import track_finetune_and_evaluate

    result = track_finetune_and_evaluate(
        params,
        benchmark,
        benchmark_root,
        pretrained,
        out_dir,
        data_hash,
        parent_run_id=parent_run_id,
        register=False,
        resume=resume,
        progress=True,
        on_epoch=epoch_logger(f"finetune {benchmark}", params.finetune.epochs),
    )
    return {
        "run_id": result.run_id,
        "model": str(result.model_path),
        "model_uri": result.model_uri,
        "metrics": result.metrics,
    }


def finetune_dir(params: Params, benchmark: str, pretrained: Path) -> Path:
    """Where the fine-tuning of this pre-trained model on this benchmark lives."""
    return stage_dir(
        params.paths.work_dir,
        f"finetune-{benchmark}",
        str(pretrained),
        params.seed,
        params.model,
        params.loss,
        params.finetune,
        params.augment,
    )


@gadms_flow(name="finetune", log_prints=True, flow_run_name="finetune {benchmark}")
def finetune_flow(
    benchmark: str,
    pretrained: str,
    params_file: str = "params.yaml",
    overrides: Sequence[str] = (),
    data_hash: str = "unknown",
    parent_run_id: Optional[str] = None,
) -> dict[str, Any]:
    """Fine-tune the model at ``pretrained`` on ``benchmark`` (found under paths.benchmarks_dir)."""
    params = load(params_file, overrides)
    init = Path(pretrained)
    out = finetune_dir(params, benchmark, init)
    result = recompute_if_gone(
        unless_missing(finetune, out / FINAL_MODEL),
        lambda cached: run_exists(params, cached["run_id"]),
        params,
        params_file,
        list(overrides),
        benchmark,
        params.paths.benchmarks_dir,
        init,
        out,
        data_hash,
        parent_run_id,
    )
    r1, mean_ap = result["metrics"][f"{benchmark}/R1"], result["metrics"][f"{benchmark}/mAP"]
    run_logger().info(f"finetuned on {benchmark}: R1 {r1:.2f}, mAP {mean_ap:.2f} (MLflow run {result['run_id']})")
    result["link"] = log_run_link(params, f"finetune {benchmark}", result["run_id"])
    return result
