"""The station as a Modbus TCP device (app/line/modbus.py), driven by a real pymodbus client acting as the PLC.

Real Station on generated part pictures, the real shipped model, a real SQLite log,
TCP on 127.0.0.1. Every handshake's registers are checked against the inspection log.
"""

from __future__ import annotations

import sqlite3
import statistics
import threading
import time
from dataclasses import replace

import pytest
from pymodbus.client import ModbusTcpClient

from app.line.modbus import (
    ALL_INTERFACES,
    COIL_ERROR_RESET,
    COIL_TRIGGER,
    DI_BUSY,
    DI_ERROR,
    DI_READY,
    DI_RESULT_VALID,
    HR_PART_ID,
    HR_RECIPE,
    INPUT_REGISTERS,
    IR_CLASS_DEFECTS,
    IR_CLASSES,
    IR_CYCLE_MS,
    IR_DEFECTS,
    IR_ERROR,
    IR_FAILING,
    IR_INSPECTION_ID,
    IR_JOB,
    IR_MODEL_MS,
    IR_RECIPE,
    IR_RESULT_JOB,
    IR_STATE,
    IR_STATUS,
    IR_VERDICT,
    PART_ID_REGISTERS,
    VERDICT_FAIL,
    VERDICT_PASS,
    ErrorCode,
    ModbusDevice,
    decode_part_id,
    encode_part_id,
    parse_address,
)
from app.recipes import Recipe, Region
from app.settings import StationSettings
from app.station import InspectionDone, InspectionStarted, Job, State, Station
from app.users import SETUP_USER
from app.verdict import ClassRule, VerdictRule
from detector import Detector
from detector.regions import Roi
from synthetic import write_part_pictures

UNIT = 1
READY, BUSY, VALID, ERROR = (1 << DI_READY), (1 << DI_BUSY), (1 << DI_RESULT_VALID), (1 << DI_ERROR)
HANDSHAKES = 1000


@pytest.fixture(scope="module")
def fast_detector() -> Detector:
    """The shipped int8 model in one pass (no flip test): the real model, fast enough for 1,000 inspections."""
    from detector.api import default_model_path

    return Detector(default_model_path().with_suffix(".int8.onnx"), flip_test=False)


class Plc:
    """The PLC side: a pymodbus client on the device's port."""

    def __init__(self, port: int):
        self.client = ModbusTcpClient("127.0.0.1", port=port, timeout=10)
        assert self.client.connect()

    def coil(self, address: int, on: bool) -> None:
        assert not self.client.write_coil(address, on, device_id=UNIT).isError()

    def trigger(self, on: bool) -> None:
        self.coil(COIL_TRIGGER, on)

    def inputs(self) -> list[int]:
        r = self.client.read_input_registers(0, count=INPUT_REGISTERS, device_id=UNIT)
        assert not r.isError(), r
        return r.registers

    def wait(self, predicate, timeout: float = 30.0, poll: float = 0.002) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            regs = self.inputs()
            if predicate(regs):
                return regs
            assert time.monotonic() < deadline, f"PLC waited {timeout} s; registers {regs}"
            time.sleep(poll)

    def part_id(self, text: str) -> None:
        assert not self.client.write_registers(HR_PART_ID, encode_part_id(text), device_id=UNIT).isError()

    def handshake(self, part_id: str | None = None) -> list[int]:
        """Trigger, wait for result valid (or error), clear the trigger, wait until result valid clears."""
        if part_id is not None:
            self.part_id(part_id)
        self.trigger(True)
        regs = self.wait(finished)
        self.trigger(False)
        self.wait(lambda r: not r[IR_STATUS] & VALID)
        return regs


class Gate:
    """A slow observer: holds the station's worker at InspectionStarted until opened (the station stays busy)."""

    def __init__(self, station: Station):
        self.opened = threading.Event()
        self.opened.set()
        self.started = threading.Event()
        station.subscribe(self)

    def __call__(self, event) -> None:
        if isinstance(event, InspectionStarted):
            self.started.set()
            self.opened.wait(30)

    def close(self) -> None:
        self.opened.clear()
        self.started.clear()


