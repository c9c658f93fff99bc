"""Running ``dvc`` and ``git`` for the versioning code: captured output, failures as one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_MAX_DETAIL = 400


class VersioningError(RuntimeError):
    """A versioning step failed; the message is one line naming the repository or file and what is wrong."""


def run_dvc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "dvc", *args]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}  # also before .dvc/config says so (dvc init)
    return subprocess.run(
        command, cwd=root, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )


def dvc(root: Path, *args: str) -> str:
    """Run ``dvc ARGS`` in ``root``; its stdout, or a VersioningError quoting DVC's error."""
    result = run_dvc(root, *args)
    if result.returncode != 0:
        detail = error_detail(result.stderr + "\n" + result.stdout, result.returncode)
        raise VersioningError(f"dvc {args[0]} in {root} failed: {detail}")
    return result.stdout


def error_detail(output: str, returncode: int) -> str:
    """DVC's error message on one line: from the first ``ERROR:`` line on, without the support footer."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Having any troubles?")]
    starts = [i for i, line in enumerate(lines) if line.startswith("ERROR:")]
    lines = lines[starts[0] :] if starts else lines[-1:]
    detail = " ".join(line.removeprefix("ERROR:").strip() for line in lines) or f"exit status {returncode}"
    return detail if len(detail) <= _MAX_DETAIL else detail[: _MAX_DETAIL - 1] + "…"


def git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
        )
    except FileNotFoundError:
        raise VersioningError(f"{root}: git is not installed; DVC versioning needs a git repository") from None


def git_top_level(root: Path) -> Path:
    result = git(root, "rev-parse", "--show-toplevel")
    if result.returncode != 0:
        raise VersioningError(
            f"{root} is not inside a git work tree; run `git init` there first (DVC keeps versions in git)"
        )
    return Path(result.stdout.strip()).resolve()
