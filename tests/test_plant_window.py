"""Plant mode on a real PostgreSQL: the gallery and reports of every station with the station picker, QA review
written to the plant database, "picture not available here", and `python -m app --plant URL`."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from conftest import run_app
from plant_data import record
from test_plant_db import replicate

from app.audit import verify
from app.settings import StationSettings
from app.store import GalleryFilter, InspectionStore
from app.store.postgres import PlantLog, verify_plant

pytest_plugins = ["plant_fixtures"]


@pytest.fixture
def two_stations(plant_db, tmp_path):
    """line-1 with its pictures in the plant store, line-2 with none there (its share was never mounted)."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    for n, name in enumerate(("line-1", "line-2")):
        with InspectionStore(tmp_path / name / "inspections.sqlite") as store:
            for i in range(5 + n):
                record(store, i, name, now - timedelta(hours=2, minutes=10 * i + n))
            login = f"line{n + 1}"
            replicate(store, plant_db.login(login, "plant_station"), name, password=plant_db.password(login),
                      picture_store=tmp_path / "store" if n == 0 else None)
    return plant_db


def test_plant_window_gallery_review_and_reports_across_stations(qtbot, two_stations, tmp_path):
    from app.ui.plant_window import NOT_HERE, PlantWindow, StationLog, open_plant

    db = two_stations
    url = db.login("quinn", "plant_qa")
    settings = StationSettings(plant_db_url=url, plant_db_password_file=str(db.password_file(tmp_path, "quinn")),
                               plant_picture_store=str(tmp_path / "store"))
    log = open_plant(None, settings)
    window = PlantWindow(log, log.whoami())
    qtbot.addWidget(window)
    gallery = window.gallery
    assert gallery.total == 11 and gallery.current_filter().start is not None  # the last week, all stations
    texts = [gallery.thumbs.item(r).text() for r in range(gallery.thumbs.count())]
    assert any(t.startswith("line-2 #6 ") for t in texts) and not any("#1000000" in t for t in texts)

    window.station_combo.setCurrentText("line-2")
    assert gallery.total == 6 and gallery.current_filter().station == "line-2"
    assert isinstance(window.reports.log, StationLog) and sum(window.reports.data.inspected) == 6
    gallery.show_inspection(gallery.thumbs.item(0).data(256))  # line-2's pictures are not in the store
    assert NOT_HERE in gallery.info_label.text()

    window.station_combo.setCurrentText("line-1")
    assert gallery.total == 5 and sum(window.reports.data.inspected) == 5
    first = gallery.thumbs.item(0).data(256)
    gallery.show_inspection(first)
    assert NOT_HERE not in gallery.info_label.text() and "station line-1" in gallery.info_label.text()
    gallery.current_id = first
    gallery.reason_edit.setText("burr, not a scratch")
    gallery.pass_button.click()
    assert gallery.message.text() == "Saved."
    review = log.current_review(first)
    assert (review.qa_verdict, review.reviewer) == ("PASS", "quinn")
    assert gallery.history.rowCount() >= 1

    window.station_combo.setCurrentText("all stations")
    assert window.reports.log is log and sum(window.reports.data.inspected) == 11
    assert log.gallery_count(GalleryFilter(qa_verdict="PASS")) == 1
    reports = verify_plant(log)
    assert all(r.ok for r in reports.values()) and reports["plant"].audit.count == 1
    window.close()
    log.close()


def test_a_report_login_sees_everything_and_changes_nothing(qtbot, two_stations, tmp_path):
    from app.ui.plant_window import PlantWindow

    db = two_stations
    url = db.login("boss", "plant_report")
    with PlantLog(url, password=db.password("boss")) as log:
        window = PlantWindow(log, log.whoami())
        qtbot.addWidget(window)
        assert window.gallery.total == 11 and not window.gallery.pass_button.isEnabled()
        assert window.tabs.count() == 2 and verify(log.origin("line-1")).ok
        window.close()


def test_python_m_app_plant(two_stations, tmp_path):
    db = two_stations
    url = db.login("quinn", "plant_qa")
    out = tmp_path / "plant.png"
    r = run_app("--plant", url, "--screenshot", str(out), env={"PGPASSWORD": db.password("quinn")})  # libpq's own variable
    assert r.returncode == 0 and out.stat().st_size > 10_000, r.stdout + r.stderr
    r = run_app("--plant", url, "--screenshot", str(out), env={"PGPASSWORD": "wrong"})
    assert r.returncode == 2 and "password authentication failed" in r.stderr
    r = run_app("--plant", "--screenshot", str(out))  # no URL here and none in the settings
    assert r.returncode == 2 and "no plant database" in r.stderr
