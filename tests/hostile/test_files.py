"""One way in for every file: hostile files (FIFO, device, socket, links out, pixel bombs, cut-off data) are
skipped with a reason by every reader, never hang it, and ``gadms serve`` hands out only what was indexed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from gadms.config import AugmentConfig, ModelConfig, StreamConfig
from gadms.data.benchmarks import load_benchmark
from gadms.data.corpus_index import INDEX_NAME as CORPUS_INDEX
from gadms.data.corpus_index import read_corpus_index
from gadms.data.curated import iter_curated
from gadms.data.pipeline import image_transform
from gadms.data.samples import StreamTally
from gadms.data.shardplan import curated_index, steps_per_epoch
from gadms.data.streaming import UNDECODABLE, StreamingPairs, tally_from_dict
from gadms.model.backbone import tokenizer
from gadms.model.retrieval import Architecture, PersonRetrievalModel, save_model
from gadms.safe_files import NOT_REGULAR, OUTSIDE_ROOT, TOO_LARGE, TRUNCATED, UnsafeFile, read_file
from gadms.storage import parquet_file, parquet_metadata, parquet_schema
from tests.data._stream_corpus import write_corpus

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _png(width: int, height: int, rows: int | None = None) -> bytes:
    """A 1-bit grey PNG announcing ``width x height``; with ``rows``, only that many rows of data (a bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    scanlines = bytes((1 + (width + 7) // 8) * (height if rows is None else rows))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(scanlines, 9)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def _jpeg(seed: int) -> bytes:
    """A real 32x64 JPEG of noise."""
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


HUGE_PNG = _png(12000, 12000)  # a real 12000x12000 image (432 MB as RGB) in a few kB
BOMB_PNG = _png(100_000, 100_000, rows=4)  # small file, ten billion pixels announced
TRUNCATED_JPEG = _jpeg(99)[:600]


def _hostile_files(folder: Path, outside: Path) -> dict[str, str]:
    """Write one file of each hostile kind into ``folder``; name -> the reason it must be refused with."""
    os.mkfifo(folder / "fifo.jpg")
    (folder / "outside.jpg").symlink_to(outside)
    (folder / "zero.jpg").symlink_to("/dev/zero")
    (folder / "null.png").symlink_to("/dev/null")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "sock.png"))
    sock.close()
    (folder / "huge.png").write_bytes(HUGE_PNG)
    (folder / "bomb.png").write_bytes(BOMB_PNG)
    (folder / "cut.jpg").write_bytes(TRUNCATED_JPEG)
    refused = {"fifo.jpg": NOT_REGULAR, "zero.jpg": NOT_REGULAR, "null.png": NOT_REGULAR, "sock.png": NOT_REGULAR}
    return refused | {"outside.jpg": OUTSIDE_ROOT, "huge.png": TOO_LARGE, "bomb.png": TOO_LARGE, "cut.jpg": TRUNCATED}


def _within(seconds: float, call: Callable[[], Any]) -> Any:
    """``call()``'s result; fails the test (instead of hanging it) when it takes longer than ``seconds``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the test below
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: a hostile file hung the reader"
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """The tiny retrieval model as safetensors."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = PersonRetrievalModel(Architecture.from_config(ModelConfig(context_length=32))).eval()
    return save_model(model, tmp_path_factory.mktemp("model") / "model.safetensors")


@pytest.fixture()
def gallery(tmp_path) -> tuple[Path, dict[str, str]]:
    """Three good JPEGs and one file of every hostile kind; the hostile names with their expected reasons."""
    folder = tmp_path / "gallery"
    folder.mkdir()
    for k in range(3):
        (folder / f"good{k}.jpg").write_bytes(_jpeg(k))
    (tmp_path / "secret.jpg").write_bytes(_jpeg(7))  # a decodable image outside the gallery
    return folder, _hostile_files(folder, tmp_path / "secret.jpg")


@pytest.mark.parametrize(
    "name, reason",
    [("fifo.jpg", NOT_REGULAR), ("zero.jpg", NOT_REGULAR), ("sock.png", NOT_REGULAR), ("outside.jpg", OUTSIDE_ROOT)],
)
def test_the_one_opener_refuses_what_is_not_a_regular_file_of_its_folder(gallery, name, reason):
    folder, _ = gallery
    with pytest.raises(UnsafeFile) as refused:
        _within(10, lambda: read_file(folder / name, folder))
    assert refused.value.reason == reason and str(folder / name) in str(refused.value)
    assert read_file(folder / "good0.jpg", folder) == (folder / "good0.jpg").read_bytes()


def test_a_huge_png_is_refused_before_its_pixels_are_decoded(tmp_path):
    """Peak memory while refusing the 12000x12000 PNG stays far below its 144 MB of 8-bit grey pixels."""
    (tmp_path / "huge.png").write_bytes(HUGE_PNG)
    script = textwrap.dedent(f"""
        import resource
        from gadms.safe_files import UnsafeFile, open_image_file
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            open_image_file({str(tmp_path / "huge.png")!r}).close()
            reason = "decoded"
        except UnsafeFile as exc:
            reason = exc.reason
        print(reason, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    """)
    done = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    reason, grown_kib = done.stdout.split()
    assert reason == TOO_LARGE and int(grown_kib) < 40_000, done.stdout + done.stderr


def test_gadms_index_skips_every_hostile_file_with_its_reason_and_the_counts_add_up(gallery, tmp_path, model_file):
    folder, refused = gallery
    command = [sys.executable, "-m", "gadms", "index", "--out", str(tmp_path / "index"), "--images", str(folder)]
    command += ["--model", str(model_file), "--device", "cpu", "--quiet"]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)  # a FIFO must not hang it
    assert done.returncode == 0 and "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    found = len(refused) + 3
    assert f"{found} found = 0 already indexed + 3 added + 0 changed + {len(refused)} skipped" in done.stdout
    expected = Counter(reason.replace("_", " ") for reason in refused.values())
    for reason, count in expected.items():
        assert f"skipped {count} ({reason})" in done.stdout, done.stdout
    sources = [json.loads(line)["source"] for line in (tmp_path / "index" / "sources.jsonl").read_text().splitlines()]
    assert sorted(Path(s).name for s in sources) == ["good0.jpg", "good1.jpg", "good2.jpg"]


