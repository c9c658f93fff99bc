"""Index builds and exact/approximate ranking, checked against an independent brute-force cosine ranking."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gadms.config import params_from_dict
from gadms.data.benchmarks import load_benchmark
from gadms.data.pipeline import ImageDataset, image_transform
from gadms.model.backbone import tokenizer
from gadms.search.build import build_index
from gadms.search.index import EMBEDDINGS_FILE, SOURCES_FILE, check_model, open_index, read_meta
from gadms.search.model import SearchError, load_search_model
from gadms.search.query import run_queries
from gadms.search.ranking import exact_top_k
from gadms.search.sources import benchmark_gallery, folder_gallery

QUERIES = [
    "a woman in a red coat and black trousers",
    "a man with short hair in a blue t-shirt",
    "a person carrying a bag",
]
PARAMS = params_from_dict({})


@pytest.fixture(scope="module")
def searcher(model_file):
    return load_search_model(str(model_file), PARAMS, "cpu")


def _build(tmp_path, gallery, searcher, **kwargs):
    return build_index(tmp_path / "index", gallery, searcher, progress=False, **kwargs)


def _copy_images(image_dir, folder, start, stop):
    """Copy the benchmark's images ``start:stop`` (name order) into ``folder``; returns the copies."""
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(f, folder / f.name)) for f in sorted(image_dir.rglob("*.jpg"))[start:stop]]


def _rows(index_dir):
    """Each indexed source with its embedding row."""
    index = open_index(index_dir)
    return {r["source"]: np.array(index.embeddings[i]) for i, r in enumerate(index.records)}


def test_ranking_equals_brute_force_cosine_ranking(tmp_path, searcher, bench_root):
    report = _build(tmp_path, benchmark_gallery("cuhk-pedes", bench_root, "test"), searcher, batch=5)
    index = open_index(tmp_path / "index")
    run = run_queries(index, searcher, QUERIES, k=len(index), mode="exact")
    # reference: encode every image and query straight through the model, cosine via normalise + matmul
    model, arch = searcher.model, searcher.model.arch
    paths = load_benchmark("cuhk-pedes", bench_root, "test").images
    images = torch.stack(
        [ImageDataset(paths, image_transform(arch.image_height, arch.image_width))[i][0] for i in range(len(paths))]
    )
    with torch.no_grad():
        gallery = F.normalize(model.encode_image(images)[0], dim=-1)
        texts = F.normalize(model.encode_text(tokenizer(arch.context_length)(QUERIES)), dim=-1)
    cosine = (texts @ gallery.T).numpy()
    assert report.added == len(paths) == len(index) == 16
    for q, result in enumerate(run.results):
        want = [str(paths[i].resolve()) for i in np.argsort(-cosine[q], kind="stable")]
        assert [h.source for h in result.hits] == want
        np.testing.assert_allclose([h.score for h in result.hits], np.sort(cosine[q])[::-1], atol=1e-5)


def test_blocked_exact_top_k_matches_a_full_sort():
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((1000, 16)).astype(np.float32)
    queries = rng.standard_normal((7, 16)).astype(np.float32)
    scores, ids = exact_top_k(gallery, queries, 10, block=64)
    full = queries @ gallery.T
    np.testing.assert_array_equal(ids, np.argsort(-full, axis=1, kind="stable")[:, :10])
    np.testing.assert_allclose(scores, np.take_along_axis(full, ids, 1), rtol=1e-6)


def test_top_k_sets_the_number_of_results(tmp_path, searcher, image_dir):
    _build(tmp_path, folder_gallery(image_dir), searcher)
    index = open_index(tmp_path / "index")
    assert [len(r.hits) for r in run_queries(index, searcher, QUERIES, k=3).results] == [3, 3, 3]
    assert len(run_queries(index, searcher, QUERIES[:1], k=7).results[0].hits) == 7


