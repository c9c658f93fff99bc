"""The source-shard reader: listing, streaming every sample once, bad inputs, decoding."""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageFile

from gadms.config import FilterConfig, SynthConfig
from gadms.curation import parquet_source, records, sources
from gadms.curation.decoding import ImageDecodeError, decode_image
from gadms.curation.records import SourceShard
from gadms.curation.sources import iter_source, list_source_shards
from gadms.problems import DataError
from gadms.synth.web import write_web_shards

from .bad_inputs import (
    cut_before_member,
    cut_inside_member,
    drop_end_marker,
    image_bytes,
    link,
    sample,
    scrambled,
    write_tar,
)


def read_all(shard: SourceShard) -> tuple[list, list[str]]:
    """All records of a shard and the shard-level problems."""
    problems: list[str] = []
    return list(iter_source(shard, problems)), problems


def outcomes(records: list) -> dict[str, str | None]:
    """What the curation stage sees per key: the read error, else the decode error, else None."""
    seen: dict[str, str | None] = {}
    for record in records:
        reason = record.error
        if reason is None:
            try:
                decode_image(record.image)
            except ImageDecodeError as err:
                reason = err.reason
        seen[record.key] = reason
    return seen


def single_tar(tmp_path: Path, entries: list) -> SourceShard:
    """A one-tar input directory; its only shard."""
    write_tar(tmp_path / "in" / "00000.tar", entries)
    (shard,) = list_source_shards(tmp_path / "in")
    return shard


# ---------------------------------------------------------------- clean img2dataset shards


@pytest.fixture(scope="module")
def web_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("web")
    write_web_shards(out, scenes=12, seed=0, synth=SynthConfig(shard_size=5), rules=FilterConfig(), progress=False)
    return out


