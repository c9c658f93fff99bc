"""Evaluation flow: a model on benchmark test splits (R1/R5/R10/mAP/mINP and example figures), tracked in MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from prefect import task

from flows.common import cache_on_inputs, gadms_flow, load, log_run_link, run_logger
from flows.tracked_cache import recompute_if_gone, run_exists
from gadms.config import Params


@task(
    name="evaluate",
    task_run_name="evaluate-{setting}-{benchmark}",
    persist_result=True,
    cache_key_fn=cache_on_inputs(ignore=("parent_run_id",)),
)
def evaluate(
    params: Params,
    model_path: Path,
    model_digest: str,
    benchmark: str,
    benchmark_root: Path,
    setting: str,
    data_hash: str,
    parent_run_id: Optional[str],
) -> dict[str, float]:
    """Evaluate ``model_path`` on ``benchmark`` and log ``<setting>/<benchmark>/*`` in a run of stage ``evaluate``."""
    import torch

    from gadms.tracking.mlflow_run import tracked_run
    from gadms.tracking.stages import evaluate_and_log
    from gadms.train.recipes import load_any_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_any_model(model_path).eval().to(device)
    tags = {"benchmark": benchmark, "setting": setting, "model": str(model_path)}
    with tracked_run(params, f"evaluate {setting} {benchmark}", "evaluate", data_hash, tags, parent_run_id) as run:
        metrics = evaluate_and_log(run, model, params, benchmark, benchmark_root, setting, device, progress=True)
    return {**metrics, "run_id": run.run_id}  # type: ignore[dict-item]


def file_digest(path: Path) -> str:
    """Size and modification time of a model file: a changed model must not hit the evaluation cache."""
    stat = Path(path).stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


@gadms_flow(name="evaluate", log_prints=True, flow_run_name="evaluate {setting}")
def evaluate_flow(
    model: str,
    benchmarks: Optional[Sequence[str]] = None,
    setting: str = "direct",
    params_file: str = "params.yaml",
    overrides: Sequence[str] = (),
    data_hash: str = "unknown",
    parent_run_id: Optional[str] = None,
) -> dict[str, dict[str, float]]:
    """Evaluate ``model`` on ``benchmarks`` (default: eval.benchmarks present under paths.benchmarks_dir)."""
    from gadms.tracking.stages import present_benchmarks

    params = load(params_file, overrides)
    root = params.paths.benchmarks_dir
    names = list(benchmarks) if benchmarks else present_benchmarks(params.eval.benchmarks, root)
    path = Path(model)
    results = {
        name: recompute_if_gone(
            evaluate,
            lambda cached: run_exists(params, str(cached["run_id"])),
            *(params, path, file_digest(path), name, root, setting, data_hash, parent_run_id),
        )
        for name in names
    }
    for name, metrics in results.items():
        run_logger().info(f"{setting} on {name}: R1 {metrics[f'{name}/R1']:.2f}, mAP {metrics[f'{name}/mAP']:.2f}")
        metrics["link"] = log_run_link(params, f"evaluate {setting} {name}", str(metrics["run_id"]))
    return results
