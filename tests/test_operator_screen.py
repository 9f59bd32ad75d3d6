"""Issue 11, operator screen: a verdict never outlives its part, the rule decides, the screen says what it uses.

Real widgets (pytest-qt, offscreen), the real model, real files.
"""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest
from conftest import run_app
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QApplication
from window_fixtures import WAIT_MS, has_colour, inspect_and_wait, wait_for_frame

from app.overlay import contrast_ratio
from app.settings import load_settings
from app.store import InspectionStore
from app.ui.station_window import NOT_INSPECTED
from app.users import SETUP_USER, UserDirectory
from detector.regions import Roi
from synthetic import camera_frame

ADMIN_PIN, OLGA_PIN = "246810", "135791"


def wait_for_picture(qtbot, window, index: int) -> None:
    qtbot.waitUntil(lambda: window.feed.source.index == index and window.feed.latest() is not None
                    and window.feed.latest().label == window.feed.source.files[index].name, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.view.image() is not None, timeout=WAIT_MS)


def assert_not_inspected(window) -> None:
    assert window.verdict_label.text() == NOT_INSPECTED
    assert window.shown_detections() == []
    assert window.detections_list.count() == 1 and window.detections_list.item(0).text().startswith("not inspected")


@pytest.mark.parametrize("move", ["next_button", "PgDown", "prev_button", "PgUp"])
def test_stepping_clears_the_verdict_at_once(qtbot, make_window, part_pictures, move):
    window = make_window(str(part_pictures[0].parent))
    wait_for_frame(qtbot, window)
    if move in ("prev_button", "PgUp"):
        window._step(1)
        wait_for_picture(qtbot, window, 1)
    inspect_and_wait(qtbot, window)
    assert window.verdict_label.text() in ("PASS", "FAIL")
    if move.endswith("button"):
        qtbot.mouseClick(getattr(window, move), Qt.MouseButton.LeftButton)
    else:
        qtbot.keyClick(window, getattr(Qt.Key, f"Key_{move.replace('PgDown', 'PageDown').replace('PgUp', 'PageUp')}"))
    assert_not_inspected(window)  # at once, before the next picture is even drawn


def test_folder_end_does_not_wrap_and_a_late_result_is_not_shown(qtbot, make_window, part_pictures):
    window = make_window(str(part_pictures[0].parent))
    wait_for_frame(qtbot, window)
    last = len(part_pictures) - 1
    for i in range(last):
        window._step(1)
        wait_for_picture(qtbot, window, i + 1)
    inspect_and_wait(qtbot, window)
    qtbot.keyClick(window, Qt.Key.Key_PageDown)  # past the end: stays on the last picture, says so
    qtbot.wait(300)
    assert window.feed.source.index == last and "last picture" in window.statusBar().currentMessage()

    # Inspect, then move on before the result is back: it is logged, never shown beside the new picture.
    window._step(-1)
    wait_for_picture(qtbot, window, last - 1)
    before, count = window.inspections_done, window.store.count()
    window.inspect_now()
    window._step(1)
    qtbot.waitUntil(lambda: window.inspections_done > before, timeout=WAIT_MS)
    assert window.store.count() == count + 1
    assert_not_inspected(window)
    assert "NOT INSPECTED" in window.statusBar().currentMessage()


def test_live_view_source_region_and_serial_changes_clear_the_verdict(qtbot, make_window, part_pictures, tmp_path):
    window = make_window(str(part_pictures[0].parent))
    wait_for_frame(qtbot, window)
    for change in ("live", "serial", "region", "whole frame", "source"):
        inspect_and_wait(qtbot, window)
        assert window.verdict_label.text() in ("PASS", "FAIL")
        if change == "live":
            qtbot.mouseClick(window.live_button, Qt.MouseButton.LeftButton)
        elif change == "serial":
            window.part_edit.setFocus()
            qtbot.keyClicks(window.part_edit, "SN-9")
        elif change == "region":
            window._set_roi(Roi(10, 10, 300, 220))
        elif change == "whole frame":
            qtbot.mouseClick(window.roi_clear_button, Qt.MouseButton.LeftButton)
        else:
            window.open_source(str(part_pictures[0]))
        assert_not_inspected(window)
        wait_for_frame(qtbot, window)