def test_clean_web_shards_read_back_every_key_with_its_bytes_text_and_meta(web_dir: Path) -> None:
    shards = list_source_shards(web_dir)
    assert [(s.name, s.kind) for s in shards] == [
        ("00000", "webdataset"),
        ("00001", "webdataset"),
        ("00002", "webdataset"),
    ]
    for shard in shards:
        records, problems = read_all(shard)
        with tarfile.open(shard.path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        status_keys = pq.read_table(web_dir / f"{shard.name}.parquet").column("key").to_pylist()
        assert problems == []
        assert [r.key for r in records] == status_keys
        for record in records:
            assert record.error is None
            assert record.image == members[f"{record.key}.jpg"]
            assert record.text == members[f"{record.key}.txt"].decode("utf-8")
            assert record.meta == json.loads(members[f"{record.key}.json"])
    first = next(iter_source(shards[0]))
    assert decode_image(first.image).shape == (first.meta["height"], first.meta["width"], 3)


# ---------------------------------------------------------------- bad inputs inside tars

GOOD_A, GOOD_C = sample("a", seed=1), sample("c", seed=3)
BAD_CASES = {
    "corrupt_jpeg": ([("b.jpg", scrambled(image_bytes(2, size=(96, 64)), 400, 500)), ("b.txt", b"x")], "corrupt_image"),
    "html_saved_as_jpeg": ([("b.jpg", b"<html><body>404 Not Found</body></html>"), ("b.txt", b"x")], "corrupt_image"),
    "truncated_jpeg": ([("b.jpg", image_bytes(2, size=(96, 64))[:900]), ("b.txt", b"x")], "truncated_image"),
    "zero_byte_image": ([("b.jpg", b""), ("b.txt", b"x")], "empty_file"),
    "non_utf8_text": ([("b.jpg", image_bytes(2)), ("b.txt", b"caf\xe9 \xff")], "bad_text"),
    "malformed_json": ([("b.jpg", image_bytes(2)), ("b.json", b'{"key": "b", ')], "bad_json"),
    "json_not_an_object": ([("b.jpg", image_bytes(2)), ("b.json", b"[1, 2]")], "bad_json"),
    "no_image": ([("b.txt", b"x"), ("b.json", b"{}")], "missing_image"),
    "symlink_image": ([link("b.jpg", "/etc/passwd"), ("b.txt", b"x")], "unsafe_member"),
    "hardlink_image": ([link("b.jpg", "a.jpg", tarfile.LNKTYPE), ("b.txt", b"x")], "unsafe_member"),
    "device_member": ([("b.jpg", image_bytes(2)), link("b.txt", "", tarfile.CHRTYPE)], "unsafe_member"),
    "repeated_member": ([("b.jpg", image_bytes(2)), ("b.txt", b"x"), ("b.jpg", image_bytes(4))], "duplicate_key"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_a_bad_sample_fails_with_its_reason_and_the_rest_of_the_shard_comes_through(tmp_path: Path, case: str) -> None:
    bad_members, reason = BAD_CASES[case]
    shard = single_tar(tmp_path, [*GOOD_A, *bad_members, *GOOD_C])
    records, problems = read_all(shard)
    assert problems == []
    assert outcomes(records) == {"a": None, "b": reason, "c": None}
    assert len(records) == 3  # seen = ok + failed, one record per sample key
    good = {r.key: r for r in records if r.error is None}
    assert good["a"].image == dict(GOOD_A)["a.jpg"] and good["c"].text == dict(GOOD_C)["c.txt"].decode()
    failed = next(r for r in records if r.key == "b")
    assert (failed.image is None) == (failed.error is not None)


@pytest.mark.parametrize(
    "name,key", [("../x.jpg", "../x"), ("/abs/x.jpg", "/abs/x"), ("sub/../../x.jpg", "sub/../../x")]
)
def test_members_with_escaping_names_are_unsafe_and_never_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, key: str
) -> None:
    (tmp_path / "sibling").mkdir()
    work = tmp_path / "in" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    shard = single_tar(tmp_path, [*GOOD_A, (name, image_bytes(2)), link("z.jpg", "../sibling/z.jpg"), *GOOD_C])
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    records, problems = read_all(shard)

    assert outcomes(records) == {"a": None, key: "unsafe_member", "z": "unsafe_member", "c": None}
    assert problems == []
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert list((tmp_path / "sibling").iterdir()) == [] and list(work.iterdir()) == []
    assert Path.cwd() == work
    assert not Path("/abs/x.jpg").exists()


def test_a_key_that_comes_back_later_in_the_shard_is_a_duplicate(tmp_path: Path) -> None:
    shard = single_tar(tmp_path, [*GOOD_A, *sample("b", seed=2), *sample("a", seed=9), *GOOD_C])
    records, _ = read_all(shard)
    assert [(r.key, r.error) for r in records] == [("a", None), ("b", None), ("a", "duplicate_key"), ("c", None)]
    assert records[0].image == dict(GOOD_A)["a.jpg"]  # the first occurrence is the one kept


# ---------------------------------------------------------------- broken tars


def test_a_tar_cut_inside_a_member_yields_what_came_before_and_reports_the_shard(tmp_path: Path) -> None:
    shard = single_tar(tmp_path, [*GOOD_A, *sample("b", seed=2), *GOOD_C])
    cut_inside_member(shard.path, "b.jpg")
    records, problems = read_all(shard)
    assert [(r.key, r.error) for r in records] == [("a", None), ("b", "truncated_shard")]
    assert records[0].image == dict(GOOD_A)["a.jpg"] and records[1].image is None
    assert len(problems) == 1 and problems[0].startswith(f"{shard.path}: ")


def test_a_tar_cut_between_members_still_marks_the_unfinished_sample(tmp_path: Path) -> None:
    shard = single_tar(tmp_path, [*GOOD_A, *sample("b", seed=2), *GOOD_C])
    cut_before_member(shard.path, "b.json")  # b.jpg and b.txt are whole, b.json is gone
    records, problems = read_all(shard)
    assert [(r.key, r.error) for r in records] == [("a", None), ("b", "truncated_shard")]
    assert len(problems) == 1 and str(shard.path) in problems[0]


def test_a_tar_without_its_end_marker_is_reported(tmp_path: Path) -> None:
    shard = single_tar(tmp_path, [*GOOD_A, *GOOD_C])
    drop_end_marker(shard.path)
    records, problems = read_all(shard)
    assert [r.key for r in records] == ["a", "c"] and records[0].error is None
    assert records[1].error == "truncated_shard"  # nothing proves c had all its members
    assert len(problems) == 1 and "end-of-archive" in problems[0]


@pytest.mark.parametrize("content", [b"", b"this is plain text, not a tar archive\n" * 40, bytes(range(256)) * 8])
def test_a_file_that_is_not_a_tar_is_a_shard_problem_and_other_shards_still_read(
    tmp_path: Path, content: bytes
) -> None:
    write_tar(tmp_path / "in" / "00000.tar", GOOD_A)
    (tmp_path / "in" / "00001.tar").write_bytes(content)
    good, broken = list_source_shards(tmp_path / "in")
    assert [r.key for r in read_all(good)[0]] == ["a"]
    records, problems = read_all(broken)
    assert records == [] and len(problems) == 1 and problems[0].startswith(f"{broken.path}: ")


def test_a_shard_deleted_after_listing_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    shard = single_tar(tmp_path, GOOD_A)
    shard.path.unlink()
    records, problems = read_all(shard)
    assert records == [] and len(problems) == 1 and str(shard.path) in problems[0]


def test_reading_a_tar_streams_instead_of_loading_the_whole_file(tmp_path: Path) -> None:
    big = b"\xff" * 200_000
    shard = single_tar(tmp_path, [(f"{i:04d}.jpg", big) for i in range(100)])  # a 20 MB shard
    records = iter_source(shard)
    assert shard.path.stat().st_size >= 20_000_000
    first = next(records)
    assert first.key == "0000" and first.image == big
    position = _read_position_of(shard.path)
    assert position is not None and position < 2_000_000
    records.close()  # the handle is released when the consumer stops early
    assert _read_position_of(shard.path) is None


def _read_position_of(path: Path) -> int | None:
    """The file position of this process's open handle on ``path`` (Linux /proc), None when not open."""
    if not Path("/proc/self/fdinfo").is_dir():
        pytest.skip("needs /proc to see file positions")
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                return int(Path(f"/proc/self/fdinfo/{fd}").read_text().split("pos:")[1].split()[0])
        except OSError:
            continue
    return None


# ---------------------------------------------------------------- listing


def test_listing_refuses_a_missing_or_empty_directory_with_a_message_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found.*nowhere"):
        list_source_shards(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("no images here")
    (tmp_path / "empty" / ".00000.tar").write_bytes(b"")  # hidden: an unfinished write
    with pytest.raises(DataError, match=f"no .* in {tmp_path / 'empty'}$"):
        list_source_shards(tmp_path / "empty")


def test_status_parquets_alone_are_not_a_source(web_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "status").mkdir()
    for status in web_dir.glob("*.parquet"):
        (tmp_path / "status" / status.name).write_bytes(status.read_bytes())
    with pytest.raises(DataError, match="no "):
        list_source_shards(tmp_path / "status")
    with pytest.raises(DataError, match="parquet files with an image column"):
        list_source_shards(tmp_path / "status", fmt="parquet")


def test_an_explicit_format_is_honoured_and_an_unknown_one_refused(tmp_path: Path) -> None:
    write_tar(tmp_path / "in" / "00000.tar", GOOD_A)
    (tmp_path / "in" / "photo.jpg").write_bytes(image_bytes(5))
    assert [s.kind for s in list_source_shards(tmp_path / "in")] == ["webdataset"]
    assert [s.members for s in list_source_shards(tmp_path / "in", fmt="folder")] == [("photo.jpg",)]
    with pytest.raises(DataError, match="unknown source format 'zip'"):
        list_source_shards(tmp_path / "in", fmt="zip")


# ---------------------------------------------------------------- folders


def test_folder_input_is_found_recursively_chunked_in_path_order_and_read_with_sidecars(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    files = {"e.jpg": 1, "a.jpg": 2, "sub/b.png": 3, "sub/deep/c.webp": 4, "d.JPEG": 5}
    for relative, seed in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(
            image_bytes(seed, fmt={"png": "PNG", "webp": "WEBP"}.get(relative[-4:].strip("."), "JPEG"))
        )
    (root / "sub" / "b.txt").write_text("a person on a bike", encoding="utf-8")
    (root / "a.json").write_text('{"url": "https://example.invalid/a.jpg"}')
    (root / "notes.md").write_text("not an image")
    (root / ".hidden.jpg").write_bytes(image_bytes(6))
    (root / ".cache").mkdir()
    (root / ".cache" / "f.jpg").write_bytes(image_bytes(7))

    shards = list_source_shards(root, folder_shard_size=2)

    assert [(s.name, s.kind, s.members) for s in shards] == [
        ("00000", "folder", ("a.jpg", "d.JPEG")),
        ("00001", "folder", ("e.jpg", "sub/b.png")),
        ("00002", "folder", ("sub/deep/c.webp",)),
    ]
    records = [r for s in shards for r in read_all(s)[0]]
    assert [r.key for r in records] == ["a", "d", "e", "sub/b", "sub/deep/c"]
    assert all(r.error is None for r in records)
    assert [r.image for r in records] == [(root / m).read_bytes() for s in shards for m in s.members]
    by_key = {r.key: r for r in records}
    assert by_key["sub/b"].text == "a person on a bike" and by_key["a"].text is None
    assert by_key["a"].meta == {"url": "https://example.invalid/a.jpg"} and by_key["d"].meta == {}
    assert decode_image(by_key["sub/deep/c"].image).shape == (32, 48, 3)


def test_folder_bad_files_fail_one_by_one(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    (root / "a.jpg").write_bytes(image_bytes(1))
    (root / "a.png").write_bytes(image_bytes(2, fmt="PNG"))  # same name, other extension
    (root / "b.jpg").write_bytes(b"")
    (root / "c.jpg").write_bytes(image_bytes(3))
    (root / "c.txt").write_bytes(b"\xff\xfe bad")
    (shard,) = list_source_shards(root)
    records, problems = read_all(shard)
    assert [(r.key, r.error) for r in records] == [
        ("a", None),
        ("a", "duplicate_key"),
        ("b", "empty_file"),
        ("c", "bad_text"),
    ]
    assert problems == []


# ---------------------------------------------------------------- parquet


def test_webperson_parquet_with_a_struct_image_column(tmp_path: Path) -> None:
    images = [image_bytes(i) for i in range(5)]
    images[3] = b""
    structs = [{"bytes": b, "path": f"img/{i}.jpg"} for i, b in enumerate(images)]
    structs[1] = None
    table = pa.table(
        {
            "image": pa.array(structs, type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            "image_path": [f"img/{i}.jpg" for i in range(5)],
            "caption1": [f"first caption {i}" for i in range(5)],
            "caption2": [f"second caption {i}" for i in range(5)],
        }
    )
    (tmp_path / "in").mkdir()
    pq.write_table(table, tmp_path / "in" / "train-00000.parquet", row_group_size=2)
    (tmp_path / "in" / "train-00001.parquet").write_bytes(b"PAR1 not really parquet")

    good, broken = list_source_shards(tmp_path / "in")

    assert (good.name, good.kind) == ("train-00000", "parquet")
    records, problems = read_all(good)
    assert problems == []
    assert [(r.key, r.error) for r in records] == [
        ("img/0.jpg", None),
        ("img/1.jpg", "empty_file"),
        ("img/2.jpg", None),
        ("img/3.jpg", "empty_file"),
        ("img/4.jpg", None),
    ]
    assert [r.image for r in records if r.error is None] == [images[0], images[2], images[4]]
    assert records[2].text == "first caption 2" and records[2].meta["caption2"] == "second caption 2"
    assert read_all(broken)[0] == [] and str(broken.path) in read_all(broken)[1][0]


def test_parquet_with_a_binary_image_column_and_row_number_keys(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    images = [image_bytes(i) for i in range(3)]
    pq.write_table(
        pa.table({"key": ["k0", "k1", "k0"], "jpg": images, "caption": ["x", None, "z"], "width": [48, 48, 48]}),
        tmp_path / "in" / "a.parquet",
    )
    pq.write_table(pa.table({"image": images[:2], "text": ["p", "q"]}), tmp_path / "in" / "b.parquet")

    keyed, numbered = list_source_shards(tmp_path / "in", fmt="parquet")

    records = read_all(keyed)[0]
    assert [(r.key, r.error) for r in records] == [("k0", None), ("k1", None), ("k0", "duplicate_key")]
    assert records[0].image == images[0] and records[0].text == "x" and records[1].text is None
    assert records[0].meta == {"key": "k0", "caption": "x", "width": 48}
    assert [(r.key, r.text, r.image) for r in read_all(numbered)[0]] == [
        ("000000000", "p", images[0]),
        ("000000001", "q", images[1]),
    ]


# ---------------------------------------------------------------- decoding


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def test_decode_image_refuses_bad_bytes_with_the_right_reason() -> None:
    jpeg = image_bytes(0, size=(120, 90))
    cases = {
        "empty_file": b"",
        "corrupt_image": b"GIF89a but then nothing sensible" * 3,
        "truncated_image": jpeg[: len(jpeg) // 2],
    }
    for reason, data in cases.items():
        with pytest.raises(ImageDecodeError) as caught:
            decode_image(data)
        assert caught.value.reason == reason and caught.value.detail
    with pytest.raises(ImageDecodeError, match="too_large"):
        decode_image(jpeg, max_pixels=120 * 90 - 1)
    assert decode_image(jpeg, max_pixels=120 * 90).shape == (90, 120, 3)


def test_decode_image_refuses_a_decompression_bomb_before_allocating_it() -> None:
    bomb = _encode(Image.new("1", (7100, 7100)), "PNG")  # 50.4 Mpx in a few kB
    assert len(bomb) < 100_000
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(bomb)
    assert caught.value.reason == "too_large"


def test_a_cut_off_jpeg_is_refused_even_when_pillow_is_told_to_accept_truncation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jpeg = image_bytes(0, size=(120, 90))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    decode_image(jpeg)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # decoding changes no global state
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(jpeg[: len(jpeg) * 2 // 3])
    assert caught.value.reason == "truncated_image"
    assert decode_image(jpeg).shape == (90, 120, 3)


def test_decode_image_turns_every_mode_into_rgb() -> None:
    palette = Image.new("P", (4, 2))
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.putpixel((1, 0), 1)
    expected_palette = np.array(
        [[[10, 20, 30], [200, 100, 50], [10, 20, 30], [10, 20, 30]]] + [[[10, 20, 30]] * 4], np.uint8
    )
    cases = [
        (_encode(Image.new("L", (4, 2), 100), "PNG"), np.full((2, 4, 3), 100, np.uint8)),
        (_encode(palette, "PNG"), expected_palette),
        (
            _encode(Image.new("RGBA", (4, 2), (0, 0, 0, 0)), "PNG"),
            np.full((2, 4, 3), 255, np.uint8),
        ),  # transparent -> white
        (
            _encode(Image.new("RGBA", (4, 2), (40, 50, 60, 255)), "PNG"),
            np.tile(np.array([40, 50, 60], np.uint8), (2, 4, 1)),
        ),
        (_encode(Image.new("CMYK", (4, 2), (0, 0, 0, 0)), "JPEG", quality=100), np.full((2, 4, 3), 255, np.uint8)),
        (
            _encode(Image.fromarray(np.full((2, 4), 128 * 257, np.uint16)), "PNG"),
            np.full((2, 4, 3), 128, np.uint8),
        ),  # 16-bit grey
    ]
    for data, expected in cases:
        pixels = decode_image(data)
        assert pixels.dtype == np.uint8 and pixels.shape == expected.shape
        assert np.abs(pixels.astype(int) - expected).max() <= 1


def test_decode_image_is_deterministic_and_applies_exif_orientation() -> None:
    wide = Image.fromarray(np.random.default_rng(0).integers(0, 256, (10, 20, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees clockwise
    data = _encode(wide, "JPEG", exif=exif.tobytes(), quality=95)
    first, second = decode_image(data), decode_image(data)
    assert first.shape == (20, 10, 3)
    assert np.array_equal(first, second)


def test_image_decode_error_survives_pickling_between_workers() -> None:
    err = pickle.loads(pickle.dumps(ImageDecodeError("corrupt_image", "not an image")))
    assert (err.reason, err.detail, str(err)) == ("corrupt_image", "not an image", "corrupt_image: not an image")
    assert isinstance(err, ValueError)


def test_reasons_list_every_failure_once() -> None:
    expected = {
        "missing_image",
        "empty_file",
        "unsafe_member",
        "bad_text",
        "bad_json",
        "duplicate_key",
        "truncated_shard",
        "corrupt_image",
        "truncated_image",
        "too_large",
        "corrupt_row_group",
    }
    assert len(records.REASONS) == len(expected) and set(records.REASONS) == expected
    assert (records.UNSAFE_MEMBER, records.TRUNCATED_SHARD, records.TOO_LARGE) == (
        "unsafe_member",
        "truncated_shard",
        "too_large",
    )


# ---------------------------------------------------------------- caps on what is read


def test_an_image_member_over_the_byte_cap_fails_unread_and_the_next_sample_is_read(tmp_path: Path) -> None:
    big = image_bytes(2, size=(96, 64))
    shard = single_tar(tmp_path, [*GOOD_A, ("b.jpg", big), ("b.txt", b"x"), *GOOD_C])
    records = list(iter_source(shard, max_member_bytes=len(big) - 1))
    assert [(r.key, r.error) for r in records] == [("a", None), ("b", "too_large"), ("c", None)]
    assert str(len(big)) in records[1].detail
    assert [r.error for r in iter_source(shard, max_member_bytes=len(big))] == [None, None, None]


def test_a_json_sidecar_over_its_cap_fails_the_sample(tmp_path: Path) -> None:
    huge = json.dumps({"key": "b", "pad": [[]] * (sources.MAX_SIDECAR_BYTES // 3)}).encode("utf-8")
    shard = single_tar(tmp_path, [*GOOD_A, ("b.jpg", image_bytes(2)), ("b.json", huge), *GOOD_C])
    assert [(r.key, r.error) for r in read_all(shard)[0]] == [("a", None), ("b", "too_large"), ("c", None)]


def test_an_oversized_extended_tar_header_is_a_shard_problem_not_a_memory_spike(tmp_path: Path) -> None:
    path = tmp_path / "in" / "00000.tar"
    path.parent.mkdir()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in GOOD_A:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("b.jpg")
        info.pax_headers = {"comment": "x" * (2 << 20)}
        tar.addfile(info, io.BytesIO(b""))
    (shard,) = list_source_shards(tmp_path / "in")
    records, problems = read_all(shard)
    assert [(r.key, r.error) for r in records] == [("a", "truncated_shard")]  # the break comes before a is known whole
    assert len(problems) == 1 and "extended header of 2097169 bytes" in problems[0]


def test_folder_and_parquet_images_over_the_byte_cap_fail(tmp_path: Path) -> None:
    small, big = image_bytes(1, size=(8, 8)), image_bytes(2, size=(96, 64))
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "small.jpg").write_bytes(small)
    (tmp_path / "folder" / "big.jpg").write_bytes(big)
    (shard,) = list_source_shards(tmp_path / "folder")
    outcome = {r.key: r.error for r in iter_source(shard, max_member_bytes=len(small))}
    assert outcome == {"big": "too_large", "small": None}
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table({"key": ["small", "big"], "jpg": [small, big]}), tmp_path / "pq" / "a.parquet")
    (shard,) = list_source_shards(tmp_path / "pq")
    outcome = {r.key: r.error for r in iter_source(shard, max_member_bytes=len(small))}
    assert outcome == {"big": "too_large", "small": None}


def test_decode_image_refuses_more_pixels_than_its_cap_before_decoding() -> None:
    data = image_bytes(0, size=(100, 50), fmt="PNG")
    assert decode_image(data, max_pixels=5000).shape == (50, 100, 3)
    with pytest.raises(ImageDecodeError) as err:
        decode_image(data, max_pixels=4999)
    assert err.value.reason == "too_large"


# ---------------------------------------------------------------- corrupt Parquet row groups


def corrupt_row_group(path: Path, group: int) -> None:
    """Scramble the first page header of every column chunk of one row group (the rest of the file stays whole)."""
    metadata = pq.ParquetFile(path).metadata
    data = bytearray(path.read_bytes())
    for column in range(metadata.num_columns):
        chunk = metadata.row_group(group).column(column)
        start = chunk.dictionary_page_offset or chunk.data_page_offset
        for i in range(start, start + 24):
            data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def test_a_corrupt_parquet_row_group_fails_its_rows_and_the_readable_groups_are_read(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "a.parquet"
    images = [image_bytes(i, size=(8, 8)) for i in range(30)]
    pq.write_table(pa.table({"jpg": images, "caption": [f"c{i}" for i in range(30)]}), path, row_group_size=10)
    corrupt_row_group(path, 1)
    (shard,) = list_source_shards(tmp_path / "in")
    records, problems = read_all(shard)
    assert len(records) == 30
    assert [r.key for r in records] == [f"{i:09d}" for i in range(30)]
    assert [r.error for r in records] == [None] * 10 + ["corrupt_row_group"] * 10 + [None] * 10
    assert [r.image for r in records if r.error is None] == images[:10] + images[20:]
    assert len(problems) == 1 and "row group 1 (rows 10 to 19)" in problems[0]


# ---------------------------------------------------------------- gzip-compressed tars


def _gzip(path: Path, target: Path) -> Path:
    import gzip

    target.write_bytes(gzip.compress(path.read_bytes(), mtime=0))
    return target


def test_gzip_compressed_tars_are_listed_and_read_like_plain_ones(tmp_path: Path) -> None:
    plain = write_tar(tmp_path / "plain" / "00000.tar", [*GOOD_A, *sample("b", seed=2), *GOOD_C])
    (tmp_path / "in").mkdir()
    _gzip(plain, tmp_path / "in" / "00000.tar.gz")
    _gzip(plain, tmp_path / "in" / "00001.tgz")
    _gzip(plain, tmp_path / "in" / "00002.tar")  # gzip bytes behind a .tar name
    shards = list_source_shards(tmp_path / "in")
    assert [s.name for s in shards] == ["00000", "00001", "00002"]
    expected, _ = read_all(list_source_shards(tmp_path / "plain")[0])
    for shard in shards:
        assert read_all(shard) == (expected, [])


def test_a_cut_or_corrupt_gzip_tar_is_a_shard_problem_and_keeps_what_came_before(tmp_path: Path) -> None:
    plain = write_tar(tmp_path / "plain" / "00000.tar", [*GOOD_A, *sample("b", seed=2), *GOOD_C])
    (tmp_path / "in").mkdir()
    packed = _gzip(plain, tmp_path / "in" / "00000.tar.gz").read_bytes()
    (tmp_path / "in" / "00000.tar.gz").write_bytes(packed[: len(packed) * 2 // 3])
    (tmp_path / "in" / "00001.tar.gz").write_bytes(packed[:10] + bytes(200) + packed[210:])
    cut, corrupt = list_source_shards(tmp_path / "in")
    records, problems = read_all(cut)
    assert records[0].key == "a" and records[0].error is None and records[-1].error == "truncated_shard"
    assert len(problems) == 1 and str(cut.path) in problems[0]
    records, problems = read_all(corrupt)
    assert all(r.error is not None for r in records) and len(problems) == 1 and str(corrupt.path) in problems[0]


def test_a_gzip_tar_without_its_end_marker_is_reported(tmp_path: Path) -> None:
    plain = write_tar(tmp_path / "plain" / "00000.tar", [*GOOD_A, *GOOD_C])
    drop_end_marker(plain)
    (tmp_path / "in").mkdir()
    _gzip(plain, tmp_path / "in" / "00000.tar.gz")
    (shard,) = list_source_shards(tmp_path / "in")
    records, problems = read_all(shard)
    assert [r.error for r in records] == [None, "truncated_shard"] and "end-of-archive" in problems[0]


def test_a_tar_and_a_tar_gz_of_one_name_are_refused(tmp_path: Path) -> None:
    plain = write_tar(tmp_path / "in" / "00000.tar", GOOD_A)
    _gzip(plain, tmp_path / "in" / "00000.tar.gz")
    with pytest.raises(DataError, match=r"00000\.tar and .*00000\.tar\.gz would both be curated as shard '00000'"):
        list_source_shards(tmp_path / "in")


# ---------------------------------------------------------------- Parquet memory: oversized groups and cells


def test_a_parquet_row_group_over_its_byte_budget_fails_unread_and_the_others_are_read(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "a.parquet"
    small = [image_bytes(i, size=(8, 8)) for i in range(8)]
    big = [image_bytes(10 + i, size=(200, 200), fmt="PNG") for i in range(4)]
    images = small[:4] + big + small[4:]
    pq.write_table(pa.table({"jpg": images}), path, row_group_size=4, compression="none")
    (shard,) = list_source_shards(tmp_path / "in")
    problems: list[str] = []
    budget = sum(len(b) for b in big) - 1
    records = list(iter_source(shard, problems, max_row_group_bytes=budget))
    assert [r.error for r in records] == [None] * 4 + ["too_large"] * 4 + [None] * 4
    assert [r.key for r in records] == [f"{i:09d}" for i in range(12)]
    assert "row group 1 of a.parquet" in records[4].detail and "max_row_group_bytes" in records[4].detail
    assert len(problems) == 1 and "row group 1 (rows 4 to 7)" in problems[0] and "not read" in problems[0]
    assert [r.error for r in iter_source(shard, max_row_group_bytes=2 * budget)] == [None] * 12


def test_parquet_cells_over_the_byte_cap_are_never_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "in").mkdir()
    small, big = image_bytes(1, size=(8, 8)), image_bytes(2, size=(96, 64))
    table = pa.table({"key": ["s", "b"], "image": [{"bytes": small, "path": "s"}, {"bytes": big, "path": "b"}]})
    pq.write_table(table, tmp_path / "in" / "a.parquet")
    copied: list[int] = []
    real_cell = parquet_source._cell

    def spy(column, index):
        value = real_cell(column, index)
        copied.append(len(value["bytes"]))
        return value

    monkeypatch.setattr(parquet_source, "_cell", spy)
    (shard,) = list_source_shards(tmp_path / "in")
    outcome = {r.key: (r.error, r.detail) for r in iter_source(shard, max_member_bytes=len(small))}
    assert outcome["s"] == (None, "")
    assert outcome["b"][0] == "too_large" and f"{len(big)} bytes" in outcome["b"][1]
    assert copied == [len(small)]  # the big cell's bytes never reached Python


def test_parquet_problems_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "a.parquet"
    pq.write_table(pa.table({"jpg": [image_bytes(i, size=(8, 8)) for i in range(20)]}), path, row_group_size=10)
    corrupt_row_group(path, 0)
    (shard,) = list_source_shards(tmp_path / "in")
    _, problems = read_all(shard)
    assert problems and all("\n" not in p for p in problems)


def test_decoding_a_huge_image_header_warns_nothing_and_fails_on_the_cap() -> None:
    import warnings

    buffer = io.BytesIO()
    Image.new("L", (12000, 12000)).save(buffer, "PNG")  # 144 M pixels: past Pillow's own warning threshold
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        with pytest.raises(ImageDecodeError) as err:
            decode_image(buffer.getvalue())
    assert err.value.reason == "too_large"
