"""Cropping training pictures to a region, and the box clipping shared by importers, transforms and QA export.

The station's camera sees more than the part; cropping every picture to the
part's region keeps the model from learning the fixture. The region is the
station's own type (detector.regions.Roi), so a region drawn on the station
means the same here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from detector.data.annotations import AnnotatedImage, Box
from detector.data.imagefiles import read_grey, unique_stem, write_grey
from detector.regions import Roi

logger = logging.getLogger(__name__)


def clip_box(box: Box, width: float, height: float) -> Box | None:
    """`box` clipped to the image; None if nothing (or only a line) is left."""
    x1, x2 = max(0.0, min(box.x1, width)), max(0.0, min(box.x2, width))
    y1, y2 = max(0.0, min(box.y1, height)), max(0.0, min(box.y2, height))
    if x2 <= x1 or y2 <= y1:
        return None
    return box.with_coords(x1, y1, x2, y2)


def clip_boxes(boxes: list[Box], width: float, height: float, source: object = "") -> list[Box]:
    """Clip boxes to the image and drop degenerate ones, logging each drop."""
    kept = []
    for box in boxes:
        clipped = clip_box(box, width, height)
        if clipped is None:
            logger.warning(
                "%s: dropped degenerate box %s (%.1f, %.1f, %.1f, %.1f) in a %gx%g image",
                source, box.label, box.x1, box.y1, box.x2, box.y2, width, height,
            )
        else:
            kept.append(clipped)
    return kept


def visible_fraction(box: Box, width: float, height: float) -> float:
    """Share of the box's area that lies inside a `width` x `height` image at the origin."""
    area = box.width * box.height
    clipped = clip_box(box, width, height)
    if area <= 0 or clipped is None:
        return 0.0
    return clipped.width * clipped.height / area


def crop_boxes(boxes: list[Box], roi: Roi | tuple[int, int, int, int], min_visible: float = 0.3) -> list[Box]:
    """Boxes in region coordinates: shifted, clipped, and dropped if under `min_visible` of them is inside."""
    x, y, w, h = as_roi(roi).to_list()
    kept = []
    for box in boxes:
        shifted = box.with_coords(box.x1 - x, box.y1 - y, box.x2 - x, box.y2 - y)
        if visible_fraction(shifted, w, h) < min_visible:
            continue
        clipped = clip_box(shifted, w, h)
        if clipped is not None:
            kept.append(clipped)
    return kept


def as_roi(roi: Roi | tuple[int, int, int, int]) -> Roi:
    """The region type from an (x, y, w, h) tuple too; ValueError for a region that cannot be one."""
    return roi if isinstance(roi, Roi) else Roi.from_list(list(roi))


def check_roi(roi: Roi | tuple[int, int, int, int], width: int, height: int, name: object = "image") -> None:
    """ValueError (saying "ROI") unless the whole region fits inside the picture."""
    try:
        as_roi(roi).check_inside(width, height, name)
    except ValueError as exc:
        raise ValueError(f"ROI {tuple(roi) if not isinstance(roi, Roi) else roi.to_list()}: {exc}") from None


def crop_region(
    images: list[AnnotatedImage],
    roi: Roi,
    out_dir: Path,
    min_visible: float = 0.3,
) -> list[AnnotatedImage]:
    """Crop every image to `roi`, writing grey PNGs into `out_dir`."""
    try:
        region = as_roi(roi)
    except ValueError as exc:
        raise ValueError(f"ROI {roi}: {exc}") from None
    for image in images:  # check all first so a bad ROI fails before any writing
        check_roi(region, image.width, image.height, image.image_path.name)
    x, y, w, h = region.to_list()
    out_dir = Path(out_dir)
    used: set[str] = set()
    cropped = []
    for image in images:
        pixels = read_grey(image.image_path)
        if pixels.shape[:2] != (image.height, image.width):
            check_roi(region, pixels.shape[1], pixels.shape[0], image.image_path.name)
        out_path = out_dir / (unique_stem(image.image_path.stem, used) + ".png")
        write_grey(out_path, pixels[y : y + h, x : x + w])
        cropped.append(AnnotatedImage(out_path, w, h, crop_boxes(image.boxes, region, min_visible)))
    return cropped
