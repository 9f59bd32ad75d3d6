from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
NEU_DET = REPO.parent / "shared" / "datasets" / "neu-det"


@pytest.fixture(scope="session")
def neu_det() -> Path:
    if not (NEU_DET / "images").is_dir():
        pytest.skip(f"NEU-DET not found at {NEU_DET}")
    return NEU_DET


def steel_texture(size: int = 200, seed: int = 0) -> np.ndarray:
    """A grey, rolled-steel-like background: smooth noise with horizontal streaks."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(128, 18, (size, size)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), 1.2)
    streaks = cv2.GaussianBlur(rng.normal(0, 8, (size, 1)).astype(np.float32), (0, 0), 2)
    return np.clip(noise + streaks, 0, 255).astype(np.uint8)


def draw_scratch(image: np.ndarray, x: int, y1: int, y2: int, width: int = 3) -> tuple[int, int, int, int]:
    """A long thin bright line, the look of a NEU-DET scratch; returns its box."""
    cv2.line(image, (x, y1), (x + 6, y2), 215, width)
    return (x - width, y1 - width, x + 6 + width, y2 + width)


@pytest.fixture
def scratch_image() -> tuple[np.ndarray, tuple[int, int, int, int]]:
    image = steel_texture(200, seed=1)
    box = draw_scratch(image, 60, 20, 180)
    return image, box
