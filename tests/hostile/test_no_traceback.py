"""Generated hostile command lines for the cheap commands: never a traceback, one line at most on failure.

Each example is one command (``params show``, ``validate``, ``data stats``, ``data index``, ``search``,
``index``) with hostile paths and names and up to three ``--set`` overrides whose keys are real or made up
and whose values are unicode, huge or non-finite numbers, nested YAML, YAML tags and anchors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gadms.config import params_from_dict

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """Every dotted key of a parameter tree, sections included."""
    keys = []
    for name, value in tree.items():
        keys.append(prefix + name)
        if isinstance(value, dict):
            keys.extend(_keys(value, f"{prefix}{name}."))
    return keys


REAL_KEYS = _keys(params_from_dict({}).model_dump(mode="json"))
# Text as it can reach argv: any code point but NUL and lone surrogates.
ARGV_TEXT = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=40)
NUMBERS = st.sampled_from(
    ["nan", "NaN", ".nan", "inf", "-inf", ".inf", "1e999", "-1e999", "1e-999", "-1", "0", "-0", "0x10", "1_000"]
    + ["9" * 30, "-" + "9" * 30, "9" * 5000, "3.0", "1/3", "true", "null", "~", "''"]
)
# 8**7 values once expanded, a few hundred bytes written
_LEVELS = [f"&{name} [{', '.join([f'*{below}'] * 8)}]" for below, name in zip("abcdef", "bcdefg")]
ALIAS_BOMB = "[&a [1, 2, 3, 4, 5, 6, 7, 8], " + ", ".join(_LEVELS) + "]"
YAML_VALUES = st.sampled_from(
    ["{a: [1, {b: 2}]}", "[[[[[[[[[[1]]]]]]]]]]", "[" * 400 + "]" * 400, "{" * 300 + "}" * 300, "&a [*a, *a]"]
    + ["!!python/object/apply:os.system ['true']", "!!binary aGVsbG8=", "!!set {a, b}", "? complex key", "- item"]
    + ["a: b: c", "'unclosed", '"\\x00"', "|\n  block", "2026-13-45", "12:30:00", "<script>alert(1)</script>"]
    + [ALIAS_BOMB]
)
VALUES = st.one_of(NUMBERS, YAML_VALUES, ARGV_TEXT)
KEYS = st.one_of(st.sampled_from(REAL_KEYS), ARGV_TEXT, st.sampled_from(["", ".", "..", "seed.", ".seed", "a" * 300]))
SETS = st.lists(st.builds(lambda k, v: ["--set", f"{k}={v}"], KEYS, VALUES), max_size=3).map(
    lambda pairs: [word for pair in pairs for word in pair]
)


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Hostile places: a missing path, an empty folder, a junk file, a fake shard, a fake index."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "empty").mkdir()
    (root / "junk.bin").write_bytes(bytes(range(256)) * 8)
    shards = root / "shards"
    shards.mkdir()
    (shards / "00000.tar").write_bytes(b"not a tar" * 100)
    (shards / "00000.parquet").write_bytes(b"PAR1 not parquet")
    index = root / "index"
    index.mkdir()
    (index / "index.json").write_text('{"version": "<script>", "model": [1, 2]}')
    (root / "out").mkdir()
    named = {"missing": root / "missing", "empty": root / "empty", "junk": root / "junk.bin", "shards": shards}
    return named | {"index": index, "root": root, "dev_null": Path("/dev/null")}


def _paths(places: dict[str, Path]) -> st.SearchStrategy[str]:
    """A hostile path: one of ``places``, the working folder, or made-up text; never a place outside the test's
    folders (``data index`` writes into the folder it is given)."""
    made_up = ARGV_TEXT.map(lambda t: str(places["root"] / "missing" / t.replace("/", "_")) if t else "")
    return st.one_of(st.sampled_from([str(p) for p in places.values()] + ["", ".", "-", "--"]), made_up)


def _command(places: dict[str, Path]) -> st.SearchStrategy[list[str]]:
    """One hostile command line of a cheap command."""
    path, text, out = _paths(places), ARGV_TEXT, str(places["root"] / "out")
    model = path.filter(bool)
    names = st.one_of(st.sampled_from(["cuhk-pedes", "icfg-pedes", "rstpreid", "webperson", "curated"]), text)
    return st.one_of(
        st.just(["params", "show"]),
        st.builds(lambda d: ["validate", "--data", d, "--report", out + "/gate"], path),
        st.builds(lambda n, r: ["data", "stats", n, "--root", r], names, path),
        st.builds(lambda d, f: ["data", "index", d] + (["--format", f] if f else []), path, st.one_of(st.none(), text)),
        st.builds(lambda i, q, k: ["search", i, q, "--top-k", k, "--device", "cpu"], path, text, NUMBERS),
        # an empty --model is the registry's champion: test_a_missing_mlflow_store_is_one_line covers it
        st.builds(lambda i, m: ["index", "--out", f"{out}/index", "--images", i, "--model", m], path, model),
    )


@pytest.mark.timeout(300)
@FAST
@given(data=st.data())
def test_no_hostile_command_line_prints_a_traceback(data, places, run_gadms, monkeypatch):
    monkeypatch.chdir(places["empty"])  # "" and "." name the working folder: keep what they write out of the repo
    args = data.draw(_command(places)) + data.draw(SETS)
    outcome = run_gadms(*args)
    outcome.assert_contract()
    assert outcome.code != 70, f"an unexpected failure on {args!r}: {outcome.stderr}"


@FAST
@given(sets=SETS)
def test_params_show_takes_or_refuses_any_override_in_one_line(sets, run_gadms):
    outcome = run_gadms("params", "show", *sets)
    outcome.assert_contract()
    assert outcome.code in (0, 2), outcome
    if outcome.code == 2:
        assert outcome.stderr.startswith("error: ") and outcome.stdout == ""


@FAST
@given(
    content=st.one_of(
        st.binary(max_size=400),
        st.text(max_size=400),
        st.builds(lambda key, value: f"{key}: {value}\n", KEYS, VALUES),
        st.builds(lambda section, key, value: f"{section}:\n  {key}: {value}\n", KEYS, KEYS, VALUES),
    )
)
def test_a_params_file_of_any_content_is_taken_or_refused_in_one_line(content, run_gadms, tmp_path_factory):
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    outcome = run_gadms("params", "show", "--params", str(path))
    outcome.assert_contract()
    assert outcome.code in (0, 2), outcome


def test_a_missing_mlflow_store_is_one_line(run_gadms, tmp_path, monkeypatch):
    """The default model (the registry's champion) looked up where no MLflow store exists yet: one line."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    outcome = run_gadms("index", "--out", str(tmp_path / "index"), "--images", str(tmp_path), "--model", "")
    assert outcome.code == 2 and outcome.stderr.startswith("error: ") and "no MLflow store" in outcome.stderr
    outcome.assert_contract()
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()  # looking a model up never creates a store
