"""``gadms ablate``: cells resumable, MLflow parent with one child per (row, seed), table and chart artifacts."""

import json

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from gadms.ablate.cells import result_path
from gadms.ablate.rows import derive
from gadms.ablate.run import run_ablation
from gadms.cli import app
from gadms.tracking.store import tracking_uri
from tests.ablate.conftest import tiny_params

pytestmark = pytest.mark.slow  # about 20 s: a base and four tiny training runs


def _children(client, params, parent):
    experiment = client.get_experiment_by_name(params.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    return {(r.data.tags["ablate.row"], int(r.data.tags["ablate.seed"])): r for r in runs}


def test_parent_children_artifacts_and_resume(tmp_path):
    params = tiny_params(tmp_path)
    summary, text, ablation = run_ablation(params, log=lambda _: None)
    assert [(s.row, s.benchmark, s.seeds) for s in summary] == [
        ("none", "cuhk-pedes", (0, 1)),
        ("gass", "cuhk-pedes", (0, 1)),
    ]
    assert "±" in (ablation.plan.out / "results.md").read_text(encoding="utf-8")

    client = MlflowClient(tracking_uri(params))
    parent_id = ablation.tracker.parent_id
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["stage"] == "ablate"
    artifacts = {a.path for a in client.list_artifacts(parent_id, "ablation")} | {
        a.path for a in client.list_artifacts(parent_id, "figures")
    }
    assert {"ablation/results.csv", "ablation/results.md", "ablation/results_table.json"} <= artifacts
    assert "figures/ablation.png" in artifacts
    png = client.download_artifacts(parent_id, "figures/ablation.png", str(tmp_path / "dl"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    table = json.loads(
        open(client.download_artifacts(parent_id, "ablation/results_table.json", str(tmp_path / "t"))).read()
    )
    assert table["columns"][:3] == ["row", "benchmark", "seeds"]
    r1 = [s.mean["R1"] for s in summary]
    assert parent.data.metrics["none/cuhk-pedes/R1_mean"] == pytest.approx(r1[0])

    children = _children(client, params, parent_id)
    assert set(children) == {("none", 0), ("none", 1), ("gass", 0), ("gass", 1)}
    for (row, seed), child in children.items():
        assert child.info.status == "FINISHED"
        assert child.data.params["seed"] == str(seed) and child.data.params["ablate.rows"]
        assert "cuhk-pedes/R1" in child.data.metrics and "train/sdm_loss" in child.data.metrics
    assert children[("none", 0)].data.params["model.masking.score"] == "none"
    assert children[("gass", 0)].data.params["model.masking.score"] == "gass"

    # rerun: nothing is trained again, the same parent, no new children
    stamps = {cell: result_path(ablation.plan.out, *cell).stat().st_mtime_ns for cell in children}
    lines = []
    _, _, again = run_ablation(params, log=lines.append)
    assert again.tracker.parent_id == parent_id and again.tracker.reopened
    assert all("(reused)" in line for line in lines if line.startswith("["))
    assert {cell: result_path(ablation.plan.out, *cell).stat().st_mtime_ns for cell in children} == stamps
    assert len(_children(client, params, parent_id)) == 4
    path = client.download_artifacts(parent_id, "ablation/results_table.json", str(tmp_path / "again"))
    rows = json.loads(open(path, encoding="utf-8").read())["data"]
    assert [r[0] for r in rows] == ["none", "gass"]  # replaced, not appended to
    assert json.loads(client.get_run(parent_id).data.tags["mlflow.loggedArtifacts"]) == [
        {"path": "ablation/results_table.json", "type": "table"}
    ]

    # a lost result is the only cell redone; its child is not duplicated
    result_path(ablation.plan.out, "gass", 1).unlink()
    lines = []
    run_ablation(params, log=lines.append)
    redone = [line for line in lines if line.startswith("[") and "(reused)" not in line]
    assert len(redone) == 1 and "gass seed 1" in redone[0]
    assert len(_children(client, params, parent_id)) == 4

    # a changed training parameter is another plan: a new parent, every cell redone
    changed = derive(params, ["train.optimizer.lr=1e-4"], "test")
    lines = []
    _, _, other = run_ablation(changed, log=lines.append)
    assert other.tracker.parent_id != parent_id
    assert not any("(reused)" in line for line in lines if line.startswith("["))


def test_cli_runs_the_rows_and_seeds_asked_for(tmp_path, monkeypatch):
    params = tiny_params(tmp_path)
    file = tmp_path / "p.yaml"
    import yaml

    file.write_text(yaml.safe_dump(params.model_dump(mode="json")), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app, ["ablate", "--params", str(file), "--rows", "cosine", "--seeds", "1", "--no-track"]
    )
    assert result.exit_code == 0, result.output
    assert "[1/1] cosine seed 0" in result.output and "cosine" in (tmp_path / "ablate" / "results.md").read_text()
    bad = CliRunner().invoke(app, ["ablate", "--params", str(file), "--rows", "nope"])
    assert bad.exit_code == 2 and "error: " in bad.output and "ablate.rows" in bad.output
