"""How the ``gadms`` help reads: flags without a value type, text taken literally, paragraphs reflowed.

Typer renders help with rich. Out of the box it shows ``<bool>`` after every
flag (a flag takes no value), reads square brackets in docstrings as rich
markup (``[x0, y0, x1, y1]`` vanishes) and keeps the docstrings' own line
breaks, so sentences break mid-line wherever the terminal is narrower or wider
than the source. :func:`install` changes those three things for every command.

Nothing changes when this module is imported: the ``gadms`` app is a :class:`LaidOutGroup`, which installs the
layout when the command line runs (``gadms ...``, ``python -m gadms``, or typer's ``CliRunner`` in the tests).

Text layout rules (per paragraph, paragraphs separated by a blank line):
lines are joined into one flowing paragraph, except lines starting with ``- ``
(list items) or indented lines (examples), which keep their own line; a
paragraph starting with ``\\b`` is kept exactly as written (click's convention).
"""

from __future__ import annotations

import re
from typing import Any

from rich.markup import escape
from typer import core, rich_utils  # imported with the CLI: rich_utils reads TERMINAL_WIDTH once, on import
from typer.core import TyperGroup

_KEEP_LINE = re.compile(r"^(\s+|- )")
_installed = False


def reflow(text: str) -> str:
    """Join each paragraph's lines into one, keeping list items and indented lines on their own line.

    Args:
        text: help text (paragraphs separated by blank lines).

    Returns:
        The reflowed text.
    """
    paragraphs = []
    for paragraph in text.split("\n\n"):
        if paragraph.startswith("\b"):
            paragraphs.append(paragraph.replace("\b\n", "", 1))
            continue
        lines: list[str] = []
        for line in paragraph.split("\n"):
            if lines and line.strip() and not _KEEP_LINE.match(line):
                lines[-1] = f"{lines[-1].rstrip()} {line.strip()}"
            else:
                lines.append(line.rstrip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def install() -> None:
    """Patch typer's rich help once: no ``<bool>`` on flags, literal brackets, reflowed paragraphs."""
    global _installed
    if _installed:
        return
    import inspect

    plain_type = core.TyperOption.display_type_rich

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        """A flag (``--quiet``, ``--register/--no-register``) takes no value: no type shown."""
        if self.is_flag and not self.count:
            return None
        return plain_type(self, ctx)

    make_rich_text = rich_utils._make_rich_text

    def literal_text(*, text: str, style: str = "", markup_mode: Any) -> Any:
        """Help text as written: reflowed, with rich markup characters escaped."""
        if markup_mode == "rich":
            text = escape(reflow(inspect.cleandoc(text)))
        return make_rich_text(text=text, style=style, markup_mode=markup_mode)

    core.TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
    rich_utils._make_rich_text = literal_text
    _installed = True


class LaidOutGroup(TyperGroup):
    """The ``gadms`` command group: installs the help layout (:func:`install`) each time it runs, before it parses
    the command line, so that every help it or a subcommand prints is laid out the same way.
    """

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Install the help layout (once per process), then run the command line as typer does."""
        install()
        return super().main(*args, **kwargs)
