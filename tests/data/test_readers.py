"""Dataset readers: the three benchmarks, WebPerson Parquet, curated shards and their stats.

Every fixture is written here into ``tmp_path`` in the real on-disk format,
with tiny real JPEGs.
"""

import io
import json
import logging
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from gadms.config import SynthConfig
from gadms.data.benchmarks import BENCHMARKS, FORMATS, load_benchmark, read_benchmark
from gadms.data.curated import count_curated, iter_curated, split_member_name
from gadms.data.samples import StreamTally
from gadms.data.stats import dataset_stats, format_stats
from gadms.data.webperson import count_webperson, iter_webperson
from gadms.problems import DataError
from gadms.reproducible_writes import ShardWriter, json_bytes
from gadms.synth.benchmark import write_benchmark


def _jpeg(color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 16), color).save(buf, format="JPEG")
    return buf.getvalue()


def _record(name: str, pid, path, captions, split) -> dict:
    """A record spelled the way benchmark ``name`` spells it."""
    record = {"id": pid, FORMATS[name].image_key: path, "captions": captions, "split": split}
    if name == "cuhk-pedes" and isinstance(captions, list):
        record["processed_tokens"] = [str(c).lower().split() for c in captions]
    return record


def _write_benchmark_files(root: Path, name: str, records: list, missing_images: tuple[str, ...] = ()) -> Path:
    """Write ``ROOT/<BENCHMARK>/<annotation>.json`` and a JPEG for every image path not in ``missing_images``."""
    fmt = FORMATS[name]
    bench = root / fmt.directory
    (bench / "imgs").mkdir(parents=True, exist_ok=True)
    for record in records:
        path = record.get(fmt.image_key) if isinstance(record, dict) else None
        if isinstance(path, str) and path not in missing_images:
            (bench / "imgs" / path).parent.mkdir(parents=True, exist_ok=True)
            (bench / "imgs" / path).write_bytes(_jpeg())
    (bench / fmt.annotation).write_text(json.dumps(records), encoding="utf-8")
    return bench


def _edge_case_records(name: str) -> list:
    """Non-contiguous ids (400, 17, 3), a single-image identity with 3 captions, one train record."""
    return [
        _record(name, 400, "p400/0.jpg", ["a man in red", "red shirt man", "he wears red"], "test"),
        _record(name, 17, "p17/0.jpg", ["a woman in blue", "blue coat"], "test"),
        _record(name, 5, "p5/0.jpg", ["train person"], "train"),
        _record(name, 3, "p3/0.jpg", ["a child in green", "green jacket"], "test"),
        _record(name, 17, "p17/1.jpg", ["the woman in blue walks"], "test"),
    ]


# ---------------------------------------------------------------- benchmarks


@pytest.mark.parametrize("name", BENCHMARKS)
@pytest.mark.parametrize("give_parent", [True, False], ids=["parent-root", "benchmark-root"])
def test_reads_test_split_as_gallery_and_queries(tmp_path, name, give_parent):
    bench = _write_benchmark_files(tmp_path, name, _edge_case_records(name))
    data = load_benchmark(name, tmp_path if give_parent else bench, "test")

    assert [p.relative_to(bench / "imgs").as_posix() for p in data.images] == [
        "p400/0.jpg",
        "p17/0.jpg",
        "p3/0.jpg",
        "p17/1.jpg",
    ]
    assert data.original_ids == [3, 17, 400]
    assert data.num_identities == 3
    assert data.image_ids == [2, 1, 0, 1]
    assert data.captions == [
        "a man in red",
        "red shirt man",
        "he wears red",
        "a woman in blue",
        "blue coat",
        "a child in green",
        "green jacket",
        "the woman in blue walks",
    ]
    assert data.caption_image == [0, 0, 0, 1, 1, 2, 2, 3]
    assert data.caption_ids == [2, 2, 2, 1, 1, 0, 0, 1]
    assert data.gallery() == (data.images, data.image_ids)
    assert data.queries() == (data.captions, data.caption_ids)
    assert all(p.is_file() for p in data.images)
    assert data.problems == [] and data.report().endswith("no bad records")

    train = load_benchmark(name, tmp_path, "train")
    assert train.original_ids == [5] and train.image_ids == [0] and train.captions == ["train person"]


