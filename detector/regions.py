"""The one region type: a rectangle of a picture (x, y, w, h in whole pixels), and its clipping rules.

Used alike by the station (a recipe's inspection regions, cropped from each
frame) and by data import (`detector dataset --roi`, cropping training
pictures to the part), so a region means the same everywhere:
- `clipped(w, h)`: the part inside a picture of that size (the station: a
  region may reach past a smaller frame's edge; none left is an error);
- `check_inside(w, h)`: the whole region must lie in the picture (data import:
  cropping a training set to a region that does not fit is refused);
- `crop` / `to_frame`: pixels of the region, and region coordinates back to the picture's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Roi:
    x: int
    y: int
    w: int
    h: int

    def __post_init__(self) -> None:
        if self.w <= 0 or self.h <= 0:
            raise ValueError(f"inspection region must have positive width and height, got {self.w}x{self.h}")
        if self.x < 0 or self.y < 0:
            raise ValueError(f"inspection region must start inside the frame, got x={self.x}, y={self.y}")

    @classmethod
    def parse(cls, text: str) -> Roi:
        """"x,y,w,h" in frame pixels."""
        parts = [p.strip() for p in str(text).split(",")]
        if len(parts) != 4:
            raise ValueError(f"inspection region must be 'x,y,w,h', got {text!r}")
        return cls(*(_pixel(p, text) for p in parts))

    @classmethod
    def from_list(cls, values) -> Roi:
        if not isinstance(values, (list, tuple)) or len(values) != 4:
            raise ValueError(f"inspection region must be [x, y, w, h], got {values!r}")
        return cls(*(_pixel(v, values) for v in values))

    def to_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]

    def __str__(self) -> str:
        return f"{self.x},{self.y},{self.w},{self.h}"

    def check_inside(self, width: int, height: int, name: object = "the picture") -> None:
        """ValueError unless the whole region lies inside a `width` x `height` picture."""
        if self.x + self.w > width or self.y + self.h > height:
            raise ValueError(f"region x={self.x}, y={self.y}, w={self.w}, h={self.h} does not fit inside {name} "
                             f"({width}x{height} pixels)")

    def clipped(self, frame_w: int, frame_h: int) -> Roi | None:
        """The part of the region inside a frame of that size (None if none is)."""
        x1, y1 = min(self.x, frame_w), min(self.y, frame_h)
        x2, y2 = min(self.x + self.w, frame_w), min(self.y + self.h, frame_h)
        if x2 - x1 < 2 or y2 - y1 < 2:
            return None
        return Roi(x1, y1, x2 - x1, y2 - y1)


MAX_PIXEL = 1 << 20  # no camera frame is a million pixels wide: larger numbers are typing errors


def _pixel(value, whole) -> int:
    """One coordinate as whole pixels; infinite, NaN, huge or non-numbers are refused (ValueError)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"inspection region must be four numbers x, y, w, h; got {whole!r}") from None
    if not math.isfinite(number) or abs(number) > MAX_PIXEL:
        raise ValueError(f"inspection region numbers must be finite pixel coordinates, got {value!r}")
    return int(round(number))


def crop(frame: np.ndarray, roi: Roi | None) -> tuple[np.ndarray, Roi]:
    """The region's pixels and the region actually used (clipped to the frame).

    No region means the whole frame. A region wholly outside the frame is an
    error: inspecting something else than the operator drew would be worse.
    """
    h, w = frame.shape[:2]
    if roi is None:
        return frame, Roi(0, 0, w, h)
    used = roi.clipped(w, h)
    if used is None:
        raise ValueError(f"inspection region {roi} lies outside the {w}x{h} frame; redraw it")
    return frame[used.y:used.y + used.h, used.x:used.x + used.w], used


def to_frame(box: tuple[float, float, float, float], roi: Roi) -> tuple[float, float, float, float]:
    """A box in region pixels -> the same box in frame pixels."""
    x1, y1, x2, y2 = box
    return (x1 + roi.x, y1 + roi.y, x2 + roi.x, y2 + roi.y)
