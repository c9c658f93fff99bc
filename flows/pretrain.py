"""Pre-training flow: GA-DMS on the versioned corpus, tracked in MLflow; torchrun when train.gpus > 1."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from flows.common import epoch_logger, gadms_flow, log_run_link, run_logger, stage_task
from flows.tracked_cache import tracked_stage
from gadms.config import Params
from gadms.results import CorpusVersion, ParamsSource, TrainedModel
from gadms.tracking.pipeline_stages import pretrain_dir, pretrain_stage
from gadms.train.loop import FINAL_MODEL


@stage_task("pretrain")
def pretrain(
    params: Params, source: ParamsSource, corpus: CorpusVersion, out_dir: Path, parent_run_id: Optional[str]
) -> TrainedModel:
    """Train (resuming from ``out_dir/checkpoint.pt`` after a crash) and log the run."""
    on_epoch = epoch_logger("pretrain", params.train.epochs)
    return pretrain_stage(params, source, corpus, out_dir, parent_run_id, on_epoch, run_logger().info)


@gadms_flow(name="pretrain", log_prints=True, flow_run_name="pretrain")
def pretrain_flow(
    params: Params, source: ParamsSource, corpus: CorpusVersion, parent_run_id: Optional[str] = None
) -> TrainedModel:
    """Pre-train on the versioned corpus (its folder, DVC hash and gate summary)."""
    out = pretrain_dir(params, corpus.md5)
    model = tracked_stage(pretrain, params, params, source, corpus, out, parent_run_id, output=out / FINAL_MODEL)
    run_logger().info(f"pre-trained model {model.path} (MLflow run {model.run_id})")
    return dataclasses.replace(model, link=log_run_link(params, "pretrain", model.run_id))
