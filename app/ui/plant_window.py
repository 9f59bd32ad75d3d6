"""Plant mode: QA's gallery and review, reports and trends for every station, from the plant database; no camera.

    python -m app --plant postgresql://alice@db.plant/inspections      (or --plant alone: the settings' plant_db_url)

One station picker at the top narrows the gallery and the reports to a station ("all stations": none). QA
reviews go to the plant database in the plant's own hash chain, in the name of the login (app.store.postgres).
A picture the plant picture store does not have, or that this PC cannot reach, shows "picture not available
here" instead of failing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from PySide6.QtCore import QDate, Qt
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QMainWindow, QTabWidget, QVBoxLayout, QWidget

from app.store import GalleryFilter, StoreError
from app.store.postgres import ORIGIN_SPAN, PlantLog, open_plant  # noqa: F401  (open_plant: importable from here too)
from app.ui.gallery import GalleryWidget
from app.ui.trends import ReportsWidget
from app.users import User

ALL_STATIONS = "all stations"
NOT_HERE = "picture not available here"
GALLERY_DAYS = 7  # the gallery opens on the last week: counting all of a plant's years at each filter change is slow


class StationLog:
    """The plant log narrowed to one station for the reports panel, which asks the log for its report rows."""

    def __init__(self, log: PlantLog, station: str):
        self._log, self.station = log, station

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    def report_inspections(self, lo, hi, station=None):
        return self._log.report_inspections(lo, hi, self.station)

    def report_list(self, lo, hi, station=None):
        return self._log.report_list(lo, hi, self.station)

    def report_class_stats(self, lo, hi, station=None):
        return self._log.report_class_stats(lo, hi, self.station)

    def report_scores(self, lo, hi, station=None):
        return self._log.report_scores(lo, hi, self.station)

    def report_reviews(self, lo, hi, station=None):
        return self._log.report_reviews(lo, hi, self.station)

    def report_groups(self, lo, hi, zone, shifts, station=None):
        return self._log.report_groups(lo, hi, zone, shifts, self.station)


class PlantGallery(GalleryWidget):
    """The QA gallery over the plant database: a station filter, station names beside the ids, pictures that may be
    out of reach."""

    def __init__(self, log: PlantLog, user: User, colours: dict[str, str] | None = None, parent=None):
        self._ready = False  # the base class filters once while it builds; the first query waits for the station filter
        self.station: str | None = None
        self._origins = log.station_numbers()
        super().__init__(log, user, colours, parent)
        self.from_check.setChecked(True)
        self.from_date.setDate(QDate.currentDate().addDays(-(GALLERY_DAYS - 1)))
        self._ready = True
        self.apply_filters()

    def set_station(self, station: str | None) -> None:
        self.station = station
        self.apply_filters()

    def current_filter(self) -> GalleryFilter:
        return replace(super().current_filter(), station=self.station)

    def apply_filters(self) -> None:
        if self._ready:
            super().apply_filters()

    def go_to_page(self, page: int) -> None:
        super().go_to_page(page)
        for row in range(self.thumbs.count()):  # "#10000000042" is line-1's #42
            item = self.thumbs.item(row)
            plant_id = item.data(Qt.ItemDataRole.UserRole)
            origin = self._origins.get(plant_id // ORIGIN_SPAN, "?")
            item.setText(item.text().replace(f"#{plant_id}", f"{origin} #{plant_id % ORIGIN_SPAN}", 1))

    def show_inspection(self, inspection_id: int) -> None:
        super().show_inspection(inspection_id)
        if not self.picture_shown:  # missing, refused or hanging share: the gallery gave up on it
            self.info_label.setText(f"<b>{NOT_HERE}</b><br>{self.info_label.text()}")
            text = self.view.scene().addText(NOT_HERE, QFont("", 28))
            text.setDefaultTextColor(QColor("#eeeeee"))


class PlantWindow(QMainWindow):
    """Gallery and review, reports and trends of all stations; the station picker narrows both."""

    def __init__(self, log: PlantLog, user: User, colours: dict[str, str] | None = None,
                 shifts: tuple[tuple[str, str], ...] = (), tz=None, parent=None):
        super().__init__(parent)
        self.log, self.user = log, user
        self.setWindowTitle(f"Plant inspection log — {log.url}")
        self.station_combo = QComboBox()
        self.station_combo.addItems([ALL_STATIONS, *log.stations()])
        self.station_combo.currentTextChanged.connect(self._on_station)
        who = QLabel(f"Plant database {log.url} · signed in as <b>{user.name}</b> ({user.role})"
                     + ("" if user.can("review") else " · read only"))
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Station"))
        bar.addWidget(self.station_combo)
        bar.addStretch(1)
        bar.addWidget(who)
        self.gallery = PlantGallery(log, user, colours)
        self.reports = ReportsWidget(log, class_colours=colours, shifts=shifts, tz=tz)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.gallery, "Gallery and review")
        self.tabs.addTab(self.reports, "Reports and trends")
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addLayout(bar)
        layout.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        self.status = self.statusBar()

    def _on_station(self, text: str) -> None:
        station = None if text == ALL_STATIONS else text
        try:
            self.gallery.set_station(station)
            self.reports.log = self.log if station is None else StationLog(self.log, station)
            self.reports.refresh()
            self.status.clearMessage()
        except StoreError as exc:
            self.status.showMessage(str(exc))

