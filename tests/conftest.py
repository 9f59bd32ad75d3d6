from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.ui.run import prepare_qt_environment
from synthetic import steel_texture

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
prepare_qt_environment()  # before pytest-qt creates the QApplication: cv2 points Qt at its Qt5 plugins

REPO = Path(__file__).resolve().parents[1]
pytest_plugins = ["window_fixtures"]  # the station-window fixtures (detector, make_window)
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


def wait_until(predicate, timeout: float = 30.0, step: float = 0.02) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass; whether it holds in the end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def run_app(*args: str, stdin: str = "", timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m app ARGS` in a fresh interpreter, as a user or a scheduled job runs it."""
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO, input=stdin, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


class FlakyCamera:
    """A camera that stops after `frames` frames, then refuses `failed_opens` reconnects, then works."""

    live = True

    def __init__(self, frames: int = 3, failed_opens: int = 0, name: str = "flaky camera"):
        self.name, self.frames, self.failed_opens = name, frames, failed_opens
        self.opens = 0
        self.reads = 0

    def open(self):
        self.opens += 1
        self.reads = 0
        if 2 <= self.opens <= 1 + self.failed_opens:
            from app.sources import SourceError

            raise SourceError(f"cannot open {self.name}")

    def read(self):
        self.reads += 1
        if self.opens == 1 and self.reads > self.frames:
            from app.sources import SourceError

            raise SourceError(f"{self.name} stopped delivering frames")
        time.sleep(0.01)
        return np.full((240, 320, 3), 120, np.uint8)

    def close(self):
        pass
