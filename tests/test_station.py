"""The Qt-free Station: triggers, continuous mode, recipes and regions, error states, shutdown; `serve` and `status`.

Real model, real pictures and videos, a real SQLite log, a real MQTT broker; no Qt anywhere here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO, FlakyCamera, run_app, write_video

from app.outputs.payload import result_payload
from app.recipes import UNRECORDED, Recipe, Region
from app.settings import StationSettings
from app.station import (
    InspectionDone,
    InspectionFailed,
    Job,
    RecipeChanged,
    SourceEnded,
    State,
    StateChanged,
    Station,
    StationError,
)
from app.users import SETUP_USER, PermissionDenied
from app.verdict import FAIL, PASS, ClassRule, VerdictRule
from detector.regions import Roi
from mqtt_broker import Mosquitto, Subscriber, require_mosquitto
from synthetic import camera_frame, write_part_pictures

RULE = VerdictRule(default=ClassRule(0.3, 0.0))


class Recorder:
    """Collects a station's events (they arrive on its threads)."""

    def __init__(self, station: Station):
        self.events: list = []
        self._lock = threading.Lock()
        station.subscribe(self._add)

    def _add(self, event) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind) -> list:
        with self._lock:
            return [e for e in self.events if isinstance(e, kind)]

    def wait(self, predicate, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.02)
        return predicate(self)


@pytest.fixture
def make_station(tmp_path, detector):
    stations = []

    def make(source: str | None = None, start: bool = True, **changes) -> tuple[Station, Recorder]:
        settings = replace(StationSettings(), source=source or "", data_dir=str(tmp_path / "data"), rule=RULE,
                           reconnect_seconds=0.2)
        settings = replace(settings, **changes)
        station = Station(settings, config_path=tmp_path / "station.json", detector=detector)
        recorder = Recorder(station)
        if start:
            station.start()
        stations.append(station)
        return station, recorder

    yield make
    for s in stations:
        s.stop(drain=False, timeout=5)