def test_whole_frame_removes_the_old_region_rectangle(qtbot, make_window, part_pictures):
    window = make_window(str(part_pictures[0].parent))
    wait_for_frame(qtbot, window)
    window._set_roi(Roi(40, 30, 240, 180))
    inspect_and_wait(qtbot, window)
    roi_green = "#50c850"
    assert has_colour(window.view.grab().toImage(), roi_green, tolerance=30)
    qtbot.mouseClick(window.roi_clear_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window._shown is not None and not window._holding_result, timeout=WAIT_MS)
    qtbot.wait(100)
    assert window.settings.roi is None
    assert not has_colour(window.view.grab().toImage(), roi_green, tolerance=30)


def test_keyboard_inspects_wherever_the_focus_is(qtbot, make_window, part_pictures):
    window = make_window(str(part_pictures[0].parent))
    wait_for_frame(qtbot, window)

    def press(widget, key) -> bool:
        before = window.inspections_done
        widget.setFocus()
        QApplication.processEvents()
        qtbot.keyClick(widget, key)
        try:
            qtbot.waitUntil(lambda: window.inspections_done > before, timeout=3000)
        except Exception:  # noqa: BLE001  (pytest-qt's timeout: no inspection happened)
            return False
        return True

    for widget in (window.next_button, window.threshold_slider, window.continuous_check, window.detections_list,
                   window.inspect_button, window.view):
        assert press(widget, Qt.Key.Key_F5), f"F5 on {type(widget).__name__}"
        assert press(widget, Qt.Key.Key_Space), f"Space on {type(widget).__name__}"
    assert not window.continuous_check.isChecked()  # Space inspected instead of toggling it
    assert press(window.part_edit, Qt.Key.Key_F5)
    assert press(window.part_edit, Qt.Key.Key_Return)
    # In the serial field Space types a space: no inspection, and the old verdict goes.
    assert not press(window.part_edit, Qt.Key.Key_Space)
    assert window.part_edit.text().endswith(" ")
    assert_not_inspected(window)


def test_display_filter_is_never_saved_and_the_rule_threshold_is_shown(qtbot, make_window, part_pictures, tmp_path):
    window = make_window(str(part_pictures[0].parent))
    wait_for_frame(qtbot, window)
    model_threshold = window.detector.metadata.default_threshold  # the rule's: no recipe sets one here
    assert f"{model_threshold:.2f}" in window.rule_label.text()
    window.threshold_slider.setValue(99)
    result = inspect_and_wait(qtbot, window)  # inspected while the slider is at 0.99
    assert result.verdict.verdict == "FAIL" and result.threshold == pytest.approx(model_threshold)
    assert window.store.get(result.inspection_id)["threshold"] == pytest.approx(model_threshold)
    window.continuous_check.setChecked(True)  # any setting saved now ...
    window.continuous_check.setChecked(False)
    saved = json.loads((tmp_path / "station.json").read_text())
    assert saved["threshold"] is None  # ... does not carry the operator's slider


