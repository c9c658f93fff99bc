"""The main job end to end on a fresh repository: curated corpus under DVC, passing gate, MLflow runs, registered
model, final table; the second run reuses the cached stages."""

import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "pipeline.web_scenes=60", "pipeline.benchmark_identities=12", "synth.shard_size=30",
    "train.epochs=1", "train.batch_size=16", "finetune.epochs=1", "finetune.batch_size=16", "train.num_workers=0",
]  # fmt: skip


@pytest.fixture
def fresh_repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run(["git", "config", "user.email", "ci@example.invalid"], check=True)
    subprocess.run(["git", "config", "user.name", "ci"], check=True)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    return tmp_path


@pytest.mark.slow
def test_pipeline_runs_end_to_end_and_reuses_cached_stages(fresh_repo, prefect_api):
    import mlflow

    from flows.pipeline import pipeline_flow
    from gadms.config import load_params
    from gadms.tracking.store import tracking_uri
    from gadms.validation import read_gate

    first = pipeline_flow("params.yaml", SMALL)
    params = load_params("params.yaml", SMALL)
    pointer = yaml.safe_load((fresh_repo / "data.dvc").read_text())
    assert pointer["outs"][0]["md5"] == f"{first['data_hash']}.dir" and pointer["outs"][0]["path"] == "data"
    assert any((fresh_repo / ".dvc-storage").rglob("*")), "the corpus was pushed to the local remote"
    assert read_gate(fresh_repo / "work" / "reports" / "gate").passed
    assert "cuhk-pedes  finetuned" in first["table"]

    client = mlflow.MlflowClient(tracking_uri(params, fresh_repo))
    pretrain = client.get_run(first["pretrain_run"])
    assert pretrain.data.tags["dvc.data_hash"] == first["data_hash"]
    assert pretrain.data.tags["mlflow.parentRunId"] == first["pipeline_run"]
    tuned = client.get_run(first["finetune_runs"]["cuhk-pedes"])
    assert {"cuhk-pedes/R1", "cuhk-pedes/mAP"} <= set(tuned.data.metrics) and tuned.data.tags["setting"] == "finetuned"
    pipeline = client.get_run(first["pipeline_run"])
    assert pipeline.info.run_name.startswith("pipeline 20")
    for setting in ("direct", "finetuned"):  # headline results on the parent run, one column per setting
        assert {f"{setting}/cuhk-pedes/R1", f"{setting}/cuhk-pedes/mAP"} <= set(pipeline.data.metrics)
    assert pipeline.data.metrics["finetuned/cuhk-pedes/R1"] == tuned.data.metrics["cuhk-pedes/R1"]
    champion = client.get_model_version_by_alias(params.tracking.registered_model, params.tracking.champion_alias)
    assert champion.run_id == tuned.info.run_id

    second = pipeline_flow("params.yaml", SMALL)
    assert second["pretrain_run"] == first["pretrain_run"]  # cached: not trained again
    assert second["finetune_runs"] == first["finetune_runs"]
    assert second["data_hash"] == first["data_hash"] and second["table"] == first["table"]
    assert second["promotion"] == first["promotion"]
