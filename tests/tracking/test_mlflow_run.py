"""A tracked run logs every parameter, provenance tags, epochs, metrics, figures and texts, and no secret."""

import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from matplotlib.figure import Figure
from mlflow import MlflowClient

from gadms.config import Params, flatten, params_from_dict
from gadms.tracking.mlflow_run import KEY_PARAMS, MAX_PARAM_LENGTH, metric_name, tracked_run
from gadms.tracking.provenance import git_state
from gadms.tracking.redact import REDACTED
from gadms.tracking.store import tracking_uri
from gadms.train.loop import EpochLog

REPO = Path(__file__).resolve().parents[2]


def _client(params):
    return MlflowClient(tracking_uri(params))


def _artifact_text(client, run_id, path, tmp_path):
    return Path(client.download_artifacts(run_id, path, str(tmp_path))).read_text()


def test_key_and_changed_parameters_are_logged_and_all_of_them_in_params_yaml(params, tmp_path):
    with tracked_run(params, "params", "pretrain", "abc123") as run:
        pass
    logged = _client(params).get_run(run.run_id).data.params
    changed = {k for k, v in flatten(params).items() if v != flatten(Params())[k] and not k.startswith("paths.")}
    assert changed == {"tracking.experiment", "tracking.registered_model", "model.context_length"}
    assert set(logged) == {*KEY_PARAMS, *changed, "data_hash"} and len(logged) < 20  # not the ~160 of params.yaml
    assert logged["train.optimizer.lr"] == "0.0005"
    assert logged["model.pretrained"] == "null"
    assert logged["model.context_length"] == "32" and logged["data_hash"] == "abc123"
    assert logged["tracking.experiment"] == params.tracking.experiment
    assert "paths.mlruns_dir" not in logged and "loss.sdm.enabled" not in logged  # a location; a default
    shown = yaml.safe_load(_artifact_text(_client(params), run.run_id, "params.yaml", tmp_path))
    assert flatten(params_from_dict(shown)) == flatten(params)  # every resolved value, in the artifact


def test_a_changed_setting_becomes_a_param(new_params):
    params = new_params(train={"warmup_epochs": 3}, loss={"sdm": {"enabled": False}})
    with tracked_run(params, "changed", "pretrain", None) as run:
        pass
    logged = _client(params).get_run(run.run_id).data.params
    assert logged["train.warmup_epochs"] == "3" and logged["loss.sdm.enabled"] == "false"
    assert logged["data_hash"] == "unknown"


def test_benchmark_metrics_are_rounded_to_two_decimals(params):
    with tracked_run(params, "rounded", "finetune", None) as run:
        returned = run.log_metrics("cuhk-pedes", {"R1": 41.23456, "mAP": 30.0})
    logged = _client(params).get_run(run.run_id).data.metrics
    assert logged["cuhk-pedes/R1"] == 41.23 == returned["cuhk-pedes/R1"] and logged["cuhk-pedes/mAP"] == 30.0


def test_long_parameter_is_cut_to_mlflows_limit(params):
    with tracked_run(params, "long", "pretrain", None) as run:
        run.log_params({"note": "x" * 7000})
    value = _client(params).get_run(run.run_id).data.params["note"]
    assert len(value) == MAX_PARAM_LENGTH and value.endswith("[truncated]")


def test_provenance_tags_name_stage_data_hash_and_git_commit(params):
    with tracked_run(params, "tags", "finetune", "md5:0123abcd", tags={"benchmark": "cuhk-pedes"}) as run:
        pass
    run_info = _client(params).get_run(run.run_id)
    tags = run_info.data.tags
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert tags["stage"] == "finetune"
    assert tags["dvc.data_hash"] == "md5:0123abcd"
    assert tags["git.commit"] == head == tags["mlflow.source.git.commit"]
    assert tags["git.dirty"] in ("true", "false")
    assert tags["benchmark"] == "cuhk-pedes"
    assert run_info.info.run_name == "tags"
    assert run_info.info.status == "FINISHED"


def test_missing_data_hash_and_no_git_say_unknown(params, tmp_path):
    assert git_state(tmp_path).commit == "unknown"
    with tracked_run(params, "nohash", "pretrain", None) as run:
        pass
    assert _client(params).get_run(run.run_id).data.tags["dvc.data_hash"] == "unknown"


def test_run_nests_under_parent_and_fails_with_the_block(params):
    with tracked_run(params, "flow", "pipeline", None) as parent:
        with tracked_run(params, "child", "pretrain", None, parent_run_id=parent.run_id) as child:
            pass
    with pytest.raises(RuntimeError):
        with tracked_run(params, "orphan", "pretrain", None, parent_run_id=parent.run_id) as failed:
            raise RuntimeError("boom")
    client = _client(params)
    assert client.get_run(child.run_id).data.tags["mlflow.parentRunId"] == parent.run_id
    assert client.get_run(failed.run_id).data.tags["mlflow.parentRunId"] == parent.run_id
    assert client.get_run(failed.run_id).info.status == "FAILED"