@pytest.fixture
def line(tmp_path, fast_detector):
    """(station, device, plc) on two generated part pictures: a scratched one (FAIL) and a clean one (PASS)."""
    write_part_pictures(tmp_path / "parts", n=2)
    settings = replace(StationSettings(), source=str(tmp_path / "parts"), data_dir=str(tmp_path / "data"),
                       rule=VerdictRule(default=ClassRule(0.3, 0.0)), reconnect_seconds=0.2)
    station = Station(settings, config_path=tmp_path / "station.json", detector=fast_detector).start()
    deadline = time.monotonic() + 20
    while station.state != State.READY or station.feed.latest() is None:
        assert time.monotonic() < deadline, f"station not ready: {station.state} {station.detail}"
        time.sleep(0.02)
    device = ModbusDevice(station, "127.0.0.1", 0, unit_id=UNIT).start()
    plc = Plc(device.port)
    yield station, device, plc
    plc.client.close()
    device.stop()
    station.stop(drain=False, timeout=5)


def show_picture(station: Station, index: int) -> None:
    """Put picture `index` of the folder on the station's feed (the next part arrives)."""
    feed = station.feed
    if feed.source.index == index:
        return
    seq = feed.latest().seq
    assert station.step(index - feed.source.index)
    deadline = time.monotonic() + 10
    while feed.latest().seq == seq:
        assert time.monotonic() < deadline, "the next picture did not arrive"
        time.sleep(0.002)


def finished(regs: list[int]) -> bool:
    """How a PLC sees a handshake end: result valid, or an error with busy off (docs/modbus.md)."""
    status = regs[IR_STATUS]
    return bool(status & VALID or status & ERROR and not status & BUSY)


def inspection_id(regs: list[int]) -> int:
    return regs[IR_INSPECTION_ID] << 16 | regs[IR_INSPECTION_ID + 1]


def assert_matches_log(station: Station, regs: list[int], job: int, part_id: str, recipe: str | None = None) -> dict:
    """The result registers say what the log says about that inspection."""
    row = station.store.get(inspection_id(regs))
    assert row is not None, f"inspection {inspection_id(regs)} not in the log"
    assert (row["trigger"], row["job_id"], row["part_id"]) == ("line", str(job), part_id)
    assert regs[IR_RESULT_JOB] == job
    assert regs[IR_VERDICT] == {"PASS": VERDICT_PASS, "FAIL": VERDICT_FAIL}[row["verdict"]]
    classes = station.detector.metadata.class_names
    shown = [d for d in row["detections"] if d["shown"]]
    assert regs[IR_CLASSES] == len(classes)
    assert regs[IR_CLASS_DEFECTS:IR_CLASS_DEFECTS + len(classes)] == [sum(d["label"] == c for d in shown) for c in classes]
    assert regs[IR_DEFECTS] == len(shown) and regs[IR_FAILING] == sum(d["fails"] for d in row["detections"])
    assert regs[IR_MODEL_MS] == round(row["inference_ms"])
    if recipe is not None:
        assert row["recipe"] == recipe
    return row


