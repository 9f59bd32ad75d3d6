"""The line devices from `serve` and from the window: a PLC (a real pymodbus client) triggers, the log has the result."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

from conftest import REPO
from test_modbus import IR_STATUS, IR_VERDICT, VALID, Plc, inspection_id

from app.line import LineDevices
from app.store import InspectionStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_a_modbus_plc_and_stops_on_sigterm(tmp_path, part_pictures):
    port = free_port()
    config = tmp_path / "station.json"
    config.write_text(json.dumps({"rule": {"default": {"min_score": 0.3, "min_size": 0}}}))
    db = tmp_path / "log.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--config", str(config), "--db", str(db), "--source",
                             str(part_pictures[0].parent), "--modbus", f"127.0.0.1:{port}"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                plc = Plc(port)
                break
            except (AssertionError, OSError):
                assert time.monotonic() < deadline and proc.poll() is None, "serve did not listen"
                time.sleep(0.2)
        plc.wait(lambda r: r[IR_STATUS] & 1, timeout=60)  # ready
        regs = plc.handshake("SN-77")
        assert regs[IR_STATUS] & VALID and regs[IR_VERDICT] == 2  # the first picture is scratched: FAIL
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    with InspectionStore(db, read_only=True) as store:
        row = store.get(inspection_id(regs))
    assert (row["verdict"], row["part_id"], row["trigger"], row["job_id"]) == ("FAIL", "SN-77", "line", "1")


def test_the_window_serves_the_line_its_settings_ask_for(qtbot, make_window, part_pictures):
    port = free_port()
    window = make_window(str(part_pictures[0].parent), modbus=f"127.0.0.1:{port}")
    assert isinstance(window.line, LineDevices) and len(window.line.devices) == 1
    qtbot.waitUntil(lambda: window.station.state.value == "ready", timeout=20000)
    plc = Plc(port)
    regs = plc.handshake("W-1")
    qtbot.waitUntil(lambda: window.current_result is not None, timeout=20000)  # the line's result is on screen
    assert window.verdict_label.text() == "FAIL" and window.current_result.inspection_id == inspection_id(regs)
    assert window.store.get(inspection_id(regs))["part_id"] == "W-1"
    window.close()
    assert window.line.devices == []


def test_serve_is_an_opc_ua_machine_vision_server_for_a_plc(tmp_path, part_pictures):
    import asyncio

    from opcua_plc import run as plc_run
    from opcua_plc import trust_plc

    from app.users import SETUP_USER, UserDirectory

    db = tmp_path / "data" / "inspections.sqlite"
    with InspectionStore(db) as store:
        UserDirectory(store).add("root", "admin", "246810", by=SETUP_USER)
    port = free_port()
    config = tmp_path / "station.json"
    config.write_text(json.dumps({"rule": {"default": {"min_score": 0.3, "min_size": 0}}, "data_dir": str(tmp_path / "data")}))
    output = (tmp_path / "serve.log").open("w")  # a file, not a pipe nobody reads while it runs
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--config", str(config), "--source",
                             str(part_pictures[0].parent), "--opcua", f"opc.tcp://127.0.0.1:{port}"], cwd=REPO,
                            stdout=output, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        cert = tmp_path / "data" / "opcua" / "server_cert.der"
        deadline = time.monotonic() + 120
        while not cert.is_file() or not _listening(port):
            assert time.monotonic() < deadline and proc.poll() is None, "serve's OPC UA server did not start"
            time.sleep(0.3)
        trust_plc(tmp_path / "plc", tmp_path / "data" / "opcua")
        out = asyncio.run(plc_run(f"opc.tcp://127.0.0.1:{port}", str(cert), str(tmp_path / "plc"), "root", "246810",
                                  "default", 3))
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        output.close()
    log = (tmp_path / "serve.log").read_text()
    assert proc.returncode == 0, log
    assert "asyncua.common.xmlimporter" not in log  # the service log stays readable
    assert len(out["results"]) == 3
    with InspectionStore(db, read_only=True) as store:
        for result in out["results"]:
            row = store.get(store.inspection_id_by_uid(result["uid"]))
            assert row["trigger"] == "line" and row["part_id"] == result["part"]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_the_window_serves_opc_ua_and_warns_about_an_open_endpoint(qtbot, make_window, part_pictures):
    port = free_port()
    window = make_window(str(part_pictures[0].parent), opcua=f"opc.tcp://127.0.0.1:{port}", opcua_allow_anonymous=True)
    assert [type(d).__name__ for d in window.line.devices] == ["OpcUaVisionServer"] and _listening(port)
    assert "anonymous, unencrypted" in window._problem_box.text()
    window.close()
    assert not _listening(port)
