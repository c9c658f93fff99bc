"""The main job end to end on a fresh repository: curated corpus under DVC, passing gate, MLflow runs, registered
model, final table; a second run with the same inputs says so and records nothing, a changed param trains again."""

import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "pipeline.web_scenes=60",
    "pipeline.benchmark_identities=12",
    "synth.shard_size=30",
    "train.epochs=1",
    "train.batch_size=16",
    "finetune.epochs=1",
    "finetune.batch_size=16",
    "train.num_workers=0",
]


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
    assert pointer["outs"][0]["md5"] == f"{first.version.md5}.dir" and pointer["outs"][0]["path"] == "data"
    assert any((fresh_repo / ".dvc-storage").rglob("*")), "the corpus was pushed to the local remote"
    assert read_gate(fresh_repo / "work" / "reports" / "gate").passed
    assert "cuhk-pedes  finetuned" in first.table

    client = mlflow.MlflowClient(tracking_uri(params, fresh_repo))
    pretrain = client.get_run(first.pretrained.run_id)
    assert pretrain.data.tags["dvc.data_hash"] == first.version.md5
    assert pretrain.data.tags["mlflow.parentRunId"] == first.pipeline_run
    tuned = client.get_run(first.finetuned["cuhk-pedes"].run_id)
    assert {"cuhk-pedes/R1", "cuhk-pedes/mAP"} <= set(tuned.data.metrics) and tuned.data.tags["setting"] == "finetuned"
    pipeline = client.get_run(first.pipeline_run)
    assert pipeline.info.run_name.startswith("pipeline 20")
    for setting in ("direct", "finetuned"):  # headline results on the parent run, one column per setting
        assert {f"{setting}/cuhk-pedes/R1", f"{setting}/cuhk-pedes/mAP"} <= set(pipeline.data.metrics)
    assert pipeline.data.metrics["finetuned/cuhk-pedes/R1"] == tuned.data.metrics["cuhk-pedes/R1"]
    champion = client.get_model_version_by_alias(params.tracking.registered_model, params.tracking.champion_alias)
    assert champion.run_id == tuned.info.run_id
    gate_report = fresh_repo / "work" / "reports" / "gate" / "history" / f"{Path(first.version.gate.report).name}"
    assert gate_report.is_file()  # the gate's offline report, kept for this corpus and linked from MLflow:
    assert [a.path for a in client.list_artifacts(first.pipeline_run, "quality")] == [f"quality/{gate_report.name}"]
    searched = {a.path for a in client.list_artifacts(first.pipeline_run, "figures/search")}
    # the new champion's search results: one figure per test identity, at most three (this test split has two)
    assert searched == {f"figures/search/query_{i}.png" for i in range(len(searched))} and 1 <= len(searched) <= 3

    experiment = pipeline.info.experiment_id
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        names = {run.name for run in prefect.read_flow_runs()}
    assert {"curate", "quality gate", "version corpus", "pretrain", "finetune cuhk-pedes", "evaluate direct"} <= names
    assert any(name.startswith("pipeline 20") for name in names)  # runs named for what they are, not at random
    logs = _stage_logs()
    assert "pretrain epoch 1/1: sdm_loss " in logs["pretrain"]  # per-epoch losses in the Prefect run log
    assert "finetune cuhk-pedes epoch 1/1: " in logs["finetune cuhk-pedes"]
    assert "finetuned on cuhk-pedes: R1 " in logs["finetune cuhk-pedes"]
    for stage, run_id in (("pretrain", first.pretrained.run_id), ("finetune cuhk-pedes", tuned.info.run_id)):
        link = f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{run_id}"
        assert f"{stage}: MLflow run {run_id}: {link} (after starting the UI: " in logs[stage]
    (artifact,) = _pipeline_artifacts()
    assert first.version.md5 in artifact and f"{params.tracking.registered_model} v{champion.version}" in artifact
    assert f"promoted to champion: {first.promotion.reason}" in artifact
    for run_id in (first.pipeline_run, first.pretrained.run_id, tuned.info.run_id):
        assert f"[{run_id}](http://127.0.0.1:5000/#/experiments/{experiment}/runs/{run_id})" in artifact
    assert "| cuhk-pedes | finetuned |" in artifact and "mlflow ui --backend-store-uri" in artifact
    second = pipeline_flow("params.yaml", SMALL)  # same corpus, params and code: nothing new to learn
    assert second.version.md5 == first.version.md5
    assert second.unchanged == f"inputs unchanged: model v{champion.version} stays champion"
    assert second.pipeline_run == "" and second.table == "" and second.pretrained is None
    assert len(client.search_runs([experiment], "tags.stage = 'pipeline'")) == 1  # no new, empty pipeline run
    assert len(client.search_model_versions(f"name = '{params.tracking.registered_model}'")) == 1
    artifacts = _pipeline_artifacts()  # one per pipeline run, the unchanged one saying so
    assert len(artifacts) == 2 and f"inputs unchanged: model v{champion.version} stays champion" in artifacts[1]
    third = pipeline_flow("params.yaml", [*SMALL, "finetune.lr=2e-5"])  # a changed param trains again
    assert not third.unchanged and third.pipeline_run != first.pipeline_run
    assert third.finetuned["cuhk-pedes"].run_id != first.finetuned["cuhk-pedes"].run_id
    assert len(_pipeline_artifacts()) == 3


def _pipeline_artifacts() -> list[str]:
    """The markdown of each pipeline run's ``gadms-pipeline`` artifact, oldest first (one per pipeline flow run)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as prefect:
        found = prefect.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["gadms-pipeline"])))
        runs = {r.id: r.name for r in prefect.read_flow_runs()}
    found = sorted(found, key=lambda a: a.created)
    assert all(runs[a.flow_run_id].startswith("pipeline 20") for a in found)
    assert len({a.flow_run_id for a in found}) == len(found)
    return [str(a.data) for a in found]


def _stage_logs() -> dict[str, str]:
    """All log messages of each stage flow run (by run name), their task runs' included."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)  # logs are sent in the background
    with get_client(sync_client=True) as prefect:
        runs = {r.name: r.id for r in prefect.read_flow_runs()}
        return {
            name: "\n".join(
                log.message
                for log in prefect.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[runs[name]])), limit=200)
            )
            for name in ("pretrain", "finetune cuhk-pedes")
        }
