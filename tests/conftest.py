from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.ui.run import prepare_qt_environment
from synthetic import steel_texture

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
prepare_qt_environment()  # before pytest-qt creates the QApplication: cv2 points Qt at its Qt5 plugins

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


@pytest.fixture(autouse=True)
def isolated_station_dirs(tmp_path_factory, monkeypatch):
    """Keep the station's settings and data out of the real home folder."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.delenv("INSPECTION_STATION_CONFIG", raising=False)
    return home


@pytest.fixture
def part_pictures(tmp_path) -> list[Path]:
    """Generated 320x240 part frames: scratched (even) and clean (odd)."""
    from synthetic import write_part_pictures

    return write_part_pictures(tmp_path / "parts", n=4)


def write_video(path: Path, n_frames: int = 30, fps: float = 15.0) -> Path:
    """An MJPG .avi of generated part frames (a stand-in camera)."""
    from synthetic import camera_frame

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 240))
    assert writer.isOpened(), "OpenCV cannot write MJPG video here"
    for i in range(n_frames):
        writer.write(camera_frame(True, seed=i))
    writer.release()
    return path
