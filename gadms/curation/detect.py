"""Person detection and pose (SPEC 2) behind one interface, with two backends.

* ``precomputed``: boxes and keypoints already in the sample's JSON, either the
  synthetic world's ground truth (``synthetic.people``) or the output of a
  detection job run elsewhere (``detections``: ``[{"box", "score", "keypoints"}]``).
* ``yolo``: an ultralytics YOLO11 detector for people plus YOLO11-Pose for the
  17 COCO keypoints, batched, on the best device available. Pose instances are
  matched to person boxes by IoU.

Both return, per image, a list of :class:`PersonDetection` in a stable order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from gadms.config import DetectorConfig
from gadms.curation.records import PersonDetection, SourceRecord
from gadms.devices import check_device

NUM_KEYPOINTS = 17
PERSON_CLASS = 0  # COCO class id of "person"
# Synthetic ground truth marks keypoints 0 (outside), 1 (occluded), 2 (visible);
# as confidences they sit below and above any sensible visibility threshold.
_VISIBILITY_CONFIDENCE = {0: 0.0, 1: 0.1, 2: 1.0}
_MAX_COORDINATE = 1e7  # pixels; far beyond any decodable image, keeps crop arithmetic finite


class DetectorError(ValueError):
    """The detector cannot be built or run; the message is one line."""


class Detector(Protocol):
    """Finds people and their keypoints in a batch of images."""

    def detect(self, images: Sequence[np.ndarray], records: Sequence[SourceRecord]) -> list[list[PersonDetection]]:
        """Detections for each image (RGB uint8 arrays), in input order."""
        ...


def build_detector(cfg: DetectorConfig) -> Detector:
    """The detector named by ``cfg.backend``.

    Args:
        cfg: ``curation.detector`` parameters.

    Returns:
        A :class:`PrecomputedDetector` or a :class:`YoloDetector`.
    """
    if cfg.backend == "precomputed":
        return PrecomputedDetector()
    return YoloDetector(cfg)


class PrecomputedDetector:
    """Reads detections stored in each sample's JSON; no model runs."""

    def detect(self, images: Sequence[np.ndarray], records: Sequence[SourceRecord]) -> list[list[PersonDetection]]:
        """The detections recorded in each record's metadata (empty when it has none)."""
        return [precomputed_detections(record.meta) for record in records]


class BadDetectionRecord(ValueError):
    """A sample's ``detections`` or ``synthetic`` JSON is malformed; the message says which entry and why."""


def precomputed_detections(meta: dict[str, Any]) -> list[PersonDetection]:
    """Parse ``detections`` or the synthetic ground truth of one sample.

    Args:
        meta: the sample's parsed JSON.

    Returns:
        One detection per person present in the image; synthetic people whose
        box is ``null`` (entirely outside the picture) are not detections.

    Raises:
        BadDetectionRecord: an entry is malformed (box not 4 finite numbers with x0 < x1 and y0 < y1, score not
            in [0, 1], keypoints not 17 finite triples, a synthetic visibility other than 0, 1 or 2, ...).
    """
    if "detections" in meta and meta["detections"] is not None:
        entries = _list_of_objects(meta["detections"], "detections")
        return [_detection_from_dict(d, f"detections[{i}]") for i, d in enumerate(entries)]
    synthetic = meta.get("synthetic")
    if synthetic is None:
        return []
    if not isinstance(synthetic, dict):
        raise BadDetectionRecord(f"'synthetic' must be an object, got {_shown(synthetic)}")
    people = _list_of_objects(synthetic.get("people") or [], "synthetic.people")
    return [_synthetic_person(p, f"synthetic.people[{i}]") for i, p in enumerate(people) if p.get("box") is not None]


def _synthetic_person(person: dict[str, Any], where: str) -> PersonDetection:
    """One person of the synthetic ground truth (keypoint visibility 0, 1, 2 as confidences)."""
    kps = _keypoints(person.get("keypoints"), where)
    visibility = kps[:, 2]
    if not np.isin(visibility, list(_VISIBILITY_CONFIDENCE)).all():
        raise BadDetectionRecord(f"{where}.keypoints: visibility must be 0, 1 or 2, got {_shown(visibility.tolist())}")
    kps[:, 2] = [_VISIBILITY_CONFIDENCE[int(v)] for v in visibility]
    attributes = {**_attributes(person.get("identity", {}), f"{where}.identity"), "pose": person.get("pose")}
    _attributes({"pose": attributes["pose"]}, where)
    return PersonDetection(_box(person.get("box"), where), _score(person.get("score"), where), kps, attributes)


