"""Evaluation flow: a model on benchmark test splits (R1/R5/R10/mAP/mINP and example figures), tracked in MLflow."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

from flows.common import gadms_flow, log_run_link, run_logger, stage_task
from flows.tracked_cache import tracked_stage
from gadms.config import Params
from gadms.results import Evaluation, TrainedModel
from gadms.tracking.pipeline_stages import evaluation_stage, file_digest


@stage_task("evaluate", "evaluate-{setting}-{benchmark}")
def evaluate(
    params: Params,
    model_path: Path,
    model_digest: str,
    benchmark: str,
    setting: str,
    data_hash: str,
    parent_run_id: Optional[str],
) -> Evaluation:
    """Evaluate ``model_path`` on ``benchmark`` and log ``<benchmark>/*`` in a run of stage ``evaluate``
    (``model_digest`` keys the cache on the model file's bytes changing).
    """
    return evaluation_stage(params, model_path, benchmark, setting, data_hash, parent_run_id)


@gadms_flow(name="evaluate", log_prints=True, flow_run_name="evaluate {setting}")
def evaluate_flow(
    params: Params,
    model: TrainedModel,
    benchmarks: Sequence[str],
    setting: str = "direct",
    data_hash: str = "unknown",
    parent_run_id: Optional[str] = None,
) -> dict[str, Evaluation]:
    """Evaluate ``model`` on each of ``benchmarks`` (under paths.benchmarks_dir), one MLflow run each."""
    digest = file_digest(model.path)
    results = {}
    for name in benchmarks:
        found = tracked_stage(evaluate, params, params, model.path, digest, name, setting, data_hash, parent_run_id)
        run_logger().info(f"{setting} on {name}: R1 {found.metric('R1'):.2f}, mAP {found.metric('mAP'):.2f}")
        link = log_run_link(params, f"evaluate {setting} {name}", found.run_id)
        results[name] = dataclasses.replace(found, link=link)
    return results