def test_an_index_refuses_another_model(tmp_path, searcher, other_model_file, image_dir):
    _build(tmp_path, folder_gallery(image_dir), searcher)
    before = {name: (tmp_path / "index" / name).read_bytes() for name in (EMBEDDINGS_FILE, SOURCES_FILE, "index.json")}
    other = load_search_model(str(other_model_file), PARAMS, "cpu")
    with pytest.raises(SearchError, match="was built with model .* not with"):
        check_model(open_index(tmp_path / "index").meta, other.identity, tmp_path / "index")
    with pytest.raises(SearchError, match="was built with model"):
        _build(tmp_path, folder_gallery(image_dir), other)
    assert before == {name: (tmp_path / "index" / name).read_bytes() for name in before}


def test_same_weights_from_a_run_dir_or_its_file_have_one_identity(model_file, searcher):
    from_dir = load_search_model(str(model_file.parent), PARAMS, "cpu")
    assert from_dir.identity.digest == searcher.identity.digest


def test_indexing_again_encodes_only_new_images(tmp_path, searcher, image_dir):
    gallery_dir = tmp_path / "gallery"
    files = sorted(image_dir.rglob("*.jpg"))
    (gallery_dir / "a").mkdir(parents=True)
    for f in files[:20]:
        shutil.copy(f, gallery_dir / "a" / f.name)
    first = _build(tmp_path, folder_gallery(gallery_dir), searcher)
    old_rows = (tmp_path / "index" / EMBEDDINGS_FILE).read_bytes()
    (gallery_dir / "b" / "deeper").mkdir(parents=True)
    for f in files[20:35]:
        shutil.copy(f, gallery_dir / "b" / "deeper" / f.name)
    second = _build(tmp_path, folder_gallery(gallery_dir), searcher)
    third = _build(tmp_path, folder_gallery(gallery_dir), searcher)
    assert (first.added, first.already) == (20, 0)
    assert (second.found, second.already, second.added, second.count) == (35, 20, 15, 35)
    assert (third.added, third.already, third.count) == (0, 35, 35)
    assert (tmp_path / "index" / EMBEDDINGS_FILE).read_bytes().startswith(old_rows)  # old rows kept, not re-encoded
    sources = [r["source"] for r in open_index(tmp_path / "index").records]
    assert len(set(sources)) == 35 and sum("deeper" in s for s in sources) == 15


def test_bad_images_are_skipped_and_counted(tmp_path, searcher, image_dir):
    gallery_dir = tmp_path / "gallery"
    good = sorted(image_dir.rglob("*.jpg"))[:6]
    gallery_dir.mkdir()
    for f in good:
        shutil.copy(f, gallery_dir / f.name)
    (gallery_dir / "not_an_image.jpg").write_text("hello")
    (gallery_dir / "truncated.jpg").write_bytes(good[0].read_bytes()[:300])
    (gallery_dir / "empty.png").write_bytes(b"")
    (gallery_dir / "notes.txt").write_text("not a gallery item")
    report = _build(tmp_path, folder_gallery(gallery_dir), searcher)
    assert report.added == 6 and report.count == 6
    assert sum(report.skipped.values()) == 3 and report.found == report.already + report.added + 3
    assert any("truncated.jpg" in e for e in report.examples)


def test_an_interrupted_build_is_cut_back_to_its_last_commit(tmp_path, searcher, image_dir):
    gallery = folder_gallery(image_dir)
    _build(tmp_path, gallery, searcher)
    index_dir = tmp_path / "index"
    good = {name: (index_dir / name).read_bytes() for name in (EMBEDDINGS_FILE, SOURCES_FILE)}
    with open(index_dir / EMBEDDINGS_FILE, "ab") as f:  # a batch appended but never committed
        f.write(b"\0" * 64 * 4 * 3)
    with open(index_dir / SOURCES_FILE, "a") as f:
        f.write('{"source": "half"}\n{"sour')
    assert len(open_index(index_dir)) == len(good[SOURCES_FILE].splitlines())  # readers see only committed rows
    report = _build(tmp_path, folder_gallery(image_dir), searcher)
    assert report.added == 0
    assert good == {name: (index_dir / name).read_bytes() for name in good}


