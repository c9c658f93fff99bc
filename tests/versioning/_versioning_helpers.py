"""Helpers for the DVC tests: throw-away git repositories and file-tree digests."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` and return its stdout; fail the test on an error."""
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout


def dvc_cli(repo: Path, *args: str) -> str:
    """Ask DVC itself (the reference) in ``repo``; its stdout stripped."""
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"dvc {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def make_git_repo(path: Path) -> Path:
    """A fresh git repository with a local identity, ready for commits."""
    path.mkdir(parents=True)
    git(path, "init", "--quiet", "--initial-branch", "main")
    git(path, "config", "user.name", "Test User")
    git(path, "config", "user.email", "test@example.com")
    return path


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    """Write ``{relative path: bytes}`` under root, creating folders."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def tree_digest(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under root: equal digests mean equal bytes and names."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def expected_digest(files: dict[str, bytes]) -> dict[str, str]:
    """The tree_digest a folder holding exactly ``files`` must have."""
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
