"""Industrial cameras through Aravis, against Aravis' simulated GigE Vision camera on 127.0.0.1.

The fake camera (tests/fake_genicam.py) is a real GigE Vision peer: discovery, register access over GVCP,
frames as GVSP packets, heartbeat. It is started once for the module, killed and restarted where a test needs
a camera that drops out. Decoding of the packed pixel formats is checked against an independent bit-level packer.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace

import cv2
import numpy as np
import pytest
from conftest import REPO, run_app, wait_until

from app.settings import CameraSettings, StationSettings, from_dict, load_settings, save_settings
from app.sources import LIVE, RECONNECTING, LiveFeed, SourceError, open_source
from app.station import InspectionDone, InspectionFailed, Job, State, Station
from app.verdict import ClassRule, VerdictRule
from fake_genicam import DEVICE_ID, FakeCamera, require_fake_camera

FULL = (0, 0, 512, 512)  # the fake camera's default region (its sensor is 2048x2048)


# -- decoding (no camera needed) -----------------------------------------------------------------------


def pack_bits(values: list[int], bits: int) -> bytes:
    """PFNC "p" packing, the slow obvious way: one little-endian bit stream, each pixel's LSB first."""
    stream = 0
    for i, v in enumerate(values):
        stream |= v << (i * bits)
    return stream.to_bytes((len(values) * bits + 7) // 8, "little")


def pack_gige(values: list[int], bits: int) -> bytes:
    """GigE Vision Mono10Packed/Mono12Packed: per pair, p0's high bits, both pairs of low bits, p1's high bits."""
    low = bits - 8
    out = bytearray()
    for p0, p1 in zip(values[0::2], values[1::2] + [0] * (len(values) % 2)):
        out += bytes([p0 >> low, (p0 & ((1 << low) - 1)) | (p1 & ((1 << low) - 1)) << 4, p1 >> low])
    return bytes(out)


@pytest.mark.parametrize("pixel_format,bits,pack", [
    ("Mono8", 8, lambda v, b: bytes(v)),
    ("Mono10", 10, lambda v, b: np.array(v, "<u2").tobytes()),
    ("Mono12", 12, lambda v, b: np.array(v, "<u2").tobytes()),
    ("Mono16", 16, lambda v, b: np.array(v, "<u2").tobytes()),
    ("Mono10p", 10, pack_bits),
    ("Mono12p", 12, pack_bits),
    ("Mono10Packed", 10, pack_gige),
    ("Mono12Packed", 12, pack_gige),
])
@pytest.mark.parametrize("width,height", [(8, 4), (7, 3)])  # 21 pixels: a partial last group
def test_every_mono_format_decodes_to_its_significant_bits(pixel_format, bits, pack, width, height):
    from app.sources_genicam import decode_mono

    rng = np.random.default_rng(bits * width)
    values = rng.integers(0, 1 << bits, width * height).tolist()
    values[:2] = [0, (1 << bits) - 1]  # both ends of the range
    frame = decode_mono(pack(values, bits), width, height, pixel_format)
    assert frame.dtype == (np.uint8 if bits == 8 else np.uint16) and frame.shape == (height, width)
    assert frame.ravel().tolist() == values
    with pytest.raises(ValueError, match="needs .* bytes"):
        decode_mono(pack(values, bits)[:-3], width, height, pixel_format)
    with pytest.raises(ValueError, match="not one of"):
        decode_mono(b"\0" * 64, 8, 4, "RGB8")


def test_camera_settings_are_parsed_strictly_and_fall_back_field_by_field(tmp_path):
    data = {"cameras": {DEVICE_ID: {"exposure_us": 5000, "gain_db": 3, "pixel_format": "Mono12p", "roi": [8, 4, 256, 128],
                                    "frame_rate": 40, "packet_size": 1400, "trigger": "software", "trigger_timeout": 1.5},
                        "*": {"trigger": "line1", "trigger_activation": "falling"}}}
    settings, warnings = from_dict(data, StationSettings())
    assert warnings == []
    camera = settings.camera_settings(DEVICE_ID)
    assert camera == CameraSettings(5000.0, 3.0, "Mono12p", (8, 4, 256, 128), 40.0, 1400, "software", "rising", 1.5)
    other = settings.camera_settings("Basler-123")  # no block of its own: the "*" block
    assert (other.trigger, other.trigger_line, other.trigger_activation) == ("line1", "Line1", "falling")
    assert StationSettings().camera_settings(DEVICE_ID) == CameraSettings()  # nothing configured: free-run, as set

    path = save_settings(settings, tmp_path / "station.json")
    assert load_settings(path) == (settings, [])  # a round trip through the file changes nothing

    bad = {"cameras": {DEVICE_ID: {"exposure_us": -1, "gain_db": "high", "pixel_format": "RGB8", "roi": [0, 0, 0, 10],
                                   "packet_size": 100, "trigger": "hardware", "trigger_timeout": float("nan"),
                                   "colour": True, "frame_rate": 30},
                       "": {}, "cam-2": [1]}}
    settings, warnings = from_dict(bad, StationSettings())
    camera = settings.camera_settings(DEVICE_ID)
    assert camera == CameraSettings(frame_rate=30.0)  # the one good field kept, every bad one at its default
    text = "\n".join(warnings)
    for field in ("exposure_us", "gain_db", "pixel_format", "roi", "packet_size", "trigger", "trigger_timeout"):
        assert f"camera {DEVICE_ID!r}: {field} is invalid" in text
    assert "unknown setting 'colour'" in text and "camera '' ignored" in text and "camera 'cam-2' ignored" in text
    assert from_dict({"cameras": [1]}, StationSettings())[1] == [
        "setting 'cameras' is invalid (must be a mapping of camera device ID to its settings, got [1]); using the default"]


def test_without_aravis_a_genicam_source_says_how_to_install_it():
    """PyGObject/Aravis missing (as on a plain `pip install .`): a clear SourceError, and the base install does not need it."""
    code = ("import sys; sys.modules['gi'] = None\n"
            "from app.sources import SourceError, open_source\n"
            "open_source('0'); open_source('rtsp://cam/1')  # other sources unaffected\n"
            "try:\n    open_source('genicam://')\nexcept SourceError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "GenICam cameras need Aravis 0.8 and PyGObject" in out.stdout
    assert "pip install '.[genicam]'" in out.stdout and "gir1.2-aravis-0.8" in out.stdout
    pyproject = (REPO / "pyproject.toml").read_text()
    base = pyproject[pyproject.index("\ndependencies = ["):pyproject.index("[project.optional-dependencies]")]
    assert "pygobject" not in base.lower()  # `pip install .` compiles nothing
    assert '\ngenicam = ["PyGObject>=3.42,<3.51"]' in pyproject


# -- against the fake camera ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_camera(tmp_path_factory):
    require_fake_camera()
    camera = FakeCamera(tmp_path_factory.mktemp("fake-camera")).start()
    try:
        camera.add_mono_formats()
        yield camera
    finally:
        camera.kill()


@pytest.fixture
def camera(fake_camera):
    """The fake camera, running (a test before may have killed it)."""
    if fake_camera.process is None or fake_camera.process.poll() is not None:
        fake_camera.start()
    return fake_camera


def source(trigger="free-run", **changes):
    from app.sources_genicam import GenICamSource

    settings = {"pixel_format": "Mono8", "roi": FULL, "exposure_us": 10000, "gain_db": 0, "trigger": trigger, **changes}
    return GenICamSource(DEVICE_ID, CameraSettings(**settings))


def test_cameras_are_listed_for_the_picker(camera):
    from app.sources_genicam import list_cameras

    found = {c.device_id: c for c in list_cameras()}
    info = found[DEVICE_ID]
    assert (info.vendor, info.model, info.serial, info.address, info.protocol) == (
        "Aravis", "Fake", "GV01", "127.0.0.1", "GigEVision")
    assert info.source == f"genicam://{DEVICE_ID}"


def test_free_run_streams_distinct_frames_into_the_live_feed(camera):
    # The first camera found (the fake one is the only one), with the settings the station would pass.
    src = open_source("genicam://", cameras=lambda device_id: CameraSettings(pixel_format="Mono8", roi=FULL))
    feed = LiveFeed(src).start()
    try:
        seen = []
        deadline = time.monotonic() + 20
        while len(seen) < 10 and time.monotonic() < deadline:
            frame = feed.wait_newer(seen[-1].seq if seen else 0, timeout=5)
            if frame is not None:
                seen.append(frame)
        assert len(seen) == 10, feed.error
        assert feed.state == LIVE and feed.fps() > 0 and src.name == f"genicam://{DEVICE_ID}"
        ids = [int(f.label.rsplit(" ", 1)[1]) for f in seen]
        assert ids == sorted(ids) and len(set(ids)) == 10  # the camera's frame numbers, in order, none twice
        assert all(f.frame.dtype == np.uint8 and f.frame.ndim == 2 for f in seen)
        assert not np.array_equal(seen[0].frame, seen[-1].frame)  # the test pattern moves with the frame number
        health = src.health()
        assert health["frames"] >= 10 and health["read"] >= 10 and health["reconnects"] == 0
    finally:
        feed.stop()
    assert feed.state == "stopped"


def test_settings_are_applied_when_opened_and_read_back(camera):
    from app.sources_genicam import aravis

    wanted = CameraSettings(exposure_us=20000, gain_db=4, pixel_format="Mono8", roi=(32, 16, 256, 128), frame_rate=40,
                            packet_size=1200, trigger="free-run")
    from app.sources_genicam import GenICamSource

    src = GenICamSource(DEVICE_ID, wanted)
    src.open()
    try:
        assert src.applied == wanted
        frame = src.read()
        assert frame.shape == (128, 256) and src.bit_depth == 8
    finally:
        src.close()
    # What the camera holds now, asked by another connection: the read-back was the camera's word.
    Aravis, _ = aravis()
    other = Aravis.Camera.new(DEVICE_ID)
    region = other.get_region()
    assert (other.get_exposure_time(), other.get_gain(), other.get_frame_rate(), other.gv_get_packet_size()) == (
        20000, 4, 40, 1200)
    assert (region.x, region.y, region.width, region.height) == (32, 16, 256, 128)
    del other

    src = source(exposure_us=5000, gain_db=1, packet_size=1400)  # changed settings are applied at the next open
    src.open()
    try:
        assert (src.applied.exposure_us, src.applied.gain_db, src.applied.roi, src.applied.packet_size) == (5000, 1, FULL, 1400)
    finally:
        src.close()


@pytest.mark.parametrize("changes,message", [
    ({"exposure_us": 5e7}, r"exposure_us 5e\+07 is outside the camera's range 10\.\.1e\+07"),
    ({"gain_db": 50}, r"gain_db 50 is outside the camera's range 0\.\.10"),
    ({"pixel_format": "Mono14"}, r"has no pixel format Mono14 \(it offers .*Mono8.*\)"),
    ({"trigger": "line3"}, r"has no trigger input Line3 \(it has Line0, Software\)"),
])
def test_settings_the_camera_cannot_take_are_refused_by_name(camera, changes, message):
    src = source(**changes)
    with pytest.raises(SourceError, match=message):
        src.open()
    src.close()
    ok = source()  # nothing was left half-open: the camera opens at once
    ok.open()
    ok.close()


@pytest.mark.parametrize("pixel_format,bits", [("Mono16", 16), ("Mono12", 12), ("Mono10", 10), ("Mono12Packed", 12),
                                               ("Mono12p", 12), ("Mono10p", 10), ("Mono10Packed", 10)])
def test_mono_10_12_16_frames_come_with_their_bit_depth(camera, pixel_format, bits):
    src = source(pixel_format=pixel_format, roi=(0, 0, 256, 64))
    src.open()
    try:
        frame = src.read()
        assert src.applied.pixel_format == pixel_format and src.bit_depth == bits
        assert frame.dtype == np.uint8 and frame.shape == (64, 256)
    finally:
        src.close()
    if pixel_format == "Mono16":  # the fake camera draws its pattern in Mono16 too: 16 bits scaled to 8
        mono8 = source(roi=(0, 0, 256, 64))
        mono8.open()
        try:
            reference = mono8.read()
        finally:
            mono8.close()
        assert 0.5 * reference.std() < frame.std() < 2.0 * reference.std() + 1
        assert src.frame_warnings == ()


@pytest.fixture
def make_station(tmp_path, detector):
    stations = []

    def make(src) -> tuple[Station, list]:
        settings = replace(StationSettings(), data_dir=str(tmp_path / "data"), reconnect_seconds=0.2,
                           rule=VerdictRule(default=ClassRule(0.3, 0.0)))
        station = Station(settings, config_path=tmp_path / "station.json", detector=detector)
        events, lock = [], threading.Lock()

        def note(event):
            with lock:
                events.append(event)
        station.subscribe(note)
        station.start()
        station.open_source(src)
        stations.append(station)
        return station, events

    yield make
    for station in stations:
        station.stop(drain=False, timeout=5)


def inspect(station: Station, events: list, job_id: str) -> InspectionDone | InspectionFailed:
    before = len([e for e in events if isinstance(e, (InspectionDone, InspectionFailed))])
    assert wait_until(lambda: station.trigger(Job("line", job_id=job_id)), timeout=10), station.detail
    assert wait_until(lambda: len([e for e in events if isinstance(e, (InspectionDone, InspectionFailed))]) > before)
    return [e for e in events if isinstance(e, (InspectionDone, InspectionFailed))][-1]


def test_software_trigger_each_inspection_takes_and_logs_its_own_frame(camera, make_station, tmp_path):
    src = source("software")
    station, events = make_station(src)
    assert wait_until(lambda: station.state == State.READY and station.feed.state == LIVE), station.detail
    assert station.feed.latest() is None  # triggered: no frame until the station asks for one
    n = 5
    done = [inspect(station, events, f"J-{i}") for i in range(n)]
    assert all(isinstance(d, InspectionDone) and d.result.inspection_id for d in done), done
    labels = [d.frame.label for d in done]
    assert len(set(labels)) == n and all(label.startswith(f"genicam://{DEVICE_ID} frame ") for label in labels)
    assert len({d.frame.seq for d in done}) == n
    time.sleep(0.5)
    assert station.feed.latest().seq == done[-1].frame.seq  # no frame came without a trigger
    health = src.health()
    assert health["triggers"] == n and health["read"] == n and health["frames"] == n

    with sqlite3.connect(station.db_path) as db:
        rows = db.execute("SELECT job_id, source, trigger, image_path FROM inspections ORDER BY id").fetchall()
    assert [r[0] for r in rows] == [f"J-{i}" for i in range(n)]  # each inspection logged once
    assert [r[1] for r in rows] == labels and {r[2] for r in rows} == {"line"}
    pictures = [cv2.imread(str(tmp_path / "data" / r[3]), cv2.IMREAD_UNCHANGED) for r in rows]
    for a, b in zip(pictures, pictures[1:]):
        assert a.shape == (512, 512) and not np.array_equal(a, b)  # N frames, each its own picture
    for d, picture in zip(done, pictures):
        assert np.array_equal(d.frame.frame, picture)  # the logged picture is exactly the frame the trigger took


def test_a_camera_that_drops_out_is_reconnected_and_inspections_go_on(camera, make_station):
    src = source("software", exposure_us=5000)
    station, events = make_station(src)
    assert wait_until(lambda: station.state == State.READY and station.feed.state == LIVE), station.detail
    assert isinstance(inspect(station, events, "before"), InspectionDone)

    camera.kill()
    assert wait_until(lambda: station.state == State.DISCONNECTED, timeout=20), station.state
    assert station.feed.state == RECONNECTING and "genicam://" in station.detail
    failed = inspect(station, events, "during")  # a trigger while the camera is away fails, it does not hang
    assert isinstance(failed, InspectionFailed)

    camera.start()  # a fresh camera process: its exposure is back at its default until the station sets it again
    assert wait_until(lambda: station.state == State.READY and station.feed.state == LIVE, timeout=30), station.detail
    after = [inspect(station, events, f"after-{i}") for i in range(3)]
    assert all(isinstance(d, InspectionDone) for d in after), after
    assert src.applied.exposure_us == 5000 and src.health()["reconnects"] >= 1
    with sqlite3.connect(station.db_path) as db:
        jobs = [r[0] for r in db.execute("SELECT job_id FROM inspections ORDER BY id")]
    assert jobs == ["before", "after-0", "after-1", "after-2"]


def test_stopping_the_feed_frees_a_camera_waiting_for_a_trigger(camera):
    src = source("software")
    feed = LiveFeed(src).start()
    assert wait_until(lambda: feed.state == LIVE, timeout=20), feed.error
    t0 = time.monotonic()
    feed.stop(timeout=5)
    assert time.monotonic() - t0 < 2 and feed.state == "stopped"
    again = source()  # the camera was closed (control given back): another connection takes it at once
    again.open()
    try:
        assert again.read().shape == (512, 512)
    finally:
        again.close()


def test_lost_packets_are_counted_as_incomplete_frames(camera):
    camera.restart(lost_packets_per_thousand=5)  # the camera drops 0.5 % of its packets
    try:
        src = source(frame_rate=100)
        src.open()
        try:
            for _ in range(30):
                src.read()
            health = src.health()
        finally:
            src.close()
    finally:
        camera.restart(lost_packets_per_thousand=0)
    assert health["read"] == 30 and health["missing_packets"] > 0 and health["incomplete"] > 0, health
    from app.sources_genicam import health_text

    assert f"{health['incomplete']} incomplete" in health_text(health)


def test_software_trigger_frames_for_headless_runs(camera):
    src = source("software")
    frames = src.frames()
    labels = [next(frames)[0] for _ in range(4)]
    frames.close()
    assert len(set(labels)) == 4 and src.health()["triggers"] == 4


def test_headless_inspect_of_a_camera_logs_each_frame(camera, tmp_path):
    db = tmp_path / "inspections.sqlite"
    out = run_app("inspect", "--source", f"genicam://{DEVICE_ID}", "--db", str(db), "--max-frames", "20", timeout=300)
    assert out.returncode == 0, out.stderr
    assert "inspected 20:" in out.stdout
    with sqlite3.connect(db) as conn:
        sources = [r[0] for r in conn.execute("SELECT source FROM inspections")]
    assert len(sources) == 20 and len(set(sources)) == 20 and all(s.startswith(f"genicam://{DEVICE_ID} frame") for s in sources)


def test_settings_dialog_picks_a_camera_and_edits_its_settings(camera, qtbot):
    from app.ui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(replace(StationSettings(), source="0"))
    qtbot.addWidget(dialog)
    dialog.find_cameras()
    index = dialog.camera_combo.findData(DEVICE_ID)
    assert index > 0 and "Aravis Fake (serial GV01" in dialog.camera_combo.itemText(index)
    dialog.camera_combo.setCurrentIndex(index)
    assert dialog.source_edit.text() == f"genicam://{DEVICE_ID}"
    dialog.exposure_edit.setText("5000")
    dialog.gain_edit.setText("2.5")
    dialog.camera_roi_edit.setText("0,0,256,128")
    dialog.pixel_format_combo.setCurrentIndex(dialog.pixel_format_combo.findData("Mono12p"))
    dialog.trigger_combo.setCurrentIndex(dialog.trigger_combo.findData("software"))
    settings = dialog.build_settings()
    assert settings.source == f"genicam://{DEVICE_ID}"
    assert settings.camera_settings(DEVICE_ID) == CameraSettings(5000, 2.5, "Mono12p", (0, 0, 256, 128), trigger="software")

    dialog.packet_size_edit.setText("fast")
    with pytest.raises(ValueError, match="camera packet_size: 'fast' is not a number"):
        dialog.build_settings()
    dialog.packet_size_edit.setText("")
    dialog.exposure_edit.setText("-5")
    with pytest.raises(ValueError, match=f"camera {DEVICE_ID}: exposure_us is invalid"):
        dialog.build_settings()


def test_the_picker_says_how_to_install_aravis_when_it_is_missing():
    """On a PC without the optional extra (no PyGObject), *Find cameras* says how to install it."""
    code = ("import sys; sys.modules['gi'] = None\n"
            "from app.ui.run import prepare_qt_environment; prepare_qt_environment()\n"
            "from PySide6.QtWidgets import QApplication; app = QApplication([])\n"
            "from app.settings import StationSettings\n"
            "from app.ui.settings_dialog import SettingsDialog\n"
            "dialog = SettingsDialog(StationSettings()); dialog.find_cameras()\n"
            "print(dialog.camera_combo.count(), dialog.camera_note.text())\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("1 GenICam cameras need Aravis 0.8 and PyGObject") and "pip install '.[genicam]'" in out.stdout
