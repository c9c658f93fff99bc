"""The curation run under misuse and hostile input: nothing done is lost, nothing stale kept, one-line refusals."""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from gadms.cli import app
from gadms.config import Params, load_params
from gadms.curation.output import CurationError
from gadms.curation.run import curate
from gadms.data.curated import iter_curated

from .bad_inputs import image_bytes, write_tar

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def params() -> Params:
    return load_params(REPO / "params.yaml")


def _with(params: Params, section: str, **values) -> Params:
    """``params`` with ``curation.SECTION`` fields replaced."""
    curation = params.curation
    changed = getattr(curation, section).model_copy(update=values)
    return params.model_copy(update={"curation": curation.model_copy(update={section: changed})})


def _person(score: float = 0.95) -> dict:
    """A detection that passes every SPEC 2 rule, with attributes the offline captioner can use."""
    keypoints = [[30.0 + 5 * k, 30.0 + 15 * k, 1.0] for k in range(17)]
    attributes = {"gender": "man", "top_type": "shirt", "top_color": "red", "bottom_type": "jeans"}
    return {"box": [20.0, 20.0, 120.0, 320.0], "score": score, "keypoints": keypoints, "attributes": attributes}


def person_sample(key: str, seed: int = 0, meta: dict | None = None) -> list[tuple[str, bytes]]:
    """The members of one sample of a 200x400 picture with one keepable person (or the given JSON)."""
    meta = {"key": key, "detections": [_person()]} if meta is None else meta
    return [(f"{key}.jpg", image_bytes(seed, size=(200, 400))), (f"{key}.json", json.dumps(meta).encode("utf-8"))]


