"""The reports panel (pytest-qt, offscreen): charts of the picked range, CSV export, PNG of the charts."""

from __future__ import annotations

import csv
from datetime import date

import numpy as np
import pyqtgraph as pg
import pytest
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QFileDialog, QMessageBox
from test_reports import BERLIN, PIT, SCRATCH, SHOWN_PIT, add

from app.reports import ReportError
from app.store import InspectionStore
from app.ui.trends import CAPTION_PX, DayAxis, ReportsWidget


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "inspections.sqlite"
    with InspectionStore(path) as store:
        add(store, (2026, 11, 2, 8, 0), dets=(SCRATCH, SHOWN_PIT))
        add(store, (2026, 11, 2, 9, 0))
        add(store, (2026, 11, 3, 23, 30), dets=(PIT,))   # night shift of 11-03
        add(store, (2026, 11, 4, 1, 0), dets=(PIT,))     # night shift of 11-03 too
        add(store, (2026, 11, 4, 10, 0), part_id="=1+1")
    return path


def make(qtbot, db, **kwargs) -> ReportsWidget:
    widget = ReportsWidget(db, kwargs.pop("class_colours", {"scratch": "#ff0000"}), tz=BERLIN, **kwargs)
    qtbot.addWidget(widget)
    widget.resize(1000, 800)
    widget.show()
    widget.set_range(date(2026, 11, 1), date(2026, 11, 5))
    return widget


def test_charts_show_the_range(qtbot, db):
    widget = make(qtbot, db)
    x, y = widget.rate_curve.getData()
    assert [date.fromordinal(int(v)) for v in x] == [date(2026, 11, 2), date(2026, 11, 3), date(2026, 11, 4)]
    assert np.allclose(y, [50.0, 100.0, 50.0])
    assert set(widget.class_curves) == {"pit", "scratch"}
    assert np.allclose(widget.class_curves["pit"].getData()[1], [0, 1, 1])
    assert np.allclose(widget.class_curves["scratch"].getData()[1], [1, 0, 0])
    assert widget.class_curves["scratch"].opts["pen"].color().name() == "#ff0000"  # the class colour passed in
    assert widget.class_curves["pit"].opts["pen"].color().name() != "#ff0000"      # a fallback colour
    assert [item.text for _, item in widget.defects_legend.items] == ["pit", "scratch"]
    pit_hist = widget.hist_curves["pit"].getData()[1]
    assert pit_hist.sum() == 3 and len(widget.hist_curves) == 2  # every shown pit, the passing one too
    assert "5 inspected, 3 failed" in widget.status.text()
    assert DayAxis(orientation="bottom").tickStrings([date(2026, 11, 2).toordinal()], 1, 1) == ["2026-11-02"]

    # Shifts: the night that runs past midnight is one day; a narrower range re-queries.
    widget = make(qtbot, db, shifts=(("day", "06:00"), ("night", "18:00")))
    assert [date.fromordinal(int(v)) for v in widget.rate_curve.getData()[0]] == [date(2026, 11, 2), date(2026, 11, 3),
                                                                                   date(2026, 11, 4)]
    assert np.allclose(widget.class_curves["pit"].getData()[1], [0, 2, 0])
    widget.set_range(date(2026, 11, 4), date(2026, 11, 4))
    assert len(widget.rate_curve.getData()[0]) == 1 and widget.data.inspected == [1]


def test_reports_tab_reads_the_stations_open_log(qtbot, db):
    """As the station window builds it: on its open log, new inspections show at the next refresh."""
    with InspectionStore(db) as store:
        widget = make(qtbot, store)
        assert widget.data.inspected == [2, 1, 2] and "5 inspected, 3 failed" in widget.status.text()
        add(store, (2026, 11, 3, 12, 0), dets=(SCRATCH,))
        assert widget.refresh().inspected == [2, 2, 2]
        assert widget.caption() == "line-1 · 2026-11-01 – 2026-11-05"


def test_date_edits_refresh_after_a_pause(qtbot, db):
    widget = make(qtbot, db)
    widget.from_edit.setDate(widget.to_edit.date().addDays(-1))  # 11-04..11-05
    qtbot.waitUntil(lambda: widget.data is not None and widget.data.days == [date(2026, 11, 4)], timeout=3000)
    widget.from_edit.setDate(widget.to_edit.date().addDays(2))
    qtbot.waitUntil(lambda: widget.data is None, timeout=3000)
    assert "starts after it ends" in widget.status.text() and len(widget.class_curves) == 0
    with pytest.raises(ReportError):
        widget.export(db.parent / "x.csv", per_inspection=False)