def test_a_thousand_handshakes_match_the_inspection_log(line, capsys):
    station, device, plc = line
    poller = Plc(device.port)  # a second connection, e.g. an HMI, reading all the time
    torn: list[list[int]] = []
    stop = threading.Event()

    def poll() -> None:
        # Each read is one snapshot: whenever result valid is set, the results are those of the current job.
        while not stop.is_set():
            regs = poller.inputs()
            if regs[IR_STATUS] & VALID and (regs[IR_RESULT_JOB] != regs[IR_JOB] or regs[IR_VERDICT] == 0
                                            or not inspection_id(regs) or regs[IR_STATUS] & BUSY):
                torn.append(regs)
            time.sleep(0.001)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    results, cycles = [], []
    t0 = time.monotonic()
    for k in range(HANDSHAKES):
        show_picture(station, k % 2)
        plc.part_id(f"P-{k:04d}")
        start = time.perf_counter()
        plc.trigger(True)
        regs = plc.wait(finished)
        cycles.append((time.perf_counter() - start) * 1000)
        assert regs[IR_STATUS] & (VALID | BUSY | ERROR) == VALID and regs[IR_ERROR] == 0, regs
        assert regs[IR_JOB] == regs[IR_RESULT_JOB] == k + 1
        plc.trigger(False)
        after = plc.wait(lambda r: not r[IR_STATUS] & VALID)
        assert after[IR_STATUS] & READY and after[IR_RESULT_JOB] == k + 1  # the results stay readable
        results.append(regs)
    elapsed = time.monotonic() - t0
    stop.set()
    watcher.join(10)
    poller.client.close()
    assert not torn, f"{len(torn)} reads saw result valid beside another job's results, e.g. {torn[0]}"

    verdicts = []
    for k, regs in enumerate(results):
        row = assert_matches_log(station, regs, k + 1, f"P-{k:04d}")
        assert row["source"] == station.feed.source.files[k % 2].name
        verdicts.append(row["verdict"])
    assert verdicts[:2] == ["FAIL", "PASS"] and set(verdicts) == {"PASS", "FAIL"}
    assert len({inspection_id(r) for r in results}) == HANDSHAKES
    with capsys.disabled():
        print(f"\n{HANDSHAKES} Modbus handshakes in {elapsed:.0f} s: trigger -> result valid median "
              f"{statistics.median(cycles):.0f} ms, station's own (IR_CYCLE_MS) median "
              f"{statistics.median(r[IR_CYCLE_MS] for r in results):.0f} ms")


def test_the_next_trigger_right_after_the_acknowledgement_is_taken(line):
    """Result valid shows only once the station can take the next part, even when other views of the
    station are slow to hear about the result (here one that takes 50 ms, told after the device)."""
    station, _device, plc = line

    def slow_view(event) -> None:
        if isinstance(event, InspectionDone):
            time.sleep(0.05)

    station.subscribe(slow_view)
    for k in range(20):
        regs = plc.handshake(f"Q-{k}")  # triggers again as soon as result valid has cleared
        assert regs[IR_ERROR] == 0 and regs[IR_STATUS] & VALID, regs
        assert_matches_log(station, regs, k + 1, f"Q-{k}")


def test_part_id_and_recipe_number_arrive_in_the_log(line):
    station, _device, plc = line
    a = station.save_recipe(Recipe("type A", external_id="12"), SETUP_USER)
    station.save_recipe(Recipe("type B", external_id="0007"), SETUP_USER)
    station.save_recipe(Recipe("no number", external_id="line-x"), SETUP_USER)
    assert plc.inputs()[IR_RECIPE] == 0  # "default": its line id is not a number

    assert not plc.client.write_register(HR_RECIPE, 12, device_id=UNIT).isError()
    assert station.recipe.name == "type A" and plc.inputs()[IR_RECIPE] == 12  # selected at once, shown at once
    regs = plc.handshake("SN-0042")
    assert_matches_log(station, regs, 1, "SN-0042", recipe="type A")

    # The number is the line id read as a number; the full 32 characters travel; outer spaces go.
    assert not plc.client.write_register(HR_RECIPE, 7, device_id=UNIT).isError()
    assert station.recipe.name == "type B"
    long_id = "ABCDEFGHIJKLMNOPQRSTUVWXYZ-01234"
    assert len(long_id) == 2 * PART_ID_REGISTERS
    assert_matches_log(station, plc.handshake(long_id), 2, long_id, recipe="type B")
    assert_matches_log(station, plc.handshake("  SN 7  "), 3, "SN 7", recipe="type B")

    # Someone else picks another recipe: the line's job still runs under the number the PLC wrote.
    station.select_recipe("default")
    assert plc.inputs()[IR_RECIPE] == 0
    assert_matches_log(station, plc.handshake("SN-0044"), 4, "SN-0044", recipe="type B")
    assert station.recipe.name == "type B"

    # 0: keep the active recipe.
    assert not plc.client.write_register(HR_RECIPE, 0, device_id=UNIT).isError()
    station.select_recipe(a.name)
    assert_matches_log(station, plc.handshake("SN-0045"), 5, "SN-0045", recipe="type A")


