"""`gadms data checkout --hash H --remote URL` / `gadms data pull --remote URL` in a second clone that does not know
the remote: the same bytes, and no tracked file changed (run as a user runs it: the `gadms` command in the clone)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _versioning_helpers import expected_digest, git, make_git_repo, tree_digest, write_tree

from gadms.versioning.dvc import DataVersion, describe, ensure_repo, push, track

GADMS = str(Path(sys.executable).parent / "gadms")
CORPUS = {
    "captions.jsonl": b'{"key": "000", "caption": "a woman in a red coat"}\n',
    "shards/00000.tar": np.random.default_rng(1).integers(0, 256, 7000, dtype=np.uint8).tobytes(),
    "meta/00000.parquet": b"PAR1 not really\n",
}
OLDER = {"captions.jsonl": b'{"key": "000", "caption": "a man in a blue shirt"}\n', "shards/00000.tar": b"\x00" * 999}
UNKNOWN = "0123456789abcdef0123456789abcdef"


def _machine_a(tmp_path: Path) -> tuple[Path, DataVersion, DataVersion]:
    """A project repository with the default in-repo remote (.dvc-storage, git-ignored): an older corpus version a
    model was trained on, then the current one, both pushed there, data.dvc committed at the current one; returns
    (repository, older version, current version)."""
    repo = make_git_repo(tmp_path / "machine-a")
    ensure_repo(repo, "local", ".dvc-storage")
    write_tree(repo / "data", OLDER)
    older = track(repo, "data")
    push(repo)
    shutil.rmtree(repo / "data")
    write_tree(repo / "data", CORPUS)
    current = track(repo, "data")
    push(repo)
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "-m", "corpus")
    return repo, older, current


def _clone(source: Path, target: Path) -> Path:
    git(source.parent, "clone", "--quiet", str(source), str(target))
    return target


def _gadms(clone: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GADMS, "data", *args], cwd=clone, capture_output=True, text=True, timeout=300)


def _tracked_state(clone: Path) -> dict[str, bytes]:
    """The bytes of the files a fetch must not change, and git's view of the work tree (tracked and untracked)."""
    return {
        ".dvc/config": (clone / ".dvc" / "config").read_bytes(),
        "data.dvc": (clone / "data.dvc").read_bytes(),
        "git status": git(clone, "status", "--porcelain", "--untracked-files=all").encode(),
    }


@pytest.mark.slow
def test_checkout_by_hash_from_a_remote_the_clone_does_not_know(tmp_path):
    repo, older, current = _machine_a(tmp_path)
    remote = repo / ".dvc-storage"  # machine A's remote; the clone's own .dvc/config names ../.dvc-storage
    clone = _clone(repo, tmp_path / "machine-b")
    before = _tracked_state(clone)
    assert before["git status"] == b"" and not (clone / "data").exists()

    result = _gadms(clone, "checkout", "--hash", current.md5, "--remote", str(remote))

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"checked out {describe(current)}"
    assert tree_digest(clone / "data") == expected_digest(CORPUS)  # byte-identical, every file
    assert _tracked_state(clone) == before  # .dvc/config, data.dvc and `git status` exactly as cloned
    assert not (clone / ".dvc" / "config.local").exists() and not (clone / ".dvc-storage").exists()

    # an older model's corpus: its files, and still no tracked file changed (data.dvc names the committed version)
    result = _gadms(clone, "checkout", "--hash", older.md5, "--remote", str(remote))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"checked out {describe(older)}"
    assert tree_digest(clone / "data") == expected_digest(OLDER)
    assert _tracked_state(clone) == before


@pytest.mark.slow
def test_pull_from_a_relative_remote_folder_keeps_the_users_local_config(tmp_path):
    repo, _, version = _machine_a(tmp_path)
    copied = tmp_path / "usb-stick" / "gadms-remote"  # the remote carried over by hand
    copied.parent.mkdir()
    (repo / ".dvc-storage").rename(copied)
    clone = _clone(repo, tmp_path / "machine-b")
    local_config = b"[core]\n    autostage = false\n"
    (clone / ".dvc" / "config.local").write_bytes(local_config)
    before = _tracked_state(clone)

    result = _gadms(clone, "pull", "--remote", "../usb-stick/gadms-remote")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(f"pulled data @ {version.md5} (3 files")
    assert tree_digest(clone / "data") == expected_digest(CORPUS)
    assert _tracked_state(clone) == before
    assert (clone / ".dvc" / "config.local").read_bytes() == local_config


@pytest.mark.parametrize(
    ("remote", "hash_", "expected"),
    [
        ("no-such-folder", None, "error: --remote no-such-folder: no such folder ({clone}/no-such-folder)"),
        (
            "{remote}",
            UNKNOWN,
            "error: no corpus with DVC hash {hash} in the cache or in remote 'command-line' ({remote})",
        ),
        ("{empty}", None, "no corpus with DVC hash {md5} in the cache or in remote 'command-line' ({empty})"),
        ("nosuchscheme://bucket/path", None, "nosuchscheme://bucket/path"),
    ],
    ids=["missing-folder", "hash-not-in-remote", "folder-that-is-no-remote", "unknown-url-scheme"],
)
def test_a_bad_remote_or_hash_is_one_line_and_changes_nothing(tmp_path, remote, hash_, expected):
    repo, _, version = _machine_a(tmp_path)
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    clone = _clone(repo, tmp_path / "machine-b")
    before = _tracked_state(clone)
    names = {
        "remote": str(repo / ".dvc-storage"),
        "empty": str(empty),
        "clone": str(clone),
        "hash": hash_,
        "md5": version.md5,
    }
    remote, expected = remote.format(**names), expected.format(**names)

    result = _gadms(clone, "checkout", "--hash", hash_ or version.md5, "--remote", remote)

    assert result.returncode == 2, result.stdout
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert expected in result.stderr
    assert _tracked_state(clone) == before
    assert not (clone / "data").exists() and not (clone / ".dvc" / "config.local").exists()
