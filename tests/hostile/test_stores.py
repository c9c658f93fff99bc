"""Stores verify what they hand back: DVC checkouts are checked file by file against the recorded hashes; a
damaged, locked or vanished MLflow store is one line; two registrations of one run are one version."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from gadms.config import ModelConfig, params_from_dict
from gadms.model.retrieval import Architecture, PersonRetrievalModel
from gadms.tracking import store
from gadms.tracking.mlflow_run import tracked_run
from gadms.tracking.store import tracking_uri
from gadms.versioning.dvc import ensure_repo, push, track

VERSION_A = {"captions.jsonl": b'{"caption": "a woman in a red coat"}\n', "shards/00000.tar": os.urandom(3000)}
VERSION_B = {"captions.jsonl": b'{"caption": "a man in a blue coat"}\n', "shards/00001.tar": os.urandom(2000)}


@pytest.fixture()
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty git and DVC configs under tmp_path, no tracking URI from the shell; works from tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "gitconfig").write_text("")
    for name, value in {
        "DVC_GLOBAL_CONFIG_DIR": home / "dvc-global",
        "DVC_SYSTEM_CONFIG_DIR": home / "dvc-system",
        "DVC_SITE_CACHE_DIR": home / "dvc-site",
        "GIT_CONFIG_GLOBAL": home / "gitconfig",
        "GIT_CEILING_DIRECTORIES": tmp_path,
    }.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def make_repo(path: Path, remote: str) -> Path:
    """A git repository whose DVC remote is ``remote``, with two committed corpus versions (A, then B)."""
    path.mkdir()
    git(path, "init", "--quiet", "--initial-branch", "main")
    git(path, "config", "user.name", "T")
    git(path, "config", "user.email", "t@example.com")
    ensure_repo(path, "local", remote)
    return path


def write_version(repo: Path, files: dict[str, bytes]) -> str:
    """Replace ``repo/data`` with ``files``, track and push it; its DVC hash."""
    for old in sorted((repo / "data").rglob("*"), reverse=True) if (repo / "data").exists() else []:
        old.unlink() if old.is_file() else old.rmdir()
    for rel, data in files.items():
        (repo / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / "data" / rel).write_bytes(data)
    version = track(repo, repo / "data")
    push(repo, "local")
    return version.md5


def corrupt(objects: Path, md5: str, data: bytes = b"not the recorded bytes\n") -> Path:
    """Overwrite the object ``md5`` (DVC leaves objects read-only)."""
    path = objects / md5[:2] / md5[2:]
    path.chmod(0o644)
    path.write_bytes(data)
    return path


def test_checkout_of_a_corrupted_cache_object_names_the_file_and_keeps_the_pointer(isolated, run_gadms):
    repo = make_repo(isolated / "repo", ".dvc-storage")
    a = write_version(repo, VERSION_A)
    write_version(repo, VERSION_B)
    pointer = (repo / "data.dvc").read_text()
    corrupt(repo / ".dvc/cache/files/md5", hashlib.md5(VERSION_A["shards/00000.tar"]).hexdigest())
    os.chdir(repo)
    outcome = run_gadms("data", "checkout", "--hash", a)
    outcome.assert_contract()
    assert outcome.code == 2 and "checked out" not in outcome.stdout
    assert outcome.stderr.startswith(f"error: {repo / 'data/shards/00000.tar'}: md5 ")
    assert f"version {a} records {hashlib.md5(VERSION_A['shards/00000.tar']).hexdigest()}" in outcome.stderr
    assert (repo / "data.dvc").read_text() == pointer  # still version B
    assert not (repo / "data/shards/00000.tar").exists()  # the wrong bytes are not left to be read


def test_checkout_with_a_tampered_file_list_names_the_list(isolated, run_gadms):
    repo = make_repo(isolated / "repo", ".dvc-storage")
    a = write_version(repo, VERSION_A)
    b = write_version(repo, VERSION_B)
    objects = repo / ".dvc/cache/files/md5"
    listing = corrupt(objects, f"{a}.dir", (objects / b[:2] / f"{b[2:]}.dir").read_bytes())  # A's list says B
    os.chdir(repo)
    outcome = run_gadms("data", "checkout", "--hash", a)
    outcome.assert_contract()
    assert outcome.code == 2
    assert outcome.stderr.startswith(f"error: {listing}: the DVC cache's file list of version {a} is corrupt (md5 {b})")


def test_pull_of_a_corrupted_remote_object_names_the_file(isolated, run_gadms):
    storage = isolated / "storage"
    repo = make_repo(isolated / "repo", str(storage))
    write_version(repo, VERSION_A)
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "-m", "A")
    corrupt(storage / "files/md5", hashlib.md5(VERSION_A["captions.jsonl"]).hexdigest())
    git(isolated, "clone", "--quiet", str(repo), "clone")
    os.chdir(isolated / "clone")
    (isolated / "params.yaml").write_text(f"versioning:\n  remote_url: {storage}\n")
    outcome = run_gadms("data", "pull", "--params", str(isolated / "params.yaml"))
    outcome.assert_contract()
    assert outcome.code == 2 and "pulled" not in outcome.stdout
    assert outcome.stderr.startswith(f"error: {isolated / 'clone/data/captions.jsonl'}: md5 "), outcome.stderr


# --- the MLflow store ---------------------------------------------------------------------------------------------


@pytest.fixture()
def index_args(isolated: Path) -> list[str]:
    """``gadms index`` on one image with the default model (the registry's champion): it opens the store."""
    (isolated / "images").mkdir()
    Image.new("RGB", (32, 64), "red").save(isolated / "images/a.png")
    (isolated / "params.yaml").write_text(f"paths:\n  mlruns_dir: {isolated / 'mlruns'}\n")
    return ["index", "--out", str(isolated / "index"), "--images", str(isolated / "images"), "--quiet"]


def test_a_damaged_store_is_one_line_every_time(isolated, index_args, run_gadms):
    (isolated / "mlruns").mkdir()
    (isolated / "mlruns/mlflow.db").write_bytes(b"garbage, not a database " * 100)
    for _ in range(2):
        outcome = run_gadms(*index_args)
        outcome.assert_contract()
        assert outcome.code == 2
        assert outcome.stderr.strip().startswith(f"error: MLflow store {isolated / 'mlruns/mlflow.db'} is damaged")


LOCKER = textwrap.dedent(
    """
    import sqlite3, sys, time
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    time.sleep(120)
    """
)


def test_a_store_locked_by_another_process_is_waited_for_then_one_line(isolated, index_args, run_gadms, monkeypatch):
    database = isolated / "mlruns/mlflow.db"
    database.parent.mkdir()
    sqlite3.connect(database).execute("CREATE TABLE t (x)").connection.close()
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(database)], stdout=subprocess.PIPE, text=True)
    monkeypatch.setattr(store, "STORE_WAIT_SECONDS", 1.0)
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        outcome = run_gadms(*index_args)
    finally:
        locker.kill()
        locker.wait()
    outcome.assert_contract()
    assert outcome.code == 2
    assert outcome.stderr.strip() == (
        f"error: MLflow store {database} is locked by another process (waited 1s); try again when it is done"
    )