def test_an_unknown_recipe_number_is_refused_with_an_error_code_until_reset(line):
    station, _device, plc = line
    station.save_recipe(Recipe("type A", external_id="12"), SETUP_USER)
    assert not plc.client.write_register(HR_RECIPE, 12, device_id=UNIT).isError()
    r = plc.client.write_register(HR_RECIPE, 99, device_id=UNIT)
    assert r.isError() and r.exception_code == 3  # illegal data value
    regs = plc.inputs()
    assert regs[IR_ERROR] == ErrorCode.UNKNOWN_RECIPE and regs[IR_STATUS] & ERROR
    assert plc.client.read_holding_registers(HR_RECIPE, count=1, device_id=UNIT).registers == [12]  # kept
    assert station.recipe.name == "type A"
    assert plc.client.read_discrete_inputs(0, count=4, device_id=UNIT).bits[:4] == [True, False, False, True]

    plc.coil(COIL_ERROR_RESET, True)  # how the PLC clears an error
    assert plc.inputs()[IR_ERROR] == 0
    assert plc.client.read_coils(0, count=2, device_id=UNIT).bits[:2] == [False, False]  # the reset coil reads back 0
    assert_matches_log(station, plc.handshake("SN-1"), 1, "SN-1", recipe="type A")

    # A recipe deleted after the PLC selected it: the trigger is refused, nothing inspected.
    station.select_recipe("default")
    station.recipes.delete("type A", SETUP_USER, "discontinued")
    plc.trigger(True)
    regs = plc.wait(lambda r: r[IR_STATUS] & ERROR)
    assert regs[IR_ERROR] == ErrorCode.UNKNOWN_RECIPE and regs[IR_JOB] == 1 and not regs[IR_STATUS] & BUSY
    plc.trigger(False)


def test_a_trigger_while_busy_is_refused_and_the_running_job_still_completes(line):
    station, _device, plc = line
    gate = Gate(station)
    gate.close()
    plc.part_id("SN-1")
    plc.trigger(True)
    assert gate.started.wait(10)
    regs = plc.wait(lambda r: r[IR_STATUS] & BUSY)
    assert not regs[IR_STATUS] & (READY | VALID) and regs[IR_JOB] == 1 and regs[IR_VERDICT] == 0
    plc.trigger(False)  # the PLC drops the trigger and raises it again while the station is busy
    plc.trigger(True)
    regs = plc.wait(lambda r: r[IR_STATUS] & ERROR)
    assert regs[IR_ERROR] == ErrorCode.BUSY and regs[IR_JOB] == 1 and regs[IR_STATUS] & BUSY
    gate.opened.set()
    regs = plc.wait(lambda r: r[IR_STATUS] & VALID)
    assert_matches_log(station, regs, 1, "SN-1")
    assert regs[IR_ERROR] == ErrorCode.BUSY  # errors stay until reset or the next accepted trigger
    plc.trigger(False)
    plc.wait(lambda r: not r[IR_STATUS] & VALID)
    assert_matches_log(station, plc.handshake("SN-2"), 2, "SN-2")
    assert plc.inputs()[IR_ERROR] == 0  # cleared by the accepted trigger

    # Another trigger (the operator's) keeps the station busy: the PLC's trigger is refused, never queued.
    gate.close()
    assert station.trigger(Job("operator", part_id="by hand"))
    assert gate.started.wait(10)
    plc.trigger(True)
    regs = plc.wait(lambda r: r[IR_STATUS] & ERROR)
    assert regs[IR_ERROR] == ErrorCode.BUSY and regs[IR_JOB] == 2 and not regs[IR_STATUS] & BUSY
    gate.opened.set()
    plc.trigger(False)
    plc.wait(lambda r: r[IR_STATUS] & READY)
    assert_matches_log(station, plc.handshake("SN-3"), 3, "SN-3")


