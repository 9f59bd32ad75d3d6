"""Small image-file helpers shared by the importers and transforms.

Files are read with `numpy.fromfile` + `cv2.imdecode` (and written the same way
in reverse) because `cv2.imread` cannot open non-ASCII paths on Windows, where
the inspection station runs.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from detector.images import PICTURE_SUFFIXES

IMAGE_EXTENSIONS = PICTURE_SUFFIXES
JPEG_QUALITY = 95


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def find_image(folder: Path, stem: str) -> Path | None:
    """The image in `folder` named `stem` with any common extension, or None."""
    for ext in IMAGE_EXTENSIONS:
        for candidate in (folder / (stem + ext), folder / (stem + ext.upper())):
            if candidate.is_file():
                return candidate
    return None


def read_grey(path: Path) -> np.ndarray:
    """Decode an image file as single-channel uint8 (colour files are converted)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError(f"cannot decode image: {path}")
    return image


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file."""
    height, width = read_grey(path).shape[:2]
    return width, height


def write_grey(path: Path, image: np.ndarray) -> Path:
    """Write a grey image; the format follows the suffix (.png or .jpg/.jpeg, quality 95)."""
    path = Path(path)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    elif suffix == ".png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, 3]
    else:
        raise ValueError(f"unsupported output image format {suffix!r} (use .png or .jpg)")
    ok, encoded = cv2.imencode(suffix, image, params)
    if not ok:
        raise ValueError(f"cannot encode image for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded.tofile(str(path))
    return path


def unique_stem(stem: str, used: set[str]) -> str:
    """`stem`, or `stem_2`, `stem_3`... if already used; records the result in `used`."""
    candidate, n = stem, 1
    while candidate.lower() in used:
        n += 1
        candidate = f"{stem}_{n}"
    used.add(candidate.lower())
    return candidate
