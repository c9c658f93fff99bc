"""Reading parameters: a file, ``--set`` overrides, validation into :class:`Params` with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import ValidationError

from gadms.config.base import ConfigError
from gadms.config.params import Params
from gadms.safe_yaml import YamlLimitError, load_bounded, shorten

DEFAULT_PARAMS = Path("params.yaml")
PARAMS_READ_TIMEOUT_S = 10.0  # a params file read (a slow mount included) that takes longer is refused
MAX_PARAMS_BYTES = 1 << 20  # a params file is a few kB; refuse anything past 1 MiB unread


def _describe(error: dict[str, Any]) -> str:
    """Turn one pydantic error into 'dotted.key: reason (got value)'."""
    key = ".".join(str(part) if len(str(part)) <= 40 else shorten(part, 40) for part in error["loc"]) or "<root>"
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return f"{key}: unknown key"
    if kind == "missing":
        return f"{key}: required key is missing"
    bounds = {
        "greater_than": "must be > {gt}",
        "greater_than_equal": "must be >= {ge}",
        "less_than": "must be < {lt}",
        "less_than_equal": "must be <= {le}",
    }
    if kind in bounds:
        shown = {k: f"{v:g}" if isinstance(v, (int, float)) and abs(v) < 1e16 else v for k, v in ctx.items()}
        reason = bounds[kind].format(**shown)
    elif kind == "value_error":
        reason = str(ctx.get("error", error["msg"]))
    else:
        reason = error["msg"][0].lower() + error["msg"][1:]
    if kind == "value_error" and (not error["loc"] or reason.startswith(f"{key}.")):
        return reason  # a rule across keys names them itself
    if kind == "value_error" or "input" not in error or isinstance(error["input"], dict):
        return f"{key}: {reason}"
    return f"{key}: {reason} (got {shorten(error['input'])})"


def params_from_dict(raw: Any, source: str = "params") -> Params:
    """Validate a plain mapping into :class:`Params`.

    Args:
        raw: the parsed YAML document.
        source: name used in error messages (usually the file path).

    Returns:
        The frozen, validated parameters.

    Raises:
        ConfigError: one line naming the first invalid key.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {_describe(dict(errors[0]))}{more}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``section.key=value`` into its key path and YAML-parsed value."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {shorten(text)}: expected KEY=VALUE with a dotted key, e.g. train.optimizer.lr=3e-4")
    key = key if len(key) <= 80 else shorten(key, 80)
    try:
        parsed = load_bounded(value) if value.strip() else None
    except YamlLimitError as exc:
        raise ConfigError(f"--set {key}: {exc}") from None
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: value {shorten(value)} is not valid YAML") from None
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``section.key=value`` override applied.

    Keys that are not in the schema are rejected later by validation, so a typo
    in an override fails just like a typo in the file.
    """
    result = _deep_copy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for depth, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise ConfigError(f"--set {'.'.join(path)}: {where} is a value, not a section")
            node = child
        node[path[-1]] = value
    return result


def _deep_copy(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in raw.items()}


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with one-line errors for missing, oversized or broken files.

    Args:
        path: the parameter file (at most ``MAX_PARAMS_BYTES``).

    Returns:
        The mapping (empty for an empty file).

    Raises:
        ConfigError: one line naming the file (and line) and what is wrong.
    """
    from gadms.safe_files import MISSING, TOO_LARGE, UnsafeFile, read_file  # here: safe_files imports gadms.config

    path = Path(path)
    try:  # the one way in: a FIFO, device or socket is refused without blocking, the read is capped
        data = read_file(path, max_bytes=MAX_PARAMS_BYTES, timeout_s=PARAMS_READ_TIMEOUT_S)
    except UnsafeFile as exc:
        if exc.reason == MISSING and not path.exists():
            raise ConfigError(f"{path}: parameter file not found") from None
        if exc.reason == TOO_LARGE:
            raise ConfigError(f"{path}: larger than {MAX_PARAMS_BYTES} bytes; not a parameter file") from None
        raise ConfigError(f"{exc.detail}; not a parameter file") from None
    try:
        raw = load_bounded(data.decode("utf-8"))
    except YamlLimitError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} is not valid YAML") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(raw).__name__}")
    return raw


def load_params(path: Path | str | None = None, overrides: Iterable[str] = ()) -> Params:
    """Load params.yaml (or ``path``), apply ``--set`` overrides, validate.

    Args:
        path: parameter file; defaults to ``params.yaml`` in the working
            directory, or the built-in defaults when that file does not exist.
        overrides: ``section.key=value`` strings applied on top of the file.

    Returns:
        The frozen, validated parameters.
    """
    if path is None and not DEFAULT_PARAMS.is_file():
        raw: dict[str, Any] = {}
        source = "defaults"
    else:
        path = Path(path) if path is not None else DEFAULT_PARAMS
        raw = read_yaml(path)
        source = str(path)
    overrides = list(overrides)
    if overrides:
        raw = apply_overrides(raw, overrides)
        source = f"{source} + --set"
    return params_from_dict(raw, source)


def flatten(params: Params) -> dict[str, Any]:
    """Flatten parameters to ``{'section.key': value}`` (for MLflow and diffs)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        else:
            out[prefix] = node

    walk("", params.model_dump(mode="json"))
    return out