def test_a_new_trigger_before_the_result_is_acknowledged_is_refused(line):
    station, _device, plc = line
    gate = Gate(station)
    gate.close()
    plc.part_id("SN-1")
    plc.trigger(True)
    assert gate.started.wait(10)
    plc.trigger(False)  # a pulse, not held until the result
    gate.opened.set()
    first = plc.wait(lambda r: r[IR_STATUS] & VALID)  # the result is still given, and stays valid...
    time.sleep(0.1)
    assert plc.inputs()[IR_STATUS] & VALID
    plc.trigger(True)  # ...so the next part's trigger is refused until the PLC acknowledges it
    regs = plc.wait(lambda r: r[IR_STATUS] & ERROR)
    assert regs[IR_ERROR] == ErrorCode.NOT_ACKNOWLEDGED and regs[IR_STATUS] & VALID and not regs[IR_STATUS] & BUSY
    assert regs[IR_JOB:] == first[IR_JOB:]  # no new job, the result untouched
    assert_matches_log(station, regs, 1, "SN-1")
    plc.trigger(False)  # acknowledges
    plc.wait(lambda r: not r[IR_STATUS] & VALID)
    regs = plc.handshake("SN-2")
    assert_matches_log(station, regs, 2, "SN-2")
    assert regs[IR_ERROR] == 0


def test_a_station_that_is_not_ready_refuses_the_trigger_and_recovers(line):
    station, _device, plc = line
    folder = station.feed.source.path
    station.close_source()
    regs = plc.wait(lambda r: not r[IR_STATUS] & READY)
    assert regs[IR_STATE] == 4  # disconnected
    plc.trigger(True)
    regs = plc.wait(lambda r: r[IR_STATUS] & ERROR)
    assert regs[IR_ERROR] == ErrorCode.NOT_READY and regs[IR_JOB] == 0 and not regs[IR_STATUS] & (BUSY | VALID)
    plc.trigger(False)
    station.open_source(str(folder))
    plc.wait(lambda r: r[IR_STATUS] & READY and r[IR_STATE] == 1 and station.feed.latest() is not None)
    assert_matches_log(station, plc.handshake("SN-1"), 1, "SN-1")


def test_an_inspection_that_fails_sets_the_error_code_and_gives_no_result(line):
    station, _device, plc = line
    station.save_recipe(Recipe("off the frame", (Region("corner", Roi(2000, 2000, 50, 50)),), external_id="5"), SETUP_USER)
    assert not plc.client.write_register(HR_RECIPE, 5, device_id=UNIT).isError()
    plc.trigger(True)
    regs = plc.wait(lambda r: r[IR_STATUS] & ERROR)
    assert regs[IR_ERROR] == ErrorCode.INSPECTION_FAILED and not regs[IR_STATUS] & (BUSY | VALID)
    assert regs[IR_JOB] == 1 and regs[IR_RESULT_JOB] == 0 and regs[IR_VERDICT] == 0
    plc.trigger(False)
    assert not plc.client.write_register(HR_RECIPE, 0, device_id=UNIT).isError()
    station.select_recipe("default")
    assert_matches_log(station, plc.handshake("SN-2"), 2, "SN-2", recipe="default")


def test_no_result_in_time_gives_up_the_job_and_ignores_its_late_result(line):
    station, device, plc = line
    device.job_timeout = 0.5
    gate = Gate(station)
    gate.close()
    plc.trigger(True)
    regs = plc.wait(lambda r: r[IR_STATUS] & ERROR, timeout=10)
    assert regs[IR_ERROR] == ErrorCode.NO_RESULT and not regs[IR_STATUS] & (BUSY | VALID) and regs[IR_JOB] == 1
    gate.opened.set()
    plc.trigger(False)
    regs = plc.wait(lambda r: r[IR_STATUS] & READY)
    time.sleep(0.2)
    regs = plc.inputs()
    assert not regs[IR_STATUS] & VALID and regs[IR_RESULT_JOB] == 0  # the late result is logged, not given as job 1's
    device.job_timeout = 60
    assert_matches_log(station, plc.handshake("SN-2"), 2, "SN-2")


