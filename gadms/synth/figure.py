"""Clothed 2-D person figures: skeleton, COCO keypoints and drawing.

A figure is built from an :class:`~gadms.synth.attributes.Identity`, a
:class:`Pose` and a :class:`Placement`. :func:`skeleton` gives the joints (the
17 COCO keypoints among them); :func:`draw_figure` draws filled shapes for
hair, head, top, bottom, shoes, bag and hat into a colour layer and a
part-label layer, so the ground truth (box, keypoints) is exactly what is drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from gadms.synth.attributes import COLORS, HAIR_COLORS, SKIN_TONES, Identity

# COCO keypoint order.
KEYPOINT_NAMES = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
HEAD_KEYPOINTS = (0, 1, 2, 3, 4)
HIP_KEYPOINTS = (11, 12)

# Part labels written into the label layer (0 is "not this figure").
PART_LABELS = {"hair": 1, "head": 2, "torso": 3, "arm": 4, "hand": 5, "leg": 6, "shoe": 7, "bag": 8, "hat": 9}

# Which parts each keypoint must lie on when it is drawn (used by tests and previews).
KEYPOINT_PARTS: tuple[tuple[str, ...], ...] = (
    ("head",),
    ("head",),
    ("head",),
    ("head",),
    ("head",),
    ("torso", "arm"),
    ("torso", "arm"),
    ("arm",),
    ("arm",),
    ("hand",),
    ("hand",),
    ("torso", "leg"),
    ("torso", "leg"),
    ("leg",),
    ("leg",),
    ("leg", "shoe"),
    ("leg", "shoe"),
)

POSES = ("stand", "walk", "hands_on_hips", "phone", "wave", "arms_out")


@dataclass(frozen=True)
class Pose:
    """Limb angles in degrees: 0 is straight down, positive turns away from the body.

    Arms are ``(shoulder angle, elbow bend)``; legs are one angle each.
    "left" is the person's left, which is the image's right for a figure
    facing the camera.
    """

    name: str
    left_arm: tuple[float, float]
    right_arm: tuple[float, float]
    left_leg: float
    right_leg: float


@dataclass(frozen=True)
class Placement:
    """Where a figure stands: hip-centre x, head-top y, and height (head top to sole) in pixels."""

    x: float
    top: float
    height: float


def sample_pose(rng: np.random.Generator, name: str) -> Pose:
    """Draw limb angles for a named pose with some jitter."""

    def u(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))

    if name == "stand":
        return Pose(name, (u(4, 12), u(0, 10)), (u(4, 12), u(0, 10)), u(1, 4), u(1, 4))
    if name == "walk":
        return Pose(name, (u(5, 12), u(5, 20)), (u(5, 12), u(5, 20)), u(3, 6), u(3, 6))
    if name == "hands_on_hips":
        return Pose(name, (u(30, 36), u(-122, -112)), (u(30, 36), u(-122, -112)), u(2, 5), u(2, 5))
    if name == "phone":
        return Pose(name, (u(30, 38), u(-170, -160)), (u(4, 12), u(0, 10)), u(1, 5), u(1, 5))
    if name == "wave":
        return Pose(name, (u(140, 155), u(10, 25)), (u(4, 12), u(0, 10)), u(2, 6), u(2, 6))
    if name == "arms_out":
        return Pose(name, (u(80, 95), u(0, 10)), (u(80, 95), u(0, 10)), u(4, 10), u(4, 10))
    raise ValueError(f"unknown pose {name!r}; expected one of {', '.join(POSES)}")


# Body proportions as fractions of the figure height.
_HEAD_RX, _HEAD_RY, _HEAD_CY = 0.05, 0.065, 0.065
_SHOULDER_Y, _HIP_Y = 0.19, 0.52
_UPPER_ARM, _FOREARM, _THIGH, _SHIN = 0.16, 0.15, 0.22, 0.21
_ARM_W, _LEG_W, _HAND_R = 0.05, 0.065, 0.028


def _limb(start: tuple[float, float], side: int, angle: float, length: float) -> tuple[float, float]:
    rad = math.radians(angle)
    return (start[0] + side * math.sin(rad) * length, start[1] + math.cos(rad) * length)


def skeleton(identity: Identity, pose: Pose, place: Placement) -> dict[str, tuple[float, float]]:
    """Joint positions in image pixels: the 17 COCO keypoints plus ``head`` and ``neck``.

    Args:
        identity: gives body width (shoulders, hips) by gender.
        pose: limb angles.
        place: position and height.

    Returns:
        Mapping from joint name to ``(x, y)``.
    """
    u, x, top = place.height, place.x, place.top
    sw = (0.11 if identity.gender == "man" else 0.095) * u
    hw = (0.065 if identity.gender == "man" else 0.075) * u
    head = (x, top + _HEAD_CY * u)
    j: dict[str, tuple[float, float]] = {"head": head, "neck": (x, top + 0.145 * u)}
    j["nose"] = (x, head[1] + 0.012 * u)
    for side, name in ((1, "left"), (-1, "right")):
        j[f"{name}_eye"] = (x + side * 0.02 * u, head[1] - 0.008 * u)
        j[f"{name}_ear"] = (x + side * 0.047 * u, head[1])
        shoulder = (x + side * sw, top + _SHOULDER_Y * u)
        angle, bend = getattr(pose, f"{name}_arm")
        elbow = _limb(shoulder, side, angle, _UPPER_ARM * u)
        j[f"{name}_shoulder"], j[f"{name}_elbow"] = shoulder, elbow
        j[f"{name}_wrist"] = _limb(elbow, side, angle + bend, _FOREARM * u)
        hip = (x + side * hw, top + _HIP_Y * u)
        leg = getattr(pose, f"{name}_leg")
        knee = _limb(hip, side, leg, _THIGH * u)
        j[f"{name}_hip"], j[f"{name}_knee"] = hip, knee
        j[f"{name}_ankle"] = _limb(knee, side, leg, _SHIN * u)
    return j


def keypoint_array(joints: dict[str, tuple[float, float]]) -> np.ndarray:
    """The 17 COCO keypoints as a ``(17, 2)`` float array."""
    return np.array([joints[name] for name in KEYPOINT_NAMES], dtype=np.float64)


class _Layers:
    """A colour layer and a part-label layer drawn in lock step."""

    def __init__(self, size: tuple[int, int]):
        self.color = Image.new("RGB", size, (0, 0, 0))
        self.label = Image.new("L", size, 0)
        self._c = ImageDraw.Draw(self.color)
        self._l = ImageDraw.Draw(self.label)

    def polygon(self, pts, rgb, part: str) -> None:
        pts = [tuple(map(float, p)) for p in pts]
        self._c.polygon(pts, fill=rgb)
        self._l.polygon(pts, fill=PART_LABELS[part])

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, rgb, part: str) -> None:
        box = [cx - rx, cy - ry, cx + rx, cy + ry]
        self._c.ellipse(box, fill=rgb)
        self._l.ellipse(box, fill=PART_LABELS[part])

    def chord(self, box, rgb, part: str, start: float = 180, end: float = 360) -> None:
        self._c.chord(box, start, end, fill=rgb)
        self._l.chord(box, start, end, fill=PART_LABELS[part])

    def segment(self, p0, p1, width: float, rgb, part: str) -> None:
        """A thick bar with round ends from ``p0`` to ``p1``."""
        (x0, y0), (x1, y1) = p0, p1
        length = math.hypot(x1 - x0, y1 - y0) or 1e-6
        nx, ny = -(y1 - y0) / length * width / 2, (x1 - x0) / length * width / 2
        self.polygon([(x0 + nx, y0 + ny), (x1 + nx, y1 + ny), (x1 - nx, y1 - ny), (x0 - nx, y0 - ny)], rgb, part)
        for cx, cy in (p0, p1):
            self.ellipse(cx, cy, width / 2, width / 2, rgb, part)

    def pattern(self, pts, base, pattern: str, spacing: float) -> None:
        """Fill polygon ``pts`` (already drawn in ``base``) with stripes, checks or dots."""
        if pattern == "plain":
            return
        mask = Image.new("L", self.color.size, 0)
        ImageDraw.Draw(mask).polygon([tuple(map(float, p)) for p in pts], fill=255)
        ink = (20, 20, 20) if sum(base) > 380 else (240, 240, 240)
        overlay = Image.new("RGB", self.color.size, ink)
        marks = Image.new("L", self.color.size, 0)
        draw = ImageDraw.Draw(marks)
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        step = max(spacing, 3.0)
        thick = max(step * 0.3, 1.0)
        y = min(ys)
        while y < max(ys):
            if pattern in ("striped", "checked"):
                draw.rectangle([min(xs), y, max(xs), y + thick], fill=255)
            if pattern == "dotted":
                x = min(xs)
                while x < max(xs):
                    draw.ellipse([x, y, x + thick * 1.3, y + thick * 1.3], fill=255)
                    x += step
            y += step
        if pattern == "checked":
            x = min(xs)
            while x < max(xs):
                draw.rectangle([x, min(ys), x + thick, max(ys)], fill=255)
                x += step
        combined = Image.fromarray(np.minimum(np.asarray(mask), np.asarray(marks)))
        self.color.paste(overlay, mask=combined)


def _shade(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, round(c * factor)))) for c in rgb)  # type: ignore[return-value]


def draw_figure(
    identity: Identity, pose: Pose, place: Placement, size: tuple[int, int]
) -> tuple[Image.Image, Image.Image]:
    """Draw one figure on an empty canvas of ``size`` (width, height).

    Args:
        identity: attributes that decide the shapes and colours.
        pose: limb angles.
        place: position and height in the canvas.
        size: canvas size in pixels.

    Returns:
        ``(colour, label)``: an RGB image and an ``L`` image whose non-zero
        pixels are exactly the figure's pixels, valued by :data:`PART_LABELS`.
    """
    u = place.height
    j = skeleton(identity, pose, place)
    layers = _Layers(size)
    skin = SKIN_TONES[identity.skin_tone]
    top_rgb = COLORS[identity.top_color]
    bottom_rgb = COLORS[identity.bottom_color]
    hair_rgb = HAIR_COLORS.get(identity.hair_color, (0, 0, 0))
    hx, hy = j["head"]
    head_top = place.top

    # Behind the body: long hair, ponytail, hood, backpack.
    if identity.hair_style == "long":
        layers.polygon(
            [
                (hx - 0.062 * u, hy - 0.02 * u),
                (hx + 0.062 * u, hy - 0.02 * u),
                (hx + 0.07 * u, head_top + 0.27 * u),
                (hx - 0.07 * u, head_top + 0.27 * u),
            ],
            hair_rgb,
            "hair",
        )
    elif identity.hair_style == "ponytail":
        layers.ellipse(hx + 0.06 * u, hy + 0.03 * u, 0.022 * u, 0.06 * u, hair_rgb, "hair")
    if identity.top_type == "hoodie":
        layers.ellipse(hx, j["neck"][1] + 0.01 * u, 0.06 * u, 0.035 * u, _shade(top_rgb, 0.85), "torso")
    if identity.bag_type == "backpack":
        ls, rs = j["left_shoulder"], j["right_shoulder"]
        layers.polygon(
            [
                (rs[0] - 0.025 * u, rs[1] + 0.02 * u),
                (ls[0] + 0.025 * u, ls[1] + 0.02 * u),
                (ls[0] + 0.02 * u, head_top + 0.47 * u),
                (rs[0] - 0.02 * u, head_top + 0.47 * u),
            ],
            COLORS[identity.bag_color],
            "bag",
        )

    # Legs, then shoes; trousers and jeans cover the whole leg, shorts the upper thigh.
    for side in ("left", "right"):
        hip, knee, ankle = j[f"{side}_hip"], j[f"{side}_knee"], j[f"{side}_ankle"]
        full = identity.bottom_type in ("trousers", "jeans")
        layers.segment(hip, knee, _LEG_W * u, bottom_rgb if full else skin, "leg")
        layers.segment(knee, ankle, _LEG_W * 0.9 * u, bottom_rgb if full else skin, "leg")
        if identity.bottom_type == "shorts":
            mid = (hip[0] + (knee[0] - hip[0]) * 0.55, hip[1] + (knee[1] - hip[1]) * 0.55)
            layers.segment(hip, mid, _LEG_W * 1.25 * u, bottom_rgb, "leg")
        layers.ellipse(ankle[0], ankle[1] + 0.02 * u, 0.042 * u, 0.025 * u, COLORS[identity.shoe_color], "shoe")
    if identity.bottom_type == "skirt":
        lh, rh, lk, rk = j["left_hip"], j["right_hip"], j["left_knee"], j["right_knee"]
        layers.polygon(
            [
                (rh[0] - 0.02 * u, rh[1] - 0.01 * u),
                (lh[0] + 0.02 * u, lh[1] - 0.01 * u),
                (lk[0] + 0.05 * u, lk[1] - 0.04 * u),
                (rk[0] - 0.05 * u, rk[1] - 0.04 * u),
            ],
            bottom_rgb,
            "leg",
        )

    # Torso (a coat is longer and wider), its pattern and details.
    ls, rs, lh, rh = j["left_shoulder"], j["right_shoulder"], j["left_hip"], j["right_hip"]
    long_coat = identity.top_type == "coat"
    bottom_y = lh[1] + (0.14 if long_coat else 0.02) * u
    flare = (0.05 if long_coat else 0.02) * u
    torso = [
        (rs[0] - 0.01 * u, rs[1] - 0.015 * u),
        (ls[0] + 0.01 * u, ls[1] - 0.015 * u),
        (lh[0] + flare, bottom_y),
        (rh[0] - flare, bottom_y),
    ]
    layers.polygon(torso, top_rgb, "torso")
    layers.pattern(torso, top_rgb, identity.top_pattern, 0.04 * u)
    cx = (ls[0] + rs[0]) / 2
    if identity.top_type in ("jacket", "coat"):
        layers.segment(
            (cx, j["neck"][1] + 0.03 * u), (cx, bottom_y - 0.01 * u), 0.008 * u, _shade(top_rgb, 0.6), "torso"
        )
    elif identity.top_type == "sweater":
        layers.segment(
            (rh[0] - 0.01 * u, bottom_y - 0.012 * u),
            (lh[0] + 0.01 * u, bottom_y - 0.012 * u),
            0.02 * u,
            _shade(top_rgb, 0.75),
            "torso",
        )
    layers.segment(j["neck"], (hx, hy), 0.045 * u, skin, "head")
    if identity.top_type == "shirt":
        ny = j["neck"][1] + 0.02 * u
        for sign in (-1, 1):
            layers.polygon(
                [(cx, ny + 0.03 * u), (cx + sign * 0.04 * u, ny - 0.01 * u), (cx + sign * 0.005 * u, ny - 0.01 * u)],
                (240, 240, 240),
                "torso",
            )
    if identity.bag_type == "shoulder bag":
        strap_top = (ls[0] - 0.03 * u, ls[1] + 0.005 * u)
        bag = (rh[0] - 0.09 * u, rh[1] - 0.085 * u, rh[0] - 0.015 * u, rh[1] - 0.005 * u)
        layers.segment(
            strap_top, (bag[2] - 0.005 * u, bag[1]), 0.012 * u, _shade(COLORS[identity.bag_color], 0.7), "bag"
        )
        layers.polygon(
            [(bag[0], bag[1]), (bag[2], bag[1]), (bag[2], bag[3]), (bag[0], bag[3])], COLORS[identity.bag_color], "bag"
        )
    elif identity.bag_type == "backpack":
        for side in ("left", "right"):
            s = 1 if side == "left" else -1
            sh = j[f"{side}_shoulder"]
            layers.segment(
                (sh[0] - s * 0.03 * u, sh[1] + 0.005 * u),
                (sh[0] - s * 0.035 * u, head_top + 0.42 * u),
                0.015 * u,
                _shade(COLORS[identity.bag_color], 0.7),
                "bag",
            )

    # Arms: sleeves in the top's colour (short for a t-shirt), hands in skin.
    for side in ("left", "right"):
        sh, el, wr = j[f"{side}_shoulder"], j[f"{side}_elbow"], j[f"{side}_wrist"]
        if identity.top_type == "t-shirt":
            mid = (sh[0] + (el[0] - sh[0]) * 0.5, sh[1] + (el[1] - sh[1]) * 0.5)
            layers.segment(sh, el, _ARM_W * 0.85 * u, skin, "arm")
            layers.segment(sh, mid, _ARM_W * 1.1 * u, top_rgb, "arm")
            layers.segment(el, wr, _ARM_W * 0.8 * u, skin, "arm")
        else:
            layers.segment(sh, el, _ARM_W * u, top_rgb, "arm")
            layers.segment(el, wr, _ARM_W * 0.9 * u, top_rgb, "arm")
        if side == "right" and identity.bag_type in ("handbag", "tote"):
            bag_rgb = COLORS[identity.bag_color]
            k = 2.2 if identity.bag_type == "tote" else 1.0  # a tote: the checkable world's big handbag
            depth = (0.03 + 0.07 * k) * u  # 0.1 * u for a handbag (0.03 + 0.07 == 0.1 exactly)
            layers.segment(wr, (wr[0], wr[1] + 0.03 * u), 0.008 * u, _shade(bag_rgb, 0.7), "bag")
            layers.polygon(
                [
                    (wr[0] - 0.04 * k * u, wr[1] + 0.03 * u),
                    (wr[0] + 0.04 * k * u, wr[1] + 0.03 * u),
                    (wr[0] + 0.045 * k * u, wr[1] + depth),
                    (wr[0] - 0.045 * k * u, wr[1] + depth),
                ],
                bag_rgb,
                "bag",
            )
        layers.ellipse(wr[0], wr[1], _HAND_R * u, _HAND_R * u, skin, "hand")

    # Head: ears, face, eyes, then hair and hat on top.
    for sign in (-1, 1):
        layers.ellipse(hx + sign * 0.05 * u, hy, 0.012 * u, 0.02 * u, _shade(skin, 0.92), "head")
    layers.ellipse(hx, hy, _HEAD_RX * u, _HEAD_RY * u, skin, "head")
    for side in ("left", "right"):
        ex, ey = j[f"{side}_eye"]
        layers.ellipse(ex, ey, 0.008 * u, 0.006 * u, (30, 30, 40), "head")
    layers.segment(
        (hx - 0.012 * u, hy + 0.035 * u), (hx + 0.012 * u, hy + 0.035 * u), 0.005 * u, _shade(skin, 0.7), "head"
    )
    if identity.hair_style != "bald":
        layers.chord([hx - 0.056 * u, head_top - 0.012 * u, hx + 0.056 * u, head_top + 0.09 * u], hair_rgb, "hair")
    if identity.hair_style == "bun":
        layers.ellipse(hx, head_top - 0.005 * u, 0.03 * u, 0.026 * u, hair_rgb, "hair")
    hat_rgb = COLORS.get(identity.hat_color, (0, 0, 0))
    if identity.hat_type == "cap":
        layers.chord([hx - 0.055 * u, head_top - 0.018 * u, hx + 0.055 * u, head_top + 0.075 * u], hat_rgb, "hat")
        layers.segment(
            (hx - 0.05 * u, head_top + 0.028 * u),
            (hx + 0.09 * u, head_top + 0.03 * u),
            0.012 * u,
            _shade(hat_rgb, 0.8),
            "hat",
        )
    elif identity.hat_type == "beanie":
        layers.chord([hx - 0.057 * u, head_top - 0.03 * u, hx + 0.057 * u, head_top + 0.08 * u], hat_rgb, "hat")
        layers.segment(
            (hx - 0.055 * u, head_top + 0.03 * u),
            (hx + 0.055 * u, head_top + 0.03 * u),
            0.016 * u,
            _shade(hat_rgb, 0.8),
            "hat",
        )
    return layers.color, layers.label
