"""What makes a template valid: its placeholders and the words it may keep."""

from __future__ import annotations

from gadms.curation.templates.rules import tokenize
from gadms.curation.templates.vocabulary import (
    COLOR_WORDS,
    CONTENT_PLACEHOLDERS,
    HEADS,
    PLACEHOLDER_RE,
    PLACEHOLDERS,
)


def template_placeholders(text: str) -> list[str]:
    """The placeholders of a template.

    Args:
        text: a template.

    Returns:
        Every bracketed span, in order, known to :data:`PLACEHOLDERS` or not.
    """
    return PLACEHOLDER_RE.findall(text)


def template_problem(text: str) -> str | None:
    """What makes ``text`` unusable as a template, or None when it is fine.

    Args:
        text: a candidate template.

    Returns:
        A short reason: empty, unbalanced brackets, an unknown placeholder, or
        no placeholder that describes the person.
    """
    if not text.strip():
        return "empty template"
    found = template_placeholders(text)
    if PLACEHOLDER_RE.sub("", text).count("[") or PLACEHOLDER_RE.sub("", text).count("]"):
        return "unbalanced brackets"
    unknown = [p for p in found if p not in PLACEHOLDERS]
    if unknown:
        return f"unknown placeholder {unknown[0]}"
    if not CONTENT_PLACEHOLDERS & set(found):
        return "no placeholder describing the person"
    return None


def concrete_words(text: str) -> list[str]:
    """Colour and garment words outside placeholders (a template must have none)."""
    tokens = [t for t in tokenize(PLACEHOLDER_RE.sub(" ", text)) if not t.startswith("[")]
    heads = {k[0] for k in HEADS if len(k) == 1 and HEADS[k] != "pattern"}
    return [t for t in tokens if t in COLOR_WORDS or t in heads]
