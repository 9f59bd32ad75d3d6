"""Offline data-set expansion: N randomly cropped/scaled/rotated/relit variants per image.

Design choices:
- crop, scale and rotation are one affine warp of the *whole* source picture, so
  the corners uncovered by a rotation show the real neighbouring surface where it
  exists; only beyond the picture's edge is the border filled by reflection (no
  black wedges that could look like defects);
- a rotated box becomes the axis-aligned box of its four turned corners, or, with
  rotated_box="ellipse", of the turned ellipse inscribed in it. Turned by 5 degrees,
  a scratch box 0.15 times as wide as it is long gets 57% wider by its corners but
  15% by its ellipse: the corners' box teaches the model boxes wider than the
  defect. Both are exact for quarter turns;
- every image gets its own generator seeded from (seed, output name), so a
  variant does not depend on which other images are processed or in what order;
- output is single-channel grey because the model is trained on grey;
- with `paste`, each copy also gets defect crops cut from the other pictures
  (`detector.data.paste`), drawn from their own generator so the copies are
  otherwise exactly those made without it.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from detector.data.annotations import AnnotatedImage, Box
from detector.data.imagefiles import read_grey, unique_stem, write_grey
from detector.data.paste import crop_pool, paste_crops
from detector.data.roi import clip_box, visible_fraction

ROTATED_BOXES = ("corners", "ellipse")


@dataclass(frozen=True)
class ExpandParams:
    min_crop: float = 0.7  # each side keeps at least this share of the source
    min_scale: float = 0.8
    max_scale: float = 1.2
    max_rotation: float = 10.0  # degrees, uniform in [-max, +max]
    rotate90: bool = False  # also add a random multiple of 90 degrees
    brightness: float = 20.0  # beta: grey levels added, uniform in [-b, +b]
    contrast: float = 0.2  # alpha: gain about the mean grey, uniform in [1 - c, 1 + c]
    min_visible: float = 0.3  # drop boxes with less of their area inside the result
    rotated_box: str = "corners"  # "corners" or "ellipse": which shape inside the box is turned
    image_format: str = "png"  # "png" or "jpg" (quality 95)
    paste: int = 0  # defect crops of its own classes, from other pictures, to paste on each copy

    def validate(self) -> ExpandParams:
        if not 0 < self.min_crop <= 1:
            raise ValueError(f"min_crop must be in (0, 1], got {self.min_crop}")
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}")
        if not 0 <= self.max_rotation <= 180:
            raise ValueError(f"max_rotation must be in [0, 180] degrees, got {self.max_rotation}")
        if self.brightness < 0 or not 0 <= self.contrast < 1:
            raise ValueError("brightness must be >= 0 and contrast in [0, 1)")
        if not 0 <= self.min_visible <= 1:
            raise ValueError(f"min_visible must be in [0, 1], got {self.min_visible}")
        if self.rotated_box not in ROTATED_BOXES:
            raise ValueError(f"rotated_box must be one of {', '.join(ROTATED_BOXES)}, got {self.rotated_box!r}")
        if self.image_format not in ("png", "jpg"):
            raise ValueError(f"image_format must be 'png' or 'jpg', got {self.image_format!r}")
        if self.paste < 0:
            raise ValueError(f"paste must be 0 or more, got {self.paste}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Variant:
    """The random choices for one variant (kept so a test or log can show them)."""

    crop: tuple[int, int, int, int]  # x, y, w, h in the source
    scale: float
    angle: float  # degrees, counter-clockwise as shown on screen
    alpha: float
    beta: float


def sample_variant(rng: np.random.Generator, width: int, height: int, params: ExpandParams) -> Variant:
    # Always draw every number in the same order so one setting does not shift the others.
    fw, fh = rng.uniform(params.min_crop, 1.0, size=2)
    cw, ch = max(1, round(width * fw)), max(1, round(height * fh))
    x0 = int(rng.integers(0, width - cw + 1))
    y0 = int(rng.integers(0, height - ch + 1))
    scale = float(rng.uniform(params.min_scale, params.max_scale))
    angle = float(rng.uniform(-params.max_rotation, params.max_rotation))
    quarter = int(rng.integers(0, 4))
    alpha = float(rng.uniform(1 - params.contrast, 1 + params.contrast))
    beta = float(rng.uniform(-params.brightness, params.brightness))
    if params.rotate90:
        angle += 90 * quarter
    return Variant((x0, y0, cw, ch), scale, angle, alpha, beta)


def variant_matrix(variant: Variant) -> tuple[np.ndarray, int, int]:
    """2x3 cv2 matrix (pixel-index coordinates) from source to output, and the output size.

    The crop centre goes to the output centre, rotated by `angle` and scaled.
    The output keeps the crop's aspect (swapped when the turn is nearer 90/270).
    """
    x0, y0, cw, ch = variant.crop
    out_w, out_h = max(1, round(cw * variant.scale)), max(1, round(ch * variant.scale))
    if round(variant.angle / 90) % 2 == 1:
        out_w, out_h = out_h, out_w
    src_centre = (x0 + (cw - 1) / 2, y0 + (ch - 1) / 2)
    matrix = cv2.getRotationMatrix2D(src_centre, variant.angle, variant.scale)
    matrix[0, 2] += (out_w - 1) / 2 - src_centre[0]
    matrix[1, 2] += (out_h - 1) / 2 - src_centre[1]
    return matrix, out_w, out_h


def transform_box(box: Box, matrix: np.ndarray, rotated_box: str = "corners") -> Box:
    """Axis-aligned box of `box` mapped by `matrix`: around its four mapped corners
    ("corners") or around its mapped inscribed ellipse ("ellipse").

    `matrix` works on pixel indices (cv2: pixel i's centre is at i); our boxes use
    continuous coordinates (pixel i spans [i, i+1)), hence the half-pixel shifts.
    """
    linear = matrix[:, :2]
    if rotated_box == "ellipse":
        centre = np.array([(box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2]) - 0.5
        cx, cy = linear @ centre + matrix[:, 2] + 0.5
        # An ellipse with semi-axes a, b mapped by L reaches sqrt((L00 a)^2 + (L01 b)^2) in x (same in y).
        half_x, half_y = np.hypot(linear[:, 0] * box.width / 2, linear[:, 1] * box.height / 2)
        return box.with_coords(float(cx - half_x), float(cy - half_y), float(cx + half_x), float(cy + half_y))
    corners = np.array(
        [[box.x1, box.y1], [box.x2, box.y1], [box.x2, box.y2], [box.x1, box.y2]], dtype=np.float64
    ) - 0.5
    mapped = corners @ linear.T + matrix[:, 2] + 0.5
    x1, y1 = mapped.min(axis=0)
    x2, y2 = mapped.max(axis=0)
    return box.with_coords(float(x1), float(y1), float(x2), float(y2))


def warp_boxes(
    boxes: list[Box], matrix: np.ndarray, width: int, height: int, min_visible: float, rotated_box: str = "corners"
) -> list[Box]:
    kept = []
    for box in boxes:
        moved = transform_box(box, matrix, rotated_box)
        if visible_fraction(moved, width, height) >= min_visible:
            clipped = clip_box(moved, width, height)
            if clipped is not None:
                kept.append(clipped)
    return kept


def apply_variant(
    pixels: np.ndarray, boxes: list[Box], variant: Variant, min_visible: float, rotated_box: str = "corners"
) -> tuple[np.ndarray, list[Box]]:
    matrix, out_w, out_h = variant_matrix(variant)
    warped = cv2.warpAffine(
        pixels, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )
    moved = warp_boxes(boxes, matrix, out_w, out_h, min_visible, rotated_box)
    return relight(warped, variant.alpha, variant.beta), moved


def relight(pixels: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Contrast `alpha` about the picture's mean grey, plus `beta`, saturated to 0..255.

    Scaling about the mean (not about 0) keeps a bright picture from turning
    white under a contrast gain > 1, which would wipe out its defects.
    """
    values = pixels.astype(np.float32)
    mean = np.float32(values.mean())
    values = (values - mean) * np.float32(alpha) + mean + np.float32(beta)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def image_rng(seed: int, name: str) -> np.random.Generator:
    """A generator that depends only on the seed and the image's (output) name."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest[:8], "little")])


def expand(
    images: list[AnnotatedImage],
    out_dir: Path,
    variants_per_image: int,
    seed: int,
    params: ExpandParams | None = None,
) -> list[AnnotatedImage]:
    """Write each image (grey) plus `variants_per_image` random variants into `out_dir`.

    Returns originals and variants, each original followed by its variants.
    With `variants_per_image=0` this just writes grey copies. Crops for `params.paste`
    come from `images` only, so a training copy never holds a piece of a validation picture.
    """
    params = (params or ExpandParams()).validate()
    if variants_per_image < 0:
        raise ValueError(f"variants_per_image must be >= 0, got {variants_per_image}")
    out_dir = Path(out_dir)
    suffix = "." + params.image_format
    used: set[str] = set()
    result = []
    pool = crop_pool(images) if params.paste and variants_per_image else {}
    for image in images:
        pixels = read_grey(image.image_path)
        height, width = pixels.shape[:2]
        stem = unique_stem(image.image_path.stem, used)
        original = write_grey(out_dir / (stem + suffix), pixels)
        result.append(AnnotatedImage(original, width, height, list(image.boxes)))
        rng = image_rng(seed, stem)
        paste_rng = image_rng(seed, stem + "/paste")
        for k in range(1, variants_per_image + 1):
            variant = sample_variant(rng, width, height, params)
            out_pixels, boxes = apply_variant(pixels, image.boxes, variant, params.min_visible, params.rotated_box)
            if pool:
                out_pixels, boxes = paste_crops(out_pixels, boxes, pool, paste_rng, params.paste, image.name)
            path = write_grey(out_dir / (unique_stem(f"{stem}_aug{k:02d}", used) + suffix), out_pixels)
            result.append(AnnotatedImage(path, out_pixels.shape[1], out_pixels.shape[0], boxes))
    return result