def test_log_epoch_logs_each_loss_and_lr_at_the_epoch_number(params):
    logs = [EpochLog(e, {"sdm_loss": 3.0 - e, "mtp_loss": 9.0 - e}, 1e-4 * (e + 1), 100.0, 2.0) for e in range(3)]
    with tracked_run(params, "epochs", "pretrain", None) as run:
        for log in logs:
            run.log_epoch(log)
    client = _client(params)
    sdm = client.get_metric_history(run.run_id, "train/sdm_loss")
    assert [(m.step, m.value) for m in sorted(sdm, key=lambda m: m.step)] == [(1, 3.0), (2, 2.0), (3, 1.0)]
    lr = client.get_metric_history(run.run_id, "train/lr")
    assert sorted((m.step, m.value) for m in lr) == [(1, 1e-4), (2, 2e-4), (3, pytest.approx(3e-4))]
    assert {"train/mtp_loss", "train/samples_per_s", "train/epoch_s"} <= set(client.get_run(run.run_id).data.metrics)


def test_benchmark_metrics_are_named_by_setting_and_benchmark(params):
    metrics = {"R1": 40.0, "R5": 60.0, "R10": 70.0, "mAP": 35.0, "mINP": 20.0}
    with tracked_run(params, "metrics", "finetune", None) as run:
        run.log_metrics("cuhk-pedes", metrics, "direct")
        run.log_metrics("cuhk-pedes", {**metrics, "R1": 55.0}, "finetuned")
        run.log_metrics("rstpreid", metrics)
    logged = _client(params).get_run(run.run_id).data.metrics
    assert logged["direct/cuhk-pedes/R1"] == 40.0
    assert logged["finetuned/cuhk-pedes/R1"] == 55.0
    assert logged["rstpreid/mINP"] == 20.0
    assert metric_name("icfg-pedes", "mAP", "cross") == "cross/icfg-pedes/mAP"


def test_figures_are_png_artifacts_and_texts_are_kept(params, tmp_path):
    figure = Figure()
    figure.add_subplot().plot([0, 1], [1, 0])
    summary = "# Caption quality gate\n\nwords per caption: 99.8% pass (mostly 0.99)\n"
    log = EpochLog(
        0,
        {"sdm_loss": 1.0},
        1e-4,
        1.0,
        1.0,
        scores=torch.rand(3, 8),
        tokens=torch.tensor([[49406, 320, 786, 49407, 0, 0, 0, 0]] * 3),
    )
    with tracked_run(params, "artifacts", "pretrain", None) as run:
        run.log_figure(figure, "figures/curve.png")
        run.log_text(summary, "quality/gate_summary.md")
        assert run.log_token_scores(log)
        assert not run.log_token_scores(EpochLog(0, {}, 1e-4, 1.0, 1.0))
    client = _client(params)
    for path in ("figures/curve.png", "figures/token_scores.png"):
        assert Path(client.download_artifacts(run.run_id, path, str(tmp_path))).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _artifact_text(client, run.run_id, "quality/gate_summary.md", tmp_path) == summary


def test_api_keys_named_in_params_are_redacted_everywhere(new_params, monkeypatch, tmp_path):
    llm_key, vlm_key = "sk-llm-0123456789", "vlm-secret-abcdef"
    monkeypatch.setenv("MY_LLM_KEY", llm_key)
    monkeypatch.setenv("GADMS_VLM_API_KEY", vlm_key)
    params = new_params(
        curation={"templates": {"api_key_env": "MY_LLM_KEY", "llm_url": f"http://127.0.0.1:8000/v1?key={llm_key}"}}
    )
    with tracked_run(params, f"run {vlm_key}", "curate", None, tags={"error": f"401 for Bearer {vlm_key}"}) as run:
        run.log_text(f"captioning used {vlm_key} and {llm_key}", "notes.txt")
        run.set_tags({"later": llm_key})
    client = _client(params)
    data = client.get_run(run.run_id).data
    assert data.params["curation.templates.llm_url"] == f"http://127.0.0.1:8000/v1?key={REDACTED}"
    assert data.params["curation.templates.api_key_env"] == "MY_LLM_KEY"  # the name is fine, the value is not
    assert data.tags["error"] == f"401 for Bearer {REDACTED}" and data.tags["later"] == REDACTED
    assert _artifact_text(client, run.run_id, "notes.txt", tmp_path) == f"captioning used {REDACTED} and {REDACTED}"
    everything = " ".join(
        [*data.params.values(), *data.tags.values(), _artifact_text(client, run.run_id, "params.yaml", tmp_path)]
    )
    assert llm_key not in everything and vlm_key not in everything


def test_a_diverged_loss_is_logged_as_nan(params):
    with tracked_run(params, "nan", "pretrain", None) as run:
        run.log_epoch(EpochLog(0, {"sdm_loss": float("nan")}, 1e-4, 1.0, 1.0))
    (value,) = [m.value for m in _client(params).get_metric_history(run.run_id, "train/sdm_loss")]
    assert value != value
