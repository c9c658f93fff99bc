"""Pre-training flow: GA-DMS on the versioned corpus, tracked in MLflow; torchrun when train.gpus > 1."""

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
from gadms.results import CorpusVersion, ParamsSource, TrainedModel
from gadms.tracking.pipeline_stages import pretrain_stage, run_exists
from gadms.train.loop import FINAL_MODEL


@task(name="pretrain", persist_result=True, cache_key_fn=cache_on_inputs(ignore=("parent_run_id",)))
def pretrain(
    params: Params, source: ParamsSource, corpus: CorpusVersion, out_dir: Path, parent_run_id: Optional[str]
) -> TrainedModel:
    """Train (resuming from ``out_dir/checkpoint.pt`` after a crash) and log the run."""
    on_epoch = epoch_logger("pretrain", params.train.epochs)
    return pretrain_stage(params, source, corpus, out_dir, parent_run_id, on_epoch, run_logger().info)


def pretrain_dir(params: Params, data_hash: str) -> Path:
    """Where the pre-training of this corpus with these settings lives."""
    settings = (params.seed, params.model, params.loss, params.train, params.augment)
    return stage_dir(params.paths.work_dir, "pretrain", data_hash, *settings)


@gadms_flow(name="pretrain", log_prints=True, flow_run_name="pretrain")
def pretrain_flow(
    params: Params, source: ParamsSource, corpus: CorpusVersion, parent_run_id: Optional[str] = None
) -> TrainedModel:
    """Pre-train on the versioned corpus (its folder, DVC hash and gate summary)."""
    out = pretrain_dir(params, corpus.md5)
    model = recompute_if_gone(
        rerun_if_missing(pretrain, out / FINAL_MODEL),
        lambda cached: run_exists(params, cached.run_id),
        *(params, source, corpus, out, parent_run_id),
    )
    run_logger().info(f"pre-trained model {model.path} (MLflow run {model.run_id})")
    return dataclasses.replace(model, link=log_run_link(params, "pretrain", model.run_id))
