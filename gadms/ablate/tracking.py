"""The ablation in MLflow: one parent run (stage ``ablate``) with one child run per (row, seed).

The parent's id is kept in ``OUT/mlflow.json`` with the plan's key, so a rerun of the same plan reopens the
same parent and adds only the children it lacks (found by their tags ``ablate.row`` and ``ablate.seed``); a
changed plan gets a new parent. Each child holds every parameter of its cell, ``train/<loss>`` per epoch and
``<benchmark>/R1`` ... ``mINP``. The parent holds the results table (``ablation/results.csv``,
``ablation/results.md``, the MLflow table ``ablation/results_table.json``), the bar chart
``figures/ablation.png`` and ``<row>/<benchmark>/<metric>_mean`` / ``_std`` metrics.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from gadms.ablate.report import RowSummary, bar_chart, table_columns, to_csv, to_markdown
from gadms.config import Params
from gadms.reproducible_writes import write_bytes_atomic
from gadms.tracking.mlflow_run import TrackedRun, log_all_params, provenance_tags
from gadms.tracking.redact import Redactor
from gadms.tracking.store import ensure_experiment, tracking_uri

PARENT_FILE = "mlflow.json"
PARENT_TAG = "mlflow.parentRunId"
LOGGED_ARTIFACTS = "mlflow.loggedArtifacts"  # the tag by which the MLflow UI shows a JSON artifact as a table


class AblationTracker:
    """Opens (or reopens) the parent run and logs children and the summary to it.

    Args:
        params: the ablation's parameters (tracking settings, and logged on the parent).
        out: the ablation's output folder (``mlflow.json`` is kept there).
        plan_key: the digest of the plan; another key opens a new parent.
    """

    def __init__(self, params: Params, out: Path, plan_key: str):
        from mlflow import MlflowClient

        self.params = params
        self.uri = tracking_uri(params)
        database = self.uri.removeprefix("sqlite:///") if self.uri.startswith("sqlite:///") else None
        if database is not None:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(self.uri)
        self.redactor = Redactor.from_params(params)
        self.experiment_id = ensure_experiment(params.tracking.experiment, self.uri)
        self.out = Path(out)
        self.plan_key = plan_key
        self.parent_id, self.reopened = self._open_parent()
        self.parent = TrackedRun(self.parent_id, self.uri, self.redactor)

    def _stored_parent(self) -> str | None:
        """The parent of this plan recorded in ``mlflow.json``, if it still exists in this store."""
        try:
            stored = json.loads((self.out / PARENT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(stored, dict) or stored.get("uri") != self.uri or stored.get("plan_key") != self.plan_key:
            return None
        try:
            run = self.client.get_run(str(stored.get("run_id")))
        except Exception:  # noqa: BLE001 - a deleted store or run: start a new parent
            return None
        return run.info.run_id if run.info.lifecycle_stage == "active" else None

    def _open_parent(self) -> tuple[str, bool]:
        run_id = self._stored_parent()
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            return run_id, True
        name = f"ablate {time.strftime('%Y-%m-%d %H:%M')}"
        tags = {**provenance_tags("ablate", None), "ablate.plan_key": self.plan_key, "mlflow.runName": name}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=self.redactor.redact_mapping(tags, "tag"))
        log_all_params(TrackedRun(run.info.run_id, self.uri, self.redactor), self.params)
        record = {"uri": self.uri, "run_id": run.info.run_id, "plan_key": self.plan_key}
        write_bytes_atomic(self.out / PARENT_FILE, json.dumps(record, indent=1).encode("utf-8"))
        return run.info.run_id, False

    def children(self) -> dict[tuple[str, int], str]:
        """The parent's child runs by (row, seed)."""
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_id}'", max_results=10000
        )
        out = {}
        for run in found:
            row, seed = run.data.tags.get("ablate.row"), run.data.tags.get("ablate.seed")
            if row is not None and seed is not None and seed.lstrip("-").isdigit():
                out[(row, int(seed))] = run.info.run_id
        return out

    def log_child(self, cell_params: Params, result: dict[str, Any]) -> str:
        """A FINISHED child run of the parent holding one cell's parameters, losses and metrics.

        Args:
            cell_params: the cell's parameters.
            result: the cell's result (see :func:`gadms.ablate.cells.run_cell`).

        Returns:
            The child's run id.
        """
        row, seed = result["row"], int(result["seed"])
        name = f"{row} seed {seed}"
        tags = {
            **provenance_tags("ablate-cell", None),
            PARENT_TAG: self.parent_id,
            "mlflow.runName": name,
            "ablate.row": row,
            "ablate.seed": str(seed),
            "ablate.cell_key": result["key"],
            "ablate.overrides": " ".join(result["overrides"]),
        }
        run = self.client.create_run(self.experiment_id, run_name=name, tags=self.redactor.redact_mapping(tags, "tag"))
        child = TrackedRun(run.info.run_id, self.uri, self.redactor)
        log_all_params(child, cell_params)
        for epoch in result["epochs"]:
            values = {f"train/{k}": float(v) for k, v in epoch.items() if k not in ("epoch",)}
            child.log_values(values, step=int(epoch["epoch"]))
        for bench, metrics in result["metrics"].items():
            child.log_metrics(bench, metrics)
        child.log_values({"time/train_s": float(result["train_s"]), "time/eval_s": float(result["eval_s"])})
        if result.get("masking_end"):  # the row's masking after training (its drift from the calibration)
            end = result["masking_end"]
            child.log_values({"masking/p_mask_end": end["rate"], "masking/selectivity_end": end["selectivity"]})
        self.client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    def log_summary(self, summary: Sequence[RowSummary], text: str) -> None:
        """The table (CSV, markdown, MLflow table), the bar chart and per-row mean/std metrics on the parent."""
        values = {}
        for s in summary:
            for m in s.mean:
                values[f"{s.row}/{s.benchmark}/{m}_mean"] = s.mean[m]
                values[f"{s.row}/{s.benchmark}/{m}_std"] = s.std[m]
        self.parent.log_values(values)
        self.parent.log_text(to_csv(summary), "ablation/results.csv")
        self.parent.log_text(to_markdown(summary), "ablation/results.md")
        self.parent.log_text(text + "\n", "ablation/results.txt")
        self._log_table(table_columns(summary), "ablation/results_table.json")
        with tempfile.TemporaryDirectory() as scratch:
            png = bar_chart(summary, Path(scratch) / "ablation.png")
            self.parent.log_artifact(png, "figures")

    def _log_table(self, columns: dict[str, list[Any]], path: str) -> None:
        """An MLflow table artifact, replaced on a rerun (``MlflowClient.log_table`` would append the rows again)."""
        import pandas as pd

        self.client.log_text(self.parent_id, pd.DataFrame(columns).to_json(orient="split", index=False), path)
        logged = json.loads(self.client.get_run(self.parent_id).data.tags.get(LOGGED_ARTIFACTS, "[]"))
        entry = {"path": path, "type": "table"}
        if entry not in logged:
            self.client.set_tag(self.parent_id, LOGGED_ARTIFACTS, json.dumps(logged + [entry]))

    def finish(self, status: str = "FINISHED") -> None:
        """End the parent run (``FINISHED`` or ``FAILED``)."""
        self.client.set_terminated(self.parent_id, status)