def test_approximate_index_reports_recall_and_agrees_with_exact(tmp_path, searcher, image_dir):
    report = _build(tmp_path, folder_gallery(image_dir), searcher, approx_threshold=10)
    index = open_index(tmp_path / "index")
    assert report.approximate["recall_at_10"] >= 0.95 and index.approximate is not None
    approx = run_queries(index, searcher, QUERIES, k=5, mode="approximate", check_recall=True)
    exact = run_queries(index, searcher, QUERIES, k=5, mode="exact")
    assert approx.method.startswith("approximate") and exact.method == "exact"
    assert approx.recall is not None and approx.recall >= 0.8
    below = _build(tmp_path / "small", folder_gallery(image_dir), searcher)  # default threshold: no FAISS index
    assert below.approximate is None
    with pytest.raises(SearchError, match="no approximate index"):
        run_queries(open_index(tmp_path / "small" / "index"), searcher, QUERIES, mode="approximate")


def test_same_inputs_give_the_same_index_bytes(tmp_path, searcher, image_dir):
    a = _build(tmp_path / "a", folder_gallery(image_dir), searcher, approx_threshold=10)
    b = _build(tmp_path / "b", folder_gallery(image_dir), searcher, approx_threshold=10)
    assert a.count == b.count
    for name in (EMBEDDINGS_FILE, SOURCES_FILE, "index.json", "approximate.faiss"):
        assert (tmp_path / "a" / "index" / name).read_bytes() == (tmp_path / "b" / "index" / name).read_bytes(), name


def test_a_changed_image_is_encoded_again_in_its_row(tmp_path, searcher, image_dir):
    files = _copy_images(image_dir, tmp_path / "gallery", 0, 6)
    _build(tmp_path, folder_gallery(tmp_path / "gallery"), searcher, approx_threshold=4)
    before = _rows(tmp_path / "index")
    shutil.copy(sorted(image_dir.rglob("*.jpg"))[40], files[2])  # same path, other content
    os.utime(files[2], ns=(1, 1))
    report = _build(tmp_path, folder_gallery(tmp_path / "gallery"), searcher, approx_threshold=4)
    assert (report.found, report.already, report.added, report.changed, report.count) == (6, 5, 0, 1, 6)
    _build(tmp_path / "fresh", folder_gallery(tmp_path / "gallery"), searcher)
    after, fresh = _rows(tmp_path / "index"), _rows(tmp_path / "fresh" / "index")
    assert list(after) == list(before) == [str(f.resolve()) for f in files]  # row order kept
    changed = str(files[2].resolve())
    np.testing.assert_allclose(after[changed], fresh[changed], atol=1e-6)
    assert not np.allclose(after[changed], before[changed])
    assert all(np.array_equal(after[s], before[s]) for s in before if s != changed)
    record = open_index(tmp_path / "index").records[2]
    assert (record["size"], record["mtime_ns"]) == (files[2].stat().st_size, 1)
    approx = open_index(tmp_path / "index").approximate  # trained again on the new row, not stale
    assert approx is not None and approx.count == 6
    scores, ids = approx.search(after[changed][None], 1, nprobe=approx.nlist)
    assert ids[0, 0] == 2 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    again = _build(tmp_path, folder_gallery(tmp_path / "gallery"), searcher, approx_threshold=4)
    assert (again.already, again.changed) == (6, 0)