def _tree(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _keys(out: Path) -> list[str]:
    return [s.key for s in iter_curated(out)]


# ---------------------------------------------------------------- 1: --out over the input


def test_an_out_that_is_the_input_is_refused_and_the_sources_are_untouched(tmp_path: Path, params: Params) -> None:
    web = tmp_path / "web"
    write_tar(web / "00000.tar", person_sample("a"))
    before = _tree(web)
    with pytest.raises(CurationError, match="is the input directory"):
        curate(web, web, params, progress=False)
    (tmp_path / "link").symlink_to(web)
    with pytest.raises(CurationError, match="is the input directory"):
        curate(web, tmp_path / "link", params, progress=False)
    assert _tree(web) == before


def test_an_out_from_which_the_run_would_overwrite_an_input_file_is_refused(tmp_path: Path, params: Params) -> None:
    source = tmp_path / "corpus" / "meta"  # Parquet input where the run writes its per-shard manifests
    source.mkdir(parents=True)
    shutil.copy(_parquet_source(tmp_path), source / "00000.parquet")
    before = _tree(source)
    with pytest.raises(CurationError, match=r"would overwrite the input file .*00000\.parquet"):
        curate(source, tmp_path / "corpus", params, progress=False)
    assert _tree(source) == before


def _parquet_source(tmp_path: Path) -> Path:
    import pyarrow as pa

    path = tmp_path / "source.parquet"
    pq.write_table(pa.table({"key": ["a"], "jpg": [image_bytes(0, size=(100, 200))]}), path)
    return path


def test_an_out_inside_the_input_is_fine_when_no_input_file_is_written(tmp_path: Path, params: Params) -> None:
    web = tmp_path / "web"
    write_tar(web / "00000.tar", person_sample("a"))
    report = curate(web, web / "curated", params, progress=False)
    assert report.totals()["crops"] == 1 and (web / "curated" / "00000.tar").is_file()


def test_a_folder_input_whose_file_links_into_out_is_refused(tmp_path: Path, params: Params) -> None:
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    (photos / "p.jpg").write_bytes(image_bytes(0, size=(200, 400)))
    (out / "meta").mkdir(parents=True)
    (out / "meta" / "00000.report.json").write_text("{}")
    (photos / "p.json").symlink_to(out / "meta" / "00000.report.json")  # the sidecar is a file the run writes
    with pytest.raises(CurationError, match=r"would overwrite the input file .*00000\.report\.json"):
        curate(photos, out, params, progress=False)
    assert (out / "meta" / "00000.report.json").read_text() == "{}"


def test_the_cli_refuses_out_equal_to_input_in_one_line(tmp_path: Path) -> None:
    web = tmp_path / "web"
    write_tar(web / "00000.tar", person_sample("a"))
    result = CliRunner().invoke(
        app, ["curate", "run", "--input", str(web), "--out", str(web), "--quiet", "--params", str(REPO / "params.yaml")]
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --out") and "input directory" in lines[0]


# ---------------------------------------------------------------- 2: an existing corpus grows


def test_new_input_curated_into_an_existing_out_adds_and_never_deletes(tmp_path: Path, params: Params) -> None:
    out = tmp_path / "corpus"
    write_tar(tmp_path / "week1" / "00000.tar", person_sample("a", seed=1))
    write_tar(tmp_path / "week1" / "00001.tar", person_sample("b", seed=2))
    curate(tmp_path / "week1", out, params, progress=False)
    week1 = _tree(out)
    write_tar(tmp_path / "week2" / "00002.tar", person_sample("c", seed=3))
    report = curate(tmp_path / "week2", out, params, progress=False)
    after = _tree(out)
    for name in ("00000.tar", "00001.tar", "meta/00000.parquet", "meta/00001.report.json"):
        assert after[name] == week1[name]
    assert [s.shard for s in report.shards] == ["00000", "00001", "00002"]
    assert [s.earlier for s in report.shards] == [True, True, False]
    assert "kept 2 shard(s) of earlier runs that are not in this input: 00000, 00001" in report.summary()
    assert len(_keys(out)) == pq.read_table(out / "manifest.parquet").num_rows == 3
    assert json.loads((out / "report.json").read_text())["totals"]["seen"] == 3


def test_another_input_with_the_same_shard_names_is_added_under_new_names(tmp_path: Path, params: Params) -> None:
    out = tmp_path / "corpus"
    write_tar(tmp_path / "week1" / "00000.tar", person_sample("a", seed=1))
    curate(tmp_path / "week1", out, params, progress=False)
    week1 = _tree(out)
    write_tar(tmp_path / "week2" / "00000.tar", person_sample("a", seed=2))  # img2dataset numbers from 00000 again
    report = curate(tmp_path / "week2", out, params, progress=False)
    after = _tree(out)
    assert all(after[name] == digest for name, digest in week1.items() if name.startswith(("0", "meta/0")))
    added = [s for s in report.shards if not s.earlier]
    assert len(added) == 1 and added[0].shard.startswith("00000-") and added[0].source_name == "00000"
    assert f"added 1 shard(s) under a new name, {out} already holding" in report.summary()
    assert f"00000 as {added[0].shard}" in report.summary()
    assert json.loads((out / "report.json").read_text())["totals"]["seen"] == 2
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == pq.read_table(out / "manifest.parquet").num_rows == 2
    again = curate(tmp_path / "week2", out, params, progress=False)  # each input is done: nothing is redone
    assert [s.shard for s in again.shards if s.skipped and not s.earlier] == [added[0].shard]
    assert _tree(out) == after
    assert "1 shard(s) were already done and were skipped" in again.summary()
    first = curate(tmp_path / "week1", out, params, progress=False)
    assert [(s.shard, s.skipped) for s in first.shards if not s.earlier] == [("00000", True)]


def test_a_renamed_shard_rewritten_in_place_replaces_itself_only(tmp_path: Path, params: Params) -> None:
    out = tmp_path / "corpus"
    write_tar(tmp_path / "week1" / "00000.tar", person_sample("a", seed=1))
    curate(tmp_path / "week1", out, params, progress=False)
    write_tar(tmp_path / "week2" / "00000.tar", person_sample("b", seed=2))
    (renamed,) = [s.shard for s in curate(tmp_path / "week2", out, params, progress=False).shards if not s.earlier]
    write_tar(tmp_path / "week2" / "00000.tar", person_sample("c", seed=3))
    report = curate(tmp_path / "week2", out, params, progress=False)
    (redone,) = [s for s in report.shards if not s.earlier]
    assert redone.shard == renamed and redone.replaced == "input changed"
    assert sorted(pq.read_table(out / "manifest.parquet").column("source_key").to_pylist()) == ["a", "c"]


def test_the_marker_names_the_origin_without_the_machines_paths(tmp_path: Path, params: Params) -> None:
    write_tar(tmp_path / "deep" / "er" / "web" / "00000.tar", person_sample("a"))
    curate(tmp_path / "deep" / "er" / "web", tmp_path / "out", params, progress=False)
    marker = json.loads((tmp_path / "out" / "meta" / "00000.report.json").read_text())
    assert marker["origin"] == "web/00000.tar"


# ---------------------------------------------------------------- 3: an input rewritten in place


def test_an_input_shard_rewritten_with_the_same_size_is_curated_again(tmp_path: Path, params: Params) -> None:
    shard = tmp_path / "web" / "00000.tar"
    write_tar(shard, person_sample("a", meta={"key": "a", "detections": [_person(score=0.95)]}))
    first = curate(tmp_path / "web", tmp_path / "out", params, progress=False)
    size = shard.stat().st_size
    write_tar(shard, person_sample("a", meta={"key": "a", "detections": [_person(score=0.15)]}))  # now low_conf
    assert shard.stat().st_size == size
    second = curate(tmp_path / "web", tmp_path / "out", params, progress=False)
    assert first.totals()["crops"] == 1
    assert not second.shards[0].skipped and second.shards[0].replaced == "input changed"
    assert second.totals()["crops"] == 0 and second.totals()["boxes"] == {"low_conf": 1}
    with tarfile.open(tmp_path / "out" / "00000.tar") as tar:
        assert tar.getnames() == []  # the stale crop is gone
    assert "re-curated 1 finished shard(s), replacing them: 00000 (input changed)" in second.summary()


# ---------------------------------------------------------------- 4: one run at a time


def test_a_second_run_on_a_locked_out_is_refused_and_writes_nothing(tmp_path: Path, params: Params) -> None:
    write_tar(tmp_path / "web" / "00000.tar", person_sample("a"))
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "a+b") as holder:  # another run holds the output directory
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(CurationError, match="being curated by another run"):
            curate(tmp_path / "web", out, params, progress=False)
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    report = curate(tmp_path / "web", out, params, progress=False)  # once it is released, the run goes ahead
    assert report.totals()["crops"] == 1


# ---------------------------------------------------------------- 5: keys


def test_curated_keys_are_unique_and_stable_when_source_keys_sanitise_alike(tmp_path: Path, params: Params) -> None:
    entries = [m for i, key in enumerate(["a b", "a+b", "a_b", "a&b"]) for m in person_sample(key, seed=i)]
    write_tar(tmp_path / "web" / "00000.tar", entries)
    one_by_one = _with(params, "detector", batch_size=1)
    curate(tmp_path / "web", tmp_path / "out", one_by_one, progress=False)
    keys = _keys(tmp_path / "out")
    assert len(keys) == len(set(keys)) == 4
    assert all("." not in k and "/" not in k for k in keys)
    curate(tmp_path / "web", tmp_path / "again", params, progress=False)  # other batching, same keys
    assert _keys(tmp_path / "again") == keys


# ---------------------------------------------------------------- 6: malformed detection records


BAD_METAS = {
    "box missing": {"detections": [{k: v for k, v in _person().items() if k != "box"}]},
    "box a string": {"detections": [{**_person(), "box": "20,20,120,320"}]},
    "box inverted": {"detections": [{**_person(), "box": [120, 20, 20, 320]}]},
    "score a string": {"detections": [{**_person(), "score": "high"}]},
    "detections not a list": {"detections": "oops"},
    "synthetic a string": {"synthetic": "oops"},
    "visibility 5": {
        "synthetic": {
            "people": [
                {
                    "box": [20, 20, 120, 320],
                    "score": 0.9,
                    "identity": {"gender": "man"},
                    "keypoints": [[20, 20, 5]] * 17,
                }
            ]
        }
    },
    "gender a list": {"detections": [{**_person(), "attributes": {"gender": ["man"]}}]},
}


@pytest.mark.parametrize("case", sorted(BAD_METAS))
def test_a_malformed_detection_record_fails_one_sample_and_the_run_goes_on(
    tmp_path: Path, params: Params, case: str
) -> None:
    bad = person_sample("bad", seed=2, meta=BAD_METAS[case])
    entries = [*person_sample("a", seed=1), *bad, *person_sample("c", seed=3)]
    write_tar(tmp_path / "web" / "00000.tar", entries)
    report = curate(tmp_path / "web", tmp_path / "out", params, progress=False)
    (shard,) = report.shards
    assert (shard.seen, shard.kept, shard.failed) == (3, 2, 1)
    assert dict(shard.failures) == {"bad_detections": 1}
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert written["totals"]["failed"] == 1
    (example,) = written["shards"][0]["failure_examples"]["bad_detections"]  # what was wrong, not just a count
    assert example.startswith("bad: ") and ("detections" in example or "synthetic" in example)
    assert f"first failure (bad_detections, shard 00000): {example}" in report.summary()


# ---------------------------------------------------------------- 7: long names


def test_long_keys_and_deep_folder_paths_are_curated(tmp_path: Path, params: Params) -> None:
    long_key = "k" * 150
    write_tar(tmp_path / "web" / "00000.tar", person_sample(long_key))
    report = curate(tmp_path / "web", tmp_path / "out", params, progress=False)
    assert report.totals()["crops"] == 1
    (sample,) = iter_curated(tmp_path / "out")
    assert sample.key.startswith("k" * 48) and len(sample.key) < 90

    deep = tmp_path / "folder" / "/".join(f"directory_level_{i}_with_a_long_name" for i in range(6))
    deep.mkdir(parents=True)
    for name, data in person_sample("photo"):
        (deep / name).write_bytes(data)
    report = curate(tmp_path / "folder", tmp_path / "folder_out", params, progress=False)
    assert report.totals()["crops"] == 1 and len(list(iter_curated(tmp_path / "folder_out"))) == 1


# ---------------------------------------------------------------- 8: caps (each switch changes the result)


def test_max_image_pixels_refuses_larger_images_before_decoding(tmp_path: Path, params: Params) -> None:
    write_tar(tmp_path / "web" / "00000.tar", person_sample("a"))  # 200 x 400 = 80000 pixels
    assert curate(tmp_path / "web", tmp_path / "default", params, progress=False).totals()["crops"] == 1
    capped = _with(params, "source", max_image_pixels=79_999)
    capped = curate(tmp_path / "web", tmp_path / "capped", capped, progress=False)
    assert capped.totals()["failures"] == {"too_large": 1} and capped.totals()["crops"] == 0


def test_max_member_bytes_refuses_larger_images_without_reading_them(tmp_path: Path, params: Params) -> None:
    entries = person_sample("a")
    write_tar(tmp_path / "web" / "00000.tar", entries)
    size = len(entries[0][1])
    fits = curate(tmp_path / "web", tmp_path / "fits", _with(params, "source", max_member_bytes=size), progress=False)
    assert fits.totals()["crops"] == 1
    capped = _with(params, "source", max_member_bytes=size - 1)
    capped = curate(tmp_path / "web", tmp_path / "capped", capped, progress=False)
    assert capped.totals()["failures"] == {"too_large": 1}


def test_a_batch_never_holds_more_decoded_pixels_than_the_cap(tmp_path: Path, params: Params) -> None:
    from gadms.curation.report import ShardReport
    from gadms.curation.run import decoded_batches
    from gadms.curation.sources import iter_source, list_source_shards
    from gadms.curation.stages import stages_for

    entries = [m for i in range(6) for m in person_sample(f"s{i}", seed=i)]  # six images of 80000 pixels
    write_tar(tmp_path / "web" / "00000.tar", entries)
    (shard,) = list_source_shards(tmp_path / "web")
    capped = _with(_with(params, "source", max_image_pixels=180_000), "detector", batch_size=8)
    batches = list(decoded_batches(iter_source(shard), stages_for(capped), ShardReport("00000")))
    assert [len(b) for b in batches] == [2, 2, 2]
    uncapped = stages_for(_with(params, "detector", batch_size=8))
    batches = list(decoded_batches(iter_source(shard), uncapped, ShardReport("x")))
    assert [len(b) for b in batches] == [6]


def test_the_shard_writer_writes_long_names_and_keeps_ustar_bytes_for_short_ones(tmp_path: Path) -> None:
    import io

    from gadms.reproducible_writes import ShardWriter

    long_name = "x" * 300 + ".json"
    with ShardWriter(tmp_path / "a.tar") as tar:
        tar.add("short_0.jpg", b"abc")
        tar.add(long_name, b"{}")
    with tarfile.open(tmp_path / "a.tar") as tar:
        assert tar.getnames() == ["short_0.jpg", long_name]
    with ShardWriter(tmp_path / "b.tar") as tar:
        tar.add("short_0.jpg", b"abc")
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("short_0.jpg")
        info.size, info.mtime, info.mode, info.uname, info.gname = 3, 0, 0o644, "", ""
        tar.addfile(info, io.BytesIO(b"abc"))
    assert (tmp_path / "b.tar").read_bytes() == plain.getvalue()  # earlier corpora keep their DVC hash