def test_typed_display_and_rule_thresholds_stay_as_typed(qtbot, make_window, part_pictures):
    from app.ui.recipes_dialog import RecipesDialog

    window = make_window(str(part_pictures[0].parent))
    wait_for_frame(qtbot, window)
    window.threshold_spin.lineEdit().selectAll()
    qtbot.keyClicks(window.threshold_spin, "0.45")
    qtbot.keyClick(window.threshold_spin, Qt.Key.Key_Return)
    assert window.threshold_spin.value() == pytest.approx(0.45) and window.display_threshold == pytest.approx(0.45)
    assert window.threshold_slider.value() == 45

    dialog = RecipesDialog(window.station, window.user, window)  # the rule's threshold is the recipe's (admins)
    qtbot.addWidget(dialog)
    editor = dialog.rule_editor
    editor.threshold_default_check.setChecked(False)
    editor.threshold_spin.lineEdit().selectAll()
    qtbot.keyClicks(editor.threshold_spin, "0.45")
    qtbot.keyClick(editor.threshold_spin, Qt.Key.Key_Return)
    saved = dialog.save("stricter parts from supplier B")
    assert saved is not None and saved.threshold == pytest.approx(0.45) and saved.version == 2
    qtbot.waitUntil(lambda: "0.45" in window.rule_label.text(), timeout=WAIT_MS)
    result = inspect_and_wait(qtbot, window)
    assert result.threshold == pytest.approx(0.45) and result.recipe.version == 2
    row = window.store.get(result.inspection_id)
    assert (row["threshold"], row["recipe"], row["recipe_version"]) == (pytest.approx(0.45), "default", 2)
    running = window.station.detector.weights_id
    assert saved.threshold_model == running and dialog.binding_label.text() == f"set for the model it runs with ({running})"

    # Saved under other weights (a model since replaced): refused at the station, flagged here, and one
    # save with nothing else changed confirms the thresholds for the running model.
    window.station.recipes.save(replace(saved, threshold_model="centernet_neu_scratch_pit@0123456789ab"), window.user)
    dialog.refresh("default")
    assert "inspections are refused until an admin reviews them" in dialog.binding_label.text()
    assert "c62828" in dialog.binding_label.styleSheet()
    confirmed = dialog.save("reviewed for the new model")
    assert confirmed is not None and confirmed.version == 4 and confirmed.threshold_model == running
    assert confirmed.threshold == pytest.approx(0.45)


def test_failing_boxes_look_different_and_the_defect_list_is_legible(qtbot, make_window, part_pictures):
    window = make_window(str(part_pictures[0].parent))
    wait_for_frame(qtbot, window)
    window.threshold_slider.setValue(10)
    result = inspect_and_wait(qtbot, window)
    assert result.verdict.failing
    background = QColor(window.detections_list.palette().color(window.detections_list.backgroundRole()))
    window.detections_list.grab()  # polish: the style sheet applies
    for i in range(window.detections_list.count()):
        item = window.detections_list.item(i)
        fg = item.foreground().color() if item.foreground().style() != Qt.BrushStyle.NoBrush else QColor("#212121")
        bg = QColor(window.detections_list.styleSheet().split("background:")[1].split(";")[0])
        ratio = contrast_ratio((fg.red(), fg.green(), fg.blue()), (bg.red(), bg.green(), bg.blue()))
        assert ratio >= 4.5, (item.text(), fg.name(), ratio)
    assert background.isValid()
    assert window.detections_list.item(0).text().startswith("✖ FAIL")


def test_continuous_mode_steps_through_a_picture_folder_and_stops_at_its_end(qtbot, make_window, part_pictures):
    window = make_window(str(part_pictures[0].parent))
    wait_for_frame(qtbot, window)
    assert window.fps_label.text() == ""  # a folder has no camera frame rate
    window.continuous_check.setChecked(True)
    qtbot.waitUntil(lambda: not window.continuous_check.isChecked(), timeout=4 * WAIT_MS)
    sources = [window.store.get(i)["source"] for i in range(1, window.store.count() + 1)]
    assert sources == [p.name for p in part_pictures]  # each picture once, in order
    assert "every picture of the folder is inspected" in window.statusBar().currentMessage()


