"""Plant mode on a real PostgreSQL: the gallery and reports of every station with the station picker, QA review
written to the plant database, "picture not available here", and `python -m app --plant URL`; the station's settings
dialog setting its plant database."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from conftest import run_app, wait_until
from plant_data import record
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QDialogButtonBox, QPushButton
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


# -- the station's settings dialog: its plant database ------------------------------------------------


def click_browse(qtbot, edit) -> None:
    """Click the Browse… button beside a line edit (app.ui.settings_dialog.with_browse)."""
    button = edit.parentWidget().findChild(QPushButton)
    assert button.text() == "Browse…"
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def test_settings_dialog_sets_the_plant_database_and_the_station_replicates_to_it(qtbot, make_window, plant_db, tmp_path,
                                                                                 monkeypatch):
    import app.ui.settings_dialog as settings_dialog
    from app.ui.settings_dialog import SettingsDialog

    url = plant_db.login("line7", "plant_station")
    password_file = plant_db.password_file(tmp_path, "line7")
    store = tmp_path / "plant-pictures"
    store.mkdir()
    monkeypatch.setattr(settings_dialog.QFileDialog, "getOpenFileName", lambda *a, **k: (str(password_file), ""))
    monkeypatch.setattr(settings_dialog.QFileDialog, "getExistingDirectory", lambda *a, **k: str(store))
    window = make_window(station_name="line-7")
    assert window.station.replicator is None
    dialog = SettingsDialog(window.settings, window)
    qtbot.addWidget(dialog)
    assert dialog.plant_url_edit.text() == "" and dialog.plant_warn_spin.value() == 30.0
    qtbot.keyClicks(dialog.plant_url_edit, url)
    click_browse(qtbot, dialog.plant_password_file_edit)
    qtbot.keyClicks(dialog.plant_password_env_edit, "LINE7_PW")
    click_browse(qtbot, dialog.plant_store_edit)
    dialog.plant_warn_spin.selectAll()
    qtbot.keyClicks(dialog.plant_warn_spin, "12")
    qtbot.mouseClick(dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok),
                     Qt.MouseButton.LeftButton)
    assert dialog.result() == SettingsDialog.DialogCode.Accepted and dialog.error_label.text() == ""
    window.apply_settings(dialog.result_settings())

    wanted = {"plant_db_url": url, "plant_db_password_file": str(password_file), "plant_db_password_env": "LINE7_PW",
              "plant_picture_store": str(store), "plant_backlog_warn_minutes": 12.0}
    assert {k: getattr(window.settings, k) for k in wanted} == wanted
    saved = json.loads(window.config_path.read_text())
    assert {k: saved[k] for k in wanted} == wanted
    change = window.store.audit_records(action="settings.change")[-1]  # audited as any settings change
    assert change.user == window.user.name and {k: json.loads(change.new_value)[k] for k in wanted} == wanted
    assert json.loads(change.old_value)["plant_db_url"] == ""
    # The station replicates at once, with the new settings: its own log (this audit record too) reaches the plant.
    replicator = window.station.replicator
    assert replicator is not None and replicator.warn_after_s == 12 * 60 and replicator.picture_store == store
    assert window.station.problems == [] and not any("Plant database" in p for p in window._problems)
    assert wait_until(lambda: plant_db.scalar("SELECT count(*) FROM audit WHERE station = 'line-7'"
                                            " AND action = 'settings.change'") == 1, 30), replicator.status()
    window.close()


def test_settings_dialog_refuses_a_plant_database_url_with_a_password(qtbot, make_window, monkeypatch):
    from app.ui.settings_dialog import SettingsDialog

    window = make_window(station_name="line-7")
    before = window.config_path.read_bytes() if window.config_path.exists() else None
    audited = len(window.store.audit_records(action="settings.change"))
    seen = {}

    def fill_in() -> None:  # the admin types a URL with the password in it and presses OK, then gives up
        dialog = QApplication.activeModalWidget()
        assert isinstance(dialog, SettingsDialog)
        qtbot.keyClicks(dialog.plant_url_edit, "postgresql://line7:hunter2@db.plant/inspections")
        buttons = dialog.findChild(QDialogButtonBox)
        qtbot.mouseClick(buttons.button(QDialogButtonBox.StandardButton.Ok), Qt.MouseButton.LeftButton)
        seen["open"], seen["error"] = dialog.isVisible(), dialog.error_label.text()
        qtbot.mouseClick(buttons.button(QDialogButtonBox.StandardButton.Cancel), Qt.MouseButton.LeftButton)

    QTimer.singleShot(0, fill_in)
    window.open_settings()  # the real flow: exec() until OK or Cancel
    assert seen["open"], "the dialog stays open"
    assert seen["error"].startswith("plant database URL holds a password: put it in a file"), seen
    assert "hunter2" not in seen["error"]
    assert window.settings.plant_db_url == "" and window.station.replicator is None
    assert (window.config_path.read_bytes() if window.config_path.exists() else None) == before
    assert len(window.store.audit_records(action="settings.change")) == audited
    window.close()
