"""COCO JSON import and MMDetection-compatible export.

Export notes (why the JSON looks the way it does):
- image and annotation ids start at 1 (some COCO tools treat id 0 as "missing");
- difficult boxes are written with `iscrowd=1`, which MMDetection's CocoDataset
  turns into `ignore_flag=1`: the model is neither rewarded nor punished there;
- `file_name` is relative to the images folder that the training config names
  as `data_prefix`, normally `<json folder>/images/`;
- `info` and `licenses` are present because some pycocotools versions expect them.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from detector.data.annotations import AnnotatedImage, Box
from detector.data.classmap import ClassMap
from detector.data.imagefiles import image_size
from detector.data.roi import clip_boxes

logger = logging.getLogger(__name__)


def load_coco(
    json_path: Path,
    images_dir: Path | None = None,
    class_map: ClassMap | None = None,
) -> list[AnnotatedImage]:
    """Images (with or without boxes) of a COCO file, in the file's image order.

    `images_dir` defaults to `<json folder>/images` when that exists, else the JSON's folder.
    """
    json_path = Path(json_path)
    data = _read_json(json_path)
    if images_dir is None:
        images_dir = json_path.parent / "images"
        if not images_dir.is_dir():
            images_dir = json_path.parent
    categories = {c.get("id"): str(c.get("name", "")).strip() for c in data.get("categories", [])}
    boxes_by_image: dict[object, list[Box]] = {}
    for ann in data.get("annotations", []):
        box = _parse_annotation(ann, categories, json_path)
        if box is not None:
            boxes_by_image.setdefault(ann.get("image_id"), []).append(box)
    images = []
    for entry in data["images"]:
        image = _parse_image(entry, Path(images_dir), boxes_by_image.get(entry.get("id"), []), json_path)
        if image is not None:
            images.append(image)
    return class_map.apply(images) if class_map else images


def _read_json(json_path: Path) -> dict:
    if not json_path.is_file():
        raise FileNotFoundError(f"COCO file not found: {json_path}")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{json_path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{json_path}: not a COCO file (no 'images' list)")
    return data


def _parse_annotation(ann: dict, categories: dict, json_path: Path) -> Box | None:
    label = categories.get(ann.get("category_id"))
    bbox = ann.get("bbox")
    if label is None or not isinstance(bbox, list) or len(bbox) != 4:
        logger.warning("%s: annotation %s has no known category or bbox; skipped", json_path.name, ann.get("id"))
        return None
    x, y, w, h = (float(v) for v in bbox)
    return Box(label, x, y, x + w, y + h, difficult=bool(ann.get("iscrowd", 0)))


def _parse_image(entry: dict, images_dir: Path, boxes: list[Box], json_path: Path) -> AnnotatedImage | None:
    image_path = images_dir / str(entry.get("file_name", ""))
    if not image_path.is_file():
        logger.warning("%s: image %s not found; skipped", json_path.name, image_path)
        return None
    width, height = entry.get("width"), entry.get("height")
    if not width or not height:
        width, height = image_size(image_path)
    boxes = clip_boxes(boxes, width, height, source=image_path.name)
    return AnnotatedImage(image_path, int(width), int(height), boxes)


def coco_dict(images: list[AnnotatedImage], classes: list[str], images_dir: Path) -> dict:
    """The COCO structure for `images`; categories get ids 1..n in the order of `classes`."""
    category_ids = {name: i for i, name in enumerate(classes, start=1)}
    if len(category_ids) != len(classes):
        raise ValueError(f"duplicate class names in {classes}")
    coco_images, annotations = [], []
    for image_id, image in enumerate(images, start=1):
        coco_images.append({
            "id": image_id,
            "file_name": _relative_name(image.image_path, images_dir),
            "width": image.width,
            "height": image.height,
        })
        for box in image.boxes:
            if box.label not in category_ids:
                raise ValueError(f"{image.name}: class {box.label!r} is not one of {classes}")
            w, h = box.width, box.height
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category_ids[box.label],
                "bbox": [_num(box.x1), _num(box.y1), _num(w), _num(h)],
                "area": _num(w * h),
                "iscrowd": 1 if box.difficult else 0,
            })
    return {
        "info": {"description": "written by detector.data.coco"},
        "licenses": [],
        "images": coco_images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n, "supercategory": "defect"} for n, i in category_ids.items()],
    }


def write_coco(
    images: list[AnnotatedImage],
    classes: list[str],
    json_path: Path,
    images_dir: Path | None = None,
) -> dict:
    """Write COCO JSON; `file_name`s are relative to `images_dir` (default `<json folder>/images`)."""
    json_path = Path(json_path)
    images_dir = Path(images_dir) if images_dir is not None else json_path.parent / "images"
    data = coco_dict(images, classes, images_dir)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return data


def _relative_name(image_path: Path, images_dir: Path) -> str:
    try:
        return Path(os.path.relpath(Path(image_path).resolve(), Path(images_dir).resolve())).as_posix()
    except ValueError:  # another drive on Windows: only an absolute path can work
        return Path(image_path).resolve().as_posix()


def _num(value: float) -> float | int:
    """Whole numbers as int, others rounded: keeps the JSON short and stable."""
    rounded = round(float(value), 3)
    return int(rounded) if rounded.is_integer() else rounded
