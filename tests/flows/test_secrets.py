"""A credential in a `--set` endpoint URL never reaches Prefect: not in flow-run parameters, not in logs."""

from pathlib import Path

import pytest

from gadms.problems import DataError

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-live-0123456789abcdef"
URL = f"http://user:{KEY}@127.0.0.1:8001/v1"
URL_SET = f"curation.captioning.vlm_url={URL}"


@pytest.mark.slow
def test_pipeline_flow_runs_store_the_overrides_with_the_credential_redacted(tmp_path, monkeypatch, prefect_api):
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from flows.pipeline import run_pipeline

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GADMS_SET_SECRET_1", raising=False)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (tmp_path / "empty-web").mkdir()
    with pytest.raises(DataError, match="empty-web"):  # nothing to curate: the run ends at its first stage
        run_pipeline("params.yaml", ["pipeline.synthesize=false", "paths.web_dir=empty-web", URL_SET])
    with get_client(sync_client=True) as client:
        everything = client.read_flow_runs()
        (pipeline,) = [r for r in everything if any("empty-web" in o for o in r.parameters.get("overrides", []))]
        (curate,) = [
            r for r in everything if r.parameters.get("params", {}).get("paths", {}).get("web_dir") == "empty-web"
        ]
        runs = [pipeline, curate]  # the pipeline, and its curate subflow that takes the loaded parameters
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id for r in runs])))
    assert pipeline.parameters["params_file"] == "params.yaml"
    assert pipeline.parameters["overrides"][-1] == URL_SET.replace(KEY, "[REDACTED:GADMS_SET_SECRET_1]")
    assert curate.parameters["params"]["curation"]["captioning"]["vlm_url"] == URL.replace(KEY, "[REDACTED]")
    stored = " ".join([str(r.parameters) for r in runs] + [entry.message for entry in logs])
    assert "pipeline: params.yaml with" in stored and KEY not in stored


@pytest.mark.slow
def test_a_flow_called_directly_records_no_credential(tmp_path, monkeypatch, prefect_api):
    """Without the CLI's wrappers (a flow called from Python), Prefect still stores the parameters redacted."""
    from prefect import get_client

    from flows.common import load_run_params
    from flows.curate import curate_flow
    from gadms.config import load_params
    from gadms.synth.web import write_web_shards

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    params = load_params(tmp_path / "params.yaml")
    write_web_shards(tmp_path / "web", 6, 0, params.synth, params.curation.filter, progress=False)
    loaded = load_run_params("params.yaml", [URL_SET])
    result = curate_flow(loaded, input_dir="web", out_dir="direct-out")
    assert result.totals["seen"] == 6  # the flow ran with the parameters as given
    with get_client(sync_client=True) as client:
        (run,) = [r for r in client.read_flow_runs() if r.parameters.get("out_dir") == "direct-out"]
    assert run.parameters["params"]["curation"]["captioning"]["vlm_url"] == URL.replace(KEY, "[REDACTED]")
    assert KEY not in str(run.parameters)


def test_a_stage_flow_takes_the_loaded_params_and_records_them_without_the_credential():
    """Stage flows take the run's Params (loaded once, credentials revealed); Prefect stores them redacted."""
    from flows.common import load_run_params, task_runner
    from flows.curate import curate_flow
    from flows.pretrain import pretrain_flow
    from gadms.results import CorpusVersion, GatedCorpus, ParamsSource

    params = load_run_params(REPO / "params.yaml", [URL_SET])
    assert params.curation.captioning.vlm_url == URL  # what the stages use
    for flow in (curate_flow, curate_flow.with_options(task_runner=task_runner(params))):  # as the pipeline runs it
        recorded = flow.serialize_parameters({"params": params, "input_dir": None, "out_dir": None})
        assert recorded["params"]["curation"]["captioning"]["vlm_url"] == URL.replace(KEY, "[REDACTED]")
    gated = GatedCorpus(Path("data"), "passed", "f" * 64, Path("reports"), Path("reports/kept.html"))
    source = ParamsSource("params.yaml", (URL_SET,))  # as a direct call from Python may give it
    stage = {"params": params, "source": source, "corpus": CorpusVersion(gated, "abc", Path("data"), 1, 2)}
    recorded = pretrain_flow.serialize_parameters(stage)
    assert recorded["source"]["overrides"] == [URL_SET.replace(KEY, "[REDACTED]")]
    assert recorded["corpus"]["md5"] == "abc" and KEY not in str(recorded)
