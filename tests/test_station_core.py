"""The station's core without Qt: region, rules, settings, log, sources, headless inspect."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO, FlakyCamera, run_app, write_video

from app.inspection import Inspector
from app.recipes import Recipe, Region
from app.settings import StationSettings, load_settings, save_settings
from app.sources import ENDED, LIVE, RECONNECTING, ImageFilesSource, LiveFeed, SourceError, open_source
from app.store import SCHEMA_VERSION, InspectionStore, StoreError
from app.verdict import FAIL, PASS, ClassRule, VerdictRule, judge
from detector import Detection, Detector
from detector.regions import Roi, crop, to_frame
from synthetic import camera_frame


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector()


def test_core_modules_do_not_import_qt():
    code = ("import sys, app.inspection, app.store, app.verdict, app.sources, app.settings, app.cli, app.cli.inspect,"
            " app.cli.export_csv, app.cli.serve, app.cli.status, app.review, app.users, app.reports;"
            "qt = [m for m in sys.modules if m.startswith(('PySide6', 'shiboken6', 'pyqtgraph'))];"
            "print(qt); sys.exit(1 if qt else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# -- region ------------------------------------------------------------------------


def test_region_parse_clip_crop_and_map_back():
    roi = Roi.parse("10, 20, 100, 50")
    assert roi == Roi(10, 20, 100, 50) and str(roi) == "10,20,100,50"
    frame = np.arange(200 * 300, dtype=np.uint32).reshape(200, 300)
    region, used = crop(frame, Roi(250, 180, 100, 100))  # runs off the frame: clipped
    assert used == Roi(250, 180, 50, 20) and region.shape == (20, 50)
    assert region[0, 0] == frame[180, 250]
    assert to_frame((1.0, 2.0, 3.0, 4.0), used) == (251.0, 182.0, 253.0, 184.0)
    whole, used = crop(frame, None)
    assert used == Roi(0, 0, 300, 200) and whole is frame
    with pytest.raises(ValueError, match="outside"):
        crop(frame, Roi(400, 0, 10, 10))
    for bad in ("1,2,3", "a,b,c,d", "0,0,0,10", "-5,0,10,10"):
        with pytest.raises(ValueError):
            Roi.parse(bad)


# -- verdict rules -------------------------------------------------------------------


def test_verdict_rules_by_score_size_unit_and_threshold():
    dets = [
        Detection("scratch", 0.9, (0, 0, 4, 40)),  # 40 px long
        Detection("pit", 0.5, (0, 0, 10, 10)),
        Detection("scratch", 0.2, (0, 0, 4, 100)),
    ]
    rule = VerdictRule(classes={"scratch": ClassRule(0.3, 50.0), "pit": ClassRule(0.6, 0.0)})
    v = judge(dets, 0.1, rule)
    assert v.shown == (0, 1, 2) and v.failing == () and v.verdict == PASS  # too short, too weak, too weak
    v = judge(dets, 0.1, VerdictRule(classes={"scratch": ClassRule(0.3, 30.0), "pit": ClassRule(0.6, 0.0)}))
    assert v.failing == (0,) and v.verdict == FAIL
    # In mm: 40 px at 2 px/mm is 20 mm.
    mm = VerdictRule(classes={"scratch": ClassRule(0.0, 20.0)}, unit="mm", px_per_mm=2.0, default=ClassRule(1.0, 0))
    assert judge(dets, 0.1, mm).failing == (0, 2)
    assert judge(dets, 0.5, mm).failing == (0,)  # the threshold hides the weak one
    # A class the rule does not name is judged by the default rule: it cannot pass silently.
    assert judge([Detection("dent", 0.4, (0, 0, 5, 5))], 0.3, VerdictRule()).verdict == FAIL
    with pytest.raises(ValueError, match="px/mm"):
        VerdictRule(unit="mm")
    with pytest.raises(ValueError):
        ClassRule(min_score=1.5)
    assert VerdictRule.from_dict(json.loads(mm.to_json())) == mm


# -- settings -------------------------------------------------------------------------


def test_settings_defaults_round_trip_and_bad_files(tmp_path):
    path = tmp_path / "station.json"
    settings, warnings = load_settings(path)
    assert warnings == [] and settings.station_name and settings.rule.for_class("scratch").min_score == 0.3
    changed = StationSettings(station_name="line 4", source="rtsp://cam/1", roi=Roi(1, 2, 30, 40), threshold=0.45,
                              rule=VerdictRule(classes={"pit": ClassRule(0.5, 2.0)}, unit="mm", px_per_mm=8.0))
    save_settings(changed, path)
    assert load_settings(path) == (changed, [])
    assert [p.name for p in tmp_path.iterdir()] == ["station.json"]  # no temp file left behind

    path.write_text("{ not json", encoding="utf-8")
    settings, warnings = load_settings(path)
    assert settings.station_name == "station-1" and "not valid JSON" in warnings[0]

    path.write_text(json.dumps({"station_name": "line 5", "roi": [0, 0, -1, 5], "threshold": 7,
                                "rule": {"unit": "mm"}, "colour": "red"}), encoding="utf-8")
    settings, warnings = load_settings(path)
    assert settings.station_name == "line 5"  # the good field is kept
    assert settings.roi is None and settings.threshold is None and settings.rule.unit == "px"
    text = "\n".join(warnings)
    for key in ("'roi'", "'threshold'", "'rule'", "'colour'"):
        assert key in text

    path.write_bytes(b"\xff\xfe\x00garbage")
    assert load_settings(path)[0].station_name == "station-1"


# -- inspection log -----------------------------------------------------------------


def one_region(roi: Roi | None = None, rule: VerdictRule | None = None, threshold: float = 0.3) -> Recipe:
    """A recipe with one region (the whole frame unless `roi`), as the station had before recipes."""
    return Recipe("default", (Region("region" if roi else "whole frame", roi),), rule or VerdictRule(), threshold)


def test_inspect_and_log_scratched_and_clean_parts(tmp_path, detector):
    db = tmp_path / "data" / "inspections.sqlite"
    store = InspectionStore(db)
    inspector = Inspector(detector, store, "line 1")
    rule = VerdictRule(default=ClassRule(0.3, 0.0))
    frame = np.full((300, 400, 3), 128, np.uint8)
    frame[40:280, 60:380] = camera_frame(True, seed=0)
    roi = Roi(60, 40, 320, 240)
    bad = inspector.inspect(frame, one_region(roi, rule), source="test", operator="ana", part_id="SN-1")
    good = inspector.inspect(camera_frame(False, seed=1), one_region(None, rule), source="test", part_id="SN-2")
    assert bad.verdict.verdict == FAIL and good.verdict.verdict == PASS
    assert bad.inspection_id and good.inspection_id and not bad.error
    top = bad.detections[bad.verdict.failing[0]]
    # The scratch is drawn at x in [60+80, 60+240] of the frame; its box must be in frame pixels.
    assert top.label == "scratch" and 60 + 70 <= top.box[0] and top.box[2] <= 60 + 260 and top.box[1] >= 40

    row = store.get(bad.inspection_id)
    assert row["verdict"] == FAIL and row["station"] == "line 1" and row["operator"] == "ana" and row["part_id"] == "SN-1"
    assert (row["roi_x"], row["roi_y"], row["roi_w"], row["roi_h"]) == (60, 40, 320, 240)
    assert row["model_id"] == detector.model_id and row["threshold"] == pytest.approx(0.3)
    assert row["n_detections"] == len(row["detections"]) == len(bad.detections)
    assert any(d["fails"] and d["label"] == "scratch" for d in row["detections"])
    assert row["created_at"].endswith("Z") and json.loads(row["rule_json"])["default"]["min_score"] == 0.3
    saved = cv2.imread(str(store.resolve(row["image_path"])))
    assert saved.shape == frame.shape and np.array_equal(saved, frame)  # lossless frame
    assert cv2.imread(str(store.resolve(row["annotated_path"]))) is not None
    assert store.get(good.inspection_id)["verdict"] == PASS
    store.close()

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_log_keeps_the_inspection_when_frames_cannot_be_saved(tmp_path, detector):
    images = tmp_path / "images"
    images.write_text("a file where the image folder should be")  # mkdir fails like a full/readonly disk
    store = InspectionStore(tmp_path / "log.sqlite", image_dir=images)
    result = Inspector(detector, store, "s").inspect(camera_frame(True, 3), one_region())
    assert result.inspection_id is not None and len(result.warnings) == 2
    row = store.get(result.inspection_id)
    assert row["image_path"] is None and "not saved" in row["note"] and row["n_detections"] == len(row["detections"])


def test_frames_are_saved_losslessly_mono_ones_as_one_channel(tmp_path, detector):
    """A mono camera's BGR frame is stored as a 1-channel PNG (smaller, faster); colour frames keep 3 channels."""
    store = InspectionStore(tmp_path / "log.sqlite")
    inspector = Inspector(detector, store, "s")
    mono = camera_frame(True, seed=0)
    assert np.array_equal(mono[..., 0], mono[..., 2])  # generated frames are grey in BGR, like a mono camera's
    colour = mono.copy()
    colour[10:20, 10:20] = (0, 0, 255)  # one red mark
    for frame, channels in ((mono, 1), (colour, 3)):
        row = store.get(inspector.inspect(frame, one_region()).inspection_id)
        path = store.resolve(row["image_path"])
        stored = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert (stored.shape[2] if stored.ndim == 3 else 1) == channels
        assert np.array_equal(cv2.imread(str(path)), frame)  # read back as BGR: the very frame


