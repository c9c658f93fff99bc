"""Corpus versioning with DVC, on real git repositories and a real local remote."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from _versioning_helpers import dvc_cli, expected_digest, git, make_git_repo, tree_digest, write_tree

from gadms.versioning.dvc import (
    DataVersion,
    VersioningError,
    checkout_hash,
    current_version,
    describe,
    ensure_repo,
    pull,
    push,
    track,
)

_BINARY = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
VERSION_A = {
    "captions.jsonl": b'{"key": "000", "caption": "a woman in a red coat"}\n',
    "shards/00000.tar": _BINARY,
    "shards/notes.txt": b"first shard\n",
}
VERSION_B = {
    "captions.jsonl": b'{"key": "000", "caption": "a woman in a beige puffer coat"}\n',  # modified
    "shards/00000.tar": _BINARY,  # unchanged
    "shards/00001.tar": _BINARY[::-1] + b"\x00\xff",  # added
    "extra/deep/readme.md": b"# added later\n",  # added, in new folders
}  # shards/notes.txt removed


def _replace_corpus(data: Path, files: dict[str, bytes]) -> None:
    shutil.rmtree(data, ignore_errors=True)
    write_tree(data, files)


def _project_config(repo: Path) -> dict[str, str]:
    """The repository's DVC settings as DVC itself lists them (local folders shown absolute)."""
    return dict(line.split("=", 1) for line in dvc_cli(repo, "config", "--list", "--project").splitlines())


def test_checkout_by_hash_brings_back_each_version_byte_for_byte(tmp_path):
    repo = make_git_repo(tmp_path / "repo")
    ensure_repo(repo, "local", ".dvc-storage")
    data = repo / "data"
    assert current_version(repo, data) is None

    write_tree(data, VERSION_A)
    a = track(repo, data)
    a_pointer = (repo / "data.dvc").read_text()
    assert a == DataVersion(a.md5, Path("data"), 3, sum(map(len, VERSION_A.values())))
    assert current_version(repo, "data") == a
    push(repo)

    _replace_corpus(data, VERSION_B)
    b = track(repo, data)
    assert b.md5 != a.md5 and b.files == 4
    push(repo)

    assert checkout_hash(repo, data, f"{a.md5}.dir") == a
    assert tree_digest(data) == expected_digest(VERSION_A)
    assert not (data / "extra").exists()  # folders of the later version go too
    assert current_version(repo, data) == a  # data.dvc points at A again
    assert (repo / "data.dvc").read_text() == a_pointer  # exactly as `dvc add` wrote it

    assert checkout_hash(repo, data, b.md5) == b
    assert tree_digest(data) == expected_digest(VERSION_B)

    # Without the local cache, B's files in the workspace are unsaved: DVC refuses to drop them ...
    shutil.rmtree(repo / ".dvc" / "cache")
    with pytest.raises(VersioningError, match="unsaved"):
        checkout_hash(repo, data, a.md5)
    assert current_version(repo, data) == b
    assert tree_digest(data) == expected_digest(VERSION_B)
    # ... unless asked to, and A then comes back from the remote.
    assert checkout_hash(repo, data, a.md5, force=True) == a
    assert tree_digest(data) == expected_digest(VERSION_A)
    assert current_version(repo, data) == a


def test_unknown_hash_is_a_one_line_error_that_changes_nothing(tmp_path):
    repo = make_git_repo(tmp_path / "repo")
    ensure_repo(repo, "local", ".dvc-storage")
    write_tree(repo / "data", VERSION_A)
    track(repo, "data")
    before = (repo / "data.dvc").read_text()
    unknown = "0123456789abcdef0123456789abcdef"

    with pytest.raises(VersioningError) as caught:
        checkout_hash(repo, "data", unknown)

    message = str(caught.value)
    assert "\n" not in message
    assert f"no corpus with DVC hash {unknown}" in message
    assert f"remote 'local' ({repo / '.dvc-storage'})" in message
    assert (repo / "data.dvc").read_text() == before
    assert tree_digest(repo / "data") == expected_digest(VERSION_A)


