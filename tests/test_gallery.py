"""QA gallery and role-dependent screens with real widgets (pytest-qt, offscreen)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from PySide6.QtCore import QPoint, Qt
from test_review import QA, log

from app.settings import StationSettings
from app.store import InspectionStore
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
    assert "reason" in g.message.text() and store.query("SELECT COUNT(*) FROM audit")[0][0] == 0
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
    (x1, y1, x2, y2), = [tuple(r) for r in store.query("SELECT x1, y1, x2, y2 FROM review_boxes WHERE kind = 'missed'")]
    assert abs(x1 - 100) < 3 and abs(y2 - 60) < 3

    actions = [r[0] for r in store.query("SELECT action FROM audit WHERE inspection_id = ? ORDER BY id", (first,))]
    assert actions == ["review.false_positive", "review.override", "review.missed"]
    assert g.history.count() == 3 and "no real defect" in g.history.item(1).text()
    assert store.get(first)["verdict"] == FAIL  # the station's verdict stays as logged
    g.reviewed_combo.setCurrentText("reviewed")
    assert g.thumbs.count() == 1 and "QA PASS" in g.thumbs.item(0).text()
    before = v.transform().m11()
    g.zoom_in.click()
    assert v.transform().m11() == pytest.approx(before * 1.25)


def test_operators_cannot_review_or_change_settings(qtbot, tmp_path, store):
    g = GalleryWidget(store, User("olga", "operator"), COLOURS)
    qtbot.addWidget(g)
    assert not g.pass_button.isEnabled() and not g.fp_button.isEnabled()

    settings = replace(StationSettings(), source="", data_dir=str(tmp_path / "data"))
    w = StationWindow(settings, tmp_path / "s.json", user=User("olga", "operator"))
    qtbot.addWidget(w)
    tabs = [w.tabs.tabText(i) for i in range(w.tabs.count())]
    assert tabs == ["Inspect"] and not w.settings_action.isEnabled()
    assert w.operator_edit.text() == "olga" and w.operator_edit.isReadOnly()


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
    w.apply_settings(replace(w.settings, rule=new_rule, station_name="line 9"))
    rows = store.query("SELECT user, action, old_value, new_value FROM audit ORDER BY id")
    assert [(r["user"], r["action"]) for r in rows] == [("root", "settings.rule"), ("root", "settings.change")]
    assert json.loads(rows[0]["new_value"])["classes"]["scratch"] == {"min_score": 0.5, "min_size": 20.0}
    assert json.loads(rows[1]["new_value"]) == {"station_name": "line 9"}
    assert w.inspector.rule == new_rule


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
    assert "at least 4" in dlg.message.text() and dlg.table.rowCount() == 0
    dlg.pin_edit.setText("1357")
    dlg.add_button.click()
    root = users.authenticate("root", "1357")
    assert root == User("root", "admin") and dlg.table.rowCount() == 1

    dlg = UsersDialog(users, root)
    qtbot.addWidget(dlg)
    dlg.name_edit.setText("olga")
    dlg.role_combo.setCurrentText("operator")
    dlg.pin_edit.setText("2468")
    dlg.add_button.click()
    dlg.table.selectRow([dlg.table.item(r, 0).text() for r in range(2)].index("olga"))
    dlg.set_role_combo.setCurrentText("qa")
    dlg.set_role_button.click()
    assert users.authenticate("olga", "2468") == User("olga", "qa")
    actions = [r[0] for r in store.query("SELECT action FROM audit ORDER BY id")]
    assert actions == ["user.add", "user.add", "user.role"]
