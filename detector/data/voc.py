"""Pascal VOC XML import/export, tolerant of the NEU-DET release's quirks.

Quirks handled (see shared/datasets/neu-det/README.md):
- `<filename>` sometimes lacks its suffix: the image is found from the XML's own
  file name (any common extension), `<filename>` is only a fallback.
- `<depth>` is ignored; images are always treated as grey.
- labels are stripped of surrounding whitespace; every box uses its own `<name>`.
- `<difficult>1</difficult>` is kept on the box.
- 1-based inclusive coordinates become (xmin - 1, ymin - 1, xmax, ymax), clipped
  to the image; degenerate boxes are dropped with a warning.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

from detector.data.annotations import AnnotatedImage, Box
from detector.data.classmap import ClassMap
from detector.data.imagefiles import find_image, image_size
from detector.data.roi import clip_boxes

logger = logging.getLogger(__name__)

# (images folder, annotations folder) pairs we recognise, most specific first.
LAYOUTS = (("images", "annotations"), ("JPEGImages", "Annotations"))


def find_voc_folders(root: Path) -> tuple[Path, Path]:
    """(images_dir, annotations_dir) for a VOC-style folder; a flat folder also works."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"VOC folder not found: {root}")
    for images_name, ann_name in LAYOUTS:
        if (root / ann_name).is_dir() and any((root / ann_name).glob("*.xml")):
            images_dir = root / images_name
            return (images_dir if images_dir.is_dir() else root / ann_name), root / ann_name
    if any(root.glob("*.xml")):
        return root, root
    raise FileNotFoundError(
        f"{root} holds no VOC annotations: expected annotations/*.xml (with images/) "
        "or Annotations/*.xml (with JPEGImages/)"
    )


def load_voc_dir(root: Path, class_map: ClassMap | None = None) -> list[AnnotatedImage]:
    """Every annotated image of a VOC folder, sorted by XML file name."""
    images_dir, ann_dir = find_voc_folders(root)
    xml_files = sorted(ann_dir.glob("*.xml"))
    if not xml_files:
        raise FileNotFoundError(f"no .xml files in {ann_dir}")
    images = []
    for xml_path in xml_files:
        image = load_voc_xml(xml_path, images_dir)
        if image is not None:
            images.append(image)
    return class_map.apply(images) if class_map else images


def load_voc_xml(xml_path: Path, images_dir: Path) -> AnnotatedImage | None:
    """One annotation file; None (with a warning) if its image cannot be found."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"{xml_path}: not valid XML ({exc})") from exc
    image_path = _find_voc_image(xml_path, images_dir, _text(root, "filename"))
    if image_path is None:
        logger.warning("%s: no image named %s.* in %s; skipped", xml_path.name, xml_path.stem, images_dir)
        return None
    width, height = _number(root, "size/width"), _number(root, "size/height")
    if not width or not height:  # missing or zero size: trust the picture itself
        width, height = image_size(image_path)
    boxes = [box for obj in root.findall("object") if (box := _parse_object(obj, xml_path)) is not None]
    boxes = clip_boxes(boxes, width, height, source=xml_path.name)
    return AnnotatedImage(image_path, int(width), int(height), boxes)


def _find_voc_image(xml_path: Path, images_dir: Path, filename: str) -> Path | None:
    found = find_image(images_dir, xml_path.stem)
    if found is None and filename:
        named = images_dir / filename
        found = named if named.is_file() else find_image(images_dir, Path(filename).stem)
    return found


def _parse_object(obj: ET.Element, xml_path: Path) -> Box | None:
    label = _text(obj, "name")
    coords = [_number(obj, f"bndbox/{tag}") for tag in ("xmin", "ymin", "xmax", "ymax")]
    if not label or None in coords:
        logger.warning("%s: object without a name or complete <bndbox>; skipped", xml_path.name)
        return None
    xmin, ymin, xmax, ymax = coords
    difficult = _number(obj, "difficult") == 1
    return Box(label, xmin - 1, ymin - 1, xmax, ymax, difficult)


def _text(element: ET.Element, path: str) -> str:
    found = element.find(path)
    return (found.text or "").strip() if found is not None else ""


def _number(element: ET.Element, path: str) -> float | None:
    text = _text(element, path)
    try:
        return float(text)
    except ValueError:
        return None


def write_voc_xml(image: AnnotatedImage, path: Path) -> Path:
    """Write VOC XML for `image`. Coordinates are rounded to whole pixels (VOC is integer)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = image.image_path.parent.name
    ET.SubElement(root, "filename").text = image.image_path.name
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(image.width)
    ET.SubElement(size, "height").text = str(image.height)
    ET.SubElement(size, "depth").text = "1"
    ET.SubElement(root, "segmented").text = "0"
    for box in image.boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = box.label
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "1" if box.difficult else "0"
        bndbox = ET.SubElement(obj, "bndbox")
        values = (round(box.x1) + 1, round(box.y1) + 1, round(box.x2), round(box.y2))
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), values):
            ET.SubElement(bndbox, tag).text = str(value)
    ET.indent(root)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=False)
    return path
