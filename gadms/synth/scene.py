"""Scenes: a background, figures in depth order, occluders and lighting.

A :class:`SceneSpec` is a complete, serialisable description of an image;
:func:`render_scene` turns it into pixels plus an instance map, from which the
ground truth (exact box, keypoint visibility) is read off what was drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from gadms.synth.attributes import Identity
from gadms.synth.figure import HEAD_KEYPOINTS, HIP_KEYPOINTS, Placement, Pose, draw_figure, keypoint_array, skeleton

OCCLUDER_ID = 255  # instance-map value of occluders; people are 1..N in drawing order

# Keypoint visibility, COCO convention.
NOT_IN_IMAGE, OCCLUDED, VISIBLE = 0, 1, 2


@dataclass(frozen=True)
class PersonSpec:
    """One figure of a scene and what the detector would report for it."""

    identity: Identity
    pose: Pose
    place: Placement
    score: float  # simulated detector confidence
    design: str = "keep"  # what the generator meant this person to test


@dataclass(frozen=True)
class Occluder:
    """A foreground object drawn over everything: ``kind`` is 'box' or 'pole'."""

    kind: str
    box: tuple[float, float, float, float]
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class SceneSpec:
    """Everything needed to draw one image, deterministically."""

    width: int
    height: int
    background_seed: int
    sky: tuple[int, int, int]
    ground: tuple[int, int, int]
    horizon: float  # fraction of the height
    buildings: tuple[tuple[float, float, float, tuple[int, int, int]], ...]  # (x0, x1, top, rgb)
    people: tuple[PersonSpec, ...] = ()
    occluders: tuple[Occluder, ...] = ()
    brightness: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass
class Rendered:
    """Pixels and what was drawn where."""

    image: np.ndarray  # H x W x 3 uint8, lit
    instances: np.ndarray  # H x W uint8: 0 background, i+1 person i, 255 occluder
    masks: list[np.ndarray] = field(default_factory=list)  # full (unoccluded) mask per person
    labels: list[np.ndarray] = field(default_factory=list)  # part labels per person


def sample_background(rng: np.random.Generator, width: int, height: int) -> dict:
    """Draw background parameters (sky, ground, buildings) for a scene."""
    sky = tuple(int(v) for v in rng.integers([120, 140, 170], [200, 215, 250]))
    ground = tuple(int(v) for v in rng.integers([70, 70, 70], [150, 140, 130]))
    horizon = float(rng.uniform(0.35, 0.6))
    buildings = []
    x = float(rng.uniform(-40, 0))
    while x < width:
        w = float(rng.uniform(60, 180))
        top = float(rng.uniform(0.05, 0.3)) * height
        rgb = tuple(int(v) for v in rng.integers(60, 200, size=3))
        buildings.append((x, x + w, top, rgb))
        x += w + float(rng.uniform(0, 40))
    return {
        "background_seed": int(rng.integers(2**31)),
        "sky": sky,
        "ground": ground,
        "horizon": horizon,
        "buildings": tuple(buildings),
    }


def _background(spec: SceneSpec) -> np.ndarray:
    w, h = spec.width, spec.height
    img = Image.new("RGB", (w, h), spec.sky)
    draw = ImageDraw.Draw(img)
    hy = spec.horizon * h
    for x0, x1, top, rgb in spec.buildings:
        draw.rectangle([x0, top, x1, hy], fill=rgb)
        wy = top + 10
        while wy < hy - 14:
            wx = x0 + 8
            while wx < x1 - 14:
                draw.rectangle([wx, wy, wx + 8, wy + 10], fill=tuple(int(c * 0.6) for c in rgb))
                wx += 20
            wy += 22
    draw.rectangle([0, hy, w, h], fill=spec.ground)
    arr = np.asarray(img, dtype=np.int16)
    noise = np.random.default_rng(spec.background_seed).integers(-8, 9, size=arr.shape, dtype=np.int16)
    return np.clip(arr + noise, 0, 255).astype(np.uint8)


def render_scene(spec: SceneSpec, with_people: bool = True, lit: bool = True) -> Rendered:
    """Draw a scene.

    Args:
        spec: the scene description.
        with_people: draw the figures (False gives the empty scene, for tests).
        lit: apply the scene's brightness and tint.

    Returns:
        The image, the instance map and each person's full mask and part labels.
    """
    image = _background(spec)
    instances = np.zeros((spec.height, spec.width), dtype=np.uint8)
    out = Rendered(image=image, instances=instances)
    for index, person in enumerate(spec.people):
        color, label = draw_figure(person.identity, person.pose, person.place, (spec.width, spec.height))
        label_arr = np.asarray(label)
        mask = label_arr > 0
        out.masks.append(mask)
        out.labels.append(label_arr)
        if with_people:
            image[mask] = np.asarray(color)[mask]
            instances[mask] = index + 1
    if spec.occluders:
        occ = Image.fromarray(image)
        occ_mask = Image.new("L", (spec.width, spec.height), 0)
        draw, mdraw = ImageDraw.Draw(occ), ImageDraw.Draw(occ_mask)
        for o in spec.occluders:
            if o.kind == "pole":
                draw.rectangle(o.box, fill=o.rgb)
                mdraw.rectangle(o.box, fill=255)
            else:
                draw.rounded_rectangle(o.box, radius=6, fill=o.rgb)
                mdraw.rounded_rectangle(o.box, radius=6, fill=255)
        image[:] = np.asarray(occ)
        instances[np.asarray(occ_mask) > 0] = OCCLUDER_ID
    if lit:
        factor = np.array(spec.tint, dtype=np.float32) * spec.brightness
        out.image = np.clip(np.rint(image.astype(np.float32) * factor), 0, 255).astype(np.uint8)
    return out


def person_box(mask: np.ndarray) -> list[int] | None:
    """Tight box ``[x0, y0, x1, y1]`` (x1, y1 exclusive) of a mask's pixels inside the image."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(xs) == 0:
        return None
    return [int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1]


