"""Versioning flow: DVC tracks the gated corpus (data.dvc) and pushes it to the remote."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Optional, Sequence

from prefect import get_run_logger, task

from flows.common import gadms_flow, load
from gadms.validation import require_passed_gate
from gadms.versioning.dvc import DataVersion, describe, ensure_repo, push, track


def repo_root() -> Path:
    """The git work tree of the current directory (where data.dvc lives)."""
    out = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


@task(name="dvc-track")
def track_corpus(root: Path, data_dir: Path, remote_name: str, remote_url: str) -> DataVersion:
    """``dvc add`` the corpus; returns its directory hash."""
    ensure_repo(root, remote_name, remote_url)
    return track(root, data_dir)


@task(name="dvc-push")
def push_corpus(root: Path, remote_name: str) -> None:
    """Upload the corpus to the DVC remote (retried with back-off: the remote may be a network service)."""
    push(root, remote_name)


@gadms_flow(name="version", log_prints=True, flow_run_name="version corpus")
def version_flow(
    params_file: str = "params.yaml", overrides: Sequence[str] = (), data_dir: Optional[str] = None
) -> dict[str, Any]:
    """Version the corpus only if the quality gate passed on exactly these bytes; returns the DVC hash."""
    params = load(params_file, overrides)
    data = Path(data_dir or params.paths.data_dir).resolve()
    require_passed_gate(data, params.paths.reports_dir / "gate")
    root = repo_root()
    cfg = params.versioning
    version = track_corpus(root, data, cfg.remote_name, cfg.remote_url)
    pusher = push_corpus.with_options(
        retries=params.orchestration.retries, retry_delay_seconds=list(params.orchestration.retry_delays_s)
    )
    pusher(root, cfg.remote_name)
    get_run_logger().info(f"versioned {describe(version)}; pushed to '{cfg.remote_name}'")
    return {"md5": version.md5, "path": str(version.path), "files": version.files, "size": version.size}
