"""The `gadms` command line: help, outputs, one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from gadms.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def _invoke(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _text(output: str) -> str:
    """Help text without rich's panel borders and line wrapping."""
    return " ".join(output.replace("│", " ").split())


def test_help_explains_every_command():
    result = _invoke("--help")
    assert result.exit_code == 0
    for command in ("synth", "params", "curate", "validate", "data", "train", "evaluate", "pipeline", "deploy", "demo"):
        assert command in result.output
    for group, commands in (
        ("curate", ("run", "templates")),
        ("data", ("stats", "version", "push", "pull", "checkout")),
        ("train", ("pretrain", "finetune")),
    ):
        listed = _invoke(group, "--help").output
        assert all(c in listed for c in commands), group
    synth = _text(_invoke("synth", "--help").output)
    assert "17 COCO keypoints" in synth and "web" in synth and "benchmark" in synth
    assert "--caption-noise" in _text(_invoke("synth", "benchmark", "--help").output)


def test_console_script_is_installed():
    result = subprocess.run(
        [sys.executable, "-m", "gadms", "--help"], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert result.returncode == 0 and "Usage" in result.stdout


def test_synth_web_writes_shards_and_preview(tmp_path):
    result = _invoke(
        "synth",
        "web",
        "--out",
        str(tmp_path / "web"),
        "--scenes",
        "12",
        "--shard-size",
        "5",
        "--seed",
        "3",
        "--quiet",
        "--preview",
        str(tmp_path / "p.png"),
    )
    assert result.exit_code == 0, result.output
    assert "wrote 12 scenes" in result.output
    assert sorted(p.name for p in (tmp_path / "web").glob("*.tar")) == ["00000.tar", "00001.tar", "00002.tar"]
    assert Image.open(tmp_path / "p.png").format == "PNG"


def test_synth_benchmark_prints_split_table(tmp_path):
    result = _invoke(
        "synth",
        "benchmark",
        "--out",
        str(tmp_path),
        "--identities",
        "10",
        "--caption-noise",
        "0.5",
        "--quiet",
        "--preview",
        str(tmp_path / "b.png"),
    )
    assert result.exit_code == 0, result.output
    lines = {
        line.split()[0]: line.split()[1:]
        for line in result.output.splitlines()
        if line.split() and line.split()[0] in ("train", "val", "test")
    }
    records = json.loads((tmp_path / "CUHK-PEDES" / "reid_raw.json").read_text())
    assert int(lines["test"][0]) == len({r["id"] for r in records if r["split"] == "test"})
    assert (tmp_path / "b.png").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["synth", "benchmark", "--out", "X", "--caption-noise", "1.5"], "synth.caption_noise: must be <= 1 (got 1.5)"),
        (["synth", "web", "--out", "X", "--set", "synth.jpeg_quality=0"], "synth.jpeg_quality: must be >= 1 (got 0)"),
        (
            ["params", "show", "--set", "model.masking.alpha_noise=1.5"],
            "model.masking.alpha_noise: must be <= 1 (got 1.5)",
        ),
        (["params", "show", "--set", "train.nonsense=1"], "train.nonsense: unknown key"),
        (["params", "show", "--params", "missing.yaml"], "missing.yaml: parameter file not found"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, message):
    args = [str(tmp_path / a) if a == "X" else a for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "X").exists()


def test_params_show_applies_overrides():
    result = _invoke("params", "show", "--set", "train.optimizer.lr=3e-4")
    assert result.exit_code == 0
    import yaml

    shown = yaml.safe_load(result.output)
    assert shown["train"]["optimizer"]["lr"] == 3e-4 and shown["model"]["gass"]["layers"] == 8


def test_demo_runs_and_says_where_outputs_are(tmp_path):
    result = _invoke("demo", "--out", str(tmp_path), "--scenes", "8", "--identities", "6")
    assert result.exit_code == 0, result.output
    assert "demo finished" in result.output
    for path in ("web/00000.tar", "benchmark/CUHK-PEDES/reid_raw.json", "web_preview.png", "benchmark_preview.png"):
        assert (tmp_path / path).is_file()
        assert str(tmp_path) in result.output


def test_curate_then_validate_from_the_command_line(tmp_path):
    web, data, report = tmp_path / "web", tmp_path / "data", tmp_path / "gate"
    assert _invoke("synth", "web", "--out", str(web), "--scenes", "30", "--quiet").exit_code == 0
    curated = _invoke("curate", "run", "--input", str(web), "--out", str(data), "--quiet")
    assert curated.exit_code == 0 and "30 images seen" in curated.output and "person crops" in curated.output
    gate = _invoke("validate", "--data", str(data), "--report", str(report))
    assert gate.exit_code == 0 and "PASSED" in gate.output
    captions = tmp_path / "captions.txt"
    captions.write_text("A man in a red jacket and blue jeans.\nThe woman wears a white dress and black shoes.\n")
    mined = _invoke("curate", "templates", "--captions", str(captions), "--out", str(tmp_path / "t.json"), "--quiet")
    assert mined.exit_code == 0 and json.loads((tmp_path / "t.json").read_text())["templates"]


def test_data_commands_refuse_ungated_data_and_unknown_hashes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "-q"], check=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "00000.tar").write_bytes(b"")
    versioned = runner.invoke(app, ["data", "version"])
    assert versioned.exit_code == 2 and versioned.output.startswith("error: ") and "gate" in versioned.output
    assert not (tmp_path / "data.dvc").exists()
    unknown = runner.invoke(app, ["data", "checkout", "--hash", "0123456789abcdef0123456789abcdef"])
    assert unknown.exit_code == 2 and "error: no corpus with DVC hash 0123456789abcdef" in unknown.output
