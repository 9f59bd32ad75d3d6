from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from synthetic import steel_texture

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
NEU_DET = REPO.parent / "shared" / "datasets" / "neu-det"


@pytest.fixture(scope="session")
def neu_det() -> Path:
    if not (NEU_DET / "images").is_dir():
        pytest.skip(f"NEU-DET not found at {NEU_DET}")
    return NEU_DET


@pytest.fixture
def scratch_image() -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A 200x200 steel-like picture with one long thin bright scratch, and its box."""
    image = steel_texture(200, np.random.default_rng(1))
    cv2.line(image, (60, 20), (66, 180), 215, 3)
    return image, (57, 17, 69, 183)
