"""ROI crop, offline expansion and the train/val split."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from detector.data.annotations import AnnotatedImage, Box
from detector.data.expand import (
    ExpandParams,
    Variant,
    apply_variant,
    expand,
    relight,
    transform_box,
    variant_matrix,
)
from detector.data.roi import crop_boxes, crop_region
from detector.data.split import duplicate_groups, split_train_val


def write(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)
    return path


def noise(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)


def filled_box_image(width: int, height: int, box: Box) -> np.ndarray:
    """Dark picture with the box's pixels (continuous coords) set bright."""
    pixels = np.full((height, width), 20, np.uint8)
    pixels[int(box.y1) : int(box.y2), int(box.x1) : int(box.x2)] = 235
    return pixels


def bright_region(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """Continuous-coordinate bounding box of the bright pixels."""
    ys, xs = np.nonzero(pixels > 127)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def coords(box: Box) -> tuple[float, float, float, float]:
    return box.x1, box.y1, box.x2, box.y2


# --- ROI ------------------------------------------------------------------------


def test_crop_boxes_shifts_clips_and_drops_mostly_hidden_boxes():
    roi = (10, 20, 50, 40)  # covers x 10..60, y 20..60
    boxes = [
        Box("inside", 15, 25, 25, 35),
        Box("half", 50, 30, 70, 40),  # half inside: kept and clipped
        Box("sliver", 55, 50, 80, 70),  # 5x10 of 25x20 inside = 10%: dropped
        Box("outside", 0, 0, 5, 5),
    ]
    kept = crop_boxes(boxes, roi, min_visible=0.3)
    assert kept == [Box("inside", 5, 5, 15, 15), Box("half", 40, 10, 50, 20)]
    assert [b.label for b in crop_boxes(boxes, roi, min_visible=0.05)] == ["inside", "half", "sliver"]
    assert [b.label for b in crop_boxes(boxes, roi, min_visible=0.6)] == ["inside"]


def test_crop_region_writes_grey_crops_and_rejects_outside_roi(tmp_path):
    pixels = noise(60, 80, 0)
    source = write(tmp_path / "src/a.jpg", cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR))
    image = AnnotatedImage(source, 80, 60, [Box("pit", 12, 12, 20, 20)])
    (out,) = crop_region([image], (10, 5, 30, 40), tmp_path / "out")
    written = cv2.imread(str(out.image_path), cv2.IMREAD_UNCHANGED)
    assert written.shape == (40, 30) and (out.width, out.height) == (30, 40)
    assert out.boxes == [Box("pit", 2, 7, 10, 15)]
    decoded = cv2.imread(str(source), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(written, decoded[5:45, 10:40])
    for bad in [(60, 0, 30, 10), (-1, 0, 10, 10), (0, 0, 0, 10), (0, 30, 10, 31)]:
        with pytest.raises(ValueError, match="ROI"):
            crop_region([image], bad, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


# --- expansion geometry -------------------------------------------------------------


@pytest.mark.parametrize("crop,angle,scale", [
    ((0, 0, 120, 100), 0.0, 1.0),
    ((0, 0, 120, 100), 7.5, 1.0),
    ((10, 5, 100, 90), -10.0, 1.15),
    ((0, 0, 120, 100), 33.0, 0.8),
    ((5, 0, 110, 100), 90.0, 1.0),
    ((0, 0, 120, 100), 185.0, 0.9),
    ((0, 0, 120, 100), 272.0, 1.2),
])
def test_rotated_box_matches_rotated_rendering(crop, angle, scale):
    box = Box("scratch", 40, 35, 78, 52)
    pixels = filled_box_image(120, 100, box)
    matrix, out_w, out_h = variant_matrix(Variant(crop, scale, angle, 1.0, 0.0))
    rotated = cv2.warpAffine(pixels, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=20)
    expected = bright_region(rotated)
    assert np.allclose(coords(transform_box(box, matrix)), expected, atol=2.0)
    if round(angle / 90) % 2:  # quarter turns swap the output's sides
        assert (out_w, out_h) == (round(crop[3] * scale), round(crop[2] * scale))
    else:
        assert (out_w, out_h) == (round(crop[2] * scale), round(crop[3] * scale))


@pytest.mark.parametrize("angle,scale", [(5.0, 1.0), (-12.0, 1.1), (33.0, 0.9), (90.0, 1.0), (185.0, 1.2)])
def test_ellipse_rotated_box_matches_rotated_ellipse_rendering(angle, scale):
    box = Box("scratch", 52, 10, 64, 90)  # thin and long, like a scratch
    pixels = np.full((100, 120), 20, np.uint8)
    centre = (round((box.x1 + box.x2) / 2 * 16 - 8), round((box.y1 + box.y2) / 2 * 16 - 8))
    axes = (round(box.width / 2 * 16), round(box.height / 2 * 16))  # 4 fractional bits: sub-pixel exact
    cv2.ellipse(pixels, centre, axes, 0, 0, 360, 235, -1, cv2.LINE_AA, shift=4)
    matrix, out_w, out_h = variant_matrix(Variant((0, 0, 120, 100), scale, angle, 1.0, 0.0))
    rotated = cv2.warpAffine(pixels, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=20)
    assert np.allclose(coords(transform_box(box, matrix, "ellipse")), bright_region(rotated), atol=1.5)


def test_ellipse_box_is_tighter_than_corner_box_on_small_turns_and_equal_on_quarter_turns():
    box = Box("scratch", 52, 10, 64, 90)
    for angle in (3.0, -5.0):
        matrix, _, _ = variant_matrix(Variant((0, 0, 120, 100), 1.0, angle, 1.0, 0.0))
        corners, ellipse = transform_box(box, matrix), transform_box(box, matrix, "ellipse")
        # 80 px long: the corners add ~80 * sin(angle) to the 12 px width, the ellipse a fraction of that
        assert box.width < ellipse.width < box.width + 0.4 * (corners.width - box.width)
        assert abs(ellipse.height - corners.height) < 1.5  # the length barely changes either way
    for angle in (90.0, 180.0, 270.0):
        matrix, _, _ = variant_matrix(Variant((0, 0, 120, 100), 1.0, angle, 1.0, 0.0))
        assert np.allclose(coords(transform_box(box, matrix, "ellipse")), coords(transform_box(box, matrix)))


def test_expand_params_refuse_an_unknown_rotated_box():
    with pytest.raises(ValueError, match="rotated_box"):
        ExpandParams(rotated_box="circle").validate()


def test_apply_variant_fills_corners_by_reflection_and_clips_boxes():
    pixels = np.full((80, 100), 150, np.uint8)
    pixels[:, 90:] = 140
    boxes = [Box("pit", 5, 5, 95, 75), Box("gone", 0, 0, 4, 4)]
    out, kept = apply_variant(pixels, boxes, Variant((0, 0, 100, 80), 1.0, 15.0, 1.0, 0.0), 0.3)
    assert out.min() >= 139  # no black wedges in the corners
    assert [b.label for b in kept] == ["pit"]
    assert coords(kept[0]) == (0, 0, 100, 80)  # the rotated box overflows: clipped to the picture


def test_relight_saturates_instead_of_wrapping():
    pixels = np.array([[0, 10, 128, 250]], np.uint8)
    assert relight(pixels, 1.0, -20).tolist() == [[0, 0, 108, 230]]
    assert relight(pixels, 1.0, 20).tolist() == [[20, 30, 148, 255]]
    mean = pixels.mean()
    assert relight(pixels, 2.0, 0).tolist() == [np.clip(np.rint((pixels - mean) * 2 + mean), 0, 255).tolist()[0]]


# --- expansion on files ---------------------------------------------------------------


def make_box_images(folder: Path) -> list[AnnotatedImage]:
    box_a, box_b = Box("scratch", 30, 28, 44, 60), Box("pit", 36, 30, 60, 50, difficult=True)
    return [
        AnnotatedImage(write(folder / "a.jpg", filled_box_image(80, 90, box_a)), 80, 90, [box_a]),
        AnnotatedImage(write(folder / "b.png", filled_box_image(96, 80, box_b)), 96, 80, [box_b]),
    ]


def test_expand_boxes_follow_the_picture(tmp_path):
    images = make_box_images(tmp_path / "src")
    params = ExpandParams(min_crop=0.9, max_rotation=12, rotate90=True, brightness=0, contrast=0)
    result = expand(images, tmp_path / "out", variants_per_image=4, seed=1, params=params)
    assert [im.name for im in result] == [
        "a.png", "a_aug01.png", "a_aug02.png", "a_aug03.png", "a_aug04.png",
        "b.png", "b_aug01.png", "b_aug02.png", "b_aug03.png", "b_aug04.png",
    ]
    assert result[0].boxes == images[0].boxes and result[5].boxes == images[1].boxes
    for image in result:
        pixels = cv2.imread(str(image.image_path), cv2.IMREAD_UNCHANGED)
        assert pixels.ndim == 2, "written grey"
        assert pixels.shape == (image.height, image.width)
        (box,) = image.boxes
        assert np.allclose(coords(box), bright_region(pixels), atol=2.0), image.name
    assert all(im.boxes[0].difficult for im in result[5:])


def test_expand_is_deterministic_per_seed_and_independent_of_order(tmp_path):
    images = make_box_images(tmp_path / "src")
    runs = {
        "first": expand(images, tmp_path / "first", 2, seed=5, params=ExpandParams()),
        "again": expand(images, tmp_path / "again", 2, seed=5, params=ExpandParams()),
        "reversed": expand(images[::-1], tmp_path / "reversed", 2, seed=5, params=ExpandParams()),
        "other": expand(images, tmp_path / "other", 2, seed=6, params=ExpandParams()),
    }

    def files(run: str) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in (tmp_path / run).iterdir()}

    assert files("first") == files("again") == files("reversed")
    assert [im.boxes for im in runs["first"]] == [im.boxes for im in runs["again"]]
    first, other = files("first"), files("other")
    assert first.keys() == other.keys()
    assert first["a.png"] == other["a.png"]  # originals do not depend on the seed
    assert all(first[n] != other[n] for n in first if "_aug" in n)


def test_expand_writes_jpeg_and_validates_params(tmp_path):
    images = make_box_images(tmp_path / "src")
    result = expand(images, tmp_path / "out", 1, seed=0, params=ExpandParams(image_format="jpg"))
    assert [p.suffix for p in (im.image_path for im in result)] == [".jpg"] * 4
    assert cv2.imread(str(result[1].image_path), cv2.IMREAD_UNCHANGED).ndim == 2
    for bad in [dict(min_crop=0), dict(min_scale=1.3, max_scale=1.2), dict(contrast=1.5),
                dict(image_format="gif"), dict(max_rotation=-1)]:
        with pytest.raises(ValueError):
            expand(images, tmp_path / "bad", 1, seed=0, params=ExpandParams(**bad))


# --- split --------------------------------------------------------------------------


def make_split_images(folder: Path) -> list[AnnotatedImage]:
    """40 common-class, 10 rare-class, 10 negative pictures, plus duplicates of three of them."""
    images = []
    specs = [("common", 40), ("rare", 10), (None, 10)]
    seed = 0
    for label, count in specs:
        for k in range(count):
            seed += 1
            path = write(folder / f"{label or 'neg'}_{k:02d}.png", noise(16, 16, seed))
            boxes = [Box(label, 1, 1, 8, 8)] if label else []
            images.append(AnnotatedImage(path, 16, 16, boxes))
    # the same pixels stored differently (3 channels) under another name, with
    # different boxes, like NEU-DET patches_101/105
    exact = write(folder / "zz_copy_of_rare_03.png", cv2.imread(str(images[43].image_path), cv2.IMREAD_COLOR))
    images.append(AnnotatedImage(exact, 16, 16, [Box("rare", 2, 2, 9, 9)]))
    # a near copy: one pixel changed by one grey level
    near = cv2.imread(str(images[5].image_path), cv2.IMREAD_GRAYSCALE)
    near[0, 0] = near[0, 0] + 1 if near[0, 0] < 255 else 254
    images.append(AnnotatedImage(write(folder / "zz_near_common_05.png", near), 16, 16, images[5].boxes))
    # a copy of a negative that carries a box
    images.append(AnnotatedImage(write(folder / "zz_neg_07_copy.png", cv2.imread(str(images[57].image_path),
                                                                         cv2.IMREAD_GRAYSCALE)),
                                 16, 16, [Box("common", 0, 0, 4, 4)]))
    return images


def test_duplicate_groups_find_exact_and_near_copies(tmp_path):
    images = make_split_images(tmp_path)
    groups = [sorted(images[i].name for i in g) for g in duplicate_groups(images) if len(g) > 1]
    assert sorted(groups) == [
        ["common_05.png", "zz_near_common_05.png"],
        ["neg_07.png", "zz_neg_07_copy.png"],
        ["rare_03.png", "zz_copy_of_rare_03.png"],
    ]
    strict = [g for g in duplicate_groups(images, near_tolerance=0) if len(g) > 1]
    assert len(strict) == 2  # the near copy needs the tolerance


def test_split_is_stratified_seeded_and_keeps_copies_together(tmp_path):
    images = make_split_images(tmp_path)
    groups = duplicate_groups(images)
    pairs = [("rare_03.png", "zz_copy_of_rare_03.png"), ("common_05.png", "zz_near_common_05.png"),
             ("neg_07.png", "zz_neg_07_copy.png")]
    splits = []
    for seed in range(8):
        train, val = split_train_val(images, 0.2, seed, groups=groups)
        assert len(train) + len(val) == len(images)
        assert {im.name for im in train}.isdisjoint(im.name for im in val)
        val_names = {im.name for im in val}
        for a, b in pairs:
            assert (a in val_names) == (b in val_names), (seed, a, b)
        rare_val = sum(1 for im in val if "rare" in im.labels())
        negative_val = sum(1 for im in val if not im.boxes)
        assert 2 <= rare_val <= 3  # 11 rare pictures (one pair) * 0.2
        # 9 negatives * 0.2 = 2, plus neg_07 when its boxed copy's group lands in val
        assert 2 <= negative_val <= 3
        assert 13 <= len(val) <= 15
        splits.append(sorted(val_names))
    assert len({tuple(s) for s in splits}) > 1, "different seeds give different splits"
    again = split_train_val(images[::-1], 0.2, 3)
    assert sorted(im.name for im in again[1]) == splits[3], "same seed: same split, whatever the input order"
    train, val = split_train_val(images, 0.0, 0, groups=groups)
    assert val == [] and train == images
    with pytest.raises(ValueError):
        split_train_val(images, 1.0, 0)
