"""Pre-training flow: GA-DMS on the versioned corpus, tracked in MLflow; torchrun when train.gpus > 1."""

from __future__ import annotations

import json
import subprocess
import sys
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
from flows.tracked_cache import recompute_if_gone, run_exists
from gadms.config import Params
from gadms.lifetime import linked_env
from gadms.train.loop import CHECKPOINT, FINAL_MODEL


def launch_torchrun(command: list[str], params_file: str, overrides: Sequence[str], result: Path) -> dict[str, Any]:
    """Run a ``gadms train`` command (it relaunches itself under torchrun with train.gpus processes); read its
    result.
    """
    sets = [arg for o in overrides for arg in ("--set", o)]
    subprocess.run(
        [sys.executable, "-m", "gadms", *command, "--params", params_file, *sets, "--result-json", str(result)],
        check=True,
        env=linked_env(),  # the command (torchrun and its ranks with it) ends when this process ends
    )
    return json.loads(result.read_text(encoding="utf-8"))


@task(name="pretrain", persist_result=True, cache_key_fn=cache_on_inputs(ignore=("parent_run_id", "gate_summary")))
def pretrain(
    params: Params,
    params_file: str,
    overrides: Sequence[str],
    data_dir: Path,
    out_dir: Path,
    data_hash: str,
    parent_run_id: Optional[str],
    gate_summary: Optional[str],
) -> dict[str, Any]:
    """Train (resuming from ``out_dir/checkpoint.pt`` after a crash) and log the run; returns run id and model path."""
    resume = (out_dir / CHECKPOINT).is_file()
    if resume:
        run_logger().info(f"resuming pre-training from {out_dir / CHECKPOINT}")
    if params.train.gpus > 1:
        command = [
            "train",
            "pretrain",
            "--data",
            str(data_dir),
            "--out",
            str(out_dir),
            "--data-hash",
            data_hash,
            *(["--parent-run-id", parent_run_id] if parent_run_id else []),
            *(["--resume"] if resume else []),
        ]
        return launch_torchrun(command, params_file, overrides, out_dir / "result.json")
    from gadms.tracking.stages import track_pretrain

    result = track_pretrain(
        params,
        data_dir,
        out_dir,
        data_hash,
        benchmarks=[],
        parent_run_id=parent_run_id,
        gate_summary=gate_summary,
        resume=resume,
        progress=True,
        on_epoch=epoch_logger("pretrain", params.train.epochs),
    )
    return {"run_id": result.run_id, "model": str(result.model_path), "model_uri": result.model_uri}


def pretrain_dir(params: Params, data_hash: str) -> Path:
    """Where the pre-training of this corpus with these settings lives."""
    return stage_dir(
        params.paths.work_dir,
        "pretrain",
        data_hash,
        params.seed,
        params.model,
        params.loss,
        params.train,
        params.augment,
    )


@gadms_flow(name="pretrain", log_prints=True, flow_run_name="pretrain")
def pretrain_flow(
    params_file: str = "params.yaml",
    overrides: Sequence[str] = (),
    data_dir: Optional[str] = None,
    data_hash: str = "unknown",
    parent_run_id: Optional[str] = None,
    gate_summary: Optional[str] = None,
) -> dict[str, Any]:
    """Pre-train on ``data_dir`` (default paths.data_dir), the corpus whose DVC hash is ``data_hash``."""
    params = load(params_file, overrides)
    data = Path(data_dir or params.paths.data_dir)
    out = pretrain_dir(params, data_hash)
    result = recompute_if_gone(
        unless_missing(pretrain, out / FINAL_MODEL),
        lambda cached: run_exists(params, cached["run_id"]),
        *(params, params_file, list(overrides), data, out, data_hash, parent_run_id, gate_summary),
    )
    run_logger().info(f"pre-trained model {result['model']} (MLflow run {result['run_id']})")
    result["link"] = log_run_link(params, "pretrain", result["run_id"])
    return result