def _detection_from_dict(entry: dict[str, Any], where: str = "detection") -> PersonDetection:
    """One ``{"box", "score", "keypoints"[, "attributes"]}`` entry of a detection job's output."""
    raw = entry.get("keypoints")
    kps = np.zeros((NUM_KEYPOINTS, 3)) if raw is None or (isinstance(raw, list) and not raw) else _keypoints(raw, where)
    attributes = entry.get("attributes")
    attributes = None if attributes is None else _attributes(attributes, f"{where}.attributes")
    return PersonDetection(_box(entry.get("box"), where), _score(entry.get("score"), where), kps, attributes)


def _attributes(value: Any, where: str) -> dict[str, Any]:
    """Person attributes: an object of JSON scalars (what the captioners can put into words)."""
    if not isinstance(value, dict):
        raise BadDetectionRecord(f"{where} must be an object, got {_shown(value)}")
    for key, item in value.items():
        if item is not None and not isinstance(item, (str, int, float, bool)):
            raise BadDetectionRecord(f"{where}.{key} must be a string, number or null, got {_shown(item)}")
    return value


def _list_of_objects(value: Any, where: str) -> list[dict[str, Any]]:
    """``value`` if it is a list of JSON objects."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise BadDetectionRecord(f"{where!r} must be a list of objects, got {_shown(value)}")
    return value


def _numbers(value: Any) -> np.ndarray | None:
    """``value`` as a float array when it is a (nested) list of finite JSON numbers (not booleans), else ``None``."""

    def numeric(v: Any) -> bool:
        if isinstance(v, list):
            return all(numeric(x) for x in v)
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not isinstance(value, list) or not numeric(value):
        return None
    try:
        array = np.asarray(value, dtype=np.float64)
    except (ValueError, OverflowError):  # ragged lists, integers beyond float range
        return None
    return array if np.isfinite(array).all() else None


def _box(value: Any, where: str) -> tuple[float, float, float, float]:
    """A box of four finite numbers with positive width and height, within any sensible image."""
    box = _numbers(value)
    if (
        box is None
        or box.shape != (4,)
        or not (box[0] < box[2] and box[1] < box[3])
        or box.max() > _MAX_COORDINATE
        or box.min() < -_MAX_COORDINATE
    ):
        raise BadDetectionRecord(f"{where}.box must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1, got {_shown(value)}")
    x0, y0, x1, y1 = (float(v) for v in box)
    return x0, y0, x1, y1


def _score(value: Any, where: str) -> float:
    """A confidence in [0, 1]."""
    score = _numbers([value])
    if score is None or not 0.0 <= score[0] <= 1.0:
        raise BadDetectionRecord(f"{where}.score must be a number in [0, 1], got {_shown(value)}")
    return float(score[0])


def _keypoints(value: Any, where: str) -> np.ndarray:
    """17 keypoints of three finite numbers each (flat or nested)."""
    kps = _numbers(value)
    if kps is None or kps.size != NUM_KEYPOINTS * 3 or np.abs(kps).max() > _MAX_COORDINATE:
        raise BadDetectionRecord(f"{where}.keypoints must be 17 [x, y, confidence] triples, got {_shown(value)}")
    return kps.reshape(NUM_KEYPOINTS, 3).copy()


def _shown(value: Any, limit: int = 60) -> str:
    """A short rendering of a bad value for a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda:0`` when a GPU is present, else ``mps``, else ``cpu``; other names pass through."""
    if name != "auto":
        return check_device(name, "curation.detector.device")
    import torch

    if torch.cuda.is_available():
        return "cuda:0"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _model_source(path: Path | None, key: str) -> str:
    """Check a weights path from params; ``*.yaml`` builds an untrained model from ultralytics' configs."""
    if path is None:
        raise DetectorError(
            f"curation.detector.{key} is not set: put the local path of the YOLO11 weights (.pt) in params.yaml"
        )
    text = str(path)
    if text.endswith((".yaml", ".yml")) and not Path(text).exists():
        return text  # an ultralytics model config name such as yolo11n.yaml: built with random weights
    if not Path(text).is_file():
        raise DetectorError(f"curation.detector.{key}: weights file not found: {text} (set it to a local YOLO11 .pt)")
    return text


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a (N, 4)`` and ``b (M, 4)`` in ``x0, y0, x1, y1`` form."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match_keypoints(
    person_boxes: np.ndarray, pose_boxes: np.ndarray, pose_keypoints: np.ndarray, min_iou: float = 0.5
) -> np.ndarray:
    """Give each person box the keypoints of its best-overlapping pose instance.

    Greedy one-to-one matching by IoU (highest first). A person with no pose
    instance above ``min_iou`` gets all-zero keypoints, so the pose rules reject it.

    Args:
        person_boxes: ``(N, 4)`` detector boxes.
        pose_boxes: ``(M, 4)`` boxes of the pose model's instances.
        pose_keypoints: ``(M, 17, 3)`` their keypoints.
        min_iou: the least overlap for a match.

    Returns:
        ``(N, 17, 3)`` keypoints.
    """
    out = np.zeros((len(person_boxes), NUM_KEYPOINTS, 3))
    iou = box_iou(person_boxes, pose_boxes)
    taken_p, taken_q = set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        p, q = np.unravel_index(flat, iou.shape)
        if iou[p, q] < min_iou:
            break
        if p in taken_p or q in taken_q:
            continue
        out[p] = pose_keypoints[q]
        taken_p.add(p)
        taken_q.add(q)
    return out


