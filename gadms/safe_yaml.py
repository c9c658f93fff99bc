"""A bounded YAML reader for parameter files and ``--set`` values.

Plain ``yaml.safe_load`` runs no code, but a few hundred bytes of anchors and
aliases ("billion laughs") expand to gigabytes, deep nesting ends in a
``RecursionError``, and a repeated key silently replaces the first. This
reader refuses all three with a one-line :class:`YamlLimitError`: at most
:data:`MAX_DEPTH` levels of nesting (counted in the text and again once every
alias is expanded), at most :data:`MAX_ALIASES` aliases, at most
:data:`MAX_NODES` nodes once every alias is expanded, and no key twice in one
mapping (keys brought in by a ``<<`` merge may still be overridden).
This module imports nothing from ``gadms``.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_DEPTH = 64
MAX_ALIASES = 256
MAX_NODES = 100_000
MAX_SHOWN = 60  # characters of an offending value quoted in an error message


class YamlLimitError(ValueError):
    """The YAML text is refused; the message is one short line (no file name: the caller adds it)."""


def shorten(value: Any, limit: int = MAX_SHOWN) -> str:
    """``repr(value)`` cut to ``limit`` characters, so no error message quotes a huge value.

    Args:
        value: anything.
        limit: most characters kept.

    Returns:
        The repr, ending in ``...`` when it was cut. Only the first ``limit`` items of a container are shown.
    """
    if isinstance(value, (list, tuple, dict)) and len(value) > limit:
        value = list(value)[:limit] if not isinstance(value, dict) else dict(list(value.items())[:limit])
    text = repr(value) if not isinstance(value, str) or len(value) <= 4 * limit else repr(value[: 4 * limit])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _line(node_or_mark: Any) -> str:
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    return f"line {mark.line + 1}" if mark is not None else "somewhere"


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader with a nesting limit, an alias limit and duplicate-key refusal."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise YamlLimitError(f"{_line(self.peek_event())}: more than {MAX_ALIASES} aliases (*name); refused")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlLimitError(f"{_line(self.peek_event())}: nested more than {MAX_DEPTH} levels deep; refused")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # unhashable: the base class says so
                    continue
                if duplicate:
                    raise YamlLimitError(f"{_line(key_node)}: duplicate key {shorten(key)}")
        return super().construct_mapping(node, deep=deep)


def _check_expansion(root: Any) -> None:
    """Walk the document as if every alias were copied out; refuse past :data:`MAX_NODES` or :data:`MAX_DEPTH`.

    The composer's own depth limit sees only the text: a chain of aliases, each under the limit, still builds a
    structure thousands of levels deep once expanded. Here each node carries its expanded depth. Stops early.
    """
    stack, count = [(root, 1)], 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise YamlLimitError(f"more than {MAX_NODES} values once aliases are expanded (an alias bomb?); refused")
        if depth > MAX_DEPTH:
            raise YamlLimitError(
                f"nested more than {MAX_DEPTH} levels deep once aliases are expanded (an alias bomb?); refused"
            )
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack += [(key, depth + 1), (value, depth + 1)]


def load_bounded(text: str) -> Any:
    """Parse one YAML document within the limits above.

    Args:
        text: the YAML text.

    Returns:
        The document (None when empty).

    Raises:
        YamlLimitError: past a limit, or a duplicate key (one line with the line number).
        yaml.YAMLError: not valid YAML.
    """
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        try:
            return loader.construct_document(node)
        except YamlLimitError:
            raise
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date 2026-13-45: its constructor refuses it
            raise YamlLimitError(f"a value that cannot be read ({str(exc).splitlines()[0][:MAX_SHOWN]})") from None
    finally:
        loader.dispose()
