"""Draws detections and the verdict on a frame (OpenCV, no Qt).

The same picture is shown on the operator screen and saved as the annotated
copy, so what the operator saw is what QA reviews.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from app.roi import Roi
from detector import Detection

ROI_COLOUR = (80, 200, 80)  # BGR
VERDICT_COLOURS = {"PASS": (60, 160, 40), "FAIL": (40, 40, 220)}  # BGR
FALLBACK_COLOUR = "#CC79A7"  # a class the model's metadata gives no colour
MIN_DRAW_SIZE = 600  # px: smaller frames are drawn enlarged


def hex_to_bgr(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    if len(c) != 6:
        c = FALLBACK_COLOUR.lstrip("#")
    r, g, b = (int(c[i:i + 2], 16) for i in (0, 2, 4))
    return (b, g, r)


def as_bgr(frame: np.ndarray) -> np.ndarray:
    """A uint8 BGR copy of a grey/BGR/BGRA, uint8/uint16 frame, for drawing on."""
    img = frame
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img.copy()


def draw_overlay(
    frame: np.ndarray,
    detections: Sequence[Detection],
    shown: Sequence[int],
    colours: dict[str, str],
    roi: Roi | None = None,
    failing: Sequence[int] = (),
    verdict: str | None = None,
) -> np.ndarray:
    """BGR copy of `frame` with the region, the shown boxes (class + score) and the verdict.

    Frames under MIN_DRAW_SIZE come back enlarged by a whole factor.
    """
    img = as_bgr(frame)
    # Small frames are enlarged (whole factor) so boxes and labels stay legible.
    zoom = max(1, -(-MIN_DRAW_SIZE // max(img.shape[:2])))
    if zoom > 1:
        img = cv2.resize(img, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)
    h, w = img.shape[:2]
    # Line width and text size follow the frame so labels stay readable once the
    # view scales a large frame down.
    unit = max(1.0, max(h, w) / 640.0)
    thick = max(1, int(round(2 * unit)))
    font_scale = 0.5 * unit
    if roi is not None:
        cv2.rectangle(img, (roi.x * zoom, roi.y * zoom), ((roi.x + roi.w) * zoom - 1, (roi.y + roi.h) * zoom - 1),
                      ROI_COLOUR, max(1, thick // 2), cv2.LINE_AA)
    failing_set = set(failing)
    # Draw the weakest first so the strongest box ends up on top.
    for i in sorted(shown, key=lambda k: detections[k].score):
        d = detections[i]
        colour = hex_to_bgr(colours.get(d.label, FALLBACK_COLOUR))
        x1, y1, x2, y2 = (int(round(v * zoom)) for v in d.box)
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, thick + (1 if i in failing_set else 0), cv2.LINE_AA)
        text = f"{d.label} {d.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, max(1, thick // 2))
        ty = y1 - 3 if y1 - th - base - 3 >= 0 else min(h - 1, y2 + th + base + 3)
        tx = max(0, min(x1, w - tw - 4))
        cv2.rectangle(img, (tx, ty - th - base), (tx + tw + 4, ty + base // 2), colour, -1)
        cv2.putText(img, text, (tx + 2, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255),
                    max(1, thick // 2), cv2.LINE_AA)
    if verdict is not None:
        text = verdict
        scale = 0.9 * unit
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, thick + 1)
        cv2.rectangle(img, (0, 0), (tw + 16, th + base + 16), VERDICT_COLOURS.get(verdict, (90, 90, 90)), -1)
        cv2.putText(img, text, (8, th + 8), cv2.FONT_HERSHEY_DUPLEX, scale, (255, 255, 255), thick + 1, cv2.LINE_AA)
    return img
