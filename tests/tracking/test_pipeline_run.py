"""The pipeline's MLflow side without Prefect: the results table and headline metrics from typed stage results,
the parent run with its links, promotion decision, search figures and results, evaluation set-up, and the
inputs check that makes a second run with the same inputs train nothing; on the real local store."""

from pathlib import Path

import pytest
from mlflow import MlflowClient

from gadms.results import (
    CorpusVersion,
    CuratedCorpus,
    Evaluation,
    GatedCorpus,
    PipelineResult,
    Promotion,
    TrainedModel,
)
from gadms.tracking.mlflow_run import tracked_run
from gadms.tracking.pipeline_run import check_inputs, format_results, headline_metrics, pipeline_run, results_table
from gadms.tracking.pipeline_stages import evaluation_stage, file_digest, promote, run_exists, version_exists
from gadms.tracking.retrain import FINGERPRINT_TAG
from gadms.tracking.store import tracking_uri

NAMES = ("R1", "R5", "R10", "mAP", "mINP")


def _metrics(benchmark: str, base: float) -> dict[str, float]:
    return {f"{benchmark}/{name}": base + i for i, name in enumerate(NAMES)}


def _corpus(tmp_path: Path) -> CorpusVersion:
    report = tmp_path / "history" / "kept.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html>gate</html>", encoding="utf-8")
    gated = GatedCorpus(tmp_path / "data", "passed", "f" * 64, tmp_path, report)
    return CorpusVersion(gated, "0123abcd", Path("data"), 3, 300)


def test_results_table_and_headline_metrics_come_from_the_typed_results():
    direct = {"cuhk-pedes": Evaluation("cuhk-pedes", "direct", "r1", _metrics("cuhk-pedes", 10.0))}
    tuned = {
        "cuhk-pedes": TrainedModel("r2", Path("m"), "models:/m-2", _metrics("cuhk-pedes", 20.0)),
        "rstpreid": TrainedModel("r3", Path("m"), "models:/m-3", _metrics("rstpreid", 30.0)),
    }
    rows = results_table(direct, tuned)
    assert rows == [
        ("cuhk-pedes", "direct", "10.00", "11.00", "12.00", "13.00", "14.00"),
        ("cuhk-pedes", "finetuned", "20.00", "21.00", "22.00", "23.00", "24.00"),
        ("rstpreid", "finetuned", "30.00", "31.00", "32.00", "33.00", "34.00"),
    ]
    assert headline_metrics(direct, tuned) == {
        "direct/cuhk-pedes/R1": 10.0,
        "direct/cuhk-pedes/mAP": 13.0,
        "finetuned/cuhk-pedes/R1": 20.0,
        "finetuned/cuhk-pedes/mAP": 23.0,
        "finetuned/rstpreid/R1": 30.0,
        "finetuned/rstpreid/mAP": 33.0,
    }
    lines = format_results(rows).splitlines()
    assert lines[0].split() == ["benchmark", "setting", *NAMES]
    assert lines[2].startswith("cuhk-pedes  finetuned  20.00") and len({len(line) for line in lines}) == 1


def test_the_pipeline_result_reads_as_gadms_pipeline_prints_it(tmp_path):
    version = _corpus(tmp_path)
    corpus = CuratedCorpus(version.path, {"seen": 3}, "3 seen")
    unchanged = PipelineResult("flow-1", corpus, version, "inputs unchanged: model v1 stays champion")
    assert unchanged.as_dict() == {
        "curation": {"seen": 3},
        "gate": "passed",
        "data_hash": "0123abcd",
        "unchanged": "inputs unchanged: model v1 stays champion",
        "flow_run": "flow-1",
    }
    tuned = {"cuhk-pedes": TrainedModel("run-ft", Path("m"), "u")}
    promotion = Promotion("gadms", 4, False, "does not beat champion v3")
    pre = TrainedModel("run-pre", Path("p"), "u")
    trained = PipelineResult("flow-2", corpus, version, "", "run-p", pre, {}, tuned, promotion, "table")
    assert trained.as_dict()["promotion"] == {"version": 4, "promoted": False, "reason": "does not beat champion v3"}
    assert (
        trained.as_dict()["finetune_runs"] == {"cuhk-pedes": "run-ft"}
        and trained.as_dict()["pretrain_run"] == "run-pre"
    )
    assert promotion.uri == "models:/gadms/4" and promotion.decision == "not promoted"