def keypoints_with_visibility(person: PersonSpec, index: int, instances: np.ndarray) -> np.ndarray:
    """``(17, 3)`` array of ``x, y, v``: v is 0 outside the image, 1 covered, 2 seen."""
    kps = keypoint_array(skeleton(person.identity, person.pose, person.place))
    h, w = instances.shape
    out = np.zeros((17, 3), dtype=np.float64)
    out[:, :2] = kps
    for k, (x, y) in enumerate(kps):
        xi, yi = int(np.floor(x)), int(np.floor(y))
        if not (0 <= xi < w and 0 <= yi < h):
            out[k, 2] = NOT_IN_IMAGE
        elif instances[yi, xi] == index + 1:
            out[k, 2] = VISIBLE
        else:
            out[k, 2] = OCCLUDED
    return out


def expected_decision(box: list[int], score: float, keypoints: np.ndarray, rules) -> str:
    """The SPEC section-2 decision for a ground-truth person, first failing rule wins.

    Order: ``too_small``, ``aspect``, ``low_conf`` (detector stage), then
    ``few_keypoints``, ``no_hip``, ``no_head`` (pose stage); ``keep`` if all pass.
    ``rules`` is a :class:`gadms.config.FilterConfig`. Ground-truth keypoints
    count as visible when ``v == 2``.
    """
    w, h = box[2] - box[0], box[3] - box[1]
    if min(w, h) < rules.min_short_side:
        return "too_small"
    if not (rules.min_aspect <= w / h <= rules.max_aspect):
        return "aspect"
    if not score > rules.min_confidence:
        return "low_conf"
    seen = keypoints[:, 2] == VISIBLE
    if int(seen.sum()) < rules.min_keypoints:
        return "few_keypoints"
    if int(seen[list(HIP_KEYPOINTS)].sum()) < rules.min_hip_keypoints:
        return "no_hip"
    if int(seen[list(HEAD_KEYPOINTS)].sum()) < rules.min_head_keypoints:
        return "no_head"
    return "keep"