def test_a_result_that_could_not_be_logged_is_given_with_an_error_code(line):
    station, _device, plc = line
    db = sqlite3.connect(station.db_path)
    db.execute("CREATE TRIGGER modbus_test_full BEFORE INSERT ON inspections BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    db.commit()
    regs = plc.handshake("SN-1")
    assert regs[IR_STATUS] & (VALID | ERROR) == VALID | ERROR and regs[IR_ERROR] == ErrorCode.NOT_LOGGED
    assert regs[IR_VERDICT] == VERDICT_FAIL and inspection_id(regs) == 0 and regs[IR_RESULT_JOB] == 1
    db.execute("DROP TRIGGER modbus_test_full")
    db.commit()
    db.close()
    show_picture(station, 1)
    regs = plc.handshake("SN-2")
    assert regs[IR_ERROR] == 0
    assert_matches_log(station, regs, 2, "SN-2")


def test_bad_part_ids_addresses_and_unit_ids_are_refused(line):
    station, device, plc = line
    bad = encode_part_id("SN")
    bad[0] = 0x5301  # "S" then a control character
    assert not plc.client.write_registers(HR_PART_ID, bad, device_id=UNIT).isError()
    plc.trigger(True)
    regs = plc.wait(lambda r: r[IR_STATUS] & ERROR)
    assert regs[IR_ERROR] == ErrorCode.BAD_PART_ID and regs[IR_JOB] == 0
    plc.trigger(False)

    r = plc.client.write_coil(2, True, device_id=UNIT)  # no such coil
    assert r.isError() and r.exception_code == 2
    r = plc.client.read_input_registers(INPUT_REGISTERS - 1, count=2, device_id=UNIT)
    assert r.isError() and r.exception_code == 2
    r = plc.client.write_registers(HR_PART_ID + PART_ID_REGISTERS - 1, [0, 0], device_id=UNIT)
    assert r.isError() and r.exception_code == 2
    r = plc.client.read_input_registers(0, count=4, device_id=UNIT + 1)  # another unit id: not this device
    assert r.isError() and r.exception_code == 0x0B

    plc.part_id("SN")
    plc.coil(COIL_TRIGGER, True)  # the PLC writing its coil every cycle: one part, one job
    plc.coil(COIL_TRIGGER, True)
    regs = plc.wait(lambda r: r[IR_STATUS] & VALID)
    plc.coil(COIL_TRIGGER, True)
    assert plc.inputs()[IR_JOB] == 1 and regs[IR_ERROR] == 0
    plc.trigger(False)
    assert_matches_log(station, regs, 1, "SN")


def test_start_and_stop(line, tmp_path):
    station, device, plc = line
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{device.port}"):
        ModbusDevice(station, "127.0.0.1", device.port).start()
    with pytest.raises(ValueError, match="unit id"):
        ModbusDevice(station, unit_id=248)
    any_unit = ModbusDevice(station, "127.0.0.1", 0, unit_id=0).start()
    other = ModbusTcpClient("127.0.0.1", port=any_unit.port)
    assert other.connect()
    assert not other.read_input_registers(0, count=4, device_id=37).isError()
    any_unit.stop()
    other.close()
    port = device.port
    device.stop()
    assert not ModbusTcpClient("127.0.0.1", port=port, retries=0, timeout=1).connect()
    device.stop()  # twice is harmless


def test_addresses_and_part_id_coding():
    assert parse_address("127.0.0.1:5020") == ("127.0.0.1", 5020)
    assert parse_address("plc-net.local") == ("plc-net.local", 5020)
    assert parse_address(":502") == (ALL_INTERFACES, 502)  # no host: every interface, as a line PC listens
    assert parse_address("[::]:1502") == ("::", 1502)
    with pytest.raises(ValueError, match="port must be a number"):
        parse_address("host:http")
    with pytest.raises(ValueError, match="0..65535"):
        parse_address("host:70000")
    assert encode_part_id("AB")[:2] == [0x4142, 0] and decode_part_id(encode_part_id("AB")) == "AB"
    assert decode_part_id([0x4100, 0x4242]) == "A"  # up to the first NUL
    with pytest.raises(ValueError, match="at most 32"):
        encode_part_id("x" * 33)
    with pytest.raises(ValueError, match="not printable ASCII"):
        decode_part_id([0xC3A9])
