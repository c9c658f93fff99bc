"""Ablation flow: the paper's Table 4 rows x seeds on the testbed (``gadms ablate`` as a Prefect flow).

One task prepares the plan (synthetic corpora, the cached base weights, the MLflow parent run), one task per
(row, seed) trains and evaluates a cell (``ablate-<row>-seed<seed>``; a finished cell's result file makes a
rerun skip it), a last task writes the table and chart; the table is also the flow run's markdown artifact
``gadms-ablation``. The cells run one after another: each already uses every core it is given.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import gadms_flow, load_run_params, run_logger
from gadms.ablate.run import Ablation
from gadms.config import Params


@task(name="ablate-prepare", cache_policy=NO_CACHE, persist_result=False)  # the files are the cache
def prepare(
    params: Params, corpus: Optional[str], corpus_format: str, benchmarks_root: Optional[str], device: str
) -> Ablation:
    """Build or reuse the corpora and the base weights; open the MLflow parent run."""
    from gadms.ablate.run import prepare as prepare_plan

    return prepare_plan(
        params,
        Path(corpus) if corpus else None,
        corpus_format,
        Path(benchmarks_root) if benchmarks_root else None,
        device=device,
        log=run_logger().info,
    )


@task(name="ablate-cell", task_run_name="ablate-{row}-seed{seed}", cache_policy=NO_CACHE, persist_result=False)
def cell(ablation: Ablation, row: str, seed: int, device: str) -> dict[str, Any]:
    """Train and evaluate one (row, seed), or reuse its finished result; log its MLflow child run."""
    from gadms.ablate.run import cell_line, run_and_log

    result = run_and_log(ablation, row, seed, device)
    run_logger().info(cell_line(result, 1, 1).split("] ", 1)[1])
    return result


@task(name="ablate-summary", cache_policy=NO_CACHE, persist_result=False)
def summary(ablation: Ablation, results: list[dict[str, Any]]) -> str:
    """The mean +- std table and the bar chart (files and MLflow parent); returns the table as markdown."""
    from gadms.ablate.report import to_markdown
    from gadms.ablate.run import finish

    table, text = finish(ablation, results)
    run_logger().info("\n" + text)
    return to_markdown(table)


def ablate_run_name() -> str:
    """``ablate YYYY-MM-DD HH:MM`` (UTC)."""
    return f"ablate {datetime.now(timezone.utc):%Y-%m-%d %H:%M}"


@gadms_flow(name="ablate", log_prints=True, flow_run_name=ablate_run_name)
def ablate_flow(
    params_file: str = "params.ablate.yaml",
    overrides: Sequence[str] = (),
    corpus: Optional[str] = None,
    corpus_format: str = "cuhk-pedes",
    benchmarks_root: Optional[str] = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Every row x seed of ``ablate`` in ``params_file``; returns the markdown table and the MLflow parent run."""
    params = load_run_params(params_file, overrides)
    ablation = prepare(params, corpus, corpus_format, benchmarks_root, device)
    results = []
    try:
        for row in params.ablate.rows:
            for seed in params.ablate.seeds:
                results.append(cell(ablation, row, seed, device))
    except BaseException:
        if ablation.tracker is not None:
            ablation.tracker.finish("FAILED")
        raise
    table = summary(ablation, results)
    create_markdown_artifact(key="gadms-ablation", markdown=table, description="GA-DMS ablation: mean ± std")
    parent = ablation.tracker.parent_id if ablation.tracker is not None else None
    return {"table": table, "parent_run": parent, "out": str(ablation.plan.out)}
