"""What the operator and QA see drawn: failing boxes unmistakable, labels never on top of each other."""

from __future__ import annotations

import itertools

import numpy as np

from app.overlay import draw_overlay, hex_to_bgr, place_labels
from detector import Detection

COLOURS = {"scratch": "#E69F00", "pit": "#0072B2"}


def _overlap(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def test_failing_box_is_solid_and_tagged_a_shown_one_dashed():
    frame = np.full((600, 800), 128, np.uint8)
    dets = [Detection("scratch", 0.9, (100, 100, 300, 400)), Detection("scratch", 0.4, (450, 100, 650, 400))]
    rects: list = []
    img = draw_overlay(frame, dets, shown=(0, 1), colours=COLOURS, failing=(0,), label_rects=rects)
    colour = np.array(hex_to_bgr(COLOURS["scratch"]))

    def edge_fraction(x: int, y1: int, y2: int) -> float:
        column = img[y1:y2, x - 1:x + 2].astype(int)
        return float((np.abs(column - colour).max(axis=2) < 40).any(axis=1).mean())

    assert edge_fraction(100, 150, 350) == 1.0  # failing: an unbroken line
    assert 0.3 < edge_fraction(450, 150, 350) < 0.8  # shown only: dashes with gaps
    # The failing box's label is placed first and carries the FAIL tag on a class-colour plate.
    x, y, w, h = rects[0]
    plate = img[y + 1:y + h - 1, x + 1:x + w - 1].reshape(-1, 3).astype(int)
    assert (np.abs(plate - colour).max(axis=1) < 40).mean() > 0.5
    x, y, w, h = rects[1]
    plate = img[y + 1:y + h - 1, x + 1:x + w - 1].reshape(-1, 3).astype(int)
    assert (np.abs(plate - colour).max(axis=1) < 40).mean() < 0.1  # a dark plate, not a colour tag


def test_labels_of_crowded_boxes_never_overlap():
    rng = np.random.default_rng(3)
    frame = np.full((480, 640), 128, np.uint8)
    dets = []
    for _ in range(25):  # a cluster of pits, boxes overlapping each other
        x, y = rng.integers(250, 330), rng.integers(200, 260)
        dets.append(Detection("pit", float(rng.uniform(0.1, 0.99)), (float(x), float(y), float(x + 30), float(y + 25))))
    rects: list = []
    draw_overlay(frame, dets, shown=range(len(dets)), colours=COLOURS, failing=(0, 1, 2), verdict="FAIL", label_rects=rects)
    assert len(rects) == len(dets)
    for a, b in itertools.combinations(rects, 2):
        assert not _overlap(a, b), (a, b)
    h, w = 600, 800  # the frame is drawn enlarged to at least 600 px
    assert all(0 <= x and 0 <= y and x + rw <= w and y + rh <= h for x, y, rw, rh in rects)


def test_label_placement_uses_free_space_and_keeps_clear_of_obstacles():
    boxes = [(10, 50, 60, 90)] * 4
    rects = place_labels(boxes, [(40, 12)] * 4, 200, 120, obstacles=[(0, 0, 50, 30)])
    for a, b in itertools.combinations(rects, 2):
        assert not _overlap(a, b)
    assert not any(_overlap(r, (0, 0, 50, 30)) for r in rects)
