"""The records that flow between curation stages: source samples, detections, caption requests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Optional

import numpy as np

if TYPE_CHECKING:
    from gadms.storage import Location


# Why a source sample cannot be used (SourceRecord.error).
MISSING_IMAGE = "missing_image"
EMPTY_FILE = "empty_file"
UNSAFE_MEMBER = "unsafe_member"
BAD_TEXT = "bad_text"
BAD_JSON = "bad_json"
DUPLICATE_KEY = "duplicate_key"
TRUNCATED_SHARD = "truncated_shard"
CORRUPT_IMAGE = "corrupt_image"
TRUNCATED_IMAGE = "truncated_image"
TOO_LARGE = "too_large"
CORRUPT_ROW_GROUP = "corrupt_row_group"
REASONS = (
    MISSING_IMAGE,
    EMPTY_FILE,
    UNSAFE_MEMBER,
    BAD_TEXT,
    BAD_JSON,
    DUPLICATE_KEY,
    TRUNCATED_SHARD,
    CORRUPT_IMAGE,
    TRUNCATED_IMAGE,
    TOO_LARGE,
    CORRUPT_ROW_GROUP,
)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")  # image files of a source sample
# Text and JSON sidecars are small; a JSON of many MB can expand tenfold as Python objects, so they get a fixed cap.
MAX_SIDECAR_BYTES = 1 << 20

SourceKind = Literal["webdataset", "folder", "parquet"]


@dataclass(frozen=True)
class SourceShard:
    """One unit of source input, read and curated as a whole.

    Attributes:
        name: stable output name of the curated shard (``"00000"``: the tar or
            parquet stem, or the chunk number for folders).
        path: the tar or parquet file; for folders, the input directory.
        kind: the input layout.
        members: for folders, the image paths (relative, POSIX) of this chunk.
    """

    name: str
    path: "Location"
    kind: SourceKind
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class SourceRecord:
    """One sample read from a source shard.

    Attributes:
        key: the sample key (``KEY`` of ``KEY.jpg``), unique within its shard.
        image: the encoded image bytes; ``None`` when the sample failed.
        text: the alt text (``KEY.txt``), if any.
        meta: the parsed ``KEY.json`` (or Parquet row); ``{}`` when absent.
        error: why the sample cannot be used (``None`` when it is fine), e.g. ``"corrupt_image"``.
        detail: a human-readable explanation of ``error``.
    """

    key: str
    image: Optional[bytes]
    text: Optional[str] = None
    meta: dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None
    detail: str = ""


@dataclass(frozen=True)
class PersonDetection:
    """One detected person with its pose.

    Attributes:
        box: ``(x0, y0, x1, y1)`` in pixels of the source image.
        score: detection confidence in [0, 1].
        keypoints: float array ``(17, 3)`` of COCO keypoints ``(x, y, confidence)``.
        attributes: known attributes of the person (the synthetic ground truth), if any.
    """

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray
    attributes: Optional[dict[str, Any]] = None


@dataclass(frozen=True)
class Template:
    """A caption template with placeholders, e.g. ``"A [man] wearing a [colored top] ..."``."""

    id: int
    text: str


@dataclass(frozen=True)
class CaptionRequest:
    """What a captioner needs for one person crop.

    Attributes:
        key: the curated sample key.
        image: the crop as JPEG bytes.
        templates: one template per caption to write (chosen by the caller, seeded).
        attributes: known attributes of the person, if any (for the offline backend).
        seed: a per-sample seed for any randomness the captioner needs.
    """

    key: str
    image: bytes
    templates: tuple[Template, ...]
    attributes: Optional[dict[str, Any]] = None
    seed: int = 0


@dataclass(frozen=True)
class CaptionResult:
    """The captions written for one request, or why there are none."""

    captions: Optional[list[str]]
    error: Optional[str] = None


def failed_record(key: str, reason: str, detail: str) -> SourceRecord:
    """A record for a sample that cannot be used."""
    return SourceRecord(key=key, image=None, error=reason, detail=detail)


@dataclass
class Crop:
    """A person who passed the filter, waiting for captions."""

    key: str
    shard: str
    record: SourceRecord
    person_index: int
    person: PersonDetection
    box: tuple[int, int, int, int]
    jpeg: bytes
    templates: tuple[Template, ...]
    seed: int


def sample_record(
    key: str, image: Optional[bytes], image_name: str, text: Optional[bytes], meta: Optional[bytes]
) -> SourceRecord:
    """The record of one sample from its raw image, text and JSON bytes (``None`` when absent).

    Args:
        key: the sample's key.
        image: the image bytes.
        image_name: the image's name, for messages.
        text: the text sidecar's bytes.
        meta: the JSON sidecar's bytes.

    Returns:
        A usable record, or a failed one naming what is wrong.
    """
    if image is None:
        return failed_record(key, MISSING_IMAGE, f"sample {key!r} has no image ({', '.join(IMAGE_EXTENSIONS)})")
    if not image:
        return failed_record(key, EMPTY_FILE, f"{image_name} is empty")
    try:
        decoded_text = None if text is None else text.decode("utf-8")
    except UnicodeDecodeError as err:
        return failed_record(key, BAD_TEXT, f"text of {key!r} is not UTF-8 (byte {err.start})")
    parsed = {} if meta is None else json_object(meta)
    if parsed is None:
        return failed_record(key, BAD_JSON, f"json of {key!r} is not a JSON object")
    return SourceRecord(key=key, image=image, text=decoded_text, meta=parsed)


def json_object(data: bytes) -> Optional[dict[str, Any]]:
    """The JSON object in ``data``, or ``None`` when it is malformed or not an object.

    Args:
        data: the encoded JSON.

    Returns:
        The object, or ``None``.
    """
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return value if isinstance(value, dict) else None
