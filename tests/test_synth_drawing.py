"""The ground truth (box, keypoints, visibility) is what is drawn in the pixels."""

import numpy as np
import pytest

from gadms.config import SynthConfig
from gadms.synth.attributes import COLORS, SKIN_TONES, sample_identity
from gadms.synth.figure import POSES, Placement, sample_pose
from gadms.synth.scene import (
    Occluder,
    PersonSpec,
    SceneSpec,
    keypoints_with_visibility,
    person_box,
    render_scene,
    sample_background,
)
from gadms.synth.web import sample_scene

W, H = 640, 480


def _scene(rng, people, occluders=()):
    return SceneSpec(
        width=W, height=H, people=tuple(people), occluders=tuple(occluders), **sample_background(rng, W, H)
    )


def _person(rng, pose, x=320.0, top=40.0, height=380.0):
    return PersonSpec(sample_identity(rng), sample_pose(rng, pose), Placement(x, top, height), 0.95)


def _drawn_box(spec):
    """Box of the pixels that change when the people are drawn: independent of the truth code."""
    with_people = render_scene(spec, lit=False).image
    empty = render_scene(spec, with_people=False, lit=False).image
    changed = np.any(with_people != empty, axis=2)
    ys, xs = np.nonzero(changed)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


@pytest.mark.parametrize("pose", POSES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_box_is_the_tight_box_of_the_drawn_figure(pose, seed):
    rng = np.random.default_rng(seed)
    height = float(rng.uniform(120, 300))
    spec = _scene(
        rng, [_person(rng, pose, x=float(rng.uniform(200, 440)), top=float(rng.uniform(60, 100)), height=height)]
    )
    rendered = render_scene(spec, lit=False)
    assert person_box(rendered.masks[0]) == _drawn_box(spec)


def test_box_is_clipped_to_the_image():
    rng = np.random.default_rng(5)
    spec = _scene(rng, [_person(rng, "stand", x=20.0, top=-60.0, height=500.0)])
    box = person_box(render_scene(spec).masks[0][:H, :W])
    assert box[0] == 0 and box[1] == 0 and box[3] <= H
    assert box == _drawn_box(spec)


@pytest.mark.parametrize("seed", range(8))
def test_visible_keypoints_lie_on_the_right_body_part_colours(seed):
    """Nose/ears on skin, eyes on the eye colour, wrists on the hand, ankles on shoe or leg."""
    rng = np.random.default_rng(100 + seed)
    person = _person(rng, str(rng.choice(POSES)), height=float(rng.uniform(200, 400)))
    spec = _scene(rng, [person])
    image = render_scene(spec, lit=False).image
    kps = keypoints_with_visibility(person, 0, render_scene(spec).instances)
    ident = person.identity
    skin = SKIN_TONES[ident.skin_tone]

    def color(k):
        x, y, v = kps[k]
        assert v == 2, f"keypoint {k} should be visible in an unoccluded figure"
        return tuple(int(c) for c in image[int(y), int(x)])

    assert color(0) == skin  # nose
    assert color(1) == color(2) == (30, 30, 40)  # eyes
    assert color(9) == color(10) == skin  # wrists: hands
    bottom = COLORS[ident.bottom_color]
    for k in (15, 16):
        assert color(k) in {COLORS[ident.shoe_color], bottom, skin}
    for k in (13, 14):  # knees: trousers/jeans cover them, shorts and skirts leave skin
        assert color(k) == (bottom if ident.bottom_type in ("trousers", "jeans") else skin)


def test_visibility_codes_outside_covered_and_seen():
    rng = np.random.default_rng(7)
    # Head above the image top, hips behind an occluder.
    person = _person(rng, "stand", x=320.0, top=-70.0, height=420.0)
    hip_y = -70.0 + 0.52 * 420.0
    occluder = Occluder("box", (200.0, hip_y - 30, 440.0, hip_y + 30), (90, 90, 90))
    spec = _scene(rng, [person], [occluder])
    kps = keypoints_with_visibility(person, 0, render_scene(spec).instances)
    assert list(kps[:5, 2]) == [0, 0, 0, 0, 0]  # nose, eyes, ears outside the image
    assert list(kps[11:13, 2]) == [1, 1]  # hips covered
    assert list(kps[13:17, 2]) == [2, 2, 2, 2]  # knees and ankles seen


def test_a_nearer_person_covers_keypoints_of_a_farther_one():
    rng = np.random.default_rng(11)
    far = _person(rng, "stand", x=300.0, top=60.0, height=300.0)
    near = _person(rng, "stand", x=330.0, top=80.0, height=390.0)
    spec = _scene(rng, [far, near])
    rendered = render_scene(spec)
    kps_far = keypoints_with_visibility(far, 0, rendered.instances)
    for x, y, v in kps_far:
        on_near = rendered.instances[int(y), int(x)] == 2
        assert (v == 1) == on_near


def test_generated_scenes_keep_people_inside_their_boxes():
    cfg = SynthConfig()
    for index in range(20):
        spec = sample_scene(3, index, cfg)
        rendered = render_scene(spec)
        for i, mask in enumerate(rendered.masks):
            box = person_box(mask)
            ys, xs = np.nonzero(rendered.instances == i + 1)
            if len(xs):
                assert box[0] <= xs.min() and xs.max() < box[2] and box[1] <= ys.min() and ys.max() < box[3]