def import_yolo() -> Any:
    """ultralytics' YOLO class, with PIL left as it was.

    Importing ultralytics replaces ``PIL.Image.open`` with a wrapper that, on the
    first file PIL cannot identify, tries to pip-install ``pi-heif`` and retry. At
    web scale unidentifiable files are normal: they must fail as one sample with
    their reason, never reach for the network. The original function is restored.
    """
    from PIL import Image

    original = Image.open
    from ultralytics import YOLO

    Image.open = original
    return YOLO


class YoloDetector:
    """YOLO11 person detector + YOLO11-Pose keypoints (ultralytics), batched.

    ``min_score`` is the detector's own floor (boxes below it are not people at
    all); the SPEC confidence rule (0.85) is applied later by the filter so that
    rejected boxes keep their reason.
    """

    def __init__(self, cfg: DetectorConfig, min_score: float = 0.25, max_people: int = 50):
        YOLO = import_yolo()
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.min_score = min_score
        self.max_people = max_people
        self.detector = YOLO(_model_source(cfg.detector_weights, "detector_weights"))
        self.pose = YOLO(_model_source(cfg.pose_weights, "pose_weights"))

    def run_model(self, model: Any, images: list[np.ndarray], **kwargs: Any) -> list[Any]:
        """``model`` (:attr:`detector` or :attr:`pose`) on RGB ``images`` at this detector's score, count and device;
        ultralytics' results, one per image.
        """
        # ultralytics reads numpy images as BGR
        batch = [np.ascontiguousarray(im[:, :, ::-1]) for im in images]
        return model.predict(
            batch,
            conf=self.min_score,
            max_det=self.max_people,
            device=self.device,
            verbose=False,
            batch=self.cfg.batch_size,
            **kwargs,
        )

    def detect(self, images: Sequence[np.ndarray], records: Sequence[SourceRecord]) -> list[list[PersonDetection]]:
        """Run both models on ``images`` and join their outputs per person."""
        if not images:
            return []
        found = self.run_model(self.detector, list(images), classes=[PERSON_CLASS])
        poses = self.run_model(self.pose, list(images))
        return [parse_results(det, pose) for det, pose in zip(found, poses)]


def parse_results(detections: Any, poses: Any) -> list[PersonDetection]:
    """Turn one image's ultralytics detector and pose results into :class:`PersonDetection` objects.

    Args:
        detections: the detector's ``Results`` for the image.
        poses: the pose model's ``Results`` for the image.

    Returns:
        People (class 0 only), ordered by descending score then position.
    """
    boxes = detections.boxes
    xyxy = boxes.xyxy.cpu().numpy().astype(np.float64)
    scores = boxes.conf.cpu().numpy().astype(np.float64)
    classes = boxes.cls.cpu().numpy().astype(int)
    keep = classes == PERSON_CLASS
    xyxy, scores = xyxy[keep], scores[keep]
    if poses.keypoints is not None and len(poses.boxes):
        pose_boxes = poses.boxes.xyxy.cpu().numpy().astype(np.float64)
        pose_kps = poses.keypoints.data.cpu().numpy().astype(np.float64).reshape(-1, NUM_KEYPOINTS, 3)
    else:
        pose_boxes, pose_kps = np.zeros((0, 4)), np.zeros((0, NUM_KEYPOINTS, 3))
    kps = match_keypoints(xyxy, pose_boxes, pose_kps)
    order = sorted(range(len(xyxy)), key=lambda i: (-scores[i], *xyxy[i]))
    boxes = [(float(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in xyxy]
    return [PersonDetection(boxes[i], float(scores[i]), kps[i]) for i in order]