def test_a_camera_that_never_opened_says_so(qtbot, make_window):
    window = make_window()
    window.open_source("5")  # File ▸ Camera or stream… → 5
    qtbot.waitUntil(lambda: "camera 5" in window.view.banner(), timeout=WAIT_MS)
    assert "cannot open camera 5" in window.view.banner().lower()
    assert "disconnected" not in window.view.banner().lower()


def test_corrupt_pictures_are_named_in_the_status_bar(qtbot, make_window, part_pictures):
    folder = part_pictures[0].parent
    (folder / "part_001b_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    window = make_window(str(folder))
    wait_for_frame(qtbot, window)
    for _ in range(2):
        window._step(1)
        qtbot.wait(300)
    qtbot.waitUntil(lambda: "part_001b_broken.png" in window.source_label.text() + window.statusBar().currentMessage(),
                    timeout=WAIT_MS)


def test_a_single_corrupt_file_says_so_once(qtbot, make_window, tmp_path):
    bad = tmp_path / "bad.jpg"
    good = cv2.imencode(".jpg", np.full((64, 64), 128, np.uint8))[1].tobytes()
    bad.write_bytes(good[: len(good) // 2])
    window = make_window(str(bad))
    qtbot.waitUntil(lambda: "bad.jpg" in window.view.banner(), timeout=WAIT_MS)
    assert "Connecting" not in window.view._message and window.view.image() is None
    assert window.feed.state != "reconnecting"


def _users(db) -> UserDirectory:
    users = UserDirectory(InspectionStore(db))
    admin = users.add("root", "admin", ADMIN_PIN, by=SETUP_USER)
    users.add("olga", "operator", OLGA_PIN, by=admin)
    return users


def test_the_signed_in_user_is_logged_and_the_model_file_is_named(qtbot, make_window, part_pictures, tmp_path):
    users = _users(tmp_path / "data" / "inspections.sqlite")
    window = make_window(str(part_pictures[0].parent), user=users.authenticate("olga", OLGA_PIN))
    wait_for_frame(qtbot, window)
    assert not window.operator_edit.isVisible() and "olga" in window.signed_in_label.text()
    window.operator_edit.setText("mallory")  # even if someone gets text in there
    result = inspect_and_wait(qtbot, window)
    assert window.store.get(result.inspection_id)["operator"] == "olga"
    assert "centernet_neu_scratch_pit.onnx (fp32)" in window.legend.text()
    assert not window.settings_action.isEnabled() and window.tabs.count() == 1


def test_a_disabled_user_is_signed_out_at_their_next_action(qtbot, make_window, part_pictures, tmp_path):
    users = _users(tmp_path / "data" / "inspections.sqlite")
    window = make_window(str(part_pictures[0].parent), user=users.authenticate("olga", OLGA_PIN))
    wait_for_frame(qtbot, window)
    users.set_active("olga", False, by=users.authenticate("root", ADMIN_PIN))
    before = window.store.count()
    window.inspect_now()
    qtbot.wait(300)
    assert window.user is None and window.store.count() == before
    assert not window.inspect_button.isEnabled()


def test_switch_user_and_idle_lock(qtbot, make_window, part_pictures, tmp_path):
    users = _users(tmp_path / "data" / "inspections.sqlite")
    window = make_window(str(part_pictures[0].parent), user=users.authenticate("olga", OLGA_PIN))
    wait_for_frame(qtbot, window)
    window.switch_user_action.trigger()
    assert window.user is None and window._login is not None
    window._login.name_edit.setText("root")
    window._login.pin_edit.setText(ADMIN_PIN)
    window._login.accept()
    assert window.user is not None and window.user.name == "root"
    assert window.settings_action.isEnabled() and window.tabs.count() == 3
    result = inspect_and_wait(qtbot, window)
    assert window.store.get(result.inspection_id)["operator"] == "root"

    window.station.update_settings(idle_lock_minutes=0.001)
    qtbot.waitUntil(lambda: window.user is None, timeout=WAIT_MS)
    assert "without input" in window.statusBar().currentMessage()


def test_command_line_values_are_never_saved_and_db_opens_any_log(tmp_path, part_pictures):
    config = tmp_path / "station.json"
    config.write_text(json.dumps({"station_name": "line-3", "data_dir": str(tmp_path / "home-data")}))
    other_db = tmp_path / "elsewhere" / "audit-copy.sqlite"
    r = run_app("--config", str(config), "--source", str(part_pictures[0].parent), "--data-dir", str(tmp_path / "tmp-data"),
                "--db", str(other_db), "--screenshot", str(tmp_path / "shot.png"), "--inspect", timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    saved, warnings = load_settings(config)
    assert (saved.source, saved.data_dir, saved.station_name) == ("", str(tmp_path / "home-data"), "line-3"), warnings
    with InspectionStore(other_db) as store:
        assert store.count() == 1
    assert not (tmp_path / "tmp-data" / "inspections.sqlite").exists()


def test_settings_edited_by_hand_are_reported_and_audited(qtbot, make_window, part_pictures, tmp_path):
    window = make_window(str(part_pictures[0].parent))
    wait_for_frame(qtbot, window)
    window.close()
    config = tmp_path / "station.json"
    data = json.loads(config.read_text())
    data["threshold"] = 1.0  # someone tries to PASS everything
    config.write_text(json.dumps(data))
    window = make_window(str(part_pictures[0].parent))
    text = window._problem_box.text()
    assert "changed outside the station" in text and "threshold: null → 1.0" in text
    rows = window.store.audit_records(action="settings.changed_outside")
    assert len(rows) == 1 and json.loads(rows[0].new_value) == {"threshold": 1.0}
    window.close()
    window = make_window(str(part_pictures[0].parent))  # reported once, not at every start
    assert not hasattr(window, "_problem_box")


def test_recipes_with_several_regions_show_each_region_verdict(qtbot, make_window, tmp_path):
    from app.recipes import Recipe, Region
    from app.verdict import ClassRule, VerdictRule

    folder = tmp_path / "scratched"
    folder.mkdir()
    frame = camera_frame(True, seed=0)
    cv2.imwrite(str(folder / "part.png"), frame)
    x = int(np.argmax((frame[:, :, 0] > 200).sum(axis=0)))  # the scratch's column
    window = make_window(str(folder))
    wait_for_frame(qtbot, window)
    rule = VerdictRule(default=ClassRule(0.3, 0.0))
    window.station.save_recipe(Recipe("halves", (Region("left", Roi(0, 0, 160, 240)), Region("right", Roi(160, 0, 160, 240))),
                                      rule, 0.3), window.user)
    window._show_model_and_recipe()
    assert window.recipe_combo.count() == 2
    window.recipe_combo.setCurrentIndex(window.recipe_combo.findData("halves"))
    window.recipe_combo.activated.emit(window.recipe_combo.currentIndex())
    qtbot.waitUntil(lambda: "halves" in window.rule_label.text(), timeout=WAIT_MS)
    assert [name for _, name in window.view.regions()] == ["left", "right"]  # outlined on the live picture

    result = inspect_and_wait(qtbot, window)
    failing, passing = ("left", "right") if x < 160 else ("right", "left")
    items = [window.detections_list.item(i).text() for i in range(window.detections_list.count())]
    assert f"region {failing}: FAIL" in items and f"region {passing}: PASS" in items
    assert window.verdict_label.text() == "FAIL"
    row = window.store.get(result.inspection_id)
    assert row["recipe"] == "halves" and {r["name"]: r["verdict"] for r in row["regions"]} == {failing: "FAIL", passing: "PASS"}
    # The saved annotated copy names each region with its verdict (red for the failing one).
    annotated = cv2.imread(str(window.store.resolve(row["annotated_path"])))
    assert annotated is not None and (np.abs(annotated.astype(int) - (40, 40, 220)).max(axis=2) < 30).sum() > 100