def test_the_benchmark_reader_skips_every_hostile_image_with_a_reason(gallery, tmp_path):
    folder, refused = gallery
    bench = tmp_path / "CUHK-PEDES"
    (bench / "imgs").mkdir(parents=True)
    shutil.move(folder, bench / "imgs" / "p")
    names = ["good0.jpg", "good1.jpg", "good2.jpg", *refused]
    records = [
        {"split": "test", "id": k, "file_path": f"p/{name}", "captions": [f"person {k} in a coat"]}
        for k, name in enumerate(names)
    ]
    (bench / "reid_raw.json").write_text(json.dumps(records))
    data = _within(60, lambda: load_benchmark("cuhk-pedes", tmp_path, "test", check_images=True))
    assert [p.name for p in data.images] == ["good0.jpg", "good1.jpg", "good2.jpg"]
    skipped = {names[p.index]: p.reason for p in data.problems}
    assert set(skipped) == set(refused) and len(data.images) + len(data.problems) == len(names)
    assert skipped["fifo.jpg"] == skipped["sock.png"] == "not a regular file"
    assert skipped["outside.jpg"] == skipped["zero.jpg"] == "bad image path"  # links out of imgs/
    assert skipped["huge.png"] == skipped["bomb.png"] == "too large" and skipped["cut.jpg"] == "corrupt image"


def test_the_streaming_loader_skips_pixel_bombs_and_cut_off_images_and_counts_them(tmp_path):
    corrupt = {"0000000001.jpg": HUGE_PNG, "0000000004.jpg": BOMB_PNG, "0000000007.jpg": TRUNCATED_JPEG}
    root = write_corpus(tmp_path, [10], corrupt=corrupt)
    stream = StreamingPairs(
        curated_index(root), image_transform(32, 16, AugmentConfig()), tokenizer(16), 0, StreamConfig(slots=1)
    )
    stream.plan(0, 0, 1, 4, steps_per_epoch(stream.total_pairs, 4))
    batches = _within(120, lambda: list(stream))
    tally = tally_from_dict(batches[-1][-1]["state"]["tally"])
    assert tally.skipped == Counter({UNDECODABLE: 6})  # both captions of each of the three images
    assert len(batches) == 5 and all(b[0].shape == (4, 3, 32, 16) for b in batches)  # every step full, in step


def test_shards_that_are_not_regular_files_are_counted_as_bad_never_read(tmp_path):
    root = write_corpus(tmp_path, [3])
    os.mkfifo(root / "00001.tar")
    (root / "00002.tar").symlink_to("/dev/zero")
    tally = StreamTally()
    samples = _within(30, lambda: list(iter_curated(root, tally)))
    assert len(samples) == 3 and tally.shards == 3
    assert sorted(Path(line.split(":")[0]).name for line in tally.bad_shards) == ["00001.tar", "00002.tar"]
    assert all("not a regular file" in line for line in tally.bad_shards), tally.bad_shards


