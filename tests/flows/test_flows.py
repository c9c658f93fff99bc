"""Flows on the real Prefect engine: Dask fan-out gives the same bytes; a failed gate stops the pipeline."""

import hashlib
import json
import tarfile
from pathlib import Path

import pytest
import yaml

from gadms.config import load_params
from gadms.reproducible_writes import ShardWriter, json_bytes
from gadms.synth.web import write_web_shards

REPO = Path(__file__).resolve().parents[2]


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A working directory with params.yaml pointing at a small synthetic web corpus."""
    monkeypatch.chdir(tmp_path)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(tmp_path / "params.yaml")
    write_web_shards(
        tmp_path / "work" / "web",
        80,
        7,
        params.synth.model_copy(update={"shard_size": 20}),
        params.curation.filter,
        progress=False,
    )
    return tmp_path


@pytest.mark.slow
def test_curation_on_a_two_worker_dask_cluster_gives_the_same_bytes(project, prefect_api):
    from flows.curate import run_curation
    from gadms.curation.run import curate

    dask = ["orchestration.task_runner=dask", "orchestration.max_workers=2"]
    result = run_curation("params.yaml", dask, out_dir="dask")
    run_curation("params.yaml", [], out_dir="threads")
    curate(Path("work/web"), Path("single"), load_params("params.yaml"), progress=False)
    assert result.totals["seen"] == 80
    assert _tree(project / "dask") == _tree(project / "single") == _tree(project / "threads")


def _corrupt_captions(shard: Path) -> None:
    """Rewrite a curated shard with template placeholders left in every caption (a broken captioning run)."""
    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    with ShardWriter(shard) as out:
        for name, data in members:
            if name.endswith(".json"):
                meta = json.loads(data)
                meta["captions"] = [f"A [man] wearing a [colored top]. {c}" for c in meta["captions"]]
                data = json_bytes(meta)
            out.add(name, data)


@pytest.mark.slow
def test_a_corrupted_caption_file_fails_the_pipeline_at_the_gate(project, prefect_api):
    from prefect import get_client  # noqa: F401  (engine available)

    from flows.curate import run_curation
    from flows.pipeline import pipeline_flow
    from flows.validate import QualityGateFailed

    overrides = ["pipeline.synthesize=false"]
    run_curation("params.yaml", overrides)
    _corrupt_captions(project / "data" / "00001.tar")
    state = pipeline_flow("params.yaml", overrides, return_state=True)
    assert state.is_failed()
    with pytest.raises(QualityGateFailed, match="no_placeholder"):
        state.result()
    summary = (project / "work" / "reports" / "gate" / "summary.txt").read_text()
    assert "FAILED" in summary and "[colored top]" in summary
    # nothing downstream ran: no DVC pointer, no MLflow runs, no training
    assert not (project / "data.dvc").exists()
    assert not (project / "mlruns").exists() and not (project / "work" / "runs").exists()


@pytest.mark.slow
def test_ablate_flow_runs_every_cell_and_reuses_them(prefect_api, tmp_path, monkeypatch):
    from flows.ablate import ablate_flow
    from tests.ablate.conftest import tiny_params

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = tiny_params(tmp_path, ablate={**tiny_params(tmp_path).ablate.model_dump(mode="json"), "seeds": [0]})
    file = tmp_path / "ablate.yaml"
    file.write_text(yaml.safe_dump(params.model_dump(mode="json")), encoding="utf-8")
    first = ablate_flow(str(file))
    assert "| none |" in first["table"] and "| gass |" in first["table"] and first["parent_run"]
    results = sorted(p.name for p in (tmp_path / "ablate" / "results").iterdir())
    assert results == ["gass-seed0.json", "none-seed0.json"]
    stamps = [p.stat().st_mtime_ns for p in sorted((tmp_path / "ablate" / "results").iterdir())]
    again = ablate_flow(str(file))
    assert again["parent_run"] == first["parent_run"]
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "ablate" / "results").iterdir())] == stamps
