"""Detection backends and the SPEC 2 filter: ground-truth agreement, crops, YOLO11 parsing."""

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gadms.config import DetectorConfig, FilterConfig, SynthConfig
from gadms.curation.detect import (
    DetectorError,
    PrecomputedDetector,
    YoloDetector,
    box_iou,
    match_keypoints,
    parse_results,
)
from gadms.curation.filter import REJECT_REASONS, crop_box, crop_image, filter_decision
from gadms.curation.records import PersonDetection, SourceRecord
from gadms.synth.web import write_web_shards


@pytest.fixture(scope="module")
def web(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("web")
    write_web_shards(out, scenes=160, seed=3, synth=SynthConfig(shard_size=80), rules=FilterConfig(), progress=False)
    return out


def _metas(web: Path) -> list[dict]:
    metas = []
    for shard in sorted(web.glob("*.tar")):
        with tarfile.open(shard) as tar:
            metas += [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json")]
    return metas


def test_filter_decisions_match_the_synthetic_ground_truth_exactly(web):
    rules = FilterConfig()
    metas = _metas(web)
    records = [SourceRecord(m["key"], b"", meta=m) for m in metas]
    found = PrecomputedDetector().detect([None] * len(records), records)
    got, want = [], []
    for meta, people in zip(metas, found):
        truth = [p for p in meta["synthetic"]["people"] if p["box"] is not None]
        assert len(people) == len(truth)
        got += [filter_decision(p, rules) for p in people]
        want += [p["expected"] for p in truth]
    assert got == want
    assert set(want) == {"keep", *REJECT_REASONS}, "the synthetic world exercises every rule"


def test_thresholds_come_from_the_parameters():
    kps = np.zeros((17, 3))
    kps[[0, 1, 2, 5, 6, 11, 12, 13, 14], 2] = 0.9
    person = PersonDetection((0.0, 0.0, 50.0, 150.0), 0.9, kps)
    assert filter_decision(person, FilterConfig()) == "too_small"
    assert filter_decision(person, FilterConfig(min_short_side=40)) == "keep"
    assert filter_decision(person, FilterConfig(min_short_side=40, min_confidence=0.95)) == "low_conf"
    assert filter_decision(person, FilterConfig(min_short_side=40, keypoint_confidence=0.95)) == "few_keypoints"
    assert filter_decision(person, FilterConfig(min_short_side=40, min_head_keypoints=4)) == "no_head"


@pytest.mark.parametrize("box", [(10.4, 20.6, 60.2, 150.9), (0.0, 0.0, 40.0, 100.0), (590.0, 380.0, 640.0, 480.0)])
def test_crop_adds_the_margin_and_stays_inside_the_image(box):
    x0, y0, x1, y1 = crop_box(box, 0.1, 640, 480)
    w, h = box[2] - box[0], box[3] - box[1]
    assert x0 <= max(0, box[0] - 0.1 * w) + 1e-9 and y0 <= max(0, box[1] - 0.1 * h) + 1e-9
    assert x1 >= min(640, box[2] + 0.1 * w) - 1e-9 and y1 >= min(480, box[3] + 0.1 * h) - 1e-9
    assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
    assert x0 > box[0] - 0.1 * w - 1 and x1 < box[2] + 0.1 * w + 1  # no more than a pixel of rounding


def test_crop_pixels_equal_pil_crop():
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    box = crop_box((10.0, 5.0, 30.0, 45.0), 0.1, 64, 48)
    assert np.array_equal(crop_image(image, box), np.asarray(Image.fromarray(image).crop(box)))


def test_keypoints_go_to_the_best_overlapping_person():
    people = np.array([[0, 0, 10, 30], [100, 0, 110, 30]], dtype=float)
    poses = np.array([[101, 1, 111, 31], [200, 0, 210, 30], [0, 0, 10, 29]], dtype=float)
    kps = np.arange(3 * 17 * 3, dtype=float).reshape(3, 17, 3)
    out = match_keypoints(people, poses, kps)
    assert np.array_equal(out[0], kps[2]) and np.array_equal(out[1], kps[0])
    lonely = match_keypoints(people[:1], poses[1:2], kps[1:2])
    assert not lonely.any()
    assert box_iou(people, people).diagonal().tolist() == [1.0, 1.0]


def test_yolo_backend_needs_weights_and_says_which_path_to_set(tmp_path):
    with pytest.raises(DetectorError, match="curation.detector.detector_weights is not set"):
        YoloDetector(DetectorConfig(backend="yolo", pose_weights=Path("yolo11n-pose.yaml")))
    with pytest.raises(DetectorError, match="pose_weights: weights file not found"):
        YoloDetector(
            DetectorConfig(backend="yolo", detector_weights=Path("yolo11n.yaml"), pose_weights=tmp_path / "missing.pt")
        )


@pytest.mark.slow
def test_yolo11_results_are_parsed_into_the_interface(web, tmp_path):
    """Real ultralytics YOLO11 + YOLO11-Pose built from their YAML configs (random weights, no download)."""
    cfg = DetectorConfig(
        backend="yolo",
        detector_weights=Path("yolo11n.yaml"),
        pose_weights=Path("yolo11n-pose.yaml"),
        batch_size=2,
        device="cpu",
    )
    detector = YoloDetector(cfg, min_score=0.0, max_people=6)
    with tarfile.open(sorted(web.glob("*.tar"))[0]) as tar:
        images = [
            np.asarray(Image.open(tar.extractfile(m)).convert("RGB"))
            for m in tar.getmembers()
            if m.name.endswith(".jpg")
        ][:2]
    found = detector.detect(images, [SourceRecord(str(i), b"") for i in range(2)])
    assert len(found) == 2
    for image, people in zip(images, found):
        det = detector.run_model(detector.detector, [image], classes=[0])[0]
        pose = detector.run_model(detector.pose, [image])[0]
        direct = parse_results(det, pose)
        assert 0 < len(people) <= 6
        want = sorted(zip(det.boxes.conf.tolist(), det.boxes.xyxy.tolist()), key=lambda t: (-t[0], *t[1]))
        assert [p.score for p in people] == pytest.approx([s for s, _ in want], abs=1e-6)
        assert np.allclose([p.box for p in people], [b for _, b in want], atol=1e-3)
        assert all(p.keypoints.shape == (17, 3) for p in people)
        assert [p.box for p in direct] == [p.box for p in people]  # batched == one by one


def test_loading_the_yolo_detector_leaves_pil_untouched():
    """ultralytics patches PIL.Image.open to pip-install a HEIF plugin on unknown files; ours must not."""
    from PIL import Image

    from gadms.curation.detect import import_yolo

    before = Image.open
    import_yolo()
    assert Image.open is before

    assert Image.open is before
