"""Inputs that are not what they claim: a FIFO or folder as a parameter or model file, a system folder as a
corpus, a YAML value its constructor refuses. Each is one line naming the input, at once (a FIFO is never opened
for a blocking read, a system folder never walked)."""

from __future__ import annotations

import os
import time

import pytest


def _one_line(outcome) -> str:
    outcome.assert_contract()
    assert outcome.code == 2, outcome
    return outcome.stderr.strip()


@pytest.mark.timeout(60)
def test_a_fifo_or_folder_as_the_parameter_file_is_one_line_without_blocking(run_gadms, tmp_path):
    os.mkfifo(tmp_path / "params.yaml")
    (tmp_path / "folder.yaml").mkdir()
    started = time.monotonic()
    fifo = _one_line(run_gadms("params", "show", "--params", str(tmp_path / "params.yaml")))
    folder = _one_line(run_gadms("params", "show", "--params", str(tmp_path / "folder.yaml")))
    assert time.monotonic() - started < 20
    assert fifo == f"error: {tmp_path / 'params.yaml'}: not a regular file (a FIFO); not a parameter file"
    assert folder == f"error: {tmp_path / 'folder.yaml'}: not a regular file (a directory); not a parameter file"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["model.safetensors", "checkpoint.pt"])
def test_a_fifo_named_like_a_model_is_refused_before_it_is_read(run_gadms, tmp_path, name):
    os.mkfifo(tmp_path / name)
    args = ["evaluate", "--checkpoint", str(tmp_path / name), "--benchmark", "cuhk-pedes", "--root", str(tmp_path)]
    line = _one_line(run_gadms(*args, "--device", "cpu"))
    assert line == f"error: {tmp_path / name}: not a regular file (a FIFO); not a model file"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("folder", ["/", "/proc", "/proc/self", "/sys", "/usr"])
def test_data_index_refuses_a_system_folder_instead_of_walking_the_machine(run_gadms, folder):
    started = time.monotonic()
    line = _one_line(run_gadms("data", "index", folder, "--format", "webperson"))
    assert time.monotonic() - started < 10
    assert line.startswith(f"error: {folder}: a system folder (") and "not a corpus folder" in line


@pytest.mark.parametrize("value", ["2026-13-45", "2026-02-30", "2026-01-01 25:00:00"])
def test_a_yaml_value_its_constructor_refuses_names_the_key_or_the_file(run_gadms, tmp_path, value):
    line = _one_line(run_gadms("params", "show", "--set", f"seed={value}"))
    assert line.startswith("error: --set seed: a value that cannot be read (")
    params = tmp_path / "params.yaml"
    params.write_text(f"seed: {value}\n")
    line = _one_line(run_gadms("params", "show", "--params", str(params)))
    assert line.startswith(f"error: {params}: a value that cannot be read (")


@pytest.mark.timeout(120)
def test_a_fifo_as_a_text_input_is_one_line_without_blocking(run_gadms, tmp_path):
    """Captions to mine templates from and a file of search queries are read through the one way in."""
    os.mkfifo(tmp_path / "captions.txt")
    os.mkfifo(tmp_path / "queries.txt")
    captions = ["curate", "templates", "--captions", str(tmp_path / "captions.txt"), "--out", str(tmp_path / "t.json")]
    line = _one_line(run_gadms(*captions, "--quiet"))
    assert line == f"error: {tmp_path / 'captions.txt'}: not a regular file (a FIFO)"
    (tmp_path / "index").mkdir()
    line = _one_line(run_gadms("search", str(tmp_path / "index"), "--queries", str(tmp_path / "queries.txt")))
    assert line == f"error: --queries {tmp_path / 'queries.txt'}: not a regular file (a FIFO)"
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    captions[3] = str(tmp_path / "latin1.txt")
    line = _one_line(run_gadms(*captions, "--quiet"))
    assert line == f"error: {tmp_path / 'latin1.txt'}: not UTF-8 text (expected a text file of one caption per line)"


@pytest.mark.timeout(120)
def test_ablate_refuses_a_corpus_it_cannot_read_before_any_work(run_gadms, tmp_path):
    os.mkfifo(tmp_path / "fifo")
    for corpus in (tmp_path / "missing", tmp_path / "fifo"):
        started = time.monotonic()
        args = ["ablate", "--corpus", str(corpus), "--out", str(tmp_path / "out"), "--no-track", "--device", "cpu"]
        line = _one_line(run_gadms(*args))
        assert time.monotonic() - started < 20, "the base stage ran before the corpus was read"
        assert line == f"error: annotation file not found: {corpus}/CUHK-PEDES/reid_raw.json"
        assert not (tmp_path / "out").exists()
