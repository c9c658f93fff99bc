"""Fine-tuning flow: IRRA-style on one benchmark from the pre-trained model, evaluated and tracked in MLflow."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from flows.common import epoch_logger, gadms_flow, log_run_link, run_logger, stage_task
from flows.tracked_cache import tracked_stage
from gadms.config import Params
from gadms.results import ParamsSource, TrainedModel
from gadms.tracking.pipeline_stages import finetune_dir, finetune_stage
from gadms.train.loop import FINAL_MODEL


@stage_task("finetune", "finetune-{benchmark}")
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
    inputs = (params, source, benchmark, pretrained.path, out, data_hash, parent_run_id)
    model = tracked_stage(finetune, params, *inputs, output=out / FINAL_MODEL)
    r1, mean_ap = model.metric(benchmark, "R1"), model.metric(benchmark, "mAP")
    run_logger().info(f"finetuned on {benchmark}: R1 {r1:.2f}, mAP {mean_ap:.2f} (MLflow run {model.run_id})")
    return dataclasses.replace(model, link=log_run_link(params, f"finetune {benchmark}", model.run_id))