@pytest.mark.parametrize("text", ["", "1234", "g" * 32, "0123456789abcdef0123456789abcdef.txt"])
def test_malformed_hash_is_rejected_before_touching_anything(tmp_path, text):
    root = tmp_path / "not-a-repo"
    root.mkdir()
    with pytest.raises(VersioningError, match="is not a DVC directory hash"):
        checkout_hash(root, "data", text)
    assert list(root.iterdir()) == []


def test_a_clone_of_the_git_repository_pulls_the_same_bytes(tmp_path):
    storage = tmp_path / "shared-storage"  # outside the repository, so the committed config works in a clone
    repo = make_git_repo(tmp_path / "repo")
    ensure_repo(repo, "shared", str(storage))
    write_tree(repo / "data", VERSION_A)
    a = track(repo, "data")
    push(repo)
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "-m", "corpus version A")
    assert "data/" not in git(repo, "ls-files")  # the data itself stays out of git

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(repo), str(clone))
    assert not (clone / "data").exists()
    assert pull(clone, "data") == a
    assert tree_digest(clone / "data") == expected_digest(VERSION_A)


def test_ensure_repo_needs_a_git_work_tree(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(VersioningError, match=r"not inside a git work tree") as caught:
        ensure_repo(plain, "local", ".dvc-storage")
    assert str(plain) in str(caught.value)
    assert not (plain / ".dvc").exists()


def test_ensure_repo_in_a_folder_of_a_larger_git_repository(tmp_path):
    monorepo = make_git_repo(tmp_path / "monorepo")
    project = monorepo / "projects" / "gadms"
    project.mkdir(parents=True)
    ensure_repo(project, "local", ".dvc-storage")
    assert (project / ".dvc" / "config").is_file()
    assert not (monorepo / ".dvc").exists()
    assert _project_config(project)["remote.local.url"] == str(project / ".dvc-storage")


def test_ensure_repo_is_idempotent_private_and_writes_cloud_urls_as_is(tmp_path):
    repo = make_git_repo(tmp_path / "repo")
    ensure_repo(repo, "local", ".dvc-storage")
    config = (repo / ".dvc" / "config").read_text()
    assert (repo / ".dvc-storage").is_dir()
    assert git(repo, "check-ignore", ".dvc-storage").strip() == ".dvc-storage"  # blobs never reach git
    assert "url = ../.dvc-storage" in config  # stored relative, so the repository can move

    ensure_repo(repo, "local", ".dvc-storage")  # again: nothing breaks, nothing is duplicated
    assert (repo / ".dvc" / "config").read_text() == config
    assert (repo / ".gitignore").read_text().count(".dvc-storage") == 1

    ensure_repo(repo, "store", "s3://corpus-bucket/gadms")  # no credentials, no network: only written
    settings = _project_config(repo)
    assert settings["core.analytics"] == "false"
    assert settings["core.remote"] == "store"
    assert settings["remote.store.url"] == "s3://corpus-bucket/gadms"
    assert settings["remote.local.url"] == str(repo / ".dvc-storage")
    assert sorted(p.name for p in repo.iterdir()) == [".dvc", ".dvc-storage", ".dvcignore", ".git", ".gitignore"]


def test_track_refuses_a_folder_outside_the_repository(tmp_path):
    repo = make_git_repo(tmp_path / "repo")
    with pytest.raises(VersioningError, match="must lie inside the repository"):
        track(repo, tmp_path / "elsewhere")
    with pytest.raises(VersioningError, match="is not a directory"):
        track(repo, "data")


def test_describe_gives_the_full_hash_on_one_line():
    version = DataVersion("61dc167cf4e403325b9d260b44d1af3f", Path("data"), 1204, 36_909_875)
    assert describe(version) == "data @ 61dc167cf4e403325b9d260b44d1af3f (1,204 files, 35.2 MiB)"
    assert describe(DataVersion("0" * 32, Path("corpus/v1"), 1, 12)) == f"corpus/v1 @ {'0' * 32} (1 file, 12 B)"
