"""Every ``--set KEY=VALUE`` example the project shows (CLI help of every command and option, README and docs/ files,
parameter files, error messages) is checked against the real schema: it loads, or, where the README shows the
error it gives, gives exactly that error."""

import itertools
import re
from pathlib import Path

import click
import pytest
import typer

from gadms.cli import app
from gadms.config import ConfigError, load_params

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = re.compile(r"--set[ =]+([A-Za-z_][\w.]*=[^\s`'\"]+)")
PLACEHOLDER = "section.key=value"


def _clean(example: str) -> str:
    """Drop sentence punctuation after an example (a closing bracket that opens nowhere, a full stop)."""
    example = example.rstrip(".,;:")
    while example.endswith(")") and example.count(")") > example.count("("):
        example = example[:-1].rstrip(".,;:")
    return example


def _help_texts() -> list[tuple[str, str]]:
    """(where, text) for the help of every command, group and option of the CLI."""
    out: list[tuple[str, str]] = []

    def walk(command: click.Command, name: str) -> None:
        out.append((name, command.help or ""))
        for param in command.params:
            out.append((f"{name} {param.name}", getattr(param, "help", None) or ""))
        for sub_name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{name} {sub_name}")

    walk(typer.main.get_command(app), "gadms")
    return out


def _examples(texts) -> list[tuple[str, str]]:
    return [(where, _clean(m)) for where, text in texts for m in EXAMPLE.findall(text) if _clean(m) != PLACEHOLDER]


def _documents() -> list[tuple[str, str]]:
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "flows" / "README.md"]
    files += [REPO / "params.yaml", REPO / "params.full.yaml"]
    return [(f.name, f.read_text(encoding="utf-8")) for f in files if f.is_file()]


def _shown_errors(text: str) -> dict[str, str]:
    """Example -> the ``error:`` line a README code block shows right after ``$ gadms ... --set EXAMPLE``."""
    shown = {}
    lines = text.splitlines()
    for line, following in itertools.pairwise(lines):
        found = EXAMPLE.search(line)
        if line.startswith("$ gadms") and found and following.startswith("error: "):
            shown[_clean(found.group(1))] = following.removeprefix("error: ")
    return shown


def test_the_cli_help_shows_set_examples():
    assert len(_examples(_help_texts())) >= 1


@pytest.mark.parametrize(("where", "example"), _examples(_help_texts()))
def test_every_set_example_in_the_cli_help_is_a_valid_override(where, example):
    load_params(None, [example])  # raises ConfigError naming the key if the example is wrong


@pytest.mark.parametrize(("where", "example"), _examples(_documents()))
def test_every_set_example_in_the_docs_loads_or_gives_the_error_shown(where, example, monkeypatch):
    monkeypatch.chdir(REPO)  # the README's commands run in the repository (its params.yaml)
    shown = {k: v for _, text in _documents() for k, v in _shown_errors(text).items()}
    if example in shown:
        with pytest.raises(ConfigError) as info:
            load_params(None, [example])
        assert str(info.value) == shown[example]
    else:
        load_params(None, [example])


def test_the_example_in_the_malformed_override_error_is_valid():
    with pytest.raises(ConfigError) as info:
        load_params(None, ["train.optimizer.lr"])
    examples = re.findall(r"e\.g\. ([\w.]+=\S+)", str(info.value))
    assert examples
    for example in examples:
        load_params(None, [example])
