"""Fine-tuning flow: IRRA-style on one benchmark from the pre-trained model, evaluated and tracked in MLflow."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from prefect import task

from flows.common import (
    cache_on_inputs,
    epoch_logger,
    gadms_flow,
    log_run_link,
    rerun_if_missing,
    run_logger,
    stage_dir,
)
from flows.tracked_cache import recompute_if_gone
from gadms.config import Params
from gadms.results import ParamsSource, TrainedModel
from gadms.tracking.pipeline_stages import finetune_stage, run_exists
from gadms.train.loop import FINAL_MODEL


@task(
    name="finetune",
    task_run_name="finetune-{benchmark}",
    persist_result=True,
    cache_key_fn=cache_on_inputs(ignore=("parent_run_id",)),
)
def finetune(
    params: Params,
    source: ParamsSource,
    benchmark: str,
    pretrained: Path,
    out_dir: Path,
    data_hash: str,
    parent_run_id: Optional[str],
) -> TrainedModel:
    """Fine-tune and evaluate (``<benchmark>/*``); resumes from ``out_dir/checkpoint.pt`` after a crash."""
    on_epoch = epoch_logger(f"finetune {benchmark}", params.finetune.epochs)
    log = run_logger().info
    return finetune_stage(params, source, benchmark, pretrained, out_dir, data_hash, parent_run_id, on_epoch, log)


def finetune_dir(params: Params, benchmark: str, pretrained: Path) -> Path:
    """Where the fine-tuning of this pre-trained model on this benchmark lives."""
    settings = (params.seed, params.model, params.loss, params.finetune, params.augment)
    return stage_dir(params.paths.work_dir, f"finetune-{benchmark}", str(pretrained), *settings)


@gadms_flow(name="finetune", log_prints=True, flow_run_name="finetune {benchmark}")
def finetune_flow(
    params: Params,
    source: ParamsSource,
    benchmark: str,
    pretrained: TrainedModel,
    data_hash: str = "unknown",
    parent_run_id: Optional[str] = None,
) -> TrainedModel:
    """Fine-tune the pre-trained model on ``benchmark`` (found under paths.benchmarks_dir)."""
    out = finetune_dir(params, benchmark, pretrained.path)
    model = recompute_if_gone(
        rerun_if_missing(finetune, out / FINAL_MODEL),
        lambda cached: run_exists(params, cached.run_id),
        *(params, source, benchmark, pretrained.path, out, data_hash, parent_run_id),
    )
    r1, mean_ap = model.metric(benchmark, "R1"), model.metric(benchmark, "mAP")
    run_logger().info(f"finetuned on {benchmark}: R1 {r1:.2f}, mAP {mean_ap:.2f} (MLflow run {model.run_id})")
    return dataclasses.replace(model, link=log_run_link(params, f"finetune {benchmark}", model.run_id))
