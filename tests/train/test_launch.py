"""The torchrun launch of the pipeline's training: the `gadms train` command line, and its result read back."""

import subprocess
import sys
from pathlib import Path

import pytest

from gadms.results import ParamsSource, TrainedModel
from gadms.train.launch import finetune_options, pretrain_options, run_train_command, train_command

SOURCE = ParamsSource("params.full.yaml", ("train.gpus=2", "curation.captioning.vlm_url=[REDACTED:GADMS_SET_SECRET_1]"))


def test_pretraining_relaunches_gadms_train_with_the_runs_params_file_and_overrides():
    options = pretrain_options(Path("data"), Path("work/runs/pretrain-1"), "abc", "parent-1", resume=True)
    assert train_command("pretrain", options, SOURCE, Path("work/runs/pretrain-1/result.json")) == [
        sys.executable,
        *("-m", "gadms", "train", "pretrain"),
        *("--data", "data", "--out", "work/runs/pretrain-1", "--data-hash", "abc"),
        *("--parent-run-id", "parent-1", "--resume"),
        *("--params", "params.full.yaml", "--set", "train.gpus=2"),
        *("--set", "curation.captioning.vlm_url=[REDACTED:GADMS_SET_SECRET_1]"),  # revealed by the child
        *("--result-json", "work/runs/pretrain-1/result.json"),
    ]
    assert "--parent-run-id" not in pretrain_options(Path("d"), Path("o"), "abc", None, resume=False)
    assert "--resume" not in pretrain_options(Path("d"), Path("o"), "abc", None, resume=False)


def test_finetuning_relaunches_without_registering_the_pipeline_registers():
    options = finetune_options(
        "cuhk-pedes", Path("bench"), Path("pre/model.safetensors"), Path("out"), "abc", None, False
    )
    assert options == [
        *("--benchmark", "cuhk-pedes", "--root", "bench", "--init", "pre/model.safetensors"),
        *("--out", "out", "--data-hash", "abc", "--no-register"),
    ]
    command = train_command("finetune", options, ParamsSource("params.yaml"), Path("out/result.json"))
    assert command[3:5] == ["train", "finetune"] and command[-4:] == [
        "--params",
        "params.yaml",
        "--result-json",
        "out/result.json",
    ]


WRITER = """
import json, sys
json.dump({"run_id": "r1", "model": "out/model.safetensors", "model_uri": "models:/m-1",
           "metrics": {"cuhk-pedes/R1": 12.5}}, open(sys.argv[1], "w"))
"""


def test_the_launched_commands_result_is_read_back_and_a_failure_is_raised(tmp_path):
    result = tmp_path / "result.json"
    payload = run_train_command([sys.executable, "-c", WRITER, str(result)], result)
    model = TrainedModel.from_json(payload)
    assert model == TrainedModel("r1", Path("out/model.safetensors"), "models:/m-1", {"cuhk-pedes/R1": 12.5})
    assert model.metric("cuhk-pedes", "R1") == 12.5
    with pytest.raises(subprocess.CalledProcessError):
        run_train_command([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "none.json")


def test_gadms_train_accepts_every_option_of_the_relaunch(tmp_path):
    """The relaunched command gets as far as loading its parameter file: no option is unknown to `gadms train`."""
    from typer.testing import CliRunner

    from gadms.cli import app

    missing = ParamsSource(str(tmp_path / "missing.yaml"), ("train.gpus=2",))
    for stage, options in (
        ("pretrain", pretrain_options(tmp_path / "data", tmp_path / "out", "abc", "parent-1", True)),
        ("finetune", finetune_options("cuhk-pedes", tmp_path, tmp_path / "m.safetensors", tmp_path, "abc", "p", True)),
    ):
        done = CliRunner().invoke(app, train_command(stage, options, missing, tmp_path / "result.json")[3:])
        assert done.output == f"error: {tmp_path / 'missing.yaml'}: parameter file not found\n", stage
