"""The one Prefect artifact of a pipeline run: data version, gate, model version and decision, MLflow links, results.

Key ``gadms-pipeline`` (every pipeline run adds a version of it, so the
Artifacts page lists them side by side). A run whose inputs are unchanged
gets one too, saying so and naming the champion that stays.
"""

from __future__ import annotations

from typing import Any, Sequence

from flows.common import markdown_table

ARTIFACT_KEY = "gadms-pipeline"


def _link(label: str, url: str) -> str:
    """A markdown link."""
    return f"[{label}]({url})"


def pipeline_summary(
    title: str,
    data_hash: str,
    gate_report: str,
    model: str,
    promotion: dict[str, Any] | None,
    links: Sequence[tuple[str, str, str]],
    results: str,
    ui_command: str = "",
) -> str:
    """The artifact's markdown.

    Args:
        title: the pipeline run's name.
        data_hash: the corpus's DVC hash.
        gate_report: where the quality gate's report is.
        model: the registered model's name.
        promotion: the register task's result (``version``, ``promoted``, ``reason``), None when nothing was registered.
        links: ``(stage, run id, url)`` per MLflow run, the pipeline run first.
        results: the results table (markdown).
        ui_command: the ``mlflow ui`` command that serves the links (local store), empty for a server.

    Returns:
        Markdown text.
    """
    if promotion is None:
        version, decision = "none registered", "no benchmark to fine-tune on"
    else:
        version = f"{model} v{promotion['version']}"
        decision = ("promoted to champion" if promotion["promoted"] else "not promoted") + f": {promotion['reason']}"
    facts = [
        ("DVC hash (corpus)", f"`{data_hash}`"),
        ("quality gate", f"passed, report `{gate_report}`"),
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
