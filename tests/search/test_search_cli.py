"""`gadms index` and `gadms search` as a user runs them: outputs, switches, one-line errors, MLflow model URIs."""

import json
import shutil

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
    assert "16 found = 0 already indexed + 16 added + 0 changed + 0 skipped" in result.output
    return out


def test_search_prints_a_table_and_json_with_top_k_results(index_dir):
    table = _invoke("search", index_dir, "a woman in a red coat", "--top-k", "4")
    assert table.exit_code == 0 and "exact search over 16 images" in table.output
    rows = [line for line in table.output.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r.split()[0]) for r in rows] == [1, 2, 3, 4]
    out = json.loads(_invoke("search", index_dir, "a woman in a red coat", "-k", "3", "--json").output)
    assert out["query"] == "a woman in a red coat" and len(out["results"]) == 3
    assert list(out) == ["query", "model", "method", "results"] and out["method"] == "exact"
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


def test_search_errors_are_one_line(index_dir, tmp_path, other_model_file, bench_root):
    cases = [
        (("search", index_dir, "q", "--model", other_model_file), "was built with model"),
        (("search", tmp_path, "q"), "not a search index"),
        (("search", index_dir), "give a QUERY or --queries FILE"),
        (("search", index_dir, "q", "--mode", "approximate"), "no approximate index"),
        (("index", "--model", other_model_file, "--out", index_dir, "--images", tmp_path), "was built with model"),
        (("index", "--model", tmp_path / "nope", "--out", tmp_path / "i", "--images", tmp_path), "no such file"),
        (("index", "--model", other_model_file, "--out", tmp_path / "i"), "exactly one of --images"),
        (("index", "--out", tmp_path / "i", "--benchmark", "cuhk-pedes", "--root", bench_root, "--prune"), "--prune"),
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


def _damaged(index_dir, tmp_path, name, text):
    """A copy of the index with ``name`` replaced by ``text`` (None: removed)."""
    copy = tmp_path / f"damaged-{name}"
    shutil.copytree(index_dir, copy)
    if text is None:
        (copy / name).unlink()
    else:
        (copy / name).write_text(text)
    return copy


def test_damaged_index_files_are_one_line_errors_naming_the_file(index_dir, tmp_path, model_file):
    meta = json.loads((index_dir / "index.json").read_text())
    cases = [
        ("index.json", json.dumps(meta | {"count": -5}), "index.json: count -5, embed_dim 64"),
        ("index.json", json.dumps(meta | {"embed_dim": 0}), "index.json: count 16, embed_dim 0"),
        ("index.json", json.dumps(meta | {"embed_dim": 32}), "index.json: embed_dim 32, but model"),
        ("sources.jsonl", "garbage\n" * 16, "sources.jsonl: line 1 is not a source record; the index is damaged"),
        ("sources.jsonl", None, "sources.jsonl: missing; the index is damaged, rebuild it"),
    ]
    for name, text, message in cases:
        damaged = _damaged(index_dir, tmp_path, name, text)
        for args in (
            ("search", damaged, "a man"),
            ("index", "--model", model_file, "--out", damaged, "--images", tmp_path),
        ):
            result = _invoke(*args)
            assert result.exit_code == 2, (args, result.output)
            assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1, result.stderr
            assert message in result.stderr and str(damaged) in result.stderr, result.stderr
        shutil.rmtree(damaged)


def test_approximate_search_json_and_a_damaged_faiss_file(tmp_path, model_file, image_dir):
    out = tmp_path / "index"
    built = _invoke("index", "--model", model_file, "--out", out, "--images", image_dir, "--approx-threshold", "10")
    assert built.exit_code == 0 and "recall@10 vs exact" in built.output
    found = json.loads(_invoke("search", out, "a man", "-k", "2", "--json").stdout)
    assert list(found) == ["query", "model", "method", "recall", "results"] and found["method"] == "approximate"
    assert found["recall"] == read_meta(out).approximate["recall_at_10"]
    (out / "approximate.faiss").write_bytes(b"not a faiss index")
    fallback = _invoke("search", out, "a man", "-k", "2", "--json")
    assert fallback.exit_code == 0 and json.loads(fallback.stdout)["method"] == "exact"
    assert fallback.stderr.startswith("warning: ") and len(fallback.stderr.splitlines()) == 1, fallback.stderr
    assert f"{out / 'approximate.faiss'}: damaged approximate index" in fallback.stderr


def test_an_empty_gallery_with_approx_threshold_0_builds_an_empty_index(tmp_path, model_file):
    (tmp_path / "empty").mkdir()
    result = _invoke(
        "index",
        "--model",
        model_file,
        "--out",
        tmp_path / "i",
        "--images",
        tmp_path / "empty",
        "--approx-threshold",
        "0",
        "--quiet",
    )
    assert result.exit_code == 0 and ": 0 images" in result.output and "approximate" not in result.output


def test_gone_images_are_reported_in_one_line_and_pruned(tmp_path, model_file, image_dir):
    gallery, out = tmp_path / "gallery", tmp_path / "index"
    gallery.mkdir()
    for f in sorted(image_dir.rglob("*.jpg"))[:5]:
        shutil.copy(f, gallery / f.name)
    args = ("index", "--model", model_file, "--out", out, "--images", gallery, "--quiet")
    assert _invoke(*args).exit_code == 0
    (gallery / "00001_0.jpg").unlink()
    again = _invoke(*args)
    gone_line = f"1 indexed images are gone from the gallery: {gallery.resolve() / '00001_0.jpg'}; --prune removes them"
    assert again.exit_code == 0 and gone_line in again.output.splitlines(), again.output
    assert f"index {out}: 5 images" in again.output
    pruned = _invoke(*args, "--prune")
    assert pruned.exit_code == 0 and f"index {out}: 4 images" in pruned.output
    assert f"pruned 1 indexed images gone from the gallery: {gallery.resolve() / '00001_0.jpg'}" in pruned.output
    assert "gone from the gallery" not in _invoke(*args).output
