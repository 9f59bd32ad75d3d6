"""The supervisor's reports panel: date range, CSV exports and trend charts (pyqtgraph).

`ReportsWidget(log, class_colours, shifts)` reads the station's open log
(its read connection: a report never holds up an inspection being logged),
or, given a database path, opens it read-only for each query, so it can sit
beside a running station. The queries run on the GUI thread: a month of a
busy station takes well under a second (benchmarks/bench_reports.py), and
date edits are debounced.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from datetime import date, tzinfo
from pathlib import Path

import numpy as np
import pyqtgraph as pg  # finds PySide6, the only Qt binding the station installs
import pyqtgraph.exporters  # noqa: F401  (registers pg.exporters.ImageExporter)
from PySide6.QtCore import QBuffer, QDate, QIODevice, QRect, Qt, QTimer
from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage, QPainter
from PySide6.QtWidgets import (
    QCheckBox,
    QDateEdit,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.reports import ReportError, Trends, check_folder, export_csv, trends
from app.store import InspectionLog
from detector.files import atomic_write_bytes

DEFAULT_DAYS = 30
HISTOGRAM_BINS = np.linspace(0.0, 1.0, 21)
# Okabe-Ito: told apart by colour-blind viewers too; for classes without a colour of their own.
FALLBACK_COLOURS = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
CAPTION_PX = 48  # the band above the charts in a saved PNG that names stations and dates
# The defect-rate axis runs from 0 (a rate read as a height) to a little above the worst day: a fixed
# 0-100 % would flatten the usual 1-5 % into a line on the floor. Capped just above 100 % so a 100 % point shows whole.
RATE_HEADROOM, RATE_TOP_MIN, RATE_TOP_MAX = 1.15, 1.0, 105.0


class DayAxis(pg.AxisItem):
    """An x axis whose values are date ordinals: ticks on whole days, labelled ISO 8601."""

    def tickValues(self, minVal, maxVal, size):  # noqa: N802, N803 (pyqtgraph's names)
        if not math.isfinite(minVal) or not math.isfinite(maxVal) or maxVal < minVal:
            return []
        lo, hi = math.ceil(minVal), math.floor(maxVal)
        step = max(1, math.ceil((hi - lo + 1) / max(2, int(size / 90))))
        return [(float(step), [float(v) for v in range(lo, hi + 1) if v % step == 0])]

    def tickStrings(self, values, scale, spacing):  # noqa: N802
        out = []
        for v in values:
            try:
                out.append(date.fromordinal(int(round(v))).isoformat())
            except (ValueError, OverflowError):
                out.append("")
        return out


class ReportsWidget(QWidget):
    """Date range pickers, daily / per-inspection CSV export, and the trend charts of that range."""

    def __init__(self, log: InspectionLog | str | Path, class_colours: dict[str, str] | None = None,
                 shifts: Iterable[tuple[str, str]] = (), *, tz: tzinfo | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.log = Path(log) if isinstance(log, str) else log  # a path: opened read-only for each query
        self.class_colours = dict(class_colours or {})
        self.shifts = tuple(shifts)
        self.tz = tz  # None: the system's local time zone
        self.data: Trends | None = None

        today = QDate.currentDate()
        self.from_edit = self._date_edit(today.addDays(-(DEFAULT_DAYS - 1)))
        self.to_edit = self._date_edit(today)
        self.refresh_button = QPushButton("Refresh")
        self.export_daily_button = QPushButton("Export daily CSV…")
        self.export_inspections_button = QPushButton("Export per-inspection CSV…")
        self.save_png_button = QPushButton("Save charts as PNG…")
        self.bom_check = QCheckBox("Excel BOM")
        self.bom_check.setToolTip("Start CSV files with a UTF-8 byte order mark, so Excel shows non-English names correctly")
        self.status = QLabel()
        self.status.setWordWrap(True)

        bar = QHBoxLayout()
        for w in (QLabel("From"), self.from_edit, QLabel("to"), self.to_edit, self.refresh_button):
            bar.addWidget(w)
        bar.addStretch(1)
        for w in (self.export_daily_button, self.export_inspections_button, self.bom_check, self.save_png_button):
            bar.addWidget(w)

        self.charts = pg.GraphicsLayoutWidget()
        self.charts.setBackground("w")
        self.rate_plot = self.charts.addPlot(row=0, col=0, title="Defect rate per day",
                                             axisItems={"bottom": DayAxis(orientation="bottom")})
        self.rate_plot.setLabel("left", "failed", units="%")
        self.defects_plot = self.charts.addPlot(row=1, col=0, title="Failing defects per class per day",
                                                axisItems={"bottom": DayAxis(orientation="bottom")})
        self.defects_plot.setLabel("left", "defects")
        self.defects_plot.setXLink(self.rate_plot)
        self.hist_plot = self.charts.addPlot(row=2, col=0, title="Scores of shown detections")
        self.hist_plot.setLabel("bottom", "score")
        self.hist_plot.setLabel("left", "detections")
        for plot in (self.rate_plot, self.defects_plot, self.hist_plot):
            plot.setLimits(yMin=0)  # rates and counts: nothing below 0 to pan or zoom to
            plot.showGrid(x=True, y=True, alpha=0.25)
            plot.titleLabel.setText(plot.titleLabel.text, color="#333333")
            for side in ("left", "bottom"):
                plot.getAxis(side).setTextPen("#333333")
        self.defects_legend = self.defects_plot.addLegend(offset=(10, 10), labelTextColor="#333333")
        self.hist_legend = self.hist_plot.addLegend(offset=(10, 10), labelTextColor="#333333")
        self.rate_curve = self.rate_plot.plot([], [], pen=pg.mkPen("#c62828", width=2), symbol="o", symbolSize=6,
                                              symbolBrush="#c62828")
        self.class_curves: dict[str, pg.PlotDataItem] = {}
        self.hist_curves: dict[str, pg.PlotDataItem] = {}

        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(self.charts, 1)
        layout.addWidget(self.status)

        self._debounce = QTimer(self, singleShot=True, interval=300)
        self._debounce.timeout.connect(self.refresh)
        self.from_edit.dateChanged.connect(self._debounce.start)
        self.to_edit.dateChanged.connect(self._debounce.start)
        self.refresh_button.clicked.connect(self.refresh)
        self.export_daily_button.clicked.connect(lambda: self._export_dialog(per_inspection=False))
        self.export_inspections_button.clicked.connect(lambda: self._export_dialog(per_inspection=True))
        self.save_png_button.clicked.connect(self._save_png_dialog)
        self.refresh()

    def _date_edit(self, value: QDate) -> QDateEdit:
        edit = QDateEdit(value)
        edit.setCalendarPopup(True)
        edit.setDisplayFormat("yyyy-MM-dd")  # ISO 8601, whatever the locale
        return edit

    # -- range ---------------------------------------------------------------------------

    def date_range(self) -> tuple[date, date]:
        return self.from_edit.date().toPython(), self.to_edit.date().toPython()

    def set_range(self, first: date, last: date) -> None:
        """Set both pickers and re-query now (not after the debounce)."""
        for edit, value in ((self.from_edit, first), (self.to_edit, last)):
            edit.blockSignals(True)
            edit.setDate(QDate(value.year, value.month, value.day))
            edit.blockSignals(False)
        self.refresh()

    # -- charts --------------------------------------------------------------------------

    def colour(self, label: str, index: int) -> str:
        if label in self.class_colours:
            return self.class_colours[label]
        used = set(self.class_colours.values())
        free = [c for c in FALLBACK_COLOURS if c not in used] or list(FALLBACK_COLOURS)
        return free[index % len(free)]

    def refresh(self) -> Trends | None:
        """Re-query the log for the picked range and redraw; None (and a note) if it cannot be read."""
        self._debounce.stop()
        first, last = self.date_range()
        if first > last:
            self._show(None, f"The range starts after it ends ({first} > {last}).")
            return None
        t0 = time.perf_counter()
        try:
            data = trends(self.log, first, last, tz=self.tz, shifts=self.shifts, classes=self.class_colours)
        except ReportError as exc:
            self._show(None, str(exc))
            return None
        total, failed = sum(data.inspected), sum(data.failed)
        rate = f"{100.0 * failed / total:.2f} %" if total else "–"
        self._show(data, f"{first} to {last}: {total} inspected, {failed} failed ({rate}) on {len(data.days)} days"
                         f" — queried in {time.perf_counter() - t0:.2f} s")
        return data

    def _show(self, data: Trends | None, message: str) -> None:
        self.data = data
        self.status.setText(message)
        days = np.array([d.toordinal() for d in data.days], dtype=float) if data else np.zeros(0)
        self.rate_curve.setData(days, 100.0 * np.array(data.defect_rate if data else [], dtype=float))
        for curve in self.class_curves.values():
            self.defects_plot.removeItem(curve)
        for curve in self.hist_curves.values():
            self.hist_plot.removeItem(curve)
        self.defects_legend.clear()
        self.hist_legend.clear()
        self.class_curves, self.hist_curves = {}, {}
        if data is None:
            return
        for i, (label, counts) in enumerate(data.defects.items()):
            colour = self.colour(label, i)
            self.class_curves[label] = self.defects_plot.plot(
                days, np.array(counts, dtype=float), name=label, pen=pg.mkPen(colour, width=2),
                symbol="o", symbolSize=5, symbolBrush=colour)
        for i, (label, scores) in enumerate(data.scores.items()):
            if not scores:
                continue
            counts, edges = np.histogram(np.array(scores), bins=HISTOGRAM_BINS)
            colour = pg.mkColor(self.colour(label, i))
            fill = pg.mkColor(colour)
            fill.setAlpha(70)
            self.hist_curves[label] = self.hist_plot.plot(edges, counts.astype(float), stepMode="center", fillLevel=0,
                                                          brush=fill, pen=pg.mkPen(colour, width=2), name=label)
        for plot in (self.rate_plot, self.defects_plot, self.hist_plot):
            plot.enableAutoRange()
        if len(days):  # half a day either side, so the first and last date labels fit
            self.rate_plot.setXRange(days[0] - 0.5, days[-1] + 0.5, padding=0)
        peak = 100.0 * max(data.defect_rate, default=0.0)
        self.rate_plot.setYRange(0.0, min(RATE_TOP_MAX, max(RATE_TOP_MIN, peak * RATE_HEADROOM)), padding=0)

    # -- export --------------------------------------------------------------------------

    def export(self, path: str | Path, per_inspection: bool) -> int:
        """Write the picked range's daily summary (or per-inspection list) as CSV; returns data rows. Raises ReportError."""
        first, last = self.date_range()
        if first > last:
            raise ReportError(f"the range starts after it ends ({first} > {last})")
        t0 = time.perf_counter()
        n = export_csv(self.log, first, last, path, per_inspection_rows=per_inspection, tz=self.tz,
                       shifts=self.shifts, classes=self.class_colours, bom=self.bom_check.isChecked())
        what = "inspections" if per_inspection else "summary rows"
        self.status.setText(f"Wrote {n} {what} for {first} to {last} to {path} in {time.perf_counter() - t0:.2f} s.")
        return n

    def caption(self) -> str:
        """What a saved PNG says it shows: the stations and the date range."""
        first, last = self.date_range()
        stations = ", ".join(self.data.stations) if self.data and self.data.stations else "no inspections"
        return f"{stations} · {first} – {last}"

    def save_png(self, path: str | Path) -> Path:
        """All three charts as one PNG under a caption naming the stations and dates.

        Rendered from the scene, so it works hidden and offscreen too; written atomically.
        """
        path = Path(path)
        check_folder(path)
        if self.charts.width() < 200 or self.charts.height() < 200:  # never laid out: give the scene a size
            self.charts.resize(max(self.charts.width(), 1000), max(self.charts.height(), 900))
        exporter = pg.exporters.ImageExporter(self.charts.scene())
        exporter.parameters()["width"] = max(1200, self.charts.width())
        charts = exporter.export(toBytes=True)
        image = QImage(charts.width(), charts.height() + CAPTION_PX, QImage.Format.Format_RGB32)
        image.fill(QColor("white"))
        painter = QPainter(image)
        font = QFont()
        font.setPixelSize(CAPTION_PX // 2)
        painter.setFont(font)
        painter.setPen(QColor("#222222"))
        band = QRect(16, 0, image.width() - 32, CAPTION_PX)
        text = QFontMetrics(font).elidedText(self.caption(), Qt.TextElideMode.ElideMiddle, band.width())
        painter.drawText(band, int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), text)
        painter.drawImage(0, CAPTION_PX, charts)
        painter.end()
        buffer = QBuffer()
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        if not image.save(buffer, "PNG"):
            raise ReportError(f"could not render the charts for {path}")
        try:
            atomic_write_bytes(path, bytes(buffer.data()))
        except OSError as exc:
            raise ReportError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return path

    def _export_dialog(self, per_inspection: bool) -> None:
        first, last = self.date_range()
        kind = "inspections" if per_inspection else "daily"
        suggested = str(Path.home() / f"defects_{kind}_{first}_{last}.csv")
        path, _ = QFileDialog.getSaveFileName(self, "Export CSV", suggested, "CSV files (*.csv)")
        if not path:
            return
        try:
            self.export(path, per_inspection)
        except ReportError as exc:
            QMessageBox.warning(self, "Export CSV", str(exc))

    def _save_png_dialog(self) -> None:
        first, last = self.date_range()
        suggested = str(Path.home() / f"defect_trends_{first}_{last}.png")
        path, _ = QFileDialog.getSaveFileName(self, "Save charts", suggested, "PNG images (*.png)")
        if not path:
            return
        try:
            self.save_png(path)
        except ReportError as exc:
            QMessageBox.warning(self, "Save charts", str(exc))

