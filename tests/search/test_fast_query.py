"""A text query loads the index's stored text tower (no open_clip, MLflow, plotting or data-frame library) and
ranks exactly as the whole model does; `gadms index` leaves nothing behind when its model does not load."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gadms.config import params_from_dict
from gadms.model.backbone import tokenizer
from gadms.search.build import build_index
from gadms.search.index import open_index
from gadms.search.model import SearchModel, TextSearcher, load_query_model, load_search_model
from gadms.search.query import run_queries
from gadms.search.sources import folder_gallery
from gadms.search.text_encoder import TEXT_FILE, load_text_encoder, query_tokenizer

REPO = Path(__file__).resolve().parents[2]
PARAMS = params_from_dict({})
QUERIES = [
    "a woman in a red top",
    "A MAN with a blue  backpack, walking!!",
    "grey trousers and " * 30 + "shoes",
    "北京 café",
]
HEAVY = ("open_clip", "mlflow", "matplotlib", "pandas", "prefect", "torchvision", "faiss", "fastapi")

# runs the real CLI in a fresh interpreter, then reports which heavy libraries it imported
PROBE = """
import json, sys
from gadms.cli import main
try:
    main()
except SystemExit as done:
    code = done.code
heavy = sorted(name for name in {heavy!r} if name in sys.modules)
print(json.dumps({{"code": code, "heavy": heavy}}), file=sys.stderr)
"""


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, model_file, image_dir) -> Path:
    out = tmp_path_factory.mktemp("fast") / "index"
    build_index(out, folder_gallery(image_dir), load_search_model(str(model_file), PARAMS, "cpu"), progress=False)
    return out


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = PROBE.format(heavy=HEAVY)
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, env=env, cwd=REPO
    )


def test_the_stored_text_tower_tokenizes_and_embeds_bit_for_bit_as_the_whole_model(index_dir, model_file):
    whole = load_search_model(str(model_file), PARAMS, "cpu")
    tower = load_text_encoder(index_dir / TEXT_FILE, whole.identity.digest)
    tokens = query_tokenizer(32)(QUERIES)
    assert torch.equal(tokens, tokenizer(32)(QUERIES))
    assert torch.equal(tower.embed_texts(tokens), whole.model.embed_texts(tokens))


def test_cli_search_answers_as_the_in_process_api_without_loading_heavy_libraries(index_dir, model_file):
    query_file = index_dir.parent / "queries.txt"
    query_file.write_text("\n".join(QUERIES) + "\n", encoding="utf-8")
    done = _cli("search", str(index_dir), "--queries", str(query_file), "--json", "--top-k", "7", "--device", "cpu")
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report == {"code": 0, "heavy": []}, done.stderr
    answered = json.loads(done.stdout)

    index = open_index(index_dir)
    whole = load_search_model(str(model_file), PARAMS, "cpu")
    expected = run_queries(index, whole, QUERIES, 7).to_json(index.meta.model.label)
    assert answered == expected  # same rows, same order, same (rounded) scores
    fast = load_query_model(index_dir, index.meta.model, index.meta.embed_dim, PARAMS, "cpu")
    assert isinstance(fast, TextSearcher)
    exact = run_queries(index, whole, QUERIES, 7).results
    assert run_queries(index, fast, QUERIES, 7).results == exact  # unrounded scores equal too


def test_a_damaged_text_tower_falls_back_to_the_whole_model_with_a_warning(tmp_path, index_dir, model_file):
    copy = tmp_path / "index"
    copy.mkdir()
    for path in index_dir.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    data = bytearray((copy / TEXT_FILE).read_bytes())
    data[-5] ^= 0xFF  # one weight changed
    (copy / TEXT_FILE).write_bytes(bytes(data))
    index = open_index(copy)
    searcher = load_query_model(copy, index.meta.model, index.meta.embed_dim, PARAMS, "cpu")
    assert isinstance(searcher, SearchModel)
    done = _cli("search", str(copy), QUERIES[0], "--json", "--device", "cpu")
    assert done.stderr.startswith(f"warning: {copy / TEXT_FILE}: its tensors are not the ones recorded"), done.stderr
    assert json.loads(done.stdout) == run_queries(index, searcher, QUERIES[:1], 10).to_json(index.meta.model.label)[0]


@pytest.mark.parametrize("model", ["missing", "garbage"])
def test_index_leaves_nothing_behind_when_its_model_does_not_load(tmp_path, image_dir, model):
    weights = tmp_path / "weights.safetensors"
    if model == "garbage":
        weights.write_bytes(b"not a model at all")
    parent = tmp_path / "parent"
    parent.mkdir()
    out = parent / "index"
    done = _cli("index", "--out", str(out), "--images", str(image_dir), "--model", str(weights), "--quiet")
    assert json.loads(done.stderr.splitlines()[-1])["code"] == 2
    assert done.stderr.splitlines()[0].startswith(f"error: --model {weights}: "), done.stderr
    assert list(parent.iterdir()) == []  # no index folder, no lock file, no staging folder


def test_a_new_index_appears_complete_and_extending_it_adds_the_text_tower_to_old_indexes(
    tmp_path, model_file, image_dir, index_dir
):
    out = tmp_path / "deep" / "index"
    done = _cli("index", "--out", str(out), "--images", str(image_dir), "--model", str(model_file), "--quiet")
    assert json.loads(done.stderr.splitlines()[-1])["code"] == 0, done.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == [".index.lock", "index"]  # staging renamed away
    assert (out / TEXT_FILE).read_bytes() == (index_dir / TEXT_FILE).read_bytes()  # reproducible bytes
    (out / TEXT_FILE).unlink()  # an index written before the text tower was stored
    done = _cli("index", "--out", str(out), "--images", str(image_dir), "--model", str(model_file), "--quiet")
    assert json.loads(done.stderr.splitlines()[-1])["code"] == 0, done.stderr
    assert "+ 0 added" in done.stdout and (out / TEXT_FILE).read_bytes() == (index_dir / TEXT_FILE).read_bytes()
