"""Validation flow: the Great Expectations caption gate; a failed gate fails the flow (nothing downstream runs)."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.common import gadms_flow
from gadms.config import Params, ValidationConfig
from gadms.markdown import code_block
from gadms.results import CuratedCorpus, GatedCorpus
from gadms.validation import GateResult, run_quality_gate
from gadms.validation.report import HISTORY_DIR, history_name


class QualityGateFailed(RuntimeError):
    """The curated captions failed the quality gate; the message is the gate's summary."""


@task(name="quality-gate")
def run_gate(data_dir: Path, cfg: ValidationConfig, report_dir: Path) -> GateResult:
    """Run the Expectation Suite over the corpus and write report.html (and its kept copy), summary.txt, gate.json
    and the Data Docs.
    """
    return run_quality_gate(data_dir, cfg, report_dir)


@gadms_flow(name="validate", log_prints=True, flow_run_name="quality gate")
def validate_flow(params: Params, corpus: CuratedCorpus) -> GatedCorpus:
    """Gate the curated corpus; raise :class:`QualityGateFailed` when it fails (nothing downstream runs)."""
    report_dir = params.paths.reports_dir / "gate"
    result = run_gate(corpus.path, params.validation, report_dir)
    summary = code_block(result.summary)  # shown as text in the Prefect UI, whatever the captions hold
    create_markdown_artifact(key="quality-gate", description="Caption quality gate", markdown=summary)
    get_run_logger().info(result.summary)
    if not result.passed:
        raise QualityGateFailed(
            f"quality gate failed ({', '.join(result.failed_checks)}); nothing downstream runs.\n{result.summary}"
        )
    kept = report_dir.resolve() / HISTORY_DIR / history_name(result.fingerprint, params.validation)
    return GatedCorpus(corpus.path, result.summary, result.fingerprint, report_dir, kept)
