"""Versioning flow: DVC tracks the gated corpus (data.dvc) and pushes it to the remote."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from flows.common import gadms_flow, with_retries
from gadms.config import Params
from gadms.results import CorpusVersion, GatedCorpus
from gadms.validation import require_passed_gate
from gadms.versioning.commands import git_top_level
from gadms.versioning.dvc import DataVersion, describe, ensure_repo, push, track


@task(name="dvc-init")
def set_up_dvc(root: Path, remote_name: str, remote_url: str) -> None:
    """Make ``root`` a DVC repository with the remote (a no-op when it is one already)."""
    ensure_repo(root, remote_name, remote_url)


@task(name="dvc-track")
def track_corpus(root: Path, data_dir: Path) -> DataVersion:
    """``dvc add`` the corpus; returns its directory hash."""
    return track(root, data_dir)


@task(name="dvc-push")
def push_corpus(root: Path, remote_name: str) -> None:
    """Upload the corpus to the DVC remote (retried with back-off: the remote may be a network service)."""
    push(root, remote_name)


@gadms_flow(name="version", log_prints=True, flow_run_name="version corpus")
def version_flow(params: Params, gated: GatedCorpus) -> CorpusVersion:
    """Version the corpus only if the quality gate passed on exactly these bytes; returns its DVC version."""
    data = Path(gated.path).resolve()
    require_passed_gate(data, params.paths.reports_dir / "gate")
    root, cfg = git_top_level(Path.cwd()), params.versioning  # where data.dvc lives
    set_up_dvc(root, cfg.remote_name, cfg.remote_url)
    version = track_corpus(root, data)
    with_retries(push_corpus, params)(root, cfg.remote_name)
    get_run_logger().info(f"versioned {describe(version)}; pushed to '{cfg.remote_name}'")
    return CorpusVersion(gated, version.md5, version.path, version.files, version.size)
