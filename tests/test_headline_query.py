"""The README's headline query (also the search page's placeholder and ``gadms search --help``'s example) speaks the
synthetic world's language, and the first search a new user types after ``make demo`` finds a person it describes.

The fast tests check the claim without the model: every word of the query is a word the world's captions use,
the query states exactly :data:`ATTRIBUTES`, and the demo's test split holds an identity with all of them. The
slow test runs the demo as the README does and searches its index.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gadms.config import load_params
from gadms.synth.attributes import VOCABULARY, sample_identity
from gadms.synth.benchmark import write_benchmark
from gadms.synth.captions import TEMPLATES, make_caption
from gadms.synth.figure import POSES

REPO = Path(__file__).resolve().parents[1]
QUERY = "a woman in a red jacket and orange trousers"
ATTRIBUTES = {
    "gender": "woman",
    "top_color": "red",
    "top_type": "jacket",
    "bottom_color": "orange",
    "bottom_type": "trousers",
}
CONNECTIVES = {"a", "in", "and"}  # the words between attributes, as the captions join them
WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


def _words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def _world_words() -> set[str]:
    """Every word the synthetic world's captions use: templates, attribute values, 3000 drawn captions."""
    words = {w for values in VOCABULARY.values() for value in values for w in _words(value)}
    words |= {w for template in TEMPLATES for w in _words(re.sub(r"\{[^}]*\}", " ", template))}
    rng = np.random.default_rng(0)
    for i in range(3000):
        words |= set(_words(make_caption(sample_identity(rng), POSES[i % len(POSES)], rng)[0]))
    return words


def _test_identities(root: Path) -> dict[int, dict]:
    """Attributes of each test-split identity of a benchmark written by :func:`write_benchmark`."""
    bench = root / "CUHK-PEDES"
    split = {r["file_path"]: r["split"] for r in json.loads((bench / "reid_raw.json").read_text())}
    truth = json.loads((bench / "synthetic_truth.json").read_text())["records"]
    return {r["id"]: r["attributes"] for r in truth if split[r["file_path"]] == "test"}


def _matches(attributes: dict) -> bool:
    return all(attributes[key] == value for key, value in ATTRIBUTES.items())


def test_the_headline_query_is_the_one_shown_everywhere():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f'Type "{QUERY}", get the right person' in readme.replace("\n", " ")
    assert f'placeholder="{QUERY}"' in (REPO / "gadms" / "search" / "web.py").read_text(encoding="utf-8")
    assert f'e.g. "{QUERY}"' in (REPO / "gadms" / "cli" / "search.py").read_text(encoding="utf-8")


def test_the_query_speaks_the_worlds_language_and_states_its_attributes():
    words = _words(QUERY)
    unknown = set(words) - _world_words()
    assert not unknown, f"words the synthetic world never draws: {sorted(unknown)}"
    for key, value in ATTRIBUTES.items():
        assert value in VOCABULARY[key], key
        assert value in words, key
    assert set(words) <= set(ATTRIBUTES.values()) | CONNECTIVES, "a word states no attribute"


def test_the_demos_test_split_holds_a_person_the_query_describes(tmp_path):
    params = load_params(REPO / "params.yaml")
    write_benchmark(tmp_path, params.pipeline.benchmark_identities, params.seed, params.synth, progress=False)
    matching = [i for i, attributes in _test_identities(tmp_path).items() if _matches(attributes)]
    assert matching, "no test-split identity of the demo has every attribute of the query"


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the whole demo: 3-4 minutes on an idle 2-core machine, far longer on a busy one
def test_the_first_search_after_the_demo_finds_the_person_in_the_top_five(tmp_path):
    """``gadms pipeline`` in a fresh repository (what ``make demo`` runs), then the README's first search."""
    for command in (["git", "init", "-q"], ["git", "config", "user.email", "ci@example.invalid"]):
        subprocess.run(command, cwd=tmp_path, check=True)
    subprocess.run(["git", "config", "user.name", "ci"], cwd=tmp_path, check=True)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")  # the demo's own ephemeral Prefect, not the user's
    gadms = [sys.executable, "-m", "gadms"]
    demo = subprocess.run([*gadms, "pipeline"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3500)
    assert demo.returncode == 0, demo.stderr[-2000:]
    index = Path("work") / "search" / "cuhk-pedes" / "index"
    found = subprocess.run(
        [*gadms, "search", str(index), QUERY, "--json", "--top-k", "5"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert found.returncode == 0, found.stderr[-2000:]
    records = json.loads((tmp_path / "work" / "benchmarks" / "CUHK-PEDES" / "synthetic_truth.json").read_text())
    truth = {r["file_path"]: r["attributes"] for r in records["records"]}
    top = [hit["source"].replace(os.sep, "/").rpartition("/imgs/")[2] for hit in json.loads(found.stdout)["results"]]
    assert len(top) == 5 and set(top) <= set(truth), top
    assert any(_matches(truth[path]) for path in top), f"no person in a red jacket and orange trousers in {top}"