def test_parquet_shards_and_the_corpus_index_refuse_a_fifo_instead_of_waiting_on_it(tmp_path):
    os.mkfifo(tmp_path / "part-0.parquet")
    for read in (parquet_file, parquet_metadata, parquet_schema):
        with pytest.raises(UnsafeFile, match="not a regular file"):
            _within(10, lambda: read(tmp_path / "part-0.parquet"))
    os.mkfifo(tmp_path / CORPUS_INDEX)
    with pytest.raises(UnsafeFile, match="not a regular file"):
        _within(10, lambda: read_corpus_index(tmp_path))


# ---------------------------------------------------------------- gadms serve


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def served(tmp_path, model_file):
    """``gadms serve`` over an index of four images; yields (base URL, {file name: row}, gallery folder)."""
    folder = tmp_path / "served"
    folder.mkdir()
    for k in range(4):
        (folder / f"img{k}.jpg").write_bytes(_jpeg(10 + k))
    index = tmp_path / "index"
    command = [sys.executable, "-m", "gadms", "index", "--out", str(index), "--images", str(folder)]
    subprocess.run(command + ["--model", str(model_file), "--device", "cpu", "--quiet"], env=ENV, check=True)
    rows = {Path(json.loads(line)["source"]).name: row for row, line in enumerate(open(index / "sources.jsonl"))}
    port = _free_port()
    serve = [sys.executable, "-m", "gadms", "serve", str(index), "--port", str(port), "--device", "cpu"]
    proc = subprocess.Popen(serve, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(base + "/api/info", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("gadms serve did not answer within 60 s")
    yield base, rows, folder
    proc.terminate()
    proc.wait(timeout=10)


def test_serve_hands_out_only_unchanged_indexed_images(served):
    base, rows, folder = served
    assert httpx.get(f"{base}/image/{rows['img0.jpg']}").content == (folder / "img0.jpg").read_bytes()
    (folder / "img1.jpg").unlink()
    (folder / "img1.jpg").symlink_to("/etc/passwd")  # an indexed image replaced by a link to a system file
    with open(folder / "img2.jpg", "ab") as handle:
        handle.write(b"\0")  # modified since indexing
    stat = os.stat(folder / "img3.jpg")
    (folder / "img3.jpg").write_bytes(_jpeg(99)[: stat.st_size].ljust(stat.st_size, b"\0"))  # same size, new bytes
    for name in ("img1.jpg", "img2.jpg", "img3.jpg"):
        answer = httpx.get(f"{base}/image/{rows[name]}")
        assert answer.status_code == 404 and b"root:" not in answer.content, (name, answer.text)
    for path in ("/image/4", "/image/-1", "/image/0x1", "/image/..%2F..%2Fetc%2Fpasswd", "/image/%2e%2e/etc/passwd"):
        answer = httpx.get(base + path)
        assert answer.status_code == 404 and b"root:" not in answer.content, (path, answer.text)
    assert httpx.get(f"{base}/image/{rows['img0.jpg']}").status_code == 200


def test_the_params_caps_are_every_readers_caps(tmp_path, model_file):
    """``curation.source.max_image_pixels`` / ``max_member_bytes`` act in `gadms index` too, not only in curation:
    the same three good images are indexed under the defaults and skipped as too large under smaller caps."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        (folder / f"good{i}.jpg").write_bytes(_jpeg(i))  # 32x64 = 2048 pixels, a few kB each
    base = [sys.executable, "-m", "gadms", "index", "--images", str(folder), "--model", str(model_file)]
    base += ["--device", "cpu", "--quiet"]
    caps = {"defaults": [], "pixels": ["curation.source.max_image_pixels=2047"]}
    caps["bytes"] = ["curation.source.max_member_bytes=100"]
    outputs = {}
    for name, sets in caps.items():
        command = base + ["--out", str(tmp_path / name)] + [word for s in sets for word in ("--set", s)]
        done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
        assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
        outputs[name] = done.stdout
    assert "3 added + 0 changed + 0 skipped" in outputs["defaults"], outputs["defaults"]
    for name in ("pixels", "bytes"):
        assert "0 added + 0 changed + 3 skipped" in outputs[name], outputs[name]
        assert "skipped 3 (too large)" in outputs[name], outputs[name]
