"""Shared pieces of the station-window tests: the real detector (counting its runs) and a window factory."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor

from app.settings import StationSettings
from app.ui.station_window import StationWindow
from app.users import SETUP_USER
from app.verdict import ClassRule, VerdictRule
from detector import Detector

WAIT_MS = 20000


class CountingDetector(Detector):
    """The real detector, counting how often the model runs."""

    calls = 0

    def detect_batch(self, images, threshold=None):
        type(self).calls += 1
        return super().detect_batch(images, threshold)


@pytest.fixture(scope="session")
def detector() -> CountingDetector:
    return CountingDetector()


@pytest.fixture
def make_window(qtbot, tmp_path, detector):
    def make(source: str = "", user=SETUP_USER, overrides=None, db_path=None, **changes) -> StationWindow:
        settings = replace(StationSettings(), source=source, data_dir=str(tmp_path / "data"),
                           rule=VerdictRule(default=ClassRule(0.3, 0.0)), reconnect_seconds=0.3, **changes)
        window = StationWindow(settings, tmp_path / "station.json", detector=detector, user=user, overrides=overrides,
                               db_path=db_path)
        qtbot.addWidget(window)
        window.resize(1000, 700)
        window.show()
        return window

    return make


def wait_for_frame(qtbot, window):
    qtbot.waitUntil(lambda: window.view.image() is not None, timeout=WAIT_MS)


def inspect_and_wait(qtbot, window):
    before = window.inspections_done
    qtbot.mouseClick(window.inspect_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.inspections_done > before, timeout=WAIT_MS)
    return window.last_result


def qimage_array(image) -> np.ndarray:
    img = image.convertToFormat(image.Format.Format_RGB888)
    arr = np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.bytesPerLine())[:, : img.width() * 3]
    return arr.reshape(img.height(), img.width(), 3).astype(int)


def has_colour(image, hex_colour: str, tolerance: int = 12) -> bool:
    """Whether any pixel of a QImage is close to the colour."""
    arr = qimage_array(image)
    c = QColor(hex_colour)
    return bool((np.abs(arr - (c.red(), c.green(), c.blue())).max(axis=2) <= tolerance).any())
