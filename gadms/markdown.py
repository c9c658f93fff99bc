"""Small Markdown pieces for the summaries shown in the Prefect UI and logged to MLflow."""

from __future__ import annotations

import re
from typing import Any, Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table: ``header``, then one line per row (each value as text)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def code_block(text: str) -> str:
    """``text`` as a Markdown code block whose fence is longer than any run of backticks in it (a caption's)."""
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"{fence}\n{text}\n{fence}"


def link(label: str, url: str) -> str:
    """A Markdown link."""
    return f"[{label}]({url})"
