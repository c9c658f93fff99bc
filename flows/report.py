"""The one Prefect artifact of a pipeline run: data version, gate, model version and decision, MLflow links, results.

Key ``gadms-pipeline`` (every pipeline run adds a version of it, so the
Artifacts page lists them side by side). A run whose inputs are unchanged
gets one too, saying so and naming the champion that stays.
"""

from __future__ import annotations

from typing import Sequence

from flows.common import markdown_table
from gadms.results import PipelineResult
from gadms.tracking.pipeline_run import RESULTS_HEADER, PipelineRun

ARTIFACT_KEY = "gadms-pipeline"


def _link(label: str, url: str) -> str:
    """A markdown link."""
    return f"[{label}]({url})"


def pipeline_summary(
    title: str, result: PipelineResult, links: Sequence[tuple[str, str, str]], results: str, ui_command: str = ""
) -> str:
    """The artifact's markdown.

    Args:
        title: the pipeline run's name.
        result: the pipeline's result (the corpus version and gate, the registry decision).
        links: ``(stage, run id, url)`` per MLflow run, the pipeline run first.
        results: the results table (markdown).
        ui_command: the ``mlflow ui`` command that serves the links (local store), empty for a server.

    Returns:
        Markdown text.
    """
    promotion = result.promotion
    if promotion is None:
        version, decision = "none registered", "no benchmark to fine-tune on"
    else:
        version, decision = f"{promotion.model} v{promotion.version}", f"{promotion.decision}: {promotion.reason}"
    facts = [
        ("DVC hash (corpus)", f"`{result.version.md5}`"),
        ("quality gate", f"passed, report `{result.version.gate.report}`"),
        ("model version", version),
        ("decision", decision),
    ]
    lines = [f"# {title}", "", markdown_table(("", ""), facts), "", "## MLflow runs", ""]
    lines.append(markdown_table(("stage", "run"), [(stage, _link(run_id, url)) for stage, run_id, url in links]))
    if ui_command:
        lines += ["", f"Local store: start the UI first with `{ui_command}`."]
    return "\n".join([*lines, "", "## Results (percent)", "", results]) + "\n"


def unchanged_summary(title: str, data_hash: str, message: str) -> str:
    """The artifact's markdown when the inputs are unchanged and nothing was trained.

    Args:
        title: the pipeline run's name.
        data_hash: the corpus's DVC hash.
        message: ``inputs unchanged: model vN stays champion`` (see :mod:`gadms.tracking.retrain`).

    Returns:
        Markdown text.
    """
    facts = [("DVC hash (corpus)", f"`{data_hash}`"), ("decision", f"{message}; nothing was trained or recorded")]
    return "\n".join([f"# {title}", "", markdown_table(("", ""), facts)]) + "\n"


def publish(markdown: str, description: str) -> None:
    """Create the pipeline run's artifact (inside the flow run, so it is attached to it)."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(key=ARTIFACT_KEY, description=description, markdown=markdown)


def publish_trained(title: str, result: PipelineResult, parent: PipelineRun) -> PipelineResult:
    """Publish the artifact of a pipeline run that trained (see :func:`pipeline_summary`); return ``result``."""
    summary = pipeline_summary(
        title, result, parent.links, markdown_table(RESULTS_HEADER, parent.rows), parent.ui_command()
    )
    publish(summary, "GA-DMS pipeline: data version, model version and decision, MLflow runs, results")
    return result


def publish_unchanged(title: str, result: PipelineResult) -> PipelineResult:
    """Publish the artifact of a pipeline run whose inputs were unchanged; return ``result``."""
    publish(unchanged_summary(title, result.version.md5, result.unchanged), "GA-DMS pipeline: inputs unchanged")
    return result
