"""Reading model files without running their code, with one-line errors that name the file.

Two kinds of file hold weights here: safetensors (``model.safetensors``, no
code by construction) and PyTorch ``.pt`` files (``checkpoint.pt``, CLIP
checkpoints), read with ``weights_only=True`` so a pickle that would call a
function is refused. Whatever is wrong (empty, truncated, not the format,
code in the pickle, an entry missing) ends in :class:`ModelFileError`.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import torch

from gadms.file_rules import file_kind

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")  # how torch's weights-only unpickler names a refused callable


class ModelFileError(ValueError):
    """A model or checkpoint file that cannot be used; the message is one line naming the file."""


def _first_line(exc: BaseException, limit: int = 120) -> str:
    """The first sentence of an exception's message, at most ``limit`` characters."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    sentence = text.splitlines()[0].split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= limit else sentence[: limit - 3] + "..."


def _unreadable(path: Path, exc: BaseException) -> str:
    return f"{path}: not a readable PyTorch file, truncated or corrupt ({_first_line(exc)})"


def _existing(path: Path) -> int:
    """The file's size; a missing or empty file is a ModelFileError."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: model file not found") from None
    except OSError as err:
        raise ModelFileError(f"{path}: cannot read model file ({err.strerror or err})") from None
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block the reader: refused before it is opened
        raise ModelFileError(f"{path}: not a regular file ({file_kind(info.st_mode)}); not a model file")
    size = info.st_size
    if size == 0:
        raise ModelFileError(f"{path}: model file is empty (0 bytes)")
    return size


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of a safetensors file (on the CPU) and its metadata.

    Args:
        path: the ``.safetensors`` file.

    Returns:
        ``(tensors, metadata)``; metadata is empty when the file has none.

    Raises:
        ModelFileError: missing, empty, truncated or not safetensors.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    _existing(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - a safe_open handle, not a dict
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        why = _first_line(exc)
        raise ModelFileError(f"{path}: not a readable safetensors file, truncated or corrupt ({why})") from None
    return tensors, metadata


def read_torch_file(path: Path) -> Any:
    """Load a ``.pt`` file with ``weights_only=True`` (tensors, containers, numbers; no code).

    Args:
        path: the file.

    Returns:
        What it holds.

    Raises:
        ModelFileError: missing, empty, truncated, not a PyTorch file, or a pickle that would run code.
    """
    import pickle

    path = Path(path)
    _existing(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL.search(str(exc))
        callable_name = found.group(1) if found else _pickled_callable(path)
        if callable_name is None:
            raise ModelFileError(_unreadable(path, exc)) from None
        raise ModelFileError(
            f"{path}: refused: loading it would run code (it calls {callable_name}); only weights-only files are read"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, ImportError, KeyError, IndexError) as exc:
        raise ModelFileError(_unreadable(path, exc)) from None


def _pickled_callable(path: Path) -> str | None:
    """The first function a plain pickle file would import (read opcode by opcode, nothing run), or None."""
    import pickletools

    strings: list[str] = []
    try:
        with path.open("rb") as handle:
            for opcode, arg, _ in pickletools.genops(handle):
                if opcode.name == "GLOBAL":
                    return str(arg).replace(" ", ".")
                if opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    return ".".join(strings[-2:])
                if "UNICODE" in opcode.name or "STRING" in opcode.name:
                    strings.append(str(arg))
                if opcode.name == "STOP":
                    return None
    except Exception:  # not a pickle, or a broken one: no callable to name
        return None
    return None


def require_entries(state: Any, path: Path, entries: tuple[str, ...], kind: str) -> dict:
    """Check that a loaded ``.pt`` is a dict with ``entries``.

    Args:
        state: what :func:`read_torch_file` returned.
        path: the file (for the message).
        entries: keys that must be present.
        kind: what the file should be, e.g. ``"gadms training checkpoint"``.

    Returns:
        ``state``.

    Raises:
        ModelFileError: not a dict, or an entry is missing.
    """
    if not isinstance(state, dict):
        raise ModelFileError(f"{path}: not a {kind}: it holds a {type(state).__name__}, not a dict")
    missing = [key for key in entries if key not in state]
    if missing:
        raise ModelFileError(f"{path}: not a {kind}: missing {', '.join(repr(k) for k in missing)}")
    return state