def test_the_pipeline_run_records_stages_promotion_figures_and_results(new_params, tiny_model, tmp_path):
    params = new_params()
    client = MlflowClient(tracking_uri(params))
    version = _corpus(tmp_path)
    with tracked_run(params, "finetune cuhk-pedes", "finetune", version.md5) as run:
        run.log_model(tiny_model)
    tuned = {"cuhk-pedes": TrainedModel(run.run_id, Path("m"), "u", _metrics("cuhk-pedes", 20.0), "link-ft")}
    direct = {"cuhk-pedes": Evaluation("cuhk-pedes", "direct", "run-ev", _metrics("cuhk-pedes", 10.0), "link-ev")}
    pre = TrainedModel("run-pre", Path("p"), "u", {}, "link-pre")
    inputs = check_inputs(params, version.md5)
    assert inputs.unchanged == "" and len(inputs.fingerprint) == 64  # nothing registered yet
    figure = tmp_path / "query_0.png"
    figure.write_bytes(b"png")
    said: list[str] = []
    with pipeline_run(params, "pipeline test", version, ["cuhk-pedes"], inputs.fingerprint, said.append) as parent:
        promotion = promote(params, tuned["cuhk-pedes"], "cuhk-pedes")
        parent.record_promotion(promotion)
        parent.log_search_figures([figure])
        result = parent.finish("flow-9", CuratedCorpus(version.path, {}, ""), version, pre, direct, tuned, promotion)
    table = result.table
    assert (result.pipeline_run, result.promotion, result.flow_run) == (parent.run_id, promotion, "flow-9")
    assert promotion == Promotion(params.tracking.registered_model, 1, True, promotion.reason)
    assert "no champion yet" in promotion.reason and version_exists(params, 1) and not version_exists(params, 2)
    assert said == [
        f"pipeline: MLflow run {parent.run_id}: {parent.links[0][2]} (after starting the UI: {parent.ui_command()})"
    ]
    assert [link[:2] for link in parent.links] == [
        ("pipeline", parent.run_id),
        ("pretrain", "run-pre"),
        ("evaluate direct cuhk-pedes", "run-ev"),
        ("finetune cuhk-pedes", run.run_id),
    ]
    logged = client.get_run(parent.run_id)
    assert logged.info.status == "FINISHED" and logged.data.tags["stage"] == "pipeline"
    assert logged.data.tags["registry.version"] == "1" and logged.data.tags["registry.promoted"] == "true"
    assert (
        logged.data.metrics["finetuned/cuhk-pedes/R1"] == 20.0 and logged.data.metrics["direct/cuhk-pedes/mAP"] == 13.0
    )
    assert {a.path for a in client.list_artifacts(parent.run_id, "quality")} == {"quality/kept.html"}
    assert {a.path for a in client.list_artifacts(parent.run_id, "figures/search")} == {"figures/search/query_0.png"}
    text = Path(client.download_artifacts(parent.run_id, "results.txt", str(tmp_path / "dl"))).read_text()
    assert text == table and "cuhk-pedes  finetuned" in table
    marked = client.get_model_version(params.tracking.registered_model, "1").tags[FINGERPRINT_TAG]
    assert marked == inputs.fingerprint
    assert check_inputs(params, version.md5).unchanged == "inputs unchanged: model v1 stays champion"
    assert check_inputs(params, "another-corpus").unchanged == ""


def test_evaluation_sets_up_device_model_and_its_own_run(new_params, tiny_model, bench_root, tmp_path):
    from gadms.model.retrieval import save_model

    params = new_params(paths={"benchmarks_dir": str(bench_root)})
    model = save_model(tiny_model, tmp_path / "model.safetensors")
    with tracked_run(params, "pipeline", "pipeline", "abc") as parent:
        found = evaluation_stage(params, model, "cuhk-pedes", "direct", "abc", parent.run_id, device="cpu")
    assert (found.benchmark, found.setting) == ("cuhk-pedes", "direct") and run_exists(params, found.run_id)
    assert set(found.metrics) == {f"cuhk-pedes/{name}" for name in NAMES}
    logged = MlflowClient(tracking_uri(params)).get_run(found.run_id)
    assert (
        logged.info.run_name == "evaluate direct cuhk-pedes" and logged.data.tags["mlflow.parentRunId"] == parent.run_id
    )
    assert logged.data.tags["setting"] == "direct" and logged.data.tags["model"] == str(model)
    assert logged.data.metrics["cuhk-pedes/R1"] == found.metric("R1")
    before = file_digest(model)
    save_model(tiny_model.half().float(), model)  # rewritten: the evaluation cache must not reuse the old result
    assert file_digest(model) != before


@pytest.mark.parametrize("raised, status", [(KeyboardInterrupt, "KILLED"), (ValueError, "RUNNING")])
def test_a_stopped_pipeline_ends_the_runs_still_open_killed_and_a_failure_leaves_them_to_their_owner(
    params, raised, status
):
    from gadms.tracking.stopped import killed_when_stopped, listed
    from gadms.tracking.store import ensure_experiment, using_store

    with using_store(params) as uri:
        client = MlflowClient(uri)
        run_id = client.create_run(ensure_experiment(params.tracking.experiment, uri)).info.run_id
        with pytest.raises(raised), listed(run_id, uri), killed_when_stopped():  # open, e.g. in another thread
            raise raised()
        assert client.get_run(run_id).info.status == status