def test_a_store_deleted_or_in_a_missing_folder_is_one_line_and_the_next_run_works(isolated, run_gadms):
    params = params_from_dict({"paths": {"mlruns_dir": str(isolated / "gone/deeper/mlruns")}})
    with pytest.raises(store.StoreError, match="removed or changed while in use, run the command again"):
        with tracked_run(params, "x", "pretrain", None) as run:
            run.log_values({"a": 1.0})
            (isolated / "gone/deeper/mlruns/mlflow.db").unlink()  # deleted mid-way
            run.log_values({"b": 2.0})
    with tracked_run(params, "y", "pretrain", None) as run:  # a later run makes a new store
        run.log_values({"a": 1.0})
    assert MlflowClient(tracking_uri(params)).get_run(run.run_id).data.metrics == {"a": 1.0}


# --- registration -------------------------------------------------------------------------------------------------

REGISTER = textwrap.dedent(
    """
    import json, os, sys, time
    from gadms.config import params_from_dict
    from gadms.tracking.registry import register_and_maybe_promote
    raw, run_id, start = json.loads(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    params = params_from_dict(raw)
    time.sleep(max(0.0, start - time.time()))  # both start together
    print(register_and_maybe_promote(run_id, "model", params, "cuhk-pedes", 40.0).version, flush=True)
    """
)


def test_two_registrations_of_one_run_at_once_make_one_version(isolated):
    raw = {"paths": {"mlruns_dir": str(isolated / "mlruns")}, "tracking": {"registered_model": "twins"}}
    params = params_from_dict(raw)
    torch.manual_seed(0)
    with tracked_run(params, "registry", "finetune", None) as run:
        run.log_model(PersonRetrievalModel(Architecture.from_config(ModelConfig(context_length=32))).eval())
    import time

    start = str(time.time() + 8.0)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTER, json.dumps(raw), run.run_id, start], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    versions = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert versions == ["1", "1"]
    client = MlflowClient(tracking_uri(params))
    assert [str(v.version) for v in client.search_model_versions("name = 'twins'")] == ["1"]
    assert str(client.get_model_version_by_alias("twins", "champion").version) == "1"
