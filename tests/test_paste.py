"""Copy-paste of defect crops (detector/data/paste.py) and its use in expansion and data sets."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from detector.data.annotations import AnnotatedImage, Box
from detector.data.expand import ExpandParams, expand
from detector.data.paste import MARGIN, blend_weights, crop_pool, paste_crops, turn_crop

BACKGROUND = 40


def picture(path: Path, width: int, height: int, boxes: list[Box], level: int) -> AnnotatedImage:
    """Flat grey picture whose boxes are filled with `level`, so a pasted box can be told by its grey."""
    pixels = np.full((height, width), BACKGROUND, np.uint8)
    for box in boxes:
        pixels[int(box.y1):int(box.y2), int(box.x1):int(box.x2)] = level
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)
    return AnnotatedImage(path, width, height, list(boxes))


def box_levels(pixels: np.ndarray, box: Box) -> np.ndarray:
    return pixels[int(box.y1):int(box.y2), int(box.x1):int(box.x2)]


def test_turned_and_mirrored_crops_keep_their_box_and_blend_edges(tmp_path):
    # Box off-centre, so every turn and mirror moves it somewhere else in the crop.
    image = picture(tmp_path / "a.png", 60, 50, [Box("scratch", 10, 20, 18, 44)], level=230)
    (crop,) = crop_pool([image])["scratch"]
    assert crop.pixels.shape == (36, 20)  # the box plus 6 px each side, cut short by the picture's bottom edge
    assert crop.ramps == (MARGIN, MARGIN, MARGIN, MARGIN)
    for quarter in range(4):
        for mirror in (False, True):
            turned = turn_crop(crop, quarter, mirror)
            bright = np.argwhere(turned.pixels > 128)
            (y1, x1), (y2, x2) = bright.min(axis=0), bright.max(axis=0) + 1
            b = turned.box
            assert (b.x1, b.y1, b.x2, b.y2) == (x1, y1, x2, y2), (quarter, mirror)
            weights = blend_weights(*turned.pixels.shape, turned.ramps)
            assert (box_levels(weights, b) == 1).all(), "the defect itself is pasted whole"
            assert weights[0, 0] < 0.1 and weights[-1, -1] < 0.1, "the margin fades into the surface"


def test_a_crop_touching_its_pictures_edge_still_gets_a_soft_edge(tmp_path):
    image = picture(tmp_path / "a.png", 40, 40, [Box("pit", 0, 5, 12, 20)], level=200)
    (crop,) = crop_pool([image])["pit"]
    assert crop.ramps[0] == 2 and crop.box.x1 == 0  # no margin on the left: 2 px of the box blend in
    weights = blend_weights(*crop.pixels.shape, crop.ramps)
    assert weights[10, 0] < 0.5 and weights[10, 2] == 1


def test_paste_adds_only_the_pictures_own_classes_where_no_box_is(tmp_path):
    donors = [
        picture(tmp_path / f"s{k}.png", 64, 64, [Box("scratch", 20, 8, 26, 40)], level=150 + 20 * k)
        for k in range(3)
    ] + [picture(tmp_path / "p.png", 64, 64, [Box("pit", 10, 10, 30, 30)], level=90)]
    pool = crop_pool(donors)
    target_box = Box("scratch", 4, 4, 10, 60)
    pixels = np.full((64, 128), BACKGROUND, np.uint8)
    pixels[4:60, 4:10] = 250
    rng = np.random.default_rng(0)
    out, boxes = paste_crops(pixels, [target_box], pool, rng, count=3, own_name="s0.png")
    assert boxes[0] == target_box and len(boxes) >= 3, "scratches fit beside the one already there"
    pasted = boxes[1:]
    assert {b.label for b in pasted} == {"scratch"}, "no pit on a picture that holds none"
    assert (box_levels(out, target_box) == 250).all(), "the annotated defect is left untouched"
    for box in pasted:
        level = int(np.median(box_levels(out, box)))
        assert level in (170, 190), "each pasted box holds a defect from another picture, never from s0"
        grown = (box.x1 - MARGIN, box.y1 - MARGIN, box.x2 + MARGIN, box.y2 + MARGIN)
        for other in boxes:
            if other is not box:
                assert not (grown[0] < other.x2 and other.x1 < grown[2] and grown[1] < other.y2
                            and other.y1 < grown[3]), "a crop's margin never covers another box"
    # Outside every pasted crop the picture is what it was.
    mask = np.ones(out.shape, bool)
    for box in pasted:
        mask[int(box.y1) - MARGIN:int(box.y2) + MARGIN, int(box.x1) - MARGIN:int(box.x2) + MARGIN] = False
    assert (out[mask] == pixels[mask]).all()
    # A picture's own defect is never pasted back onto its copy.
    own_only = {"scratch": [c for c in pool["scratch"] if c.source == "s0.png"]}
    out, boxes = paste_crops(pixels, [target_box], own_only, rng, count=3, own_name="s0.png")
    assert boxes == [target_box] and (out == pixels).all()


def test_paste_leaves_defect_free_copies_and_crops_that_do_not_fit_alone(tmp_path):
    pool = crop_pool([picture(tmp_path / "big.png", 64, 64, [Box("pit", 2, 2, 60, 60)], level=200)])
    rng = np.random.default_rng(1)
    empty = np.full((64, 64), BACKGROUND, np.uint8)
    out, boxes = paste_crops(empty, [], pool, rng, count=2, own_name="x.png")
    assert boxes == [] and (out == empty).all(), "a defect-free copy stays defect-free"
    holding = empty.copy()
    out, boxes = paste_crops(holding, [Box("pit", 0, 0, 8, 8)], pool, rng, count=2, own_name="x.png")
    assert len(boxes) == 1 and (out == holding).all(), "a 70 px crop has no free place on a 64 px picture"


def test_expand_with_paste_keeps_the_copies_and_adds_boxes_deterministically(tmp_path):
    images = [
        picture(tmp_path / "src" / f"s{k}.png", 120, 120, [Box("scratch", 10 + 5 * k, 10, 18 + 5 * k, 60)],
                level=200 + 10 * k)
        for k in range(3)
    ] + [picture(tmp_path / "src" / "clean.png", 120, 120, [], level=0)]
    params = ExpandParams(brightness=0, contrast=0)
    plain = expand(images, tmp_path / "plain", 2, seed=4, params=params)
    pasted = expand(images, tmp_path / "pasted", 2, seed=4, params=ExpandParams(brightness=0, contrast=0, paste=2))
    again = expand(images, tmp_path / "again", 2, seed=4, params=ExpandParams(brightness=0, contrast=0, paste=2))
    assert [im.name for im in plain] == [im.name for im in pasted]
    added = 0
    for before, after, repeat in zip(plain, pasted, again):
        assert after.boxes[:len(before.boxes)] == before.boxes, "the copy's own boxes are unchanged"
        assert after.boxes == repeat.boxes
        assert after.image_path.read_bytes() == repeat.image_path.read_bytes()
        if "_aug" not in after.name or not before.boxes:
            assert after.boxes == before.boxes, "originals and defect-free copies get nothing"
            assert after.image_path.read_bytes() == before.image_path.read_bytes()
        added += len(after.boxes) - len(before.boxes)
    assert added >= 6, "the six copies with a scratch get six or more pasted scratches (of up to 12)"
    with pytest.raises(ValueError):
        ExpandParams(paste=-1).validate()


def test_dataset_pastes_only_training_crops_into_training_copies(tmp_path):
    from detector.data.pipeline import build_dataset
    from detector.data.voc import write_voc_xml

    # Each picture's scratch has its own grey, so any pasted crop shows which picture it came from.
    source = tmp_path / "source"
    for k in range(10):
        box = Box("scratch", 8 + 2 * k, 6, 14 + 2 * k, 50)
        image = picture(source / "images" / f"scratch_{k}.png", 96, 64, [box], level=120 + 12 * k)
        write_voc_xml(image, source / "annotations" / f"scratch_{k}.xml")
    out = tmp_path / "out"
    summary = build_dataset([source], out, val_fraction=0.3, seed=2, expand_variants=2,
                            expand_params=ExpandParams(brightness=0, contrast=0, max_rotation=0, min_crop=1,
                                                       min_scale=1, max_scale=1, paste=2))
    assert summary["options"]["expand_params"]["paste"] == 2
    levels = {}
    for split in ("train", "val"):
        coco = json.loads((out / split / "annotations.json").read_text())
        files = {im["id"]: im["file_name"] for im in coco["images"]}
        levels[split] = set()
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            grey = cv2.imread(str(out / split / "images" / files[ann["image_id"]]), cv2.IMREAD_GRAYSCALE)
            levels[split].add(int(np.median(grey[int(y):int(y + h), int(x):int(x + w)])))
        assert sum(1 for im in coco["images"]) == summary["splits"][split]["images"]
    assert len(levels["val"]) == 3 and not levels["val"] & levels["train"], "no validation defect in training"
    assert summary["splits"]["train"]["boxes"]["scratch"] > 3 * 7, "copies got pasted scratches"
