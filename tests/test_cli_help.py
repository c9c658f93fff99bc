"""How the CLI help reads, and the defaults and printed commands a user relies on without reading the code."""

import json
import shlex
import sys
from pathlib import Path

import click
import torch
import typer
from typer.testing import CliRunner

from gadms.cli import app
from gadms.cli.help_layout import reflow
from gadms.config import ModelConfig, SynthConfig
from gadms.model.retrieval import Architecture, PersonRetrievalModel, save_model
from gadms.synth.benchmark import write_benchmark
from gadms.tracking.store import executable

runner = CliRunner()


def _help(*command: str, width: int = 100) -> str:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": str(width), "TERMINAL_WIDTH": str(width)})
    assert result.exit_code == 0, result.output
    return result.output


def _commands() -> list[list[str]]:
    out: list[list[str]] = []

    def walk(command: click.Command, path: list[str]) -> None:
        out.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return out


def test_no_flag_shows_a_value_type():
    for command in _commands():
        text = _help(*command)
        assert "<bool>" not in text, command
    rows = [line for line in _help("train", "finetune").splitlines() if "--register" in line or "--resume" in line]
    assert rows and all("<" not in row for row in rows)
    assert "<path>" in _help("synth", "web")  # options that take a value still show its type


def test_square_brackets_in_help_are_shown():
    text = " ".join(_help("synth", "web").split())
    assert "the box [x0, y0, x1, y1] (x1, y1 exclusive)" in text
    assert "17 keypoints [x, y, v]" in text


def test_paragraphs_flow_to_the_terminal_width_not_the_docstring_lines():
    lines = _help("curate", "run", width=1000).splitlines()
    start = next(line for line in lines if "Backends come from params.yaml" in line)
    assert "Finished shards are skipped on a rerun." in start  # the whole paragraph on one line
    narrow = _help("curate", "run", width=60).splitlines()
    assert max(len(line) for line in narrow) <= 60


def test_reflow_keeps_list_items_indented_lines_and_verbatim_paragraphs():
    assert reflow("one\ntwo\n\n- a\n- b\n  more") == "one two\n\n- a\n- b\n  more"
    assert reflow("\b\nkeep\nthese") == "keep\nthese"


def test_data_stats_and_evaluate_default_to_the_configured_benchmarks_dir(tmp_path):
    bench = write_benchmark(tmp_path / "bench", 6, 0, SynthConfig(), progress=False).root.parent
    moved = ["--set", f"paths.benchmarks_dir={bench}"]
    stats = runner.invoke(app, ["data", "stats", "cuhk-pedes", "--json", *moved])
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.output)["splits"]["test"]["identities"] > 0
    elsewhere = runner.invoke(app, ["data", "stats", "cuhk-pedes", "--set", f"paths.benchmarks_dir={tmp_path / 'no'}"])
    assert elsewhere.exit_code == 2 and elsewhere.output.startswith("error: ")  # the --set is what was read
    torch.manual_seed(0)
    model = save_model(PersonRetrievalModel(Architecture.from_config(ModelConfig())), tmp_path / "model.safetensors")
    args = ["evaluate", "--checkpoint", str(model), "--benchmark", "cuhk-pedes", "--device", "cpu", "--json", *moved]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{") :])["cuhk-pedes test text-to-image"]["R1"] >= 0


def test_printed_tool_commands_name_this_environments_executables():
    mlflow = executable("mlflow")
    assert Path(mlflow) == Path(sys.executable).parent / "mlflow" and Path(mlflow).is_file()
    assert executable("no-such-tool-here") == "no-such-tool-here"
    from gadms.config import Params
    from gadms.tracking.store import ui_command

    assert shlex.split(ui_command(Params()))[0] == mlflow


def test_importing_the_cli_changes_nothing_and_running_it_lays_out_the_help():
    """Importing gadms.cli leaves typer as it is; the help layout is installed when a command line runs (once)."""
    import subprocess

    script = (
        "import typer.core, typer.rich_utils\n"
        "before = (typer.core.TyperOption.display_type_rich, typer.rich_utils._make_rich_text)\n"
        "import gadms.cli\n"
        "after = (typer.core.TyperOption.display_type_rich, typer.rich_utils._make_rich_text)\n"
        "print('import patched' if after != before else 'import unpatched')\n"
        "from gadms.cli import main\n"
        "for _ in range(2):\n"
        "    try:\n"
        "        main(['synth', 'web', '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
    )
    env = {"COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("import unpatched\n")
    text = " ".join(done.stdout.split())
    assert text.count("the box [x0, y0, x1, y1] (x1, y1 exclusive)") == 2  # laid out the same on every run
    assert "\\[" not in text and "<bool>" not in text
