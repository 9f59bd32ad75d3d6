"""Copy-paste of defect crops onto the expanded copies of other training pictures of the same class.

Why: a training picture shows few defects, so the model sees each scratch or pit in one place
and one company. More of the same class, cut from other pictures and pasted where the copy's
surface is free, give it more defects in new places and combinations at no cost per epoch.

How, so that a pasted defect does not teach anything false:
- a crop goes only onto a copy that already holds a box of its class: NEU-DET's classes come
  each on their own kind of surface, and a scratch cut with its smooth surrounding looks like a
  smooth rectangle on a crazed or scaled one, a shortcut the model could learn. Copies without
  boxes stay defect-free, so the false-alarm pressure of the defect-free pictures is kept;
- a crop is the annotated box plus a margin of the surface around it, at its own scale
  (the model learns sizes in pixels); it may be mirrored or quarter-turned, which keeps the box exact;
- it is blended in over the margin (a linear ramp) so no hard edge is drawn, and shifted to the
  destination's median grey, so a bright crop on a dark surface is not a bright rectangle;
- it goes only where the whole crop, margin included, overlaps no box already there: a pasted
  crop never hides or cuts an annotated defect;
- crops come only from the pictures being expanded (the training part), never from the picture
  itself, and a crop that fits nowhere is simply not pasted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.data.annotations import AnnotatedImage, Box
from detector.data.imagefiles import read_grey

MARGIN = 6  # pixels of surrounding surface taken with each box, over which it is blended in
MIN_RAMP = 2  # where a box touches its picture's edge there is no margin: still soften 2 px inside
PLACE_TRIES = 20


@dataclass(frozen=True)
class Crop:
    pixels: np.ndarray  # grey, the box plus its margin
    box: Box  # the defect's box in the crop's coordinates
    ramps: tuple[int, int, int, int]  # blend width at the left, top, right, bottom edge
    source: str  # name of the picture it was cut from


def crop_pool(images: list[AnnotatedImage]) -> dict[str, list[Crop]]:
    """Every box of `images` (except 'difficult' ones) as a crop, by class."""
    pool: dict[str, list[Crop]] = {}
    for image in images:
        boxes = [b for b in image.boxes if not b.difficult]
        if not boxes:
            continue
        pixels = read_grey(image.image_path)
        height, width = pixels.shape[:2]
        for box in boxes:
            x1, y1 = max(0, int(np.floor(box.x1)) - MARGIN), max(0, int(np.floor(box.y1)) - MARGIN)
            x2, y2 = min(width, int(np.ceil(box.x2)) + MARGIN), min(height, int(np.ceil(box.y2)) + MARGIN)
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            inner = box.with_coords(box.x1 - x1, box.y1 - y1, box.x2 - x1, box.y2 - y1)
            ramps = tuple(max(MIN_RAMP, int(r)) for r in (
                inner.x1, inner.y1, (x2 - x1) - inner.x2, (y2 - y1) - inner.y2))
            pool.setdefault(box.label, []).append(
                Crop(pixels[y1:y2, x1:x2].copy(), inner, ramps, image.name))
    return pool


def turn_crop(crop: Crop, quarter: int, mirror: bool) -> Crop:
    """The crop mirrored left-right (first) and turned `quarter` times 90 degrees counter-clockwise."""
    pixels, box, ramps = crop.pixels, crop.box, crop.ramps
    if mirror:
        width = pixels.shape[1]
        pixels = pixels[:, ::-1]
        box = box.with_coords(width - box.x2, box.y1, width - box.x1, box.y2)
        ramps = (ramps[2], ramps[1], ramps[0], ramps[3])
    for _ in range(quarter % 4):
        width = pixels.shape[1]
        pixels = np.rot90(pixels)  # counter-clockwise: (x, y) -> (y, width - x)
        box = box.with_coords(box.y1, width - box.x2, box.y2, width - box.x1)
        ramps = (ramps[1], ramps[2], ramps[3], ramps[0])
    return Crop(np.ascontiguousarray(pixels), box, ramps, crop.source)


def blend_weights(height: int, width: int, ramps: tuple[int, int, int, int]) -> np.ndarray:
    """1 inside, falling linearly to 0 across each edge's ramp."""
    left, top, right, bottom = ramps
    xs, ys = np.arange(width) + 0.5, np.arange(height) + 0.5
    wx = np.minimum(np.clip(xs / left, 0, 1), np.clip((width - xs) / right, 0, 1))
    wy = np.minimum(np.clip(ys / top, 0, 1), np.clip((height - ys) / bottom, 0, 1))
    return np.minimum.outer(wy, wx).astype(np.float32)


def _overlaps(a: tuple[float, float, float, float], box: Box) -> bool:
    return a[0] < box.x2 and box.x1 < a[2] and a[1] < box.y2 and box.y1 < a[3]


def paste_crops(
    pixels: np.ndarray, boxes: list[Box], pool: dict[str, list[Crop]], rng: np.random.Generator,
    count: int, own_name: str,
) -> tuple[np.ndarray, list[Box]]:
    """Up to `count` crops pasted where they cover no box; returns new pixels and all boxes.

    Each paste first picks one of the classes already on the picture (equal chances), then one
    of its crops not cut from `own_name` itself.
    """
    candidates = {label: [c for c in pool.get(label, []) if c.source != own_name] for label in {b.label for b in boxes}}
    classes = sorted(label for label, crops in candidates.items() if crops)
    if not classes:
        return pixels, list(boxes)
    out = pixels.astype(np.float32)
    boxes = list(boxes)
    height, width = out.shape[:2]
    for _ in range(count):
        # Draw every number whether or not the crop fits, so one paste does not shift the next.
        label = classes[int(rng.integers(len(classes)))]
        crop = candidates[label][int(rng.integers(len(candidates[label])))]
        crop = turn_crop(crop, int(rng.integers(4)), bool(rng.integers(2)))
        positions = rng.random((PLACE_TRIES, 2))
        ch, cw = crop.pixels.shape[:2]
        if cw > width or ch > height:
            continue
        for fx, fy in positions:
            x0, y0 = int(fx * (width - cw + 1)), int(fy * (height - ch + 1))
            if any(_overlaps((x0, y0, x0 + cw, y0 + ch), b) for b in boxes):
                continue
            patch = out[y0:y0 + ch, x0:x0 + cw]
            shifted = crop.pixels.astype(np.float32) + (np.median(patch) - np.median(crop.pixels))
            weights = blend_weights(ch, cw, crop.ramps)
            out[y0:y0 + ch, x0:x0 + cw] = weights * shifted + (1 - weights) * patch
            b = crop.box
            boxes.append(b.with_coords(b.x1 + x0, b.y1 + y0, b.x2 + x0, b.y2 + y0))
            break
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), boxes
