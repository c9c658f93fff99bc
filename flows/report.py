"""The one Prefect artifact of a pipeline run: data version, gate, model version and decision, MLflow links, results.

Key ``gadms-pipeline`` (every pipeline run adds a version of it, so the
Artifacts page lists them side by side). A run whose inputs are unchanged
gets one too, saying so and naming the champion that stays. The text is
:mod:`gadms.tracking.summaries`'.
"""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact

from flows.common import run_logger
from gadms.markdown import markdown_table
from gadms.results import PipelineResult
from gadms.tracking.pipeline_run import RESULTS_HEADER, PipelineRun
from gadms.tracking.summaries import pipeline_summary, unchanged_summary

ARTIFACT_KEY = "gadms-pipeline"


def publish_trained(title: str, result: PipelineResult, parent: PipelineRun) -> PipelineResult:
    """Publish the artifact of a pipeline run that trained; return ``result``."""
    summary = pipeline_summary(
        title, result, parent.links, markdown_table(RESULTS_HEADER, parent.rows), parent.ui_command()
    )
    description = "GA-DMS pipeline: data version, model version and decision, MLflow runs, results"
    create_markdown_artifact(key=ARTIFACT_KEY, description=description, markdown=summary)
    return result


def publish_unchanged(title: str, result: PipelineResult) -> PipelineResult:
    """Say in the run log and publish as the artifact that the inputs were unchanged; return ``result``."""
    run_logger().info(result.unchanged)
    summary = unchanged_summary(title, result.version.md5, result.unchanged)
    create_markdown_artifact(key=ARTIFACT_KEY, description="GA-DMS pipeline: inputs unchanged", markdown=summary)
    return result