def wait_frame(station: Station, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if station.feed is not None and station.feed.latest() is not None:
            return station.feed.latest()
        time.sleep(0.02)
    raise AssertionError("no frame")


def test_an_operator_trigger_is_inspected_once_and_logged_with_what_triggered_it(make_station, part_pictures):
    station, rec = make_station(str(part_pictures[0].parent))
    frame = wait_frame(station)
    assert rec.wait(lambda r: station.state == State.READY)  # "waiting for the first frame" until then
    assert station.recipe.name == "default" and station.recipe.version == 1
    assert station.trigger(Job("operator", job_id="J-1", part_id="SN-1", operator="ana", frame=frame))
    assert not station.trigger(Job("operator"))  # busy: refused, never queued
    assert rec.wait(lambda r: r.of(InspectionDone))
    done = rec.of(InspectionDone)[0]
    assert done.frame is frame and done.result.verdict.verdict == FAIL
    row = station.store.get(done.result.inspection_id)
    assert (row["trigger"], row["job_id"], row["part_id"], row["operator"]) == ("operator", "J-1", "SN-1", "ana")
    assert (row["recipe"], row["recipe_version"], row["source"]) == ("default", 1, part_pictures[0].name)
    assert rec.wait(lambda r: [e.state for e in r.of(StateChanged)][-1:] == [State.READY])
    assert State.BUSY in [e.state for e in rec.of(StateChanged)]
    with pytest.raises(ValueError, match="trigger must be one of"):
        station.trigger(Job("plc"))


def test_continuous_mode_inspects_every_picture_once_then_ends(make_station, part_pictures):
    station, rec = make_station(str(part_pictures[0].parent))
    wait_frame(station)
    station.set_continuous(True)
    assert rec.wait(lambda r: r.of(SourceEnded))
    assert not station.continuous
    rows = [station.store.get(i) for i in range(1, station.store.count() + 1)]
    assert [r["source"] for r in rows] == [p.name for p in part_pictures]
    assert [r["verdict"] for r in rows] == [FAIL, PASS, FAIL, PASS] and {r["trigger"] for r in rows} == {"continuous"}


def test_a_lossless_recording_gives_every_frame_once(tmp_path, detector):
    video = write_video(tmp_path / "line.avi", n_frames=12, fps=200)  # far faster than the model: a live feed drops frames
    settings = replace(StationSettings(), source=str(video), data_dir=str(tmp_path / "data"), rule=RULE)
    station = Station(settings, config_path=tmp_path / "s.json", detector=detector, lossless=True, loop_video=False)
    rec = Recorder(station)
    station.start()
    try:
        station.set_continuous(True)
        assert rec.wait(lambda r: r.of(SourceEnded), timeout=60)
        assert station.store.count() == 12
        assert [e.frame.seq for e in rec.of(InspectionDone)] == list(range(1, 13))
    finally:
        station.stop(drain=False)


def _two_region_recipes(station: Station) -> tuple[Recipe, Recipe]:
    # 320x240 frames; the scratch of camera_frame(True, seed=0) runs top to bottom near x=200.
    left_right = Recipe("left-right", (Region("left", Roi(0, 0, 160, 240)), Region("right", Roi(160, 0, 160, 240))), RULE,
                        0.3, external_id="7")
    top_bottom = Recipe("top-bottom", (Region("top", Roi(0, 0, 320, 120)),
                                       Region("bottom", Roi(0, 120, 320, 120), rule=VerdictRule(default=ClassRule(0.99, 0.0)))),
                        RULE, 0.3, external_id="8")
    return station.save_recipe(left_right, SETUP_USER), station.save_recipe(top_bottom, SETUP_USER)


def test_two_recipes_with_different_regions_log_and_judge_each_region(make_station, tmp_path):
    folder = tmp_path / "scratched"
    folder.mkdir()
    frame = camera_frame(True, seed=0)
    x = int(np.argmax((frame[:, :, 0] > 200).sum(axis=0)))  # where the scratch is
    cv2.imwrite(str(folder / "part.png"), frame)
    station, rec = make_station(str(folder))
    _two_region_recipes(station)

    station.select_recipe("7", trigger="line")  # the line's id for left-right
    assert station.recipe.name == "left-right" and rec.wait(lambda r: r.of(RecipeChanged))
    assert station.trigger(Job("line", job_id="A", frame=wait_frame(station)))
    assert rec.wait(lambda r: len(r.of(InspectionDone)) == 1)
    result = rec.of(InspectionDone)[0].result
    failing_side = "left" if x < 160 else "right"
    assert {r.name: r.verdict.verdict for r in result.regions} == {failing_side: FAIL, ({"left", "right"} - {failing_side}).pop(): PASS}
    assert result.verdict.verdict == FAIL

    station.select_recipe("top-bottom", trigger="line")
    assert rec.wait(lambda r: station.state == State.READY)
    assert station.trigger(Job("line", job_id="B", frame=wait_frame(station)))
    assert rec.wait(lambda r: len(r.of(InspectionDone)) == 2)
    result = rec.of(InspectionDone)[1].result
    # The scratch crosses both; the bottom region's own rule (score >= 0.99) lets it pass there, not at the top.
    assert {r.name: r.verdict.verdict for r in result.regions} == {"top": FAIL, "bottom": PASS}
    assert all(result.detection_regions[i] == "top" for i in result.verdict.failing)

    row = station.store.get(result.inspection_id)
    assert (row["recipe"], row["recipe_version"], row["job_id"]) == ("top-bottom", 1, "B")
    assert [(r["name"], r["verdict"], r["h"]) for r in row["regions"]] == [("top", FAIL, 120), ("bottom", PASS, 120)]
    assert {d["region"] for d in row["detections"]} <= {"top", "bottom"}
    payload = result_payload(row)
    assert [(r["name"], r["verdict"]) for r in payload["regions"]] == [("top", FAIL), ("bottom", PASS)]
    selects = station.store.audit_records(action="recipe.select")
    assert [json.loads(a.new_value)["name"] for a in selects] == ["left-right", "top-bottom"]


def test_who_may_switch_recipes(make_station, part_pictures, tmp_path):
    station, rec = make_station(str(part_pictures[0].parent))
    _two_region_recipes(station)
    users = station.users
    admin = users.add("root", "admin", "246810", by=SETUP_USER)
    olga = users.add("olga", "operator", "135791", by=admin)
    with pytest.raises(PermissionDenied, match="may not change the recipe"):
        station.select_recipe("left-right", by=olga)
    station.apply_settings(replace(station.settings, operator_may_select_recipe=True), admin)
    assert station.select_recipe("left-right", by=olga).name == "left-right"
    users.set_active("olga", False, by=admin)
    with pytest.raises(PermissionDenied, match="not an active user"):
        station.select_recipe("default", by=olga)
    with pytest.raises(StationError, match="no recipe named 'nope'"):
        station.select_recipe("nope", by=admin)
    with pytest.raises(PermissionDenied):
        station.save_recipe(replace(station.recipe, threshold=0.9), olga)


def test_thresholds_are_bound_to_the_model_they_were_set_for(make_station, part_pictures):
    """A threshold an admin set means something only for the model whose scores it was set on: under other
    weights (a new shipped model scores pits lower) nothing is judged until an admin saves the recipe again."""
    station, rec = make_station(str(part_pictures[0].parent))
    admin = station.users.add("root", "admin", "246810", by=SETUP_USER)
    running = station.detector.weights_id
    follows = station.save_recipe(Recipe("follows", rule=RULE), admin)
    assert follows.threshold_model is None  # the model's own default: nothing to bind
    pinned = station.save_recipe(Recipe("pinned", (Region("left", Roi(0, 0, 160, 240), threshold=0.45),), RULE), admin)
    assert pinned.threshold_model == running
    assert station.recipes.version("pinned", 1).threshold_model == running  # in the saved, audited version

    # The same recipe as saved under another model (e.g. before the shipped model changed).
    elsewhere = station.recipes.save(replace(pinned, threshold_model="centernet_neu_scratch_pit@0123456789ab"), admin)
    station.select_recipe("pinned", by=admin)
    assert rec.wait(lambda r: station.state == State.ERROR)  # told before anyone triggers, the line included
    assert "its thresholds were set for model centernet_neu_scratch_pit@0123456789ab" in station.detail
    logged = station.store.count()
    assert station.trigger(Job("line", job_id="A", frame=wait_frame(station)))
    assert rec.wait(lambda r: len(r.of(InspectionFailed)) == 1)
    message = rec.of(InspectionFailed)[0].message
    assert f"recipe 'pinned' v{elsewhere.version}: its thresholds were set for model " \
           f"centernet_neu_scratch_pit@0123456789ab, but the model is {running}" in message
    assert not rec.of(InspectionDone) and station.store.count() == logged  # no verdict, nothing logged

    # Saved before recipes recorded the model: nobody can tell which scores the threshold was set on.
    station.recipes.save(replace(pinned, threshold_model=None), admin)
    station.refresh_recipe()
    assert station.recipe.threshold_model == UNRECORDED
    assert station.trigger(Job("line", job_id="A2", frame=wait_frame(station)))
    assert rec.wait(lambda r: len(r.of(InspectionFailed)) == 2)
    assert "its thresholds were saved before recipes recorded the model" in rec.of(InspectionFailed)[1].message
    assert not rec.of(InspectionDone) and station.store.count() == logged

    confirmed = station.save_recipe(station.recipe, admin, "reviewed for the new model")
    assert confirmed.threshold_model == running and station.recipe.version == confirmed.version
    assert rec.wait(lambda r: station.state == State.READY)
    assert station.trigger(Job("line", job_id="B", frame=wait_frame(station)))
    assert rec.wait(lambda r: len(r.of(InspectionDone)) == 1)
    assert rec.of(InspectionDone)[0].result.regions[0].threshold == pytest.approx(0.45)


def test_outputs_follow_the_settings_and_the_data_folder_at_once(make_station, part_pictures, tmp_path):
    """An admin adds an MQTT output, then moves the data folder: results go out at once, each from the log it is in."""
    require_mosquitto()
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        station, rec = make_station(str(part_pictures[0].parent), station_name="line-4")
        admin = station.users.add("root", "admin", "246810", by=SETUP_USER)
        subscriber = Subscriber(broker.port, "plant/line-4/result")
        station.apply_settings(replace(station.settings, sinks=(f"mqtt://127.0.0.1:{broker.port}/plant",)), admin)
        for i, data in enumerate(["data", "data-2"]):
            if i:
                station.apply_settings(replace(station.settings, data_dir=str(tmp_path / data)), admin)
            assert station.trigger(Job("line", job_id=f"J{i}", frame=wait_frame(station)))
            assert rec.wait(lambda r, i=i: len(r.of(InspectionDone)) == i + 1 and not station.busy)
            uid = rec.of(InspectionDone)[i].result.uid
            assert station.store.get(station.store.count())["uid"] == uid  # logged in this folder's log
            assert subscriber.wait_for(lambda s, uid=uid: uid in [m["uid"] for m in s.results()]), data
        assert [m["job_id"] for m in subscriber.results()] == ["J0", "J1"]
        subscriber.close()
    finally:
        broker.stop()


def test_the_settings_region_and_rule_become_the_default_recipe_once(tmp_path, detector, part_pictures):
    settings = replace(StationSettings(), source=str(part_pictures[0].parent), data_dir=str(tmp_path / "data"),
                       roi=Roi(10, 20, 200, 150), rule=RULE, threshold=0.4)
    for _ in range(2):  # a second start finds the recipe and makes no other
        station = Station(settings, config_path=tmp_path / "s.json", detector=detector).start()
        recipe = station.recipe
        assert (recipe.name, recipe.version, recipe.threshold, recipe.rule) == ("default", 1, 0.4, RULE)
        assert [(r.name, r.roi) for r in recipe.regions] == [("region", Roi(10, 20, 200, 150))]
        assert len(station.store.recipe_versions()) == 1
        station.stop(drain=False)


def test_error_and_disconnected_states(make_station, tmp_path, part_pictures):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    station, rec = make_station(str(part_pictures[0].parent), model_path=str(bad))
    assert station.state == State.ERROR and "not a model" not in station.detail and station.detector is None
    assert any("Model not loaded" in p for p in station.problems)
    assert station.trigger(Job("line"))
    assert rec.wait(lambda r: r.of(InspectionFailed))
    assert "no model loaded" in rec.of(InspectionFailed)[0].message and station.store.count() == 0

    station, rec = make_station(data_dir=str(tmp_path / "other"))  # its own log: the recipe above names the bad model
    camera = FlakyCamera(frames=3, failed_opens=3)
    station.open_source(camera)
    assert rec.wait(lambda r: any(e.state == State.DISCONNECTED for e in r.of(StateChanged)))
    assert rec.wait(lambda r: station.state == State.READY)  # the camera came back


def test_stop_finishes_the_inspection_in_flight(make_station, part_pictures):
    station, rec = make_station(str(part_pictures[0].parent))
    assert station.trigger(Job("line", job_id="last", frame=wait_frame(station)))
    station.stop(drain=True, timeout=20)
    assert len(rec.of(InspectionDone)) == 1 and rec.of(InspectionDone)[0].result.inspection_id == 1
    assert station.state == State.STOPPED and not station.trigger(Job("line"))


def test_the_station_core_imports_no_qt():
    code = ("import sys, app.station, app.cli.serve, app.cli.status, app.recipes, app.outputs.worker;"
            " sys.exit(1 if any(m.startswith('PySide6') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_serve_inspects_a_folder_once_and_every_result_reaches_the_subscriber(tmp_path):
    require_mosquitto()
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        folder = tmp_path / "parts"
        pictures = write_part_pictures(folder, n=6)
        subscriber = Subscriber(broker.port, "plant/#")
        config = tmp_path / "station.json"
        config.write_text(json.dumps({"station_name": "line-2", "rule": RULE.to_dict()}))
        db = tmp_path / "log.sqlite"
        r = run_app("serve", "--config", str(config), "--db", str(db), "--source", str(folder), "--trigger", "continuous",
                    "--sink", f"mqtt://127.0.0.1:{broker.port}/plant", timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr
        assert subscriber.wait_for(lambda s: len([p for p in s.payloads() if p.startswith(b"{")]) >= 6)
        results = [json.loads(p) for p in subscriber.payloads() if p.startswith(b"{")]
        from app.store import InspectionStore

        with InspectionStore(db, read_only=True) as store:
            rows = [store.get(i) for i in range(1, store.count() + 1)]
        assert len(rows) == 6 and [Path(row["source"]).name for row in rows] == [p.name for p in pictures]
        assert [m["uid"] for m in results] == [row["uid"] for row in rows]
        assert [m["verdict"] for m in results] == [row["verdict"] for row in rows] == [FAIL, PASS] * 3
        assert all(m["station"] == "line-2" and m["trigger"] == "continuous" for m in results)
        subscriber.close()

        status = run_app("status", "--config", str(config), "--db", str(db), "--json")
        report = json.loads(status.stdout)
        assert status.returncode == 1 and report["state"] == "not running"  # it has finished
        assert report["today"] == {"inspected": 6, "pass": 3, "fail": 3} and report["recipe"] == "default"
    finally:
        broker.stop()


def test_serve_stops_on_sigterm_with_the_inspection_in_flight_logged(tmp_path):
    video = write_video(tmp_path / "line.avi", n_frames=200, fps=25)
    config = tmp_path / "station.json"
    config.write_text(json.dumps({"rule": RULE.to_dict()}))
    db = tmp_path / "log.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--config", str(config), "--db", str(db), "--source",
                             str(video), "--trigger", "continuous"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline:
            status = run_app("status", "--config", str(config), "--db", str(db), "--json")
            if status.stdout and json.loads(status.stdout)["today"]["inspected"] >= 3:
                break
            time.sleep(0.3)
        report = json.loads(status.stdout)
        assert status.returncode == 0 and report["state"] in ("ready", "busy"), status.stdout + status.stderr
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "SIGTERM" in out and "stopped" in out
    logged = [line for line in out.splitlines() if " INFO serve: #" in line]
    from app.store import InspectionStore

    with InspectionStore(db, read_only=True) as store:
        assert store.count() == len(logged) >= 3  # every inspection that started was logged, and said so
