"""The canonical templates file: write, parse, load, the built-in set."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from gadms.curation.records import Template
from gadms.curation.templates.checks import template_problem
from gadms.curation.templates.mining import TemplateSet
from gadms.problems import DataError
from gadms.safe_files import UnsafeFile, read_text

FORMAT = "gadms-templates/1"
DEFAULT_TEMPLATES_FILE = "default_templates.json"


def template_set_json(template_set: TemplateSet) -> str:
    """The canonical JSON text of a template set (sorted keys, no timestamps, trailing newline).

    Args:
        template_set: the set to serialise.

    Returns:
        The text; equal sets give equal text.
    """
    doc: dict[str, Any] = {
        "format": FORMAT,
        "extractor": template_set.extractor,
        "clusters_requested": template_set.clusters_requested,
        "clusters": template_set.clusters,
        "random_members": template_set.random_members,
        "seed": template_set.seed,
        "embedder": template_set.embedder,
        "embedder_pretrained": template_set.embedder_pretrained,
        "diversified": template_set.diversified,
        "source": template_set.source,
        "sentences": template_set.sentences,
        "extracted": template_set.extracted,
        "unique": template_set.unique,
        "templates": [
            {"id": t.id, "text": t.text, "cluster": t.cluster, "representative": t.representative, "origin": t.origin}
            for t in template_set.templates
        ],
    }
    return json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def write_templates(path: Path | str, template_set: TemplateSet) -> Path:
    """Write a template set as canonical JSON (atomically: a temporary file, then a rename).

    Args:
        path: the file to write; its folder is created.
        template_set: what to write.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(template_set_json(template_set), encoding="utf-8")
    os.replace(partial, path)
    return path


def _parse_entry(index: int, entry: Any, where: str) -> Template:
    """One ``templates`` entry (an object with ``id`` and ``text``, or a bare string) as a Template."""
    if isinstance(entry, str):
        entry = {"id": index, "text": entry}
    if not isinstance(entry, dict):
        raise DataError(f"{where}: template {index} is a JSON {type(entry).__name__}, expected an object or a string")
    text, ident = entry.get("text"), entry.get("id", index)
    if not isinstance(text, str):
        raise DataError(f"{where}: template {index} has no 'text' string")
    if not isinstance(ident, int) or isinstance(ident, bool):
        raise DataError(f"{where}: template {index} has a non-integer 'id' {ident!r}")
    problem = template_problem(text)
    if problem is not None:
        raise DataError(f"{where}: template {index} ({text[:60]!r}): {problem}")
    return Template(ident, text)


def parse_templates(raw: Any, where: str) -> list[Template]:
    """Templates from a parsed templates document (the mined format, or a plain list of strings).

    Args:
        raw: the parsed JSON.
        where: the file name for error messages.

    Returns:
        The templates in file order.

    Raises:
        DataError: one line naming the file and the first bad entry.
    """
    entries = raw.get("templates") if isinstance(raw, dict) else raw
    if not isinstance(entries, list):
        raise DataError(f"{where}: expected a JSON object with a 'templates' list (or a list of template strings)")
    templates = [_parse_entry(i, e, where) for i, e in enumerate(entries)]
    ids = [t.id for t in templates]
    if len(set(ids)) != len(ids):
        raise DataError(f"{where}: template ids repeat (e.g. {next(i for i in ids if ids.count(i) > 1)})")
    return templates


def load_templates(path: Path | str) -> list[Template]:
    """Read a templates file written by :func:`write_templates` (or a JSON list of strings).

    Args:
        path: the file.

    Returns:
        The templates in file order.

    Raises:
        DataError: one line for a missing, unreadable or malformed file, or a
            template with an unknown placeholder.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"templates file not found: {path}")
    try:
        raw = json.loads(read_text(path, "JSON templates file"))
    except UnsafeFile:
        raise
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    except (UnicodeDecodeError, IsADirectoryError, OSError) as err:
        raise DataError(f"{path}: cannot read templates file ({type(err).__name__})") from None
    return parse_templates(raw, str(path))


def default_templates() -> list[Template]:
    """The built-in templates shipped with the package (``default_templates.json``).

    Returns:
        The templates in file order.
    """
    text = resources.files("gadms.curation").joinpath(DEFAULT_TEMPLATES_FILE).read_text(encoding="utf-8")
    return parse_templates(json.loads(text), f"gadms/curation/{DEFAULT_TEMPLATES_FILE}")
