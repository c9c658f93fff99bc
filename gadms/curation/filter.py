"""The SPEC 2 person filter and the crops of the people who pass it.

Rules are checked in a fixed order and the first failing one is the reason:
``too_small``, ``aspect``, ``low_conf`` (detector stage), then
``few_keypoints``, ``no_hip``, ``no_head`` (pose stage); ``keep`` if all pass.
"""

from __future__ import annotations

import math

import numpy as np

from gadms.config import FilterConfig
from gadms.curation.records import PersonDetection

KEEP = "keep"
REJECT_REASONS = ("too_small", "aspect", "low_conf", "few_keypoints", "no_hip", "no_head")
HEAD_KEYPOINTS = (0, 1, 2, 3, 4)
HIP_KEYPOINTS = (11, 12)


def visible_keypoints(keypoints: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask of the keypoints whose confidence is above ``threshold``."""
    return np.asarray(keypoints)[:, 2] > threshold


def filter_decision(person: PersonDetection, rules: FilterConfig) -> str:
    """``"keep"`` or the first SPEC 2 rule the person fails.

    Args:
        person: the detection with its keypoints.
        rules: ``curation.filter`` thresholds.

    Returns:
        ``"keep"`` or one of :data:`REJECT_REASONS`.
    """
    x0, y0, x1, y1 = person.box
    w, h = x1 - x0, y1 - y0
    if min(w, h) < rules.min_short_side:
        return "too_small"
    if not rules.min_aspect <= w / h <= rules.max_aspect:
        return "aspect"
    if not person.score > rules.min_confidence:
        return "low_conf"
    seen = visible_keypoints(person.keypoints, rules.keypoint_confidence)
    if int(seen.sum()) < rules.min_keypoints:
        return "few_keypoints"
    if int(seen[list(HIP_KEYPOINTS)].sum()) < rules.min_hip_keypoints:
        return "no_hip"
    if int(seen[list(HEAD_KEYPOINTS)].sum()) < rules.min_head_keypoints:
        return "no_head"
    return KEEP


def crop_box(
    box: tuple[float, float, float, float], margin: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """The integer crop of ``box`` grown by ``margin`` of its size on each side, clipped to the image.

    Args:
        box: ``(x0, y0, x1, y1)`` in pixels.
        margin: context added on each side as a fraction of the box width (left/right) and height (top/bottom).
        width: image width.
        height: image height.

    Returns:
        ``(x0, y0, x1, y1)`` integers with ``0 <= x0 < x1 <= width`` and likewise for y.
    """
    x0, y0, x1, y1 = box
    dx, dy = margin * (x1 - x0), margin * (y1 - y0)
    cx0 = min(max(0, math.floor(x0 - dx)), width - 1)
    cy0 = min(max(0, math.floor(y0 - dy)), height - 1)
    cx1 = max(min(width, math.ceil(x1 + dx)), cx0 + 1)
    cy1 = max(min(height, math.ceil(y1 + dy)), cy0 + 1)
    return cx0, cy0, cx1, cy1


def crop_image(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The pixels of ``image`` inside the integer ``box`` (a view, not a copy)."""
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]
