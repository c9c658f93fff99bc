"""Provenance of a tracked run: which stage ran, on which data (DVC hash), with which code (git commit, dirty).

:func:`provenance_tags` are set on every run :func:`gadms.tracking.mlflow_run.tracked_run` opens: ``stage``,
``dvc.data_hash`` (``unknown`` when not given), ``git.commit`` and ``mlflow.source.git.commit`` (``git rev-parse
HEAD`` of the repository the ``gadms`` code runs from, ``unknown`` outside git) and ``git.dirty`` (``true`` when
tracked files differ from the commit).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

UNKNOWN = "unknown"


@dataclass(frozen=True)
class GitState:
    """The commit the code runs from and whether tracked files were changed since."""

    commit: str
    dirty: str  # "true", "false" or "unknown"


def git_state(directory: Path | None = None) -> GitState:
    """``git rev-parse HEAD`` and the dirty flag of the repository holding ``directory``.

    Args:
        directory: a directory inside the repository (default: where the ``gadms`` package lives).

    Returns:
        The state; ``unknown`` for both outside a git repository or without git.
    """
    if directory is None:
        import gadms

        directory = Path(gadms.__file__).parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return GitState(UNKNOWN, UNKNOWN)
        status = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return GitState(UNKNOWN, UNKNOWN)
    dirty = UNKNOWN if status.returncode != 0 else str(bool(status.stdout.strip())).lower()
    return GitState(commit.stdout.strip(), dirty)


def provenance_tags(stage: str, data_hash: str | None) -> dict[str, str]:
    """Tags saying what ran on which data with which code.

    Args:
        stage: the pipeline stage.
        data_hash: the dataset's DVC hash, or None when unknown.

    Returns:
        ``stage``, ``dvc.data_hash``, ``git.commit``, ``mlflow.source.git.commit``, ``git.dirty``.
    """
    git = git_state()
    return {
        "stage": stage,
        "dvc.data_hash": data_hash or UNKNOWN,
        "git.commit": git.commit,
        "mlflow.source.git.commit": git.commit,
        "git.dirty": git.dirty,
    }
