"""A credential in a `--set` endpoint URL never reaches Prefect: not in flow-run parameters, not in logs."""

from pathlib import Path

import pytest

from gadms.data.problems import DataError

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-live-0123456789abcdef"
URL_SET = f"curation.captioning.vlm_url=http://user:{KEY}@127.0.0.1:8001/v1"


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
        runs = [
            r
            for r in client.read_flow_runs()
            if r.parameters.get("params_file") == "params.yaml"
            and any("empty-web" in o for o in r.parameters.get("overrides", []))
        ]
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id for r in runs])))
    assert {r.flow_id for r in runs} and len(runs) == 2  # the pipeline and its curate subflow
    for run in runs:
        assert run.parameters["overrides"][-1] == URL_SET.replace(KEY, "[REDACTED:GADMS_SET_SECRET_1]")
    stored = " ".join([str(r.parameters) for r in runs] + [entry.message for entry in logs])
    assert "pipeline: params.yaml with" in stored and KEY not in stored


@pytest.mark.slow
def test_a_flow_called_directly_records_no_credential(tmp_path, monkeypatch, prefect_api):
    """Without the CLI's wrappers (a flow called from Python), Prefect still stores the parameters redacted."""
    from prefect import get_client

    from flows.curate import curate_flow
    from gadms.config import load_params
    from gadms.synth.web import write_web_shards

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    params = load_params(tmp_path / "params.yaml")
    write_web_shards(tmp_path / "web", 6, 0, params.synth, params.curation.filter, progress=False)
    result = curate_flow("params.yaml", [URL_SET], input_dir="web", out_dir="direct-out")
    assert result["totals"]["seen"] == 6  # the flow ran with the override as given
    with get_client(sync_client=True) as client:
        (run,) = [r for r in client.read_flow_runs() if r.parameters.get("out_dir") == "direct-out"]
    assert run.parameters["overrides"] == [URL_SET.replace(KEY, "[REDACTED]")]
    assert KEY not in str(run.parameters)