def test_rstpreid_accepts_digit_string_ids_and_reports_others(tmp_path):
    records = [
        _record("rstpreid", "0042", "a.jpg", ["one", "two"], "val"),
        _record("rstpreid", "x12", "b.jpg", ["three", "four"], "val"),
        _record("rstpreid", 7, "c.jpg", ["five", "six"], "val"),
    ]
    _write_benchmark_files(tmp_path, "rstpreid", records)
    data = load_benchmark("rstpreid", tmp_path, "val")
    assert data.original_ids == [7, 42] and data.image_ids == [1, 0]
    assert [(p.index, p.reason) for p in data.problems] == [(1, "bad id")]
    assert "'x12'" in data.problems[0].detail


@pytest.mark.parametrize("name", BENCHMARKS)
def test_bad_records_are_reported_and_skipped(tmp_path, name, caplog):
    fmt = FORMATS[name]
    records = [
        _record(name, 1, "good.jpg", ["a good caption", "another"], "test"),
        _record(name, 2, "gone.jpg", ["image file missing"], "test"),
        _record(name, 3, "c.jpg", [], "test"),
        _record(name, 4, "d.jpg", ["fine", 5], "test"),
        {fmt.image_key: "e.jpg", "captions": ["no id"], "split": "test"},
        _record(name, 6, "f.jpg", ["unknown split"], "dev"),
        ["not", "an", "object"],
        _record(name, 3.5, "h.jpg", ["float id"], "test"),
        _record(name, 9, "i.jpg", "a string, not a list", "test"),
        _record(name, 10, "j.jpg", ["  "], "test"),
    ]
    _write_benchmark_files(tmp_path, name, records, missing_images=("gone.jpg",))
    with caplog.at_level(logging.WARNING, logger="gadms.data.benchmarks"):
        data = load_benchmark(name, tmp_path, "test")

    assert [p.name for p in data.images] == ["good.jpg"]
    assert data.captions == ["a good caption", "another"]
    reasons = {p.index: p.reason for p in data.problems}
    assert reasons == {
        1: "missing image",
        2: "bad captions",
        3: "bad captions",
        4: "missing key",
        5: "unknown split",
        6: "not an object",
        7: "bad id",
        8: "bad captions",
        9: "bad captions",
    }
    report = data.report()
    assert (
        "9 bad records skipped" in report and "4 bad captions" in report and "record 1: image file not found" in report
    )
    assert "\n" not in report
    assert any("9 bad records skipped" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_strict_mode_raises_naming_file_and_record(tmp_path, name):
    records = [_record(name, 1, "a.jpg", ["fine"], "test"), _record(name, 2, "b.jpg", "not a list", "test")]
    bench = _write_benchmark_files(tmp_path, name, records)
    with pytest.raises(DataError) as err:
        load_benchmark(name, tmp_path, "test", strict=True)
    message = str(err.value)
    assert str(bench / FORMATS[name].annotation) in message
    assert "record 1:" in message and "captions" in message and "\n" not in message


def test_strict_mode_names_a_missing_image(tmp_path):
    _write_benchmark_files(
        tmp_path, "cuhk-pedes", [_record("cuhk-pedes", 1, "x/a.jpg", ["fine"], "train")], missing_images=("x/a.jpg",)
    )
    with pytest.raises(DataError, match=r"reid_raw\.json record 0: image file not found: .*x/a\.jpg"):
        load_benchmark("cuhk-pedes", tmp_path, "train", strict=True)


def test_check_images_off_keeps_records_without_files(tmp_path):
    _write_benchmark_files(
        tmp_path, "icfg-pedes", [_record("icfg-pedes", 1, "a.jpg", ["fine"], "train")], missing_images=("a.jpg",)
    )
    assert len(load_benchmark("icfg-pedes", tmp_path, "train").images) == 0
    assert len(load_benchmark("icfg-pedes", tmp_path, "train", check_images=False).images) == 1


def test_missing_or_malformed_annotation_file_is_a_one_line_error(tmp_path):
    with pytest.raises(DataError, match=r"annotation file not found: .*CUHK-PEDES/reid_raw\.json"):
        load_benchmark("cuhk-pedes", tmp_path, "test")
    bench = tmp_path / "RSTPReid"
    bench.mkdir()
    (bench / "data_captions.json").write_text('[{"id": 1,', encoding="utf-8")
    with pytest.raises(DataError, match=r"RSTPReid/data_captions\.json: invalid JSON at line 1"):
        load_benchmark("rstpreid", bench, "test")
    (bench / "data_captions.json").write_text('{"id": 1}', encoding="utf-8")
    with pytest.raises(DataError, match=r"expected a JSON list of records"):
        load_benchmark("rstpreid", tmp_path, "test")


def test_unknown_benchmark_or_split_is_an_error(tmp_path):
    _write_benchmark_files(tmp_path, "icfg-pedes", [_record("icfg-pedes", 1, "a.jpg", ["fine"], "train")])
    with pytest.raises(DataError, match="no split 'val'"):
        load_benchmark("icfg-pedes", tmp_path, "val")
    with pytest.raises(DataError, match="unknown benchmark"):
        load_benchmark("market-1501", tmp_path, "test")


def test_icfg_val_records_are_unknown_split(tmp_path):
    records = [_record("icfg-pedes", 1, "a.jpg", ["fine"], "train"), _record("icfg-pedes", 2, "b.jpg", ["val?"], "val")]
    _write_benchmark_files(tmp_path, "icfg-pedes", records)
    data = read_benchmark("icfg-pedes", tmp_path)
    assert set(data.splits) == {"train", "test"}
    assert [(p.index, p.reason) for p in data.problems] == [(1, "unknown split")]


def test_synthetic_cuhk_pedes_loads_with_the_totals_it_wrote(tmp_path):
    summary = write_benchmark(
        tmp_path,
        8,
        5,
        SynthConfig(min_images_per_identity=1, max_images_per_identity=3, captions_per_image=3),
        progress=False,
    )
    records = json.loads((summary.root / "reid_raw.json").read_text(encoding="utf-8"))
    seen_ids: set[int] = set()
    for split in ("train", "val", "test"):
        data = load_benchmark("cuhk-pedes", tmp_path, split, strict=True)
        mine = [r for r in records if r["split"] == split]
        assert (data.num_identities, len(data.images), len(data.captions)) == (
            summary.identities[split],
            summary.images[split],
            summary.captions[split],
        )
        assert data.captions == [c for r in mine for c in r["captions"]]
        assert [data.original_ids[k] for k in data.image_ids] == [r["id"] for r in mine]
        assert seen_ids.isdisjoint(data.original_ids)
        seen_ids.update(data.original_ids)

    stats = dataset_stats("cuhk-pedes", summary.root)
    assert stats["splits"] == {
        s: {"identities": summary.identities[s], "images": summary.images[s], "captions": summary.captions[s]}
        for s in ("train", "val", "test")
    }
    assert stats["total"] == {
        "identities": 8,
        "images": sum(summary.images.values()),
        "captions": sum(summary.captions.values()),
    }
    assert stats["problems"] == 0
    json.dumps(stats)


# ---------------------------------------------------------------- WebPerson Parquet

_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _write_webperson(path: Path, rows: list[dict], row_group_size: int = 2) -> None:
    table = pa.table(
        {
            "image": pa.array([r["image"] for r in rows], type=_IMAGE),
            "image_path": pa.array([r.get("image_path") for r in rows], type=pa.string()),
            "caption1": pa.array([r["caption1"] for r in rows], type=pa.string()),
            "caption2": pa.array([r["caption2"] for r in rows], type=pa.string()),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)


@pytest.fixture()
def webperson_dir(tmp_path):
    jpeg = _jpeg((10, 120, 200))
    rows = [
        {
            "image": {"bytes": jpeg, "path": "p0.jpg"},
            "image_path": "imgs/0.jpg",
            "caption1": "a man in red",
            "caption2": "red top",
        },
        {
            "image": {"bytes": None, "path": "p1.jpg"},
            "image_path": "imgs/1.jpg",
            "caption1": "no bytes",
            "caption2": "at all",
        },
        {"image": None, "image_path": "imgs/2.jpg", "caption1": "null image", "caption2": "struct"},
        {"image": {"bytes": jpeg, "path": "p3.jpg"}, "image_path": "imgs/3.jpg", "caption1": "", "caption2": None},
        {
            "image": {"bytes": jpeg, "path": "p4.jpg"},
            "image_path": None,
            "caption1": " ",
            "caption2": "only the second",
        },
    ]
    _write_webperson(tmp_path / "web" / "train-00000.parquet", rows)
    _write_webperson(
        tmp_path / "web" / "train-00001.parquet",
        [{"image": {"bytes": jpeg, "path": None}, "caption1": "x", "caption2": "y"}],
    )
    return tmp_path / "web"


def test_webperson_streams_good_rows_and_counts_the_rest(webperson_dir):
    tally = StreamTally()
    samples = list(iter_webperson(webperson_dir, tally))
    assert [(s.key, s.captions) for s in samples] == [
        ("imgs/0.jpg", ["a man in red", "red top"]),
        ("p4.jpg", ["only the second"]),
        ("train-00001/0", ["x", "y"]),
    ]
    image_bytes, captions, key = samples[0]
    assert Image.open(io.BytesIO(image_bytes)).size == (8, 16)
    assert (tally.shards, tally.samples, tally.captions) == (2, 3, 5)
    assert dict(tally.skipped) == {
        "rows without image bytes": 2,
        "rows without captions": 1,
        "empty captions dropped": 1,
    }

    counted = count_webperson(webperson_dir)
    assert (counted.samples, counted.captions, dict(counted.skipped)) == (
        tally.samples,
        tally.captions,
        dict(tally.skipped),
    )


def test_webperson_accepts_a_file_or_a_list_and_survives_a_corrupt_shard(webperson_dir):
    first = webperson_dir / "train-00000.parquet"
    assert len(list(iter_webperson(first))) == 2
    corrupt = webperson_dir / "train-00002.parquet"
    corrupt.write_bytes(b"not parquet at all")
    tally = StreamTally()
    assert len(list(iter_webperson([first, corrupt], tally))) == 2
    assert len(tally.bad_shards) == 1 and str(corrupt) in tally.bad_shards[0]


def test_webperson_without_its_columns_is_an_error(tmp_path):
    pq.write_table(pa.table({"url": ["http://x"], "text": ["a caption"]}), tmp_path / "coyo.parquet")
    with pytest.raises(
        DataError, match=r"coyo\.parquet: not a WebPerson shard, missing column\(s\) image, caption1, caption2"
    ):
        list(iter_webperson(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no \.parquet files"):
        list(iter_webperson(tmp_path / "empty"))
    with pytest.raises(DataError, match="WebPerson path not found"):
        list(iter_webperson(tmp_path / "missing"))


# ---------------------------------------------------------------- curated shards


def _write_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    with ShardWriter(path) as shard:
        for key, members in samples:
            for extension, data in members.items():
                shard.add(f"{key}.{extension}", data)


def _meta(captions) -> bytes:
    return json_bytes({"captions": captions, "source_key": "000123", "box": [1, 2, 30, 90]})


@pytest.fixture()
def curated_dir(tmp_path):
    jpeg = _jpeg((30, 160, 40))
    folder = tmp_path / "curated"
    _write_shard(
        folder / "00000.tar",
        [
            ("a", {"jpg": jpeg, "json": _meta(["a woman in a green coat", "green coat, black boots"])}),
            ("b", {"jpg": jpeg}),
            ("c", {"jpg": jpeg, "json": b"{not json"}),
            ("d", {"jpg": jpeg, "json": json_bytes({"source_key": "x"})}),
            ("e", {"json": _meta(["no image here"])}),
            ("f", {"jpg": jpeg, "json": _meta(["three", "captions", "here"]), "txt": b"alt text"}),
        ],
    )
    _write_shard(folder / "00001.tar", [(k, {"jpg": jpeg, "json": _meta([f"caption {k}"])}) for k in ("g", "h", "i")])
    _write_shard(folder / "00002.tar", [("j", {"jpg": jpeg, "json": _meta(["last shard"])})])
    with tarfile.open(folder / "00001.tar") as tar:
        cut = tar.getmember("h.jpg").offset_data + 10
    truncated = (folder / "00001.tar").read_bytes()[:cut]
    (folder / "00001.tar").write_bytes(truncated)
    (folder / ".00003.tar.tmp-99").write_bytes(b"unfinished")
    return folder


def test_curated_streams_complete_samples_and_survives_truncation(curated_dir):
    tally = StreamTally()
    samples = list(iter_curated(curated_dir, tally))
    assert [(s.key, s.captions) for s in samples] == [
        ("a", ["a woman in a green coat", "green coat, black boots"]),
        ("f", ["three", "captions", "here"]),
        ("g", ["caption g"]),
        ("j", ["last shard"]),
    ]
    assert Image.open(io.BytesIO(samples[0].image)).size == (8, 16)
    assert (tally.shards, tally.samples, tally.captions) == (3, 4, 7)
    assert dict(tally.skipped) == {
        "samples without json": 1,
        "samples with malformed json": 1,
        "samples without captions": 1,
        "samples without jpg": 1,
        "samples cut off by a truncated shard": 1,
    }
    assert len(tally.bad_shards) == 1 and "00001.tar" in tally.bad_shards[0]
    assert count_curated(curated_dir).samples == 4


def test_curated_shard_cut_between_members_is_truncated(tmp_path):
    jpeg = _jpeg()
    _write_shard(
        tmp_path / "00000.tar",
        [("a", {"jpg": jpeg, "json": _meta(["ok"])}), ("b", {"jpg": jpeg, "json": _meta(["ok too"])})],
    )
    with tarfile.open(tmp_path / "00000.tar") as tar:
        cut = tar.getmember("b.jpg").offset  # right before b's header: tarfile alone would call this a clean end
    (tmp_path / "00000.tar").write_bytes((tmp_path / "00000.tar").read_bytes()[:cut])
    tally = count_curated(tmp_path)
    assert tally.samples == 1 and len(tally.bad_shards) == 1 and "end-of-archive" in tally.bad_shards[0]


def test_curated_missing_directory_is_an_error(tmp_path):
    with pytest.raises(DataError, match="curated shard directory not found"):
        list(iter_curated(tmp_path / "nope"))
    with pytest.raises(DataError, match=r"no \.tar shards"):
        count_curated(tmp_path)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("000001.jpg", ("000001", "jpg")),
        ("./part/k.meta.JSON", ("part/k", "meta.json")),
        ("dir.v2/key.jpg", ("dir.v2/key", "jpg")),
    ],
)
def test_member_names_split_like_webdataset(name, expected):
    assert split_member_name(name) == expected


# ---------------------------------------------------------------- stats


def test_stats_of_pretraining_data_count_each_image_as_an_identity(webperson_dir, curated_dir):
    web = dataset_stats("webperson", webperson_dir)
    assert (
        web["splits"] == {"train": {"identities": 3, "images": 3, "captions": 5}}
        and web["total"] == web["splits"]["train"]
    )
    assert web["problems"] == 4
    curated = dataset_stats("curated", curated_dir)
    assert curated["total"] == {"identities": 4, "images": 4, "captions": 7}
    assert curated["problems"] == 6 and curated["problem_reasons"]["bad shards"] == 1
    with pytest.raises(DataError, match="unknown dataset"):
        dataset_stats("coco", curated_dir)


def test_format_stats_is_an_aligned_table():
    stats = {
        "dataset": "cuhk-pedes",
        "source": "/data/CUHK-PEDES/reid_raw.json",
        "splits": {
            "train": {"identities": 11003, "images": 34054, "captions": 68126},
            "val": {"identities": 1000, "images": 3078, "captions": 6158},
            "test": {"identities": 1000, "images": 3074, "captions": 6156},
        },
        "total": {"identities": 13003, "images": 40206, "captions": 80440},
        "problems": 2,
        "problem_reasons": {"missing image": 2},
    }
    lines = format_stats(stats).splitlines()
    assert lines[0] == "cuhk-pedes  /data/CUHK-PEDES/reid_raw.json"
    table = lines[1:-1]
    assert table[0].split() == ["split", "identities", "images", "captions"]
    assert table[-1].split() == ["total", "13,003", "40,206", "80,440"]
    assert len({len(line) for line in table}) == 1
    assert lines[-1] == "problems: 2 (2 missing image)"


def test_webperson_skips_a_corrupt_row_group_and_reads_the_others(tmp_path):
    jpeg = _jpeg((10, 120, 200))
    rows = [
        {
            "image": {"bytes": jpeg, "path": f"p{i}.jpg"},
            "image_path": f"imgs/{i}.jpg",
            "caption1": f"caption {i}",
            "caption2": "second",
        }
        for i in range(30)
    ]
    path = tmp_path / "web" / "train-00000.parquet"
    _write_webperson(path, rows, row_group_size=10)
    metadata = pq.ParquetFile(path).metadata
    data = bytearray(path.read_bytes())
    for column in range(metadata.num_columns):  # scramble the first page header of each column chunk of group 1
        chunk = metadata.row_group(1).column(column)
        start = chunk.dictionary_page_offset or chunk.data_page_offset
        data[start : start + 24] = bytes(b ^ 0x5A for b in data[start : start + 24])
    path.write_bytes(bytes(data))

    tally = StreamTally()
    samples = list(iter_webperson(path, tally))
    assert [s.key for s in samples] == [f"imgs/{i}.jpg" for i in [*range(10), *range(20, 30)]]
    assert tally.skipped["rows in unreadable row groups"] == 10
    assert len(tally.bad_shards) == 1 and "row group 1 (rows 10 to 19)" in tally.bad_shards[0]
    counted = count_webperson(path)
    assert (counted.samples, dict(counted.skipped)) == (20, dict(tally.skipped))
