"""The text of a pipeline run's summary (Markdown): data version, gate, model version and decision, MLflow links,
results; or, when the inputs were unchanged, why nothing was trained. The flow publishes it as a Prefect artifact.
"""

from __future__ import annotations

from typing import Sequence

from gadms.markdown import link, markdown_table
from gadms.results import PipelineResult


def pipeline_summary(
    title: str, result: PipelineResult, links: Sequence[tuple[str, str, str]], results: str, ui_command: str = ""
) -> str:
    """The summary of a pipeline run that trained.

    Args:
        title: the pipeline run's name.
        result: the pipeline's result (the corpus version and gate, the registry decision).
        links: ``(stage, run id, url)`` per MLflow run, the pipeline run first.
        results: the results table (Markdown).
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
    lines.append(markdown_table(("stage", "run"), [(stage, link(run_id, url)) for stage, run_id, url in links]))
    if ui_command:
        lines += ["", f"Local store: start the UI first with `{ui_command}`."]
    return "\n".join([*lines, "", "## Results (percent)", "", results]) + "\n"


def unchanged_summary(title: str, data_hash: str, message: str) -> str:
    """The summary of a pipeline run whose inputs were unchanged, so nothing was trained.

    Args:
        title: the pipeline run's name.
        data_hash: the corpus's DVC hash.
        message: ``inputs unchanged: model vN stays champion`` (see :mod:`gadms.tracking.retrain`).

    Returns:
        Markdown text.
    """
    facts = [("DVC hash (corpus)", f"`{data_hash}`"), ("decision", f"{message}; nothing was trained or recorded")]
    return "\n".join([f"# {title}", "", markdown_table(("", ""), facts)]) + "\n"
