"""QA gallery and role-dependent screens with real widgets (pytest-qt, offscreen)."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QFileDialog, QMessageBox
from test_review import QA, log

from app.settings import StationSettings
from app.store import GalleryFilter, InspectionStore
from app.ui.gallery import GalleryWidget
from app.ui.station_window import StationWindow
from app.users import User
from app.verdict import FAIL, PASS, ClassRule, VerdictRule
from detector import Detection

COLOURS = {"scratch": "#E69F00", "pit": "#0072B2"}


@pytest.fixture
def store(tmp_path):
    s = InspectionStore(tmp_path / "data" / "inspections.sqlite")
    log(s, 0, FAIL, [Detection("scratch", 0.8, (20, 20, 30, 90))])
    log(s, 1, PASS, [])
    log(s, 2, FAIL, [Detection("pit", 0.45, (50, 40, 80, 70))], operator="bob")
    yield s
    s.close()


def test_gallery_filters_review_and_audit(qtbot, store):
    g = GalleryWidget(store, QA, COLOURS)
    qtbot.addWidget(g)
    g.show()
    assert g.thumbs.count() == 3 and "3 inspections" in g.count_label.text()
    g.verdict_combo.setCurrentText(FAIL)
    assert g.thumbs.count() == 2
    g.class_combo.setCurrentText("pit")
    assert g.thumbs.count() == 1
    g.class_combo.setCurrentText("any")
    g.verdict_combo.setCurrentText("any")
    g.sort_combo.setCurrentText("oldest")
    g.thumbs.setCurrentRow(0)  # the scratch FAIL
    first = g.current_id
    assert g.boxes_table.rowCount() == 1 and g.boxes_table.item(0, 0).text() == "scratch"

    qtbot.mouseClick(g.pass_button, Qt.MouseButton.LeftButton)  # no reason: refused
    assert "reason" in g.message.text() and store.audit_records() == []
    g.boxes_table.selectRow(0)
    g.reason_edit.setText("reflection of the lamp")
    qtbot.mouseClick(g.fp_button, Qt.MouseButton.LeftButton)
    g.reason_edit.setText("no real defect")
    qtbot.mouseClick(g.pass_button, Qt.MouseButton.LeftButton)
    assert g.boxes_table.item(0, 4).text() == "false positive"

    # Draw a missed defect on the zoomable picture.
    g.missed_class.setCurrentText("pit")
    g.reason_edit.setText("small pit cluster missed")
    qtbot.mouseClick(g.missed_button, Qt.MouseButton.LeftButton)
    v = g.view
    a, b = v.mapFromScene(100, 30), v.mapFromScene(130, 60)
    qtbot.mousePress(v.viewport(), Qt.MouseButton.LeftButton, pos=a)
    qtbot.mouseMove(v.viewport(), QPoint((a.x() + b.x()) // 2, (a.y() + b.y()) // 2))
    qtbot.mouseMove(v.viewport(), b)
    qtbot.mouseRelease(v.viewport(), Qt.MouseButton.LeftButton, pos=b)
    assert g.boxes_table.rowCount() == 2 and g.boxes_table.item(1, 4).text().startswith("missed")
    (x1, y1, x2, y2), = [b.box for b in store.review_boxes() if b.kind == "missed"]
    assert abs(x1 - 100) < 3 and abs(y2 - 60) < 3

    actions = [a.action for a in store.audit_records(inspection_id=first)]
    assert actions == ["review.false_positive", "review.override", "review.missed"]
    # The audit trail is a table in words, newest last, nothing scrolled off to the right.
    assert [g.history.horizontalHeaderItem(c).text() for c in range(5)] == ["when", "who", "what", "old → new", "reason"]
    cells = [[g.history.item(r, c).text() for c in range(5)] for r in range(g.history.rowCount())]
    assert [c[1:3] + [c[4]] for c in cells] == [["quinn", "false positive marked", "reflection of the lamp"],
                                                ["quinn", "verdict overridden", "no real defect"],
                                                ["quinn", "missed defect added", "small pit cluster missed"]]
    assert [c[3] for c in cells[:2]] == ["scratch 0.8 → false positive", "FAIL → PASS"]
    assert re.fullmatch(r"pit at \(\d+(\.\d\d?)?, \d+(\.\d\d?)?, \d+(\.\d\d?)?, \d+(\.\d\d?)?\)", cells[2][3])
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", c[0]) for c in cells)
    assert g.history.horizontalHeader().stretchLastSection() and g.history.wordWrap()
    assert store.inspection(first).verdict == FAIL  # the station's verdict stays as logged
    g.reviewed_combo.setCurrentText("reviewed")
    assert g.thumbs.count() == 1 and "QA PASS" in g.thumbs.item(0).text()
    before = v.transform().m11()
    g.zoom_in.click()
    assert v.transform().m11() == pytest.approx(before * 1.25)


def test_training_set_export_from_the_gallery_says_what_it_did(qtbot, store, tmp_path, monkeypatch):
    assert not GalleryWidget(store, User("sam", "supervisor")).export_button.isEnabled()  # may look, not export
    g = GalleryWidget(store, QA, COLOURS)
    qtbot.addWidget(g)
    assert g.export_button.isEnabled() and g.export_button.text() == "Export training set…"

    result = g.export_training_set(tmp_path / "none")
    assert result.exported == 0 and g.export_box.icon() == QMessageBox.Icon.Warning
    assert g.export_box.text() == ("Nothing exported: no reviewed inspections in this filter (3 inspections match it): "
                                   "review some first.")
    assert g.export_box.isVisible() and g.message.text() == g.export_box.text()

    ids = store.gallery_ids(GalleryFilter())
    for i, verdict in zip(ids, (FAIL, PASS, FAIL)):
        g.service.set_verdict(i, verdict, "checked")
    store.resolve(store.inspection(ids[2]).image_path).unlink()
    g.verdict_combo.setCurrentText(FAIL)  # the current filter: the station's FAILs only
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a: str(tmp_path / "fails"))
    g.export_button.click()
    box = g.export_box
    assert box.text().startswith("Exported 1 reviewed pictures with 1 boxes (scratch)") and box.icon() == QMessageBox.Icon.Warning
    assert box.informativeText().splitlines() == ["1 of 2 reviewed inspections exported, 1 skipped:",
                                                  f"  skipped #{ids[2]}: frame missing"]
    assert json.loads((tmp_path / "fails" / "annotations.json").read_text())["images"][0]["file_name"].endswith(
        f"inspection_{ids[0]}.png")


def test_operators_cannot_review_or_change_settings(qtbot, tmp_path, store):
    g = GalleryWidget(store, User("olga", "operator"), COLOURS)
    qtbot.addWidget(g)
    assert not g.pass_button.isEnabled() and not g.fp_button.isEnabled()

    settings = replace(StationSettings(), source="", data_dir=str(tmp_path / "data"))
    w = StationWindow(settings, tmp_path / "s.json", user=User("olga", "operator"))
    qtbot.addWidget(w)
    tabs = [w.tabs.tabText(i) for i in range(w.tabs.count())]
    assert tabs == ["Inspect"] and not w.settings_action.isEnabled()
    assert w.operator_edit.isHidden() and "olga" in w.signed_in_label.text()  # the signed-in user is logged


def test_admin_rule_change_is_audited_and_gallery_tab_opens(qtbot, tmp_path, store):
    settings = replace(StationSettings(), source="", data_dir=str(tmp_path / "data"))
    admin = User("root", "admin")
    w = StationWindow(settings, tmp_path / "s.json", user=admin)
    qtbot.addWidget(w)
    tabs = [w.tabs.tabText(i) for i in range(w.tabs.count())]
    assert tabs[:2] == ["Inspect", "Gallery (QA)"]
    w.tabs.setCurrentIndex(1)
    assert w.gallery is not None and w.gallery.thumbs.count() == 3
    new_rule = VerdictRule(classes={"scratch": ClassRule(0.5, 20.0)})
    w.station.save_recipe(replace(w.recipe, rule=new_rule), admin, reason="longer scratches only")
    w.apply_settings(replace(w.settings, station_name="line 9"))
    rows = [a for a in store.audit_records() if a.action not in ("settings.file", "recipe.select")]
    assert [(r.user, r.action) for r in rows][-2:] == [("root", "recipe.save"), ("root", "settings.change")]
    assert json.loads(rows[-2].new_value)["rule"]["classes"]["scratch"] == {"min_score": 0.5, "min_size": 20.0}
    assert rows[-2].reason == "longer scratches only"
    assert json.loads(rows[-1].new_value) == {"station_name": "line 9"}
    assert w.recipe.rule == new_rule and w.recipe.version == 2


def test_admin_manages_users_in_the_dialog(qtbot, store):
    from app.ui.users_dialog import UsersDialog
    from app.users import UserDirectory

    users = UserDirectory(store)
    dlg = UsersDialog(users, User("setup", "admin"))
    qtbot.addWidget(dlg)
    dlg.name_edit.setText("root")
    dlg.role_combo.setCurrentText("admin")
    dlg.pin_edit.setText("12")
    dlg.add_button.click()
    assert "at least 6" in dlg.message.text() and dlg.table.rowCount() == 0
    dlg.pin_edit.setText("135790")
    dlg.add_button.click()
    root = users.authenticate("root", "135790")
    assert root == User("root", "admin") and dlg.table.rowCount() == 1

    dlg = UsersDialog(users, root)
    qtbot.addWidget(dlg)
    dlg.name_edit.setText("olga")
    dlg.role_combo.setCurrentText("operator")
    dlg.pin_edit.setText("246813")
    dlg.add_button.click()
    dlg.table.selectRow([dlg.table.item(r, 0).text() for r in range(2)].index("olga"))
    dlg.set_role_combo.setCurrentText("qa")
    dlg.set_role_button.click()
    assert users.authenticate("olga", "246813") == User("olga", "qa")
    actions = [a.action for a in store.audit_records()]
    assert actions == ["user.add", "user.add", "user.role"]


def test_a_picture_on_a_hanging_share_does_not_freeze_the_gallery(qtbot, store, monkeypatch):
    """A FIFO without a writer blocks its reader like a hung network mount: the gallery gives up and goes on."""
    import os
    import time

    import app.ui.gallery as gallery_module

    monkeypatch.setattr(gallery_module, "PICTURE_READ_TIMEOUT_S", 0.5)
    g = GalleryWidget(store, QA, COLOURS)
    qtbot.addWidget(g)
    g.sort_combo.setCurrentText("oldest")
    first, second = (g.thumbs.item(r).data(Qt.ItemDataRole.UserRole) for r in range(2))
    g.show_inspection(first)
    assert g.picture_shown  # the saved picture, read
    picture = store.resolve(store.inspection(second).image_path)
    picture.unlink()
    os.mkfifo(picture)
    started = time.monotonic()
    g.show_inspection(second)
    assert time.monotonic() - started < 3 and not g.picture_shown
    assert g.current_id == second and g.boxes_table.rowCount() == 0  # the record is shown without its picture