def test_disk_reserve_stops_pictures_but_not_the_log(tmp_path, detector):
    """Below the reserve no picture is written, every inspection is still logged, and the operator is told why."""
    import shutil

    free = shutil.disk_usage(tmp_path).free
    store = InspectionStore(tmp_path / "log.sqlite", min_free_bytes=free + 10**9)  # more than this disk has free
    inspector = Inspector(detector, store, "s")
    result = inspector.inspect(camera_frame(True, 3), one_region())
    assert result.inspection_id is not None and result.verdict.verdict == FAIL
    assert len(result.warnings) == 2 and all("disk nearly full" in w and "reserve" in w for w in result.warnings)
    row = store.get(result.inspection_id)
    assert row["image_path"] is None and row["annotated_path"] is None and "disk nearly full" in row["note"]
    assert not (tmp_path / "images").exists() or not any((tmp_path / "images").rglob("*.*"))

    store.min_free_bytes = 10**6  # room again: pictures are saved
    again = inspector.inspect(camera_frame(True, 3), one_region())
    assert again.warnings == [] and store.resolve(store.get(again.inspection_id)["image_path"]).is_file()


def test_keep_pictures_of_fail_inspections_only(tmp_path, detector):
    store = InspectionStore(tmp_path / "log.sqlite")
    inspector = Inspector(detector, store, "s", keep_pictures="fail")
    recipe = one_region(rule=VerdictRule(default=ClassRule(0.3, 0.0)))
    bad = inspector.inspect(camera_frame(True, seed=0), recipe)
    good = inspector.inspect(camera_frame(False, seed=1), recipe)
    assert (bad.verdict.verdict, good.verdict.verdict) == (FAIL, PASS)
    assert bad.warnings == good.warnings == []  # a setting, not a problem to report
    bad_row, good_row = store.get(bad.inspection_id), store.get(good.inspection_id)
    assert store.resolve(bad_row["image_path"]).is_file() and store.resolve(bad_row["annotated_path"]).is_file()
    assert good_row["image_path"] is None and good_row["annotated_path"] is None and good_row["verdict"] == PASS
    assert len(list((tmp_path / "images").rglob("*.*"))) == 2


