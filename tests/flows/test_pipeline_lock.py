"""The pipeline flow holds its work tree's lock however it is run: a run that finds the lock held (a running
`gadms pipeline`, a run of another deployment) ends Cancelled at once, touching nothing (the synthetic world's
`work/web` included), and says who holds the tree."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from gadms.locks import pipeline_lock
    with pipeline_lock(Path(sys.argv[1]), "gadms pipeline"):
        print("held", flush=True)
        time.sleep(120)
    """
)


@pytest.mark.slow
def test_a_pipeline_run_that_finds_its_work_tree_busy_ends_cancelled_and_touches_nothing(
    tmp_path, monkeypatch, prefect_api
):
    from flows.pipeline import pipeline_flow

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    shard = tmp_path / "work" / "web" / "00000.tar"  # what a running pipeline is curating
    shard.parent.mkdir(parents=True)
    shard.write_bytes(b"shard being read")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "work")], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        state = pipeline_flow("params.yaml", [], return_state=True)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert state.is_cancelled(), state
    assert state.message.startswith(
        f"skipped: work is being written by another gadms pipeline (pid {holder.pid}, since "
    ), state.message
    assert state.message.endswith("; wait for it")
    assert shard.read_bytes() == b"shard being read"
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == [".pipeline.lock", "web"]
