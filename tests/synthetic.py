"""Small labelled steel-like pictures the tests generate themselves (VOC layout)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from detector.data.annotations import AnnotatedImage, Box
from detector.data.voc import write_voc_xml


def steel_texture(size: int, rng: np.random.Generator) -> np.ndarray:
    noise = cv2.GaussianBlur(rng.normal(128, 18, (size, size)).astype(np.float32), (0, 0), 1.2)
    streaks = cv2.GaussianBlur(rng.normal(0, 8, (size, 1)).astype(np.float32), (0, 0), 2)
    return np.clip(noise + streaks, 0, 255).astype(np.uint8)


def add_scratch(image: np.ndarray, rng: np.random.Generator) -> Box:
    size = image.shape[0]
    x = int(rng.integers(size // 8, size * 7 // 8))
    y1, y2 = int(rng.integers(2, size // 4)), int(rng.integers(size * 3 // 4, size - 2))
    dx = int(rng.integers(-size // 20, size // 20 + 1))
    width = max(2, size // 60)
    cv2.line(image, (x, y1), (x + dx, y2), 215, width)
    return Box("scratches", min(x, x + dx) - width, y1 - width, max(x, x + dx) + width, y2 + width)


def add_pits(image: np.ndarray, rng: np.random.Generator) -> Box:
    size = image.shape[0]
    cx, cy = (int(v) for v in rng.integers(size // 4, size * 3 // 4, 2))
    r = size // 8
    for _ in range(12):
        px, py = cx + int(rng.integers(-r, r)), cy + int(rng.integers(-r, r))
        cv2.circle(image, (px, py), max(1, size // 70), 40, -1)
    return Box("pitted_surface", cx - r - 3, cy - r - 3, cx + r + 3, cy + r + 3)


def make_voc_dataset(root: Path, n_images: int = 12, size: int = 128, seed: int = 0) -> Path:
    """Write n pictures (scratch, pits, or nothing, in turn) as images/ + annotations/."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        image = steel_texture(size, rng)
        kind = ("scratches", "pitted_surface", "clean")[i % 3]
        boxes = [add_scratch(image, rng)] if kind == "scratches" else [add_pits(image, rng)] if kind == "pitted_surface" else []
        path = root / "images" / f"{kind}_{i}.jpg"
        cv2.imwrite(str(path), image)
        write_voc_xml(AnnotatedImage(path, size, size, boxes), root / "annotations" / f"{kind}_{i}.xml")
    return root


def camera_frame(defect: bool, seed: int, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """A BGR "camera" frame of a polished part, with one long bright scratch when `defect`.

    The shipped model finds the scratch above 0.3 and nothing above 0.3 on the
    clean ones (the station tests assert exactly that).
    """
    rng = np.random.default_rng(seed)
    w, h = size
    grey = cv2.GaussianBlur(rng.normal(128, 4, (h, w)).astype(np.float32), (0, 0), 1.5)
    grey += cv2.GaussianBlur(rng.normal(0, 4, (1, w)).astype(np.float32), (0, 0), 2)
    grey = np.clip(grey, 0, 255).astype(np.uint8)
    if defect:
        x = int(rng.integers(w // 4, w * 3 // 4))
        cv2.line(grey, (x, h // 10), (x + 6, h * 9 // 10), 215, 3)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def write_part_pictures(folder: Path, n: int = 4, size: tuple[int, int] = (320, 240)) -> list[Path]:
    """n frames alternating scratched (even) and clean (odd), named in that order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"part_{i:03d}_{'scratch' if i % 2 == 0 else 'clean'}.png"
        cv2.imwrite(str(path), camera_frame(i % 2 == 0, seed=i, size=size))
        paths.append(path)
    return paths


# -- pictures that claim something else than they hold (tests/test_picture_inputs.py, benchmarks/fuzz_pictures.py)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk with its length and a correct CRC."""
    import struct
    import zlib

    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_chunk(data: bytes, kind: bytes, body: bytes) -> bytes:
    """A PNG file with one more chunk right after IHDR (e.g. sBIT, tEXt)."""
    return data[:33] + png_chunk(kind, body) + data[33:]


def png_bomb(width: int = 20000, height: int = 20000, rows: int | None = 5000) -> bytes:
    """An 8-bit grey PNG declaring width x height, with zero rows for `rows` of them (None: all).

    20000x20000 with 5000 rows is a ~100 KB file that makes a decoder allocate 400 MB.
    """
    import struct
    import zlib

    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    data = zlib.compress(b"\x00" * ((width + 1) * (height if rows is None else rows)), 9)
    return b"\x89PNG\r\n\x1a\n" + ihdr + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """A JPEG file whose frame header (SOF0/SOF2) is patched to declare width x height."""
    import struct

    pos = 2
    while data[pos + 1] not in (0xC0, 0xC2):
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    out = bytearray(data)
    struct.pack_into(">HH", out, pos + 5, height, width)
    return bytes(out)
