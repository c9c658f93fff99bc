"""The curation run end to end on the synthetic world: counts, outputs, determinism, resume."""

import hashlib
import io
import json
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from gadms.config import load_params
from gadms.curation.run import curate
from gadms.data.corpus_index import CURATED, footer_entries, list_shards, read_corpus_index
from gadms.data.curated import iter_curated
from gadms.synth.web import write_web_shards

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def params():
    return load_params(REPO / "params.yaml")


@pytest.fixture(scope="module")
def web(tmp_path_factory, params) -> Path:
    out = tmp_path_factory.mktemp("web")
    write_web_shards(
        out,
        scenes=90,
        seed=5,
        synth=params.synth.model_copy(update={"shard_size": 30}),
        rules=params.curation.filter,
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def curated(tmp_path_factory, web, params):
    out = tmp_path_factory.mktemp("curated")
    return out, curate(web, out, params, progress=False)


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _truth(web: Path) -> list[dict]:
    people = []
    for shard in sorted(web.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".json"):
                    meta = json.load(tar.extractfile(m))
                    people += [dict(p, key=meta["key"]) for p in meta["synthetic"]["people"] if p["box"] is not None]
    return people


def test_counts_add_up_and_match_the_ground_truth(web, curated):
    out, report = curated
    truth = _truth(web)
    for shard in report.shards:
        assert shard.seen == shard.kept + shard.rejected + shard.failed == 30
    totals = report.totals()
    assert totals["boxes"] == {d: sum(p["expected"] == d for p in truth) for d in {p["expected"] for p in truth}}
    assert totals["crops"] == sum(p["expected"] == "keep" for p in truth)
    assert totals["kept"] == len({p["key"] for p in truth if p["expected"] == "keep"})
    assert json.loads((out / "report.json").read_text())["totals"] == totals


def test_each_kept_person_becomes_a_crop_with_captions_and_provenance(web, curated, params):
    out, report = curated
    samples = list(iter_curated(out))
    assert len(samples) == report.totals()["crops"]
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    assert [row["key"] for row in manifest] == [s.key for s in samples]
    with tarfile.open(sorted(out.glob("*.tar"))[0]) as tar:
        names = tar.getnames()
        meta = json.load(tar.extractfile(names[1]))
        crop = Image.open(io.BytesIO(tar.extractfile(names[0]).read()))
    assert crop.size == tuple(meta["crop_size"])
    x0, y0, x1, y1 = meta["box"]
    cx0, cy0, cx1, cy1 = meta["crop_box"]
    assert cx0 <= x0 and cy0 <= y0 and cx1 >= x1 and cy1 >= y1
    assert len(meta["captions"]) == len(meta["template_ids"]) == params.curation.captioning.captions_per_image
    assert meta["source_shard"] == "00000" and meta["captioner"] == "attributes" and len(meta["keypoints"]) == 17
    for sample in samples:
        assert all("[" not in c and c.strip() for c in sample.captions)


def test_the_corpus_index_lists_every_shard_as_its_files_say(curated):
    out, report = curated
    index = read_corpus_index(out)
    assert [e.name for e in index] == ["00000.tar", "00001.tar", "00002.tar"]
    assert index == footer_entries(out, list_shards(out, CURATED), CURATED)  # sizes and captions read back
    assert sum(e.pairs for e in index) == report.totals()["captions"] > 0


def test_same_input_and_params_give_the_same_bytes(web, curated, params, tmp_path):
    out, _ = curated
    curate(web, tmp_path / "again", params, progress=False)
    assert _tree(tmp_path / "again") == _tree(out)
    curate(web, tmp_path / "seed", params.model_copy(update={"seed": 1}), progress=False)
    assert _tree(tmp_path / "seed")["00000.tar"] != _tree(out)["00000.tar"]  # other templates and captions


def test_a_rerun_skips_finished_shards(web, curated, params):
    out, _ = curated
    before = {p: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    report = curate(web, out, params, progress=False)
    assert all(s.skipped for s in report.shards)
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.tar")} == before


def test_changed_parameters_redo_the_shards(web, params, tmp_path):
    out = tmp_path / "out"
    curate(web, out, params, progress=False)
    changed = params.model_copy(
        update={
            "curation": params.curation.model_copy(
                update={"crop": params.curation.crop.model_copy(update={"margin": 0.2})}
            )
        }
    )
    report = curate(web, out, changed, progress=False)
    assert not any(s.skipped for s in report.shards)


def test_a_bad_shard_is_recorded_and_the_run_goes_on(web, params, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(web, src)
    data = (src / "00001.tar").read_bytes()
    (src / "00001.tar").write_bytes(data[: len(data) // 2])
    report = curate(src, tmp_path / "out", params, progress=False)
    bad = report.shards[1]
    assert bad.problems and bad.seen == bad.kept + bad.rejected + bad.failed
    assert 0 < bad.seen < 30
    assert report.shards[0].seen == report.shards[2].seen == 30


@pytest.mark.slow
def test_a_killed_run_restarted_gives_the_same_bytes(web, curated, tmp_path):
    """SIGKILL the CLI after its first finished shard; the rerun completes to the uninterrupted bytes."""
    out, _ = curated
    target = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "gadms",
        "curate",
        "run",
        "--input",
        str(web),
        "--out",
        str(target),
        "--quiet",
        "--params",
        str(REPO / "params.yaml"),
    ]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((target / "meta").glob("*.report.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    killed_early = proc.poll() is None
    if killed_early:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    if killed_early:
        assert len(list((target / "meta").glob("*.report.json"))) < 3
    subprocess.run(cmd, cwd=tmp_path, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _tree(target) == _tree(out)
