"""In-memory annotation model shared by every importer, transform and writer.

Coordinates are continuous pixel coordinates with the origin at the top-left
corner of the top-left pixel: a box covering pixels 0..9 inclusive is
(0, 0, 10, 10). Pascal VOC's 1-based inclusive (xmin=1, xmax=10) maps to the
same box (xmin - 1, ymin - 1, xmax, ymax).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True)
class Box:
    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    difficult: bool = False

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    def with_coords(self, x1: float, y1: float, x2: float, y2: float) -> Box:
        return replace(self, x1=x1, y1=y1, x2=x2, y2=y2)


@dataclass
class AnnotatedImage:
    """One picture and its boxes. `image_path` points at the file on disk."""

    image_path: Path
    width: int
    height: int
    boxes: list[Box] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.image_path.name

    def labels(self) -> set[str]:
        return {b.label for b in self.boxes}
