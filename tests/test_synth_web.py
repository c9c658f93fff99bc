"""`gadms synth web`: img2dataset-layout shards, deterministic, with honest ground truth."""

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from gadms.config import FilterConfig, SynthConfig
from gadms.synth.web import write_web_shards

SYNTH = SynthConfig(shard_size=20)
RULES = FilterConfig()


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _samples(folder: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, _, ext = member.name.partition(".")
                out.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return out


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    out = tmp_path_factory.mktemp("web")
    summary = write_web_shards(out, 50, 7, SYNTH, RULES, progress=False)
    return out, summary


def test_same_seed_same_bytes_different_seed_different(web, tmp_path):
    out, _ = web
    again = write_web_shards(tmp_path / "again", 50, 7, SYNTH, RULES, progress=False)
    assert _digest(out) == _digest(again.out)
    other = write_web_shards(tmp_path / "other", 50, 8, SYNTH, RULES, progress=False)
    assert _digest(out)["00000.tar"] != _digest(other.out)["00000.tar"]


def test_img2dataset_layout(web):
    out, summary = web
    assert summary.shards == 3
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{s:05d}{ext}" for s in range(3) for ext in (".tar", ".parquet", "_stats.json"))
    with tarfile.open(out / "00000.tar") as tar:
        members = tar.getnames()
    assert members[:3] == ["000000000.jpg", "000000000.txt", "000000000.json"]
    assert len(members) == 3 * 20
    table = pq.read_table(out / "00002.parquet").to_pylist()
    assert [row["key"] for row in table] == [f"00002{i:04d}" for i in range(10)]
    assert all(row["status"] == "success" for row in table)


def test_each_sample_is_consistent(web):
    out, _ = web
    samples = _samples(out)
    assert len(samples) == 50
    for key, files in samples.items():
        meta = json.loads(files["json"])
        assert meta["key"] == key
        assert meta["sha256"] == hashlib.sha256(files["jpg"]).hexdigest()
        assert files["txt"].decode("utf-8") == meta["caption"]
        image = Image.open(io.BytesIO(files["jpg"]))
        assert image.size == (meta["width"], meta["height"]) == (640, 480)
        for person in meta["synthetic"]["people"]:
            assert len(person["keypoints"]) == 17
            assert all(v in (0, 1, 2) for _, _, v in person["keypoints"])


def _reference_decision(person: dict) -> str:
    """SPEC section 2 written out plainly, independent of gadms.synth.scene."""
    x0, y0, x1, y1 = person["box"]
    w, h = x1 - x0, y1 - y0
    seen = [v == 2 for _, _, v in person["keypoints"]]
    if min(w, h) < 90:
        return "too_small"
    if not 0.25 <= w / h <= 0.5:
        return "aspect"
    if not person["score"] > 0.85:
        return "low_conf"
    if sum(seen) < 8:
        return "few_keypoints"
    if not (seen[11] or seen[12]):
        return "no_hip"
    if sum(seen[:5]) < 2:
        return "no_head"
    return "keep"


def test_recorded_decisions_follow_the_spec_rules_and_cover_every_reason(web, tmp_path):
    out, _ = web
    bigger = write_web_shards(tmp_path / "more", 150, 1, SynthConfig(shard_size=150), RULES, progress=False)
    seen = set()
    for folder in (out, bigger.out):
        for files in _samples(folder).values():
            for person in json.loads(files["json"])["synthetic"]["people"]:
                assert person["expected"] == _reference_decision(person)
                seen.add(person["expected"])
    assert seen == {"keep", "too_small", "aspect", "low_conf", "few_keypoints", "no_hip", "no_head"}