def test_export_and_png(qtbot, db, tmp_path):
    widget = make(qtbot, db)
    daily = tmp_path / "daily.csv"
    assert widget.export(daily, per_inspection=False) == 3
    with open(daily, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["date"], r["inspected"], r["failed"], r["defects_pit"], r["defects_scratch"]) for r in rows] == [
        ("2026-11-02", "2", "1", "0", "1"), ("2026-11-03", "1", "1", "1", "0"), ("2026-11-04", "2", "1", "1", "0")]
    assert "Wrote 3 summary rows" in widget.status.text()

    widget.bom_check.setChecked(True)
    per = tmp_path / "inspections.csv"
    assert widget.export(per, per_inspection=True) == 5
    text = per.read_bytes().decode("utf-8")
    assert text.startswith('\ufeff"id",') and ',"\'=1+1",' in text

    png = widget.save_png(tmp_path / "charts.png")
    image = QImage(str(png))
    assert png.stat().st_size > 1000 and image.width() >= 1000 and image.height() > 500


def test_missing_database_and_hidden_png(qtbot, tmp_path):
    widget = ReportsWidget(tmp_path / "none.sqlite")  # never shown: the PNG still renders
    qtbot.addWidget(widget)
    assert widget.data is None and "no inspection database" in widget.status.text()
    png = widget.save_png(tmp_path / "empty.png")
    assert png.stat().st_size > 0 and not QImage(str(png)).isNull()
    assert not (tmp_path / "none.sqlite").exists()


def test_defect_rate_axis_starts_at_zero(qtbot, db):
    widget = make(qtbot, db)  # days at 50, 100, 50 %
    (_, _), (y0, y1) = widget.rate_plot.viewRange()
    assert y0 == 0 and 100 < y1 <= 105  # the 100 % day shows whole, no more than a little above it
    widget.set_range(date(2026, 11, 2), date(2026, 11, 2))  # one day at 50 %: still from 0, top just above 50
    (_, _), (y0, y1) = widget.rate_plot.viewRange()
    assert y0 == 0 and 50 < y1 < 60
    widget.set_range(date(2026, 11, 5), date(2026, 11, 5))  # nothing inspected: an empty 0..1 % axis, not -0.5..0.5
    assert widget.rate_plot.viewRange()[1] == [0, 1]
    for plot in (widget.rate_plot, widget.defects_plot, widget.hist_plot):
        assert plot.getViewBox().state["limits"]["yLimits"][0] == 0  # nothing to pan below 0 to


def dark_pixels(image: QImage, top: int, bottom: int) -> int:
    return sum(QColor(image.pixel(x, y)).lightness() < 128 for y in range(top, bottom, 2) for x in range(0, image.width(), 2))


def test_png_names_the_stations_and_dates(qtbot, db, tmp_path):
    widget = make(qtbot, db)
    assert widget.caption() == "line-1 · 2026-11-01 – 2026-11-05"
    png = widget.save_png(tmp_path / "charts.png")
    image = QImage(str(png))
    charts = pg.exporters.ImageExporter(widget.charts.scene())
    charts.parameters()["width"] = image.width()
    assert image.height() == charts.export(toBytes=True).height() + CAPTION_PX  # a band above the charts ...
    assert dark_pixels(image, 0, CAPTION_PX) > 100  # ... with the caption's text in it

    with InspectionStore(db) as store:  # two stations: both named
        add(store, (2026, 11, 3, 9, 0), station="line-2")
    widget.refresh()
    assert widget.caption() == "line-1, line-2 · 2026-11-01 – 2026-11-05"
    widget.set_range(date(2026, 11, 20), date(2026, 11, 21))
    assert widget.caption() == "no inspections · 2026-11-20 – 2026-11-21"


def test_missing_folder_is_named(qtbot, db, tmp_path, monkeypatch):
    widget = make(qtbot, db)
    missing = tmp_path / "gone"
    with pytest.raises(ReportError, match="does not exist"):
        widget.save_png(missing / "charts.png")
    with pytest.raises(ReportError, match="does not exist"):
        widget.export(missing / "daily.csv", per_inspection=False)
    # What the user sees after picking such a path in the file dialog.
    warnings = []
    monkeypatch.setattr(QMessageBox, "warning", lambda parent, title, text: warnings.append(text))
    for name, click in (("daily.csv", widget.export_daily_button.click), ("charts.png", widget.save_png_button.click)):
        monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, n=name: (str(missing / n), ""))
        click()
    assert warnings == [f"the folder {missing} does not exist"] * 2 and not missing.exists()
