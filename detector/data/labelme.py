"""LabelMe JSON import: rectangles, polygons and circles become tight boxes.

A shape flag named `difficult` (LabelMe `--flags difficult`) marks a difficult box.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from detector.data.annotations import AnnotatedImage, Box
from detector.data.classmap import ClassMap
from detector.data.imagefiles import find_image, image_size
from detector.data.roi import clip_boxes

logger = logging.getLogger(__name__)

AREA_SHAPES = ("rectangle", "polygon", "circle")


def load_labelme_dir(root: Path, class_map: ClassMap | None = None) -> list[AnnotatedImage]:
    """Every LabelMe JSON under `root` (recursively), sorted by path.

    JSON files that are not LabelMe files (no `shapes`) are skipped silently, so a
    folder may also hold other JSON (e.g. a COCO export).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"LabelMe folder not found: {root}")
    images = []
    for json_path in sorted(root.rglob("*.json")):
        data = _read_labelme(json_path)
        if data is None:
            continue
        image = _labelme_image(json_path, data)
        if image is not None:
            images.append(image)
    if not images:
        raise FileNotFoundError(f"no LabelMe .json files with images found under {root}")
    return class_map.apply(images) if class_map else images


def _read_labelme(json_path: Path) -> dict | None:
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        logger.warning("%s: not valid JSON; skipped", json_path)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        return None
    return data


def _labelme_image(json_path: Path, data: dict) -> AnnotatedImage | None:
    image_path = _find_labelme_image(json_path, str(data.get("imagePath") or ""))
    if image_path is None:
        logger.warning("%s: image %r not found; skipped", json_path, data.get("imagePath"))
        return None
    width, height = data.get("imageWidth"), data.get("imageHeight")
    if not width or not height:
        width, height = image_size(image_path)
    boxes = [box for shape in data["shapes"] if (box := _shape_box(shape, json_path)) is not None]
    boxes = clip_boxes(boxes, width, height, source=json_path.name)
    return AnnotatedImage(image_path, int(width), int(height), boxes)


def _find_labelme_image(json_path: Path, image_path: str) -> Path | None:
    """`imagePath` is relative to the JSON (LabelMe on Windows writes backslashes)."""
    if image_path:
        candidate = json_path.parent / image_path.replace("\\", "/")
        if candidate.is_file():
            return candidate
    return find_image(json_path.parent, json_path.stem)


def _shape_box(shape: dict, json_path: Path) -> Box | None:
    label = str(shape.get("label", "")).strip()
    kind = shape.get("shape_type") or "polygon"  # old LabelMe files omit it for polygons
    points = shape.get("points") or []
    if kind not in AREA_SHAPES:
        logger.warning("%s: ignored %s shape %r (only areas become boxes)", json_path.name, kind, label)
        return None
    if not label or len(points) < 2:
        logger.warning("%s: %s shape without label or points; skipped", json_path.name, kind)
        return None
    difficult = bool((shape.get("flags") or {}).get("difficult", False))
    xs = [float(p[0]) for p in points]
    ys = [float(p[1]) for p in points]
    if kind == "circle":  # points are the centre and one point on the rim
        radius = ((xs[1] - xs[0]) ** 2 + (ys[1] - ys[0]) ** 2) ** 0.5
        return Box(label, xs[0] - radius, ys[0] - radius, xs[0] + radius, ys[0] + radius, difficult)
    return Box(label, min(xs), min(ys), max(xs), max(ys), difficult)