def test_picture_settings_are_checked(tmp_path):
    path = tmp_path / "station.json"
    path.write_text(json.dumps({"keep_pictures": "fail", "min_free_mb": 250}), encoding="utf-8")
    settings, warnings = load_settings(path)
    assert (settings.keep_pictures, settings.min_free_mb, warnings) == ("fail", 250.0, [])
    path.write_text(json.dumps({"keep_pictures": "some", "min_free_mb": -1}), encoding="utf-8")
    settings, warnings = load_settings(path)
    assert (settings.keep_pictures, settings.min_free_mb) == ("all", 1000.0)  # the shipped defaults
    assert len(warnings) == 2 and "'keep_pictures'" in warnings[0] and "'min_free_mb'" in warnings[1]


def test_log_refuses_foreign_or_newer_databases(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a usable"):
        InspectionStore(junk)
    newer = tmp_path / "newer.sqlite"
    sqlite3.connect(newer).execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer station"):
        InspectionStore(newer)


# -- sources --------------------------------------------------------------------------


def test_open_source_kinds(tmp_path, part_pictures):
    assert open_source("0").name == "camera 0" and open_source("0").live
    assert open_source("rtsp://10.0.0.5/stream").live
    assert isinstance(open_source(str(part_pictures[0].parent)), ImageFilesSource)
    video = write_video(tmp_path / "v.avi", n_frames=5)
    src = open_source(str(video))
    assert not src.live and len(list(src.frames())) == 5
    with pytest.raises(SourceError):
        open_source(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no pictures"):
        open_source(str(empty)).open()


def test_live_feed_keeps_only_the_newest_frame(tmp_path):
    video = write_video(tmp_path / "v.avi", n_frames=20)
    feed = LiveFeed(open_source(str(video), loop_video=True)).start()
    try:
        deadline = time.monotonic() + 10
        while feed.latest() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        first = feed.latest().seq
        time.sleep(0.3)  # a slow consumer
        assert feed.latest().seq > first + 1  # frames in between were dropped, not queued
        assert feed.state == LIVE and feed.fps() > 1
    finally:
        feed.stop()


def test_live_feed_reconnects_after_the_camera_is_lost():
    cam = FlakyCamera()
    feed = LiveFeed(cam, reconnect_seconds=0.3).start()
    try:
        states = set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (RECONNECTING in states and cam.opens >= 2 and feed.state == LIVE):
            states.add(feed.state)
            time.sleep(0.005)
        assert RECONNECTING in states and cam.opens >= 2 and feed.state == LIVE
        assert feed.error == ""  # cleared once frames flow again
    finally:
        feed.stop()


def test_live_feed_from_a_vanished_source_keeps_reconnecting(tmp_path):
    source = open_source(str(write_video(tmp_path / "gone.avi", n_frames=2)))
    (tmp_path / "gone.avi").unlink()  # the recording vanishes (a network share dropping out)
    feed = LiveFeed(source, reconnect_seconds=0.1).start()
    try:
        time.sleep(0.5)
        assert feed.state == RECONNECTING and "not found" in feed.error
    finally:
        feed.stop()


def test_recording_ends_without_loop(tmp_path):
    feed = LiveFeed(open_source(str(write_video(tmp_path / "v.avi", n_frames=3)))).start()
    feed._thread.join(5)
    assert feed.state == ENDED and feed.latest().seq == 3


# -- headless command -----------------------------------------------------------------


def test_headless_inspect_logs_a_folder(tmp_path, part_pictures):
    (part_pictures[0].parent / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    db = tmp_path / "out" / "log.sqlite"
    r = run_app("inspect", "--source", str(part_pictures[0].parent), "--db", str(db), "--part-id", "=cmd|x",
                "--operator", "bob")
    assert r.returncode == 1, r.stderr  # 1: some picture could not be judged (named), the rest were
    assert "inspected 4: 2 PASS, 2 FAIL, 1 not inspected" in r.stdout
    assert "zz_corrupt.png" in r.stderr
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT source, verdict, part_id, operator, n_detections, image_path FROM inspections ORDER BY id").fetchall()
    assert [Path(s).name for s, *_ in rows] == [p.name for p in part_pictures]
    assert [v for _, v, *_ in rows] == [FAIL, PASS, FAIL, PASS]
    assert all(p == "=cmd|x" and o == "bob" for _, _, p, o, *_ in rows)
    assert sum(n for *_, n, _ in rows) == conn.execute("SELECT COUNT(*) FROM detections").fetchone()[0]
    assert all((db.parent / img).is_file() for *_, img in rows)


def test_headless_inspect_reads_a_video_with_a_region(tmp_path):
    video = write_video(tmp_path / "line.avi", n_frames=6)
    db = tmp_path / "log.sqlite"
    r = run_app("inspect", "--source", str(video), "--db", str(db), "--roi", "0,0,320,240", "--every", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "inspected 3: 0 PASS, 3 FAIL" in r.stdout
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM inspections WHERE roi_w = 320").fetchone()[0] == 3


def test_headless_inspect_clear_errors(tmp_path):
    r = run_app("inspect", "--source", str(tmp_path / "nothing"), "--db", str(tmp_path / "l.sqlite"))
    assert r.returncode == 2 and "no such file or folder" in r.stderr
    bad_model = tmp_path / "m.onnx"
    bad_model.write_bytes(b"not a model")
    r = run_app("inspect", "--source", str(tmp_path), "--model", str(bad_model), "--db", str(tmp_path / "l.sqlite"))
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr


def test_kill_during_inspections_loses_at_most_one_and_never_corrupts(tmp_path):
    from synthetic import write_part_pictures

    folder = tmp_path / "many"
    write_part_pictures(folder, n=200)
    db = tmp_path / "log.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "app", "inspect", "--source", str(folder), "--db", str(db), "--quiet"],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if db.exists():
                try:
                    if sqlite3.connect(db, timeout=1).execute("SELECT COUNT(*) FROM inspections").fetchone()[0] >= 5:
                        break
                except sqlite3.Error:
                    pass
        os.kill(proc.pid, signal.SIGKILL)  # mid-run, most likely mid-inspection
    finally:
        proc.wait(10)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = conn.execute("SELECT id, n_detections, image_path, annotated_path FROM inspections").fetchall()
    assert 5 <= len(rows) < 200
    for inspection_id, n, image, annotated in rows:  # every logged inspection is whole
        assert conn.execute("SELECT COUNT(*) FROM detections WHERE inspection_id = ?", (inspection_id,)).fetchone()[0] == n
        assert (db.parent / image).is_file() and (db.parent / annotated).is_file()
        assert cv2.imread(str(db.parent / image)) is not None


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    from detector.files import atomic_write_bytes

    path = tmp_path / "report.csv"
    atomic_write_bytes(path, b"a,b\r\n")
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.read_bytes() == b"a,b\r\n" and (path.stat().st_mode & 0o777) == (0o666 & ~umask)
