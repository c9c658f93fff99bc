"""Benchmarks with hostile or broken records: image paths that leave the dataset root, empty, corrupt and
truncated images. They are skipped with a count when the split is loaded; an image that breaks later (in a
DataLoader worker) is reported in one line naming the file."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from gadms.cli import app
from gadms.config import AugmentConfig, ModelConfig, SynthConfig
from gadms.data.benchmarks import BENCHMARKS, FORMATS, load_benchmark
from gadms.data.pipeline import Pair, PairDataset, image_transform
from gadms.eval.evaluate import encode_images
from gadms.model.backbone import tokenizer
from gadms.model.retrieval import Architecture, PersonRetrievalModel, save_model
from gadms.problems import DataError, ImageError
from gadms.synth.benchmark import write_benchmark


def _image(fmt: str = "JPEG") -> bytes:
    pixels = (np.random.default_rng(0).random((64, 32, 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def _write(root: Path, name: str, paths: list[str]) -> Path:
    """A benchmark with one test record per path (identity = position); returns its directory."""
    fmt = FORMATS[name]
    bench = root / fmt.directory
    (bench / "imgs").mkdir(parents=True, exist_ok=True)
    records = [{"id": i, fmt.image_key: p, "captions": [f"a person {i}"], "split": "test"} for i, p in enumerate(paths)]
    (bench / fmt.annotation).write_text(json.dumps(records), encoding="utf-8")
    return bench


@pytest.mark.parametrize("name", BENCHMARKS)
def test_image_paths_leaving_the_dataset_root_are_bad_records(tmp_path, name):
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(_image())  # exists and decodes: only the path makes it bad
    escapes = [
        "../../secret.jpg",
        "p/../../../secret.jpg",
        str(outside),
        "C:\\secret.jpg",
        "\\\\host\\share\\x.jpg",
        "a\0b.jpg",
    ]
    bench = _write(tmp_path, name, ["p/0.jpg", *escapes])
    (bench / "imgs" / "p").mkdir()
    (bench / "imgs" / "p" / "0.jpg").write_bytes(_image())

    data = load_benchmark(name, tmp_path, "test")

    assert [p.name for p in data.images] == ["0.jpg"]
    assert [(p.index, p.reason) for p in data.problems] == [(i, "bad image path") for i in range(1, 1 + len(escapes))]
    assert "leaves the dataset root: '../../secret.jpg'" in data.problems[0].detail
    assert f"{len(escapes)} bad records skipped ({len(escapes)} bad image path)" in data.report()
    with pytest.raises(DataError, match=r"record 1: '\w+' leaves the dataset root"):
        load_benchmark(name, tmp_path, "test", strict=True)


def test_any_dotdot_component_is_refused(tmp_path):
    """No benchmark spells its paths with '..'; refusing every one leaves no way to climb out."""
    bench = _write(tmp_path, "cuhk-pedes", ["p/q/../0.jpg"])
    (bench / "imgs" / "p" / "q").mkdir(parents=True)
    (bench / "imgs" / "p" / "0.jpg").write_bytes(_image())
    data = load_benchmark("cuhk-pedes", tmp_path, "test")
    assert data.images == [] and data.problems[0].reason == "bad image path"


@pytest.mark.parametrize("check_images", [True, False])
@pytest.mark.parametrize("name", BENCHMARKS)
def test_symbolic_links_out_of_the_image_folder_are_bad_records(tmp_path, name, check_images):
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(_image())  # a valid image: only where the link points makes it bad
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "key.jpg").write_bytes(_image())
    bench = _write(tmp_path, name, ["p/0.jpg", "p/evil.jpg", "etc/key.jpg", "p/inside.jpg", "loop/x.jpg"])
    (bench / "imgs" / "p").mkdir()
    (bench / "imgs" / "p" / "0.jpg").write_bytes(_image())
    (bench / "imgs" / "p" / "evil.jpg").symlink_to(outside)  # a file link pointing out
    (bench / "imgs" / "etc").symlink_to(secrets, target_is_directory=True)  # a folder link pointing out
    (bench / "imgs" / "p" / "inside.jpg").symlink_to(bench / "imgs" / "p" / "0.jpg")  # a link that stays in: fine
    (bench / "imgs" / "loop").symlink_to(bench / "imgs" / "loop")

    data = load_benchmark(name, tmp_path, "test", check_images=check_images)

    assert [p.name for p in data.images] == ["0.jpg", "inside.jpg"]
    assert [(p.index, p.reason) for p in data.problems] == [
        (1, "bad image path"),
        (2, "bad image path"),
        (4, "bad image path"),
    ]
    assert "leaves the dataset root through a symbolic link: 'p/evil.jpg'" in data.problems[0].detail
    assert "3 bad records skipped (3 bad image path)" in data.report()
    with pytest.raises(DataError, match=r"record 1: '\w+' leaves the dataset root through a symbolic link"):
        load_benchmark(name, tmp_path, "test", strict=True, check_images=check_images)


def test_an_image_folder_that_is_itself_a_link_still_reads(tmp_path):
    """imgs/ linked to another disk is a common layout: its own files stay inside it."""
    elsewhere = tmp_path / "disk" / "imgs"
    (elsewhere / "p").mkdir(parents=True)
    (elsewhere / "p" / "0.jpg").write_bytes(_image())
    bench = _write(tmp_path / "data", "cuhk-pedes", ["p/0.jpg"])
    (bench / "imgs").rmdir()
    (bench / "imgs").symlink_to(elsewhere, target_is_directory=True)
    data = load_benchmark("cuhk-pedes", tmp_path / "data", "test")
    assert [p.name for p in data.images] == ["0.jpg"] and data.problems == []


@pytest.mark.parametrize("name", BENCHMARKS)
def test_empty_corrupt_and_truncated_images_are_skipped_with_a_count(tmp_path, name):
    jpeg, png = _image("JPEG"), _image("PNG")
    files = {
        "ok.jpg": jpeg,
        "ok.png": png,
        "empty.jpg": b"",
        "text.jpg": b"not an image at all",
        "cut.jpg": jpeg[: len(jpeg) // 2],
        "cut.png": png[: len(png) // 2],
    }
    bench = _write(tmp_path, name, list(files))
    for file, content in files.items():
        (bench / "imgs" / file).write_bytes(content)

    data = load_benchmark(name, tmp_path, "test")

    assert [p.name for p in data.images] == ["ok.jpg", "ok.png"]
    reasons = [(p.index, p.reason) for p in data.problems]
    assert reasons == [(2, "empty image"), (3, "corrupt image"), (4, "corrupt image"), (5, "corrupt image")]
    assert "4 bad records skipped (3 corrupt image, 1 empty image)" in data.report()
    assert str(bench / "imgs" / "empty.jpg") in data.problems[0].detail
    with pytest.raises(DataError, match=r"record 2: image file is empty \(0 bytes\): .*empty\.jpg"):
        load_benchmark(name, tmp_path, "test", strict=True)
    assert load_benchmark(name, tmp_path, "test", check_images=False).problems == []


def _image_error(call) -> str:
    """The one-line ImageError ``call()`` raises (the exception is dropped here, so the loader's workers stop)."""
    try:
        call()
    except ImageError as exc:
        return str(exc)
    raise AssertionError("no ImageError raised")


@pytest.fixture()
def broken_after_loading(tmp_path):
    """A split that loaded fine, then one of its images was overwritten with garbage."""
    bench = _write(tmp_path, "cuhk-pedes", ["a.jpg", "b.jpg", "c.jpg"])
    for file in ("a.jpg", "b.jpg", "c.jpg"):
        (bench / "imgs" / file).write_bytes(_image())
    data = load_benchmark("cuhk-pedes", tmp_path, "test")
    (bench / "imgs" / "b.jpg").write_bytes(b"\xff\xd8garbage")
    return data, bench / "imgs" / "b.jpg"


def test_image_failing_in_a_dataloader_worker_names_the_file(broken_after_loading):
    data, broken = broken_after_loading
    pairs = [Pair(image, "a person", i) for i, image in enumerate(data.images)]
    dataset = PairDataset(pairs, image_transform(32, 16, AugmentConfig()), tokenizer(8))
    message = _image_error(lambda: list(DataLoader(dataset, batch_size=3, num_workers=1)))
    assert "\n" not in message
    assert message.startswith(f"{broken}: cannot decode image (UnidentifiedImageError")
    assert message.endswith("(in DataLoader worker process 0)")


def test_gallery_image_failing_in_a_worker_names_the_file(broken_after_loading):
    data, broken = broken_after_loading
    torch.manual_seed(0)
    model = PersonRetrievalModel(Architecture.from_config(ModelConfig(context_length=8))).eval()
    message = _image_error(lambda: encode_images(model, data.images, batch=2, workers=1))
    assert message.startswith(f"{broken}: cannot decode image") and message.endswith("worker process 0)")
    message = _image_error(lambda: PairDataset([Pair(b"garbage", "a", 0)], image_transform(32, 16), tokenizer(8))[0])
    assert message.startswith("image of training pair 0 (7 bytes): cannot decode image")


def test_evaluate_skips_an_empty_image_and_reports_it(tmp_path):
    root = write_benchmark(tmp_path / "bench", 6, 0, SynthConfig(), progress=False).root
    records = json.loads((root / "reid_raw.json").read_text())
    test_images = [r["file_path"] for r in records if r["split"] == "test"]
    (root / "imgs" / test_images[0]).write_bytes(b"")
    torch.manual_seed(0)
    model = save_model(PersonRetrievalModel(Architecture.from_config(ModelConfig())), tmp_path / "model.safetensors")

    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(model),
            "--benchmark",
            "cuhk-pedes",
            "--root",
            str(tmp_path / "bench"),
            "--device",
            "cpu",
            "--json",
        ],
    )

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{") :])["cuhk-pedes test text-to-image"]["R1"] >= 0
