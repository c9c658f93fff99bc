"""What a training checkpoint must hold: its entries checked before anything is restored from it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from gadms.model.files import ModelFileError, require_entries

SHOWN_CHANGES = 4  # settings named in a refused --resume; more are counted
logger = logging.getLogger(__name__)

_CHECKPOINT_ENTRIES = ("epoch", "model", "optimizer", "scheduler", "scaler", "architecture")
_STATE_DICT_ENTRIES = {  # entry -> the type it must have
    "model": dict,
    "optimizer": dict,
    "scheduler": dict,
    "scaler": dict,
    "score_memory": dict,
}


def failure_reason(exc: BaseException) -> str:
    """The first line of an exception's message (at most 160 characters), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _is_count(value: object) -> bool:
    """A whole number >= 0 (a boolean is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_partial(partial: object, path: Path) -> None:
    """A mid-epoch checkpoint's running sums: ``{"sums": {name: number}, "count", "seen", "seconds"}``."""
    ok = (
        isinstance(partial, dict)
        and isinstance(partial.get("sums"), dict)
        and all(isinstance(v, (int, float)) for v in partial["sums"].values())
        and _is_count(partial.get("count"))
        and _is_count(partial.get("seen"))
        and isinstance(partial.get("seconds"), (int, float))
    )
    if not ok:
        raise ModelFileError(f"{path}: checkpoint entry 'partial' is not the running sums of a mid-epoch checkpoint")


def _check_ranks(ranks: object, path: Path) -> None:
    """Every rank's RNG states (tensors) and input position (a dict)."""
    if not isinstance(ranks, list) or not ranks:
        raise ModelFileError(f"{path}: checkpoint entry 'ranks' must be a non-empty list, got {_kind(ranks)}")
    for rank in ranks:
        good = (
            isinstance(rank, dict)
            and all(isinstance(rank.get(key), torch.Tensor) for key in ("step_generator", "torch_rng"))
            and isinstance(rank.get("feed", {}), dict)
        )
        if not good:
            raise ModelFileError(
                f"{path}: checkpoint entry 'ranks' must hold per process step_generator and torch_rng tensors "
                "and a feed position"
            )


def _check_score_memory(entry: dict, path: Path) -> None:
    """The record of the score store's copy (``file``, ``bytes``, ``sha256``), or an older checkpoint's rows."""
    if "file" in entry:
        ok = (
            isinstance(entry["file"], str)
            and Path(entry["file"]).name == entry["file"]  # a name beside the checkpoint, never a path elsewhere
            and _is_count(entry.get("bytes"))
            and isinstance(entry.get("sha256"), str)
        )
        what = "the name, size and sha256 of the score store's copy"
    else:
        ok = _is_count(entry.get("epoch")) and all(
            isinstance(entry.get(part), dict)
            and all(isinstance(entry[part].get(key), torch.Tensor) for key in ("indices", "scores"))
            for part in ("settled", "fresh")
        )
        what = "the score store's copy, or an epoch and settled/fresh indices and scores tensors"
    if not ok:
        raise ModelFileError(f"{path}: checkpoint entry 'score_memory' must hold {what}")


def _kind(value: object) -> str:
    """What a value is, for a message: an empty list reads 'an empty list'."""
    if isinstance(value, (list, dict, str)) and not value:
        return f"an empty {type(value).__name__}"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def checked_checkpoint(state: object, path: Path) -> dict:
    """Check that a loaded ``checkpoint.pt`` holds every entry, each of the right type.

    Args:
        state: what :func:`read_torch_file` returned.
        path: the file (for the message).

    Returns:
        ``state``.

    Raises:
        ModelFileError: one line naming the file and the first entry that is missing or of the wrong type.
    """
    state = require_entries(state, path, _CHECKPOINT_ENTRIES, "gadms training checkpoint")
    for entry, kind in _STATE_DICT_ENTRIES.items():
        if entry in state and not isinstance(state[entry], kind):
            raise ModelFileError(
                f"{path}: checkpoint entry {entry!r} must be a {kind.__name__}, got {_kind(state[entry])}"
            )
    for entry in ("epoch", "batch", "world_size"):
        value = state.get(entry)
        if (entry == "epoch" or value is not None) and not _is_count(value):
            raise ModelFileError(
                f"{path}: checkpoint entry {entry!r} must be a whole number >= 0, got {str(value)[:40]!r}"
            )
    if state.get("batch") is not None:
        _check_partial(state.get("partial"), path)
    if "ranks" in state:
        _check_ranks(state["ranks"], path)
    if isinstance(state.get("score_memory"), dict):
        _check_score_memory(state["score_memory"], path)
    return state


def rank_entry(state: dict, path: Path, world_size: int, rank: int) -> dict:
    """This rank's RNG states and input position (checkpoints before mid-epoch ones kept a single set).

    Args:
        state: a checkpoint that passed :func:`checked_checkpoint`.
        path: the checkpoint file, for messages.
        world_size: processes of this run.
        rank: this process's rank.

    Returns:
        ``{"step_generator": ..., "torch_rng": ..., "feed": ...}``.

    Raises:
        ModelFileError: the checkpoint was written by another number of processes (and cannot be resumed so).
    """
    if "ranks" not in state:
        require_entries(state, path, ("step_generator", "torch_rng"), "gadms training checkpoint")
        ranks = [{"step_generator": state["step_generator"], "torch_rng": state["torch_rng"], "feed": {}}]
    else:
        ranks = state["ranks"]
    if len(ranks) != world_size and (state.get("batch") is not None or world_size > 1):
        raise ModelFileError(
            f"{path}: checkpoint was written by {len(ranks)} process(es), this run has {world_size}; "
            "resume with the same number of processes"
        )
    return ranks[rank if len(ranks) > 1 else 0]


def check_resume_settings(recorded: object, current: dict[str, Any], path: Path) -> None:
    """Refuse to resume a run whose result-shaping settings changed since ``path`` was written.

    Only keys both records hold are compared, so a setting added by a newer gadms does not block a resume.

    Args:
        recorded: the checkpoint's ``settings`` entry (absent in checkpoints of older versions: a warning).
        current: this run's record.
        path: the checkpoint, named in the message.

    Raises:
        ValueError: one line naming every changed key with its old and new value.
        ModelFileError: the entry is not a mapping.
    """
    if recorded is None:
        logger.warning("warning: --resume: %s records no settings (an older gadms wrote it); not compared", path)
        return
    if not isinstance(recorded, dict):
        raise ModelFileError(f"{path}: checkpoint entry 'settings' must be a dict, got a {type(recorded).__name__}")
    changed = [k for k in current if k in recorded and not _same(recorded[k], current[k])]
    if changed:
        shown = changed[:SHOWN_CHANGES]
        more = f" (and {len(changed) - len(shown)} more)" if len(changed) > len(shown) else ""
        was = ", ".join(f"{k}={_value(recorded[k])}" for k in shown)
        now = ", ".join(_value(current[k]) for k in shown)
        raise ValueError(
            f"--resume: {path} was written with {was}{more}; now {now}. "
            "Resume with the same settings, or start a fresh --out."
        )


def _same(old: object, new: object) -> bool:
    """Whether a recorded setting equals this run's (anything odd a damaged file holds counts as changed)."""
    try:
        return type(old) is type(new) and bool(old == new)
    except Exception:  # noqa: BLE001 - a tensor or other object compares in its own way
        return False


def _value(value: object) -> str:
    """A setting as params.yaml would show it, at most 40 characters."""
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    return text if len(text) <= 40 else text[:37] + "..."