def test_rows_of_an_index_without_stamps_count_as_unchanged(tmp_path, searcher, image_dir):
    files = _copy_images(image_dir, tmp_path / "gallery", 0, 4)
    _build(tmp_path, folder_gallery(tmp_path / "gallery"), searcher)
    sources = tmp_path / "index" / SOURCES_FILE
    lines = [json.loads(line) for line in sources.read_text().splitlines()]
    sources.write_text("".join(json.dumps({"source": r["source"]}) + "\n" for r in lines))  # as older builds wrote
    shutil.copy(sorted(image_dir.rglob("*.jpg"))[40], files[0])
    report = _build(tmp_path, folder_gallery(tmp_path / "gallery"), searcher)
    assert (report.already, report.changed, report.added) == (4, 0, 0)


def test_gone_images_are_counted_and_pruned(tmp_path, searcher, image_dir):
    files = _copy_images(image_dir, tmp_path / "a", 0, 8)
    _copy_images(image_dir, tmp_path / "b", 8, 11)
    _build(tmp_path, folder_gallery(tmp_path / "a"), searcher, approx_threshold=4)
    _build(tmp_path, folder_gallery(tmp_path / "b"), searcher, approx_threshold=4)
    before = _rows(tmp_path / "index")
    files[1].unlink()
    files[5].unlink()
    gone = [str(files[1].resolve()), str(files[5].resolve())]
    seen = _build(tmp_path, folder_gallery(tmp_path / "a"), searcher, approx_threshold=4)
    assert (seen.found, seen.already, seen.gone, seen.gone_examples, seen.pruned, seen.count) == (6, 6, 2, gone, 0, 11)
    assert _build(tmp_path, folder_gallery(tmp_path / "b"), searcher).gone == 0  # the other folder's rows are not gone
    pruned = _build(tmp_path, folder_gallery(tmp_path / "a"), searcher, approx_threshold=4, prune=True)
    assert (pruned.gone, pruned.pruned, pruned.count) == (2, 2, 9)
    after = _rows(tmp_path / "index")
    assert list(after) == [s for s in before if s not in gone]  # order kept, the gone rows removed
    assert all(np.array_equal(after[s], before[s]) for s in after)
    index = open_index(tmp_path / "index")
    assert read_meta(tmp_path / "index").count == 9 and index.approximate is not None and index.approximate.count == 9
    assert not list((tmp_path / "index").glob(".*.tmp"))
    assert _build(tmp_path, folder_gallery(tmp_path / "a"), searcher, approx_threshold=4).gone == 0


def test_an_empty_gallery_gets_no_approximate_index(tmp_path, searcher):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "bad.jpg").write_text("not an image")
    report = _build(tmp_path, folder_gallery(tmp_path / "empty"), searcher, approx_threshold=0)
    assert (report.count, report.approximate, sum(report.skipped.values())) == (0, None, 1)
    assert run_queries(open_index(tmp_path / "index"), searcher, QUERIES[:1]).results[0].hits == []


def test_a_damaged_faiss_file_falls_back_to_exact_search_with_a_warning(tmp_path, searcher, image_dir, capsys):
    _build(tmp_path, folder_gallery(image_dir), searcher, approx_threshold=10)
    (tmp_path / "index" / "approximate.faiss").write_bytes(b"garbage" * 100)
    index = open_index(tmp_path / "index")
    warning = capsys.readouterr().err
    assert index.approximate is None and run_queries(index, searcher, QUERIES[:1]).method == "exact"
    assert warning.startswith("warning: ") and "approximate.faiss: damaged" in warning and warning.count("\n") == 1
    report = _build(tmp_path, folder_gallery(image_dir), searcher, approx_threshold=10)  # trained again
    assert report.approximate is not None and open_index(tmp_path / "index").approximate is not None


def test_queries_of_another_width_are_refused(tmp_path, searcher, image_dir):
    from gadms.search.query import rank_vectors

    _build(tmp_path, folder_gallery(image_dir), searcher)
    with pytest.raises(SearchError, match="64-dimensional embeddings, the queries are 32-dimensional"):
        rank_vectors(open_index(tmp_path / "index"), np.ones((1, 32), np.float32), ["q"], 3)
