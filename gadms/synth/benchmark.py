"""A synthetic retrieval benchmark in the real CUHK-PEDES format (SPEC section 7).

Writes ``OUT/CUHK-PEDES/reid_raw.json`` (records ``id``, ``file_path``,
``captions``, ``split``, ``processed_tokens``) and the person crops under
``OUT/CUHK-PEDES/imgs/``. Identities are disjoint across train/val/test.
The ground truth the real format has no room for (attributes, pose, keypoints
in crop coordinates, wrong-word spans of noisy captions) goes to
``OUT/CUHK-PEDES/synthetic_truth.json``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from gadms.config import SynthConfig
from gadms.reproducible_writes import jpeg_bytes, json_bytes, write_bytes_atomic
from gadms.synth.attributes import Identity, sample_unique_identities
from gadms.synth.captions import build_pieces, inject_noise, render_pieces
from gadms.synth.checkable import (
    FAMILY_SIZE,
    checkable_caption,
    inject_checkable_noise,
    sample_checkable_families,
    sample_unique_checkable,
)
from gadms.synth.checkable import TEMPLATES as CHECKABLE_TEMPLATES
from gadms.synth.figure import Placement, sample_pose
from gadms.synth.scene import (
    Occluder,
    PersonSpec,
    SceneSpec,
    keypoints_with_visibility,
    person_box,
    render_scene,
    sample_background,
)

BENCHMARK_DIR = "CUHK-PEDES"
_POSES = ("stand", "walk", "hands_on_hips", "phone", "wave")
_TOKEN = re.compile(r"[a-z]+(?:-[a-z]+)?")


class SynthError(ValueError):
    """Invalid request for the synthetic world (one-line message)."""


@dataclass(frozen=True)
class BenchmarkSummary:
    """What ``gadms synth benchmark`` wrote."""

    root: Path
    identities: dict[str, int]
    images: dict[str, int]
    captions: dict[str, int]
    noisy_captions: int


def split_counts(n: int, synth: SynthConfig) -> dict[str, int]:
    """Identities per split: test and (if its fraction is > 0) val get at least one."""
    f = synth.split_fractions
    n_test = max(1, round(f.test * n))
    n_val = max(1, round(f.val * n)) if f.val > 0 else 0
    n_train = n - n_test - n_val
    if n_train < 1:
        raise SynthError(
            f"--identities {n}: too few to fill train/val/test splits (need at least {n_test + n_val + 1})"
        )
    return {"train": n_train, "val": n_val, "test": n_test}


def _render_crop(identity: Identity, rng: np.random.Generator, synth: SynthConfig) -> tuple[np.ndarray, str, list]:
    """One image of ``identity``: random pose, scale, background, light and occluder, cropped to the person."""
    pose = sample_pose(rng, str(rng.choice(_POSES)))
    h = float(rng.uniform(200, 280))
    width, height = int(h * 0.8), int(h * 1.3)
    place = Placement(round(width / 2 + float(rng.uniform(-0.05, 0.05)) * h, 2), round(0.16 * h, 2), round(h, 2))
    occluders: tuple[Occluder, ...] = ()
    if rng.random() < synth.occlusion_probability * 0.5:
        cx = place.x + float(rng.uniform(-0.15, 0.15)) * h
        y0 = place.top + float(rng.uniform(0.6, 0.8)) * h
        occluders = (Occluder("pole", (cx - 0.03 * h, y0, cx + 0.03 * h, y0 + 0.25 * h), (90, 90, 95)),)
    spec = SceneSpec(
        width=width,
        height=height,
        people=(PersonSpec(identity, pose, place, 1.0),),
        occluders=occluders,
        brightness=round(float(rng.uniform(0.75, 1.2)), 3),
        tint=tuple(round(float(v), 3) for v in rng.uniform(0.92, 1.08, size=3)),  # type: ignore[arg-type]
        **sample_background(rng, width, height),
    )
    rendered = render_scene(spec)
    x0, y0, x1, y1 = person_box(rendered.masks[0])  # type: ignore[misc]
    margin = float(rng.uniform(0.03, 0.08))
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    cx0, cy0 = max(0, int(x0 - mx)), max(0, int(y0 - my))
    cx1, cy1 = min(width, int(np.ceil(x1 + mx))), min(height, int(np.ceil(y1 + my)))
    kps = keypoints_with_visibility(spec.people[0], 0, rendered.instances)
    kps_crop = [[round(float(x) - cx0, 2), round(float(y) - cy0, 2), int(v)] for x, y, v in kps]
    return rendered.image[cy0:cy1, cx0:cx1], pose.name, kps_crop


def write_benchmark(
    out: Path,
    identities: int,
    seed: int,
    synth: SynthConfig,
    progress: bool = True,
    vocabulary: str = "full",
    gallery: str = "random",
) -> BenchmarkSummary:
    """Write a CUHK-PEDES-format benchmark of ``identities`` people under ``out``.

    Args:
        out: output directory; the benchmark goes to ``out/CUHK-PEDES``.
        identities: number of identities (split by ``synth.split_fractions``).
        seed: everything is a function of this seed and ``synth``.
        synth: images per identity, captions per image, caption noise, JPEG quality.
        progress: show a progress bar.
        vocabulary: ``full`` (the world's people and sentence captions) or ``checkable`` (four colour slots the
            tiny model can see, short captions, noise only on those slots: :mod:`gadms.synth.checkable`; the truth
            file then also holds each caption's ``slots``, the ``[start, end, slot]`` of its colour words).
        gallery: ``random`` (identities drawn independently) or ``one-slot`` (checkable only: families of five
            identities differing in exactly one slot's colour, each family kept in one split when the split
            sizes are multiples of five; :func:`gadms.synth.checkable.sample_checkable_families`).

    Returns:
        Per-split counts.
    """
    if vocabulary not in ("full", "checkable"):
        raise SynthError(f"vocabulary: expected full or checkable (got {vocabulary!r})")
    checkable = vocabulary == "checkable"
    if gallery not in ("random", "one-slot") or (gallery == "one-slot" and not checkable):
        raise SynthError(f"gallery: expected random, or one-slot with the checkable vocabulary (got {gallery!r})")
    counts = split_counts(identities, synth)
    root = Path(out) / BENCHMARK_DIR
    rng = np.random.default_rng([seed, 0xBE7C])
    people, order = _people_in_order(rng, identities, vocabulary, gallery)
    split_of: dict[int, str] = {}
    start = 0
    for split in ("train", "val", "test"):
        for k in order[start : start + counts[split]]:
            split_of[int(k)] = split
        start += counts[split]

    records, truth, pieces_of = [], [], []
    for index in tqdm(range(identities), desc="synth benchmark", unit="identity", disable=not progress):
        identity = people[index]
        id_rng = np.random.default_rng([seed, 0x1D, index])
        n_images = int(id_rng.integers(synth.min_images_per_identity, synth.max_images_per_identity + 1))
        for j in range(n_images):
            img_rng = np.random.default_rng([seed, 0x1A6, index, j])
            crop, pose, kps = _render_crop(identity, img_rng, synth)
            file_path = f"synth/{index + 1:05d}_{j}.jpg"
            write_bytes_atomic(root / "imgs" / file_path, jpeg_bytes(crop, synth.jpeg_quality))
            caps: list[str] = []
            pieces: list[Any] = []
            slots = []
            for _ in range(synth.captions_per_image):
                if checkable:
                    template = int(img_rng.integers(len(CHECKABLE_TEMPLATES)))
                    caption, spans = checkable_caption(identity, template)
                    caps.append(caption)
                    slots.append([list(span) for span in spans])
                    pieces.append(template)
                    continue
                p = build_pieces(identity, pose, img_rng)
                caps.append(render_pieces(p)[0])
                pieces.append(p)
            records.append({"id": index + 1, "file_path": file_path, "captions": caps, "split": split_of[index]})
            entry = {
                "id": index + 1,
                "file_path": file_path,
                "attributes": identity.to_dict(),
                "pose": pose,
                "keypoints": kps,
                "noise_spans": [[] for _ in caps],
            }
            if checkable:
                entry["slots"], entry["templates"] = slots, list(pieces)
            truth.append(entry)
            pieces_of.append(pieces)

    noise_rng = np.random.default_rng([seed, 0x7015E])
    inject = _inject_checkable if checkable else inject_noise
    noisy = _add_noise(
        records, truth, pieces_of, people, synth.caption_noise, noise_rng, synth.caption_noise_words, inject
    )
    for record in records:
        record["processed_tokens"] = [_TOKEN.findall(c.lower()) for c in record["captions"]]
    write_bytes_atomic(root / "reid_raw.json", json_bytes(records))
    write_bytes_atomic(
        root / "synthetic_truth.json",
        json_bytes({"seed": seed, "caption_noise": synth.caption_noise, "noise_split": "train", "records": truth}),
    )
    summary = {k: {"identities": 0, "images": 0, "captions": 0} for k in ("train", "val", "test")}
    seen: set[int] = set()
    for record in records:
        s = summary[record["split"]]
        s["images"] += 1
        s["captions"] += len(record["captions"])
        if record["id"] not in seen:
            seen.add(record["id"])
            s["identities"] += 1
    return BenchmarkSummary(
        root=root,
        identities={k: v["identities"] for k, v in summary.items()},
        images={k: v["images"] for k, v in summary.items()},
        captions={k: v["captions"] for k, v in summary.items()},
        noisy_captions=noisy,
    )


def _people_in_order(
    rng: np.random.Generator, identities: int, vocabulary: str, gallery: str
) -> tuple[list[Identity], list[int]]:
    """The benchmark's people and the order splits are cut from (families stay together in one-slot)."""
    if gallery == "one-slot":
        people = sample_checkable_families(rng, identities)
        families = rng.permutation(-(-identities // FAMILY_SIZE)).tolist()
        order = [k for f in families for k in range(f * FAMILY_SIZE, min((f + 1) * FAMILY_SIZE, identities))]
        return people, order
    draw = sample_unique_checkable if vocabulary == "checkable" else sample_unique_identities
    return draw(rng, identities), rng.permutation(identities).tolist()


def _inject_checkable(template: int, identity: Identity, rng: np.random.Generator, words: int) -> tuple[str, list]:
    caption, wrong, slots = inject_checkable_noise(identity, template, rng, words)
    return caption, [wrong, slots]


def _add_noise(
    records: list[dict],
    truth: list[dict],
    pieces_of: list[list[Any]],
    people: list[Identity],
    fraction: float,
    rng: np.random.Generator,
    words: int = 1,
    inject: Callable[..., tuple[str, list]] = inject_noise,
) -> int:
    """Corrupt ``round(fraction * n)`` of the train captions with ``words`` wrong attribute words each.

    ``pieces_of`` holds what ``inject`` rebuilds a caption from (its pieces; a checkable caption's template).
    """
    slots = [
        (r, c) for r, record in enumerate(records) if record["split"] == "train" for c in range(len(record["captions"]))
    ]
    n_noisy = int(round(fraction * len(slots)))
    if n_noisy == 0:
        return 0
    for pick in sorted(rng.choice(len(slots), size=n_noisy, replace=False).tolist()):
        r, c = slots[pick]
        identity = people[records[r]["id"] - 1]
        caption, spans = inject(pieces_of[r][c], identity, rng, words)
        if "slots" in truth[r]:  # a checkable caption: its wrong words and where its colour words now are
            spans, positions = spans
            truth[r]["slots"][c] = [list(span) for span in positions]
        records[r]["captions"][c] = caption
        truth[r]["noise_spans"][c] = [span.to_dict() for span in spans]
    return n_noisy
