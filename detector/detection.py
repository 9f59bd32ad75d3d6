"""The result type of `detect()`: plain data, no torch, no Qt."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Detection:
    """One found defect. `box` is (x1, y1, x2, y2) in the input image's pixels."""

    label: str
    score: float
    box: tuple[float, float, float, float]

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]
