"""`gadms index` and `gadms search` as a user runs them: outputs, switches, one-line errors, MLflow model URIs."""

import json

import mlflow
import pytest
from mlflow import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from gadms.cli import app
from gadms.config import params_from_dict
from gadms.search.index import read_meta
from gadms.search.model import load_search_model

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, model_file, bench_root):
    out = tmp_path_factory.mktemp("cli") / "index"
    result = _invoke(
        "index", "--model", model_file, "--out", out, "--benchmark", "cuhk-pedes", "--root", bench_root, "--quiet"
    )
    assert result.exit_code == 0, result.output
    assert "16 found = 0 already indexed + 16 added + 0 skipped" in result.output
    return out


def test_search_prints_a_table_and_json_with_top_k_results(index_dir):
    table = _invoke("search", index_dir, "a woman in a red coat", "--top-k", "4")
    assert table.exit_code == 0 and "exact search over 16 images" in table.output
    rows = [line for line in table.output.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r.split()[0]) for r in rows] == [1, 2, 3, 4]
    out = json.loads(_invoke("search", index_dir, "a woman in a red coat", "-k", "3", "--json").output)
    assert out["query"] == "a woman in a red coat" and len(out["results"]) == 3
    assert [r["rank"] for r in out["results"]] == [1, 2, 3]
    assert out["results"][0]["score"] >= out["results"][1]["score"] >= out["results"][2]["score"]
    assert out["results"][0]["source"] == rows[0].split()[2]  # same ranking in both outputs
    assert out["model"].endswith("model.safetensors")


def test_queries_from_a_file_and_a_figure(index_dir, tmp_path):
    queries = tmp_path / "queries.txt"
    queries.write_text("# my queries\na man in a blue shirt\n\na woman with a yellow bag\n")
    png = tmp_path / "fig.png"
    result = _invoke("search", index_dir, "--queries", queries, "-k", "5", "--json", "--figure", png)
    out = json.loads(result.stdout)
    assert [o["query"] for o in out] == ["a man in a blue shirt", "a woman with a yellow bag"]
    with Image.open(png) as image:
        width, height = image.size
    assert height > width  # two query rows stacked


def test_search_errors_are_one_line(index_dir, tmp_path, other_model_file):
    cases = [
        (("search", index_dir, "q", "--model", other_model_file), "was built with model"),
        (("search", tmp_path, "q"), "not a search index"),
        (("search", index_dir), "give a QUERY or --queries FILE"),
        (("search", index_dir, "q", "--mode", "approximate"), "no approximate index"),
        (("index", "--model", other_model_file, "--out", index_dir, "--images", tmp_path), "was built with model"),
        (("index", "--model", tmp_path / "nope", "--out", tmp_path / "i", "--images", tmp_path), "no such file"),
        (("index", "--model", other_model_file, "--out", tmp_path / "i"), "exactly one of --images"),
    ]
    for args, message in cases:
        result = _invoke(*args)
        assert result.exit_code == 2, args
        assert (
            result.stderr.startswith("error: ") and message in result.stderr and len(result.stderr.splitlines()) == 1
        ), result.stderr


def test_a_registry_alias_is_pinned_and_its_weights_identify_the_model(tmp_path, model_file, image_dir):
    """models:/NAME@champion is indexed as NAME v1, and its weights digest equals the file's (same model)."""
    from gadms.tracking.pyfunc import log_retrieval_model
    from gadms.tracking.store import ensure_experiment, using_store

    params = params_from_dict(
        {"paths": {"mlruns_dir": str(tmp_path / "mlruns")}, "tracking": {"registered_model": "people"}}
    )
    with using_store(params) as uri:
        mlflow.set_experiment(experiment_id=ensure_experiment("search", uri))
        with mlflow.start_run():
            log_retrieval_model(model_file, registered_model_name="people")
        MlflowClient(uri).set_registered_model_alias("people", "champion", "1")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(f"paths:\n  mlruns_dir: {tmp_path / 'mlruns'}\ntracking:\n  registered_model: people\n")
    out = tmp_path / "index"
    result = _invoke(
        "index", "--out", out, "--images", image_dir, "--quiet", "--params", params_file
    )  # default: the champion
    assert result.exit_code == 0, result.output
    meta = read_meta(out)
    assert meta.model.label == "people v1" and meta.model.source == "models:/people/1"
    assert meta.model.digest == load_search_model(str(model_file), params, "cpu").identity.digest
    searched = _invoke("search", out, "a man", "--params", params_file, "--model", model_file)  # same weights: accepted
    assert searched.exit_code == 0 and "model people v1" in searched.output
