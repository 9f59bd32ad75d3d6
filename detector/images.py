"""Reading and checking input pictures; everything becomes grey uint8.

The model is trained on grey steel pictures, so colour input is converted to
grey the same way for every source (file, camera, array) before detection.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

_JPEG_START = b"\xff\xd8"
_JPEG_END = b"\xff\xd9"


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file as stored (grey, BGR or BGRA; uint8 or uint16)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if not path.is_file():
        raise ValueError(f"not an image file: {path}")
    data = path.read_bytes()
    if not data:
        raise ValueError(f"image file is empty: {path}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot decode image file (corrupt or unsupported format): {path}")
    # OpenCV decodes a cut-off JPEG as far as it goes and pads it with grey;
    # a missing end-of-image marker is the reliable sign.
    if data.startswith(_JPEG_START) and _JPEG_END not in data.rstrip(b"\x00")[-16:]:
        raise ValueError(f"image file is truncated (JPEG end marker missing): {path}")
    return image


def to_grey_uint8(image: np.ndarray) -> np.ndarray:
    """Check an array and convert it to a contiguous HxW uint8 grey picture."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array or a file path, not {type(image).__name__}")
    if image.size == 0 or 0 in image.shape:
        raise ValueError(f"image is empty (shape {image.shape})")
    if image.dtype.kind == "f":
        if np.isnan(image).any():
            raise ValueError("image contains NaN values")
        raise ValueError(f"image dtype {image.dtype} is not supported; use uint8 or uint16")
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"image dtype {image.dtype} is not supported; use uint8 or uint16")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        channels = image.shape[2]
        if channels == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        elif channels == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
        else:
            raise ValueError(f"image has {channels} channels; expected 1 (grey), 3 (BGR) or 4 (BGRA)")
    elif image.ndim != 2:
        raise ValueError(f"image must be HxW or HxWxC, got shape {image.shape}")
    if image.dtype == np.uint16:
        # Full-scale 16-bit (MSB-aligned, as machine-vision cameras deliver it).
        image = (image.astype(np.float32) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(image)


def load_grey(image: np.ndarray | str | Path) -> np.ndarray:
    """Any accepted input (array or file path) as HxW grey uint8."""
    if isinstance(image, (str, Path)):
        image = read_image(image)
    return to_grey_uint8(image)


def letterbox(grey: np.ndarray, size: int, pad_value: int = 114) -> tuple[np.ndarray, float, float]:
    """Resize keeping the aspect ratio so the long side is `size`, pad bottom/right.

    Returns the padded picture and the x/y scale factors (new / old), computed
    exactly as MMDetection's `Resize(keep_ratio=True)` does so both backends
    map boxes back identically.
    """
    h, w = grey.shape[:2]
    scale = min(size / max(h, w), size / min(h, w))
    new_w, new_h = int(w * scale + 0.5), int(h * scale + 0.5)
    resized = cv2.resize(grey, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((size, size), pad_value, dtype=np.uint8)
    canvas[:new_h, :new_w] = resized
    return canvas, new_w / w, new_h / h
