"""Draws detections and the verdict on a frame (OpenCV, no Qt).

The same picture is shown on the operator screen and saved as the annotated
copy, so what the operator saw is what QA reviews. A box that makes the part
fail is drawn solid and thick with a "FAIL" tag; a box that is only shown
(below the rule's limits, or under the decision threshold but above the
operator's display filter) is thin and dashed, so nobody mistakes one for the
other. Labels are placed so that they never overlap each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from detector import Detection
from detector.regions import Roi

ROI_COLOUR = (80, 200, 80)  # BGR
VERDICT_COLOURS = {"PASS": (60, 160, 40), "FAIL": (40, 40, 220)}  # BGR
FALLBACK_COLOUR = "#CC79A7"  # a class the model's metadata gives no colour
MIN_DRAW_SIZE = 600  # px: smaller frames are drawn enlarged
FONT = cv2.FONT_HERSHEY_SIMPLEX

Rect = tuple[int, int, int, int]  # x, y, w, h


@dataclass(frozen=True)
class RegionMark:
    """An inspection region to outline: its name and verdict are written on it when given."""

    roi: Roi
    name: str = ""
    verdict: str | None = None


def hex_to_bgr(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    if len(c) != 6:
        c = FALLBACK_COLOUR.lstrip("#")
    r, g, b = (int(c[i:i + 2], 16) for i in (0, 2, 4))
    return (b, g, r)


def relative_luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG 2 relative luminance of an sRGB colour (0..255 channels)."""
    def lin(c: float) -> float:
        c /= 255.0
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = rgb
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def contrast_ratio(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """WCAG 2 contrast ratio of two sRGB colours (1..21)."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_colour_on(background_bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever contrasts more with the background (BGR in, BGR out)."""
    rgb = background_bgr[::-1]
    return (0, 0, 0) if contrast_ratio(rgb, (0, 0, 0)) >= contrast_ratio(rgb, (255, 255, 255)) else (255, 255, 255)


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


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def place_labels(boxes: Sequence[tuple[int, int, int, int]], sizes: Sequence[tuple[int, int]],
                 width: int, height: int, obstacles: Sequence[Rect] = ()) -> list[Rect]:
    """A rectangle for each label, inside the picture where it fits, none overlapping another.

    Tries above the box, below it, and inside its top and bottom edges first;
    when all of those collide, takes the free spot nearest the box's top-left
    corner among the edges of the labels already placed. Labels are placed in
    the order given, so put the ones that matter most first. `obstacles`
    (e.g. the verdict badge) are avoided like placed labels.
    """
    taken: list[Rect] = list(obstacles)
    placed: list[Rect] = []

    def free(rect: Rect) -> bool:
        x, y, rw, rh = rect
        return 0 <= x <= width - rw and 0 <= y <= height - rh and not any(_overlaps(rect, t) for t in taken)

    for (x1, y1, _x2, y2), (tw, th) in zip(boxes, sizes, strict=True):
        x = max(0, min(x1, width - tw))
        spot = next((r for r in ((x, y1 - th, tw, th), (x, y2, tw, th), (x, y1, tw, th), (x, y2 - th, tw, th))
                     if free(r)), None)
        if spot is None:
            # Candidate corners: flush against the edges of what is taken (and the picture's edges).
            xs = {x, 0, max(0, width - tw)} | {t[0] + t[2] for t in taken} | {t[0] - tw for t in taken}
            ys = {max(0, y1 - th), 0, max(0, height - th)} | {t[1] + t[3] for t in taken} | {t[1] - th for t in taken}
            anchor_y = y1 - th
            for cx, cy in sorted(((cx, cy) for cx in xs for cy in ys),
                                 key=lambda p: abs(p[0] - x) + abs(p[1] - anchor_y)):
                if free((cx, cy, tw, th)):
                    spot = (cx, cy, tw, th)
                    break
        if spot is None:  # more labels than the picture can hold: stack below everything (clipped when drawn)
            spot = (x, max((t[1] + t[3] for t in taken), default=0), tw, th)
        taken.append(spot)
        placed.append(spot)
    return placed


def _dashed_rectangle(img: np.ndarray, p1: tuple[int, int], p2: tuple[int, int], colour, thickness: int,
                      dash: int) -> None:
    (x1, y1), (x2, y2) = p1, p2
    for a, b in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = max(abs(b[0] - a[0]), abs(b[1] - a[1]))
        if length == 0:
            continue
        for s in range(0, length, 2 * dash):
            e = min(length, s + dash)
            pa = (a[0] + (b[0] - a[0]) * s // length, a[1] + (b[1] - a[1]) * s // length)
            pb = (a[0] + (b[0] - a[0]) * e // length, a[1] + (b[1] - a[1]) * e // length)
            cv2.line(img, pa, pb, colour, thickness, cv2.LINE_AA)


def draw_overlay(
    frame: np.ndarray,
    detections: Sequence[Detection],
    shown: Sequence[int],
    colours: dict[str, str],
    roi: Roi | None = None,
    failing: Sequence[int] = (),
    verdict: str | None = None,
    label_rects: list[Rect] | None = None,
    regions: Sequence[RegionMark] = (),
) -> np.ndarray:
    """BGR copy of `frame` with the region(s), the boxes (class + score) and the verdict.

    `roi`: one unnamed region; `regions`: several, each outlined with its name
    and verdict (a failing region in the FAIL colour).

    `shown`: indices drawn; `failing`: indices that make the part fail, always
    drawn (solid, thick, "FAIL" tag) even when not in `shown`. Frames under
    MIN_DRAW_SIZE come back enlarged by a whole factor. `label_rects`, when
    given, receives the label rectangles in the order drawn (for tests).
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
    thin = max(1, int(round(unit)))
    thick = max(2, int(round(3 * unit)))
    font_scale = 0.5 * unit
    text_thick = max(1, int(round(unit)))
    marks = ([RegionMark(roi)] if roi is not None else []) + list(regions)
    region_tags: list[tuple[str, tuple[int, int, int], Rect]] = []
    for mark in marks:
        r = mark.roi
        colour = VERDICT_COLOURS[mark.verdict] if mark.verdict in VERDICT_COLOURS else ROI_COLOUR
        cv2.rectangle(img, (r.x * zoom, r.y * zoom), ((r.x + r.w) * zoom - 1, (r.y + r.h) * zoom - 1), colour,
                      thick if mark.verdict == "FAIL" else thin, cv2.LINE_AA)
        if mark.name:
            text = f"{mark.name}: {mark.verdict}" if mark.verdict else mark.name
            (tw, th), base = cv2.getTextSize(text, FONT, font_scale, text_thick)
            region_tags.append((text, colour, (r.x * zoom, r.y * zoom, tw + 6, th + base + 4)))
    failing_set = set(failing)
    drawn = sorted(set(shown) | failing_set, key=lambda k: (k in failing_set, detections[k].score))
    boxes = {}
    for i in drawn:  # weakest first, failing last: the boxes that matter end up on top
        d = detections[i]
        colour = hex_to_bgr(colours.get(d.label, FALLBACK_COLOUR))
        x1, y1, x2, y2 = (int(round(v * zoom)) for v in d.box)
        boxes[i] = (x1, y1, x2, y2)
        if i in failing_set:
            cv2.rectangle(img, (x1, y1), (x2, y2), colour, thick, cv2.LINE_AA)
        else:
            _dashed_rectangle(img, (x1, y1), (x2, y2), colour, thin, dash=max(4, int(6 * unit)))

    # Labels: failing ones placed first (they get the best spots), strongest first.
    order = sorted(drawn, key=lambda k: (k not in failing_set, -detections[k].score))
    texts, sizes = [], []
    for i in order:
        d = detections[i]
        text = f"FAIL {d.label} {d.score:.2f}" if i in failing_set else f"{d.label} {d.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, FONT, font_scale, text_thick)
        texts.append((text, th, base))
        sizes.append((tw + 6, th + base + 4))
    badge = (0, 0, 0, 0)
    if verdict is not None:  # the verdict badge's corner is kept free of labels
        (vw, vt), vbase = cv2.getTextSize(verdict, cv2.FONT_HERSHEY_DUPLEX, 0.9 * unit, thick)
        badge = (vw + 16, vt + vbase + 16, vt, vbase)
    # Region names sit inside their region's top-left corner; box labels keep clear of them and of the badge.
    obstacles = [(0, 0, badge[0], badge[1])] if verdict is not None else []
    for text, colour, (rx, ry, rw, rh) in region_tags:
        spot = place_labels([(rx, ry + rh, rx + rw, ry + rh)], [(rw, rh)], w, h, obstacles)[0]
        obstacles.append(spot)
        cv2.rectangle(img, (spot[0], spot[1]), (spot[0] + rw - 1, spot[1] + rh - 1), colour, -1)
        cv2.putText(img, text, (spot[0] + 3, spot[1] + rh - 4), FONT, font_scale, text_colour_on(colour), text_thick,
                    cv2.LINE_AA)
    rects = place_labels([boxes[i] for i in order], sizes, w, h, obstacles=obstacles)
    for i, (text, th, _base), (lx, ly, lw, lh) in zip(order, texts, rects, strict=True):
        colour = hex_to_bgr(colours.get(detections[i].label, FALLBACK_COLOUR))
        if i in failing_set:
            cv2.rectangle(img, (lx, ly), (lx + lw - 1, ly + lh - 1), colour, -1)
            ink = text_colour_on(colour)
        else:  # shown only: dark plate with a coloured edge, never a solid class-colour tag
            cv2.rectangle(img, (lx, ly), (lx + lw - 1, ly + lh - 1), (30, 30, 30), -1)
            cv2.rectangle(img, (lx, ly), (lx + lw - 1, ly + lh - 1), colour, 1)
            ink = (235, 235, 235)
        cv2.putText(img, text, (lx + 3, ly + 2 + th), FONT, font_scale, ink, text_thick, cv2.LINE_AA)
    if label_rects is not None:
        label_rects.extend(rects)
    if verdict is not None:
        bw, bh, vt, vbase = badge
        cv2.rectangle(img, (0, 0), (bw - 1, bh - 1), VERDICT_COLOURS.get(verdict, (90, 90, 90)), -1)
        cv2.putText(img, verdict, (8, vt + 8), cv2.FONT_HERSHEY_DUPLEX, 0.9 * unit, (255, 255, 255), thick, cv2.LINE_AA)
    return img
