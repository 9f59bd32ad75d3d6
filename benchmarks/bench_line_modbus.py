"""The Modbus TCP handshake's speed: PLC trigger -> result valid, beside the inspection's own time.

    .venv/bin/python benchmarks/bench_line_modbus.py [--handshakes 100] [--poll-ms 5] [--frame 1280x960]
        [--roi 160,120,960,720] [--models fp32,int8] [--threads N]

A real Station (real model, real SQLite log and saved frames in a temporary
folder) on two generated camera frames (a scratched and a clean part, taken in
turn), served by app.line.modbus.ModbusDevice on 127.0.0.1; a pymodbus client
plays the PLC: it writes the part id, sets the trigger coil, reads the input
registers every --poll-ms until result valid, clears the trigger and waits until
result valid clears. Per model it prints, median and p99 over --handshakes:
- cycle: trigger written -> result valid seen by the polling PLC;
- inspection: the station's own time for it (InspectionStarted -> InspectionDone:
  crop, detect(), verdict, pictures and log), and the model alone;
- protocol overhead: cycle minus inspection, handshake by handshake, and its two
  parts: trigger written -> inspection started (the coil write, the station's
  worker taking the job and the frame) and inspection done -> result valid seen
  (publishing the result and waiting for the next poll: on average half the
  poll interval, plus a read);
- acknowledge: trigger cleared -> result valid cleared, seen by the PLC.
The machine's load average is printed beside the numbers.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
MODELS = {"fp32": REPO / "resources/models/centernet_neu_scratch_pit.onnx",
          "int8": REPO / "resources/models/centernet_neu_scratch_pit.int8.onnx"}
WARM_UP = 3


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):6.1f} ms, p99 {p99(values):6.1f} ms"


def run_model(name: str, model: Path, args, frames: Path, tmp: Path) -> None:
    from pymodbus.client import ModbusTcpClient

    from app.line.modbus import (
        COIL_TRIGGER,
        DI_ERROR,
        DI_RESULT_VALID,
        HR_PART_ID,
        INPUT_REGISTERS,
        IR_ERROR,
        IR_MODEL_MS,
        IR_STATUS,
        ModbusDevice,
        encode_part_id,
    )
    from app.settings import StationSettings
    from app.station import InspectionDone, InspectionStarted, State, Station
    from detector import Detector
    from detector.regions import Roi

    valid, error = 1 << DI_RESULT_VALID, 1 << DI_ERROR
    detector = Detector(model, threads=args.threads)
    settings = replace(StationSettings(), source=str(frames), data_dir=str(tmp / f"data-{name}"), roi=Roi.parse(args.roi))
    station = Station(settings, config_path=tmp / f"station-{name}.json", detector=detector).start()
    started, done = {}, {}

    def on_event(event) -> None:
        if isinstance(event, InspectionStarted):
            started[event.job.job_id] = time.perf_counter()
        elif isinstance(event, InspectionDone):
            done[event.job.job_id] = time.perf_counter()

    station.subscribe(on_event)
    while station.state != State.READY or station.feed.latest() is None:
        time.sleep(0.01)
    device = ModbusDevice(station, "127.0.0.1", 0).start()
    plc = ModbusTcpClient("127.0.0.1", port=device.port, timeout=30)
    if not plc.connect():
        sys.exit("the PLC client could not connect")
    poll = args.poll_ms / 1000.0

    def inputs() -> list[int]:
        r = plc.read_input_registers(0, count=INPUT_REGISTERS, device_id=1)
        if r.isError():
            sys.exit(f"read failed: {r}")
        return r.registers

    cycles, inspections, model_ms, overheads, to_start, to_seen, acks = [], [], [], [], [], [], []
    load_before = os.getloadavg()[0]
    for k in range(args.handshakes + WARM_UP):
        feed = station.feed
        seq = feed.latest().seq
        station.step(1 if feed.source.index == 0 else -1)  # the next part arrives (not timed)
        while feed.latest().seq == seq:
            time.sleep(0.001)
        plc.write_registers(HR_PART_ID, encode_part_id(f"BENCH-{k}"), device_id=1)
        t0 = time.perf_counter()
        plc.write_coil(COIL_TRIGGER, True, device_id=1)
        while not (regs := inputs())[IR_STATUS] & (valid | error):
            time.sleep(poll)
        t1 = time.perf_counter()
        if regs[IR_STATUS] & error:
            sys.exit(f"handshake {k}: error code {regs[IR_ERROR]}")
        plc.write_coil(COIL_TRIGGER, False, device_id=1)
        while inputs()[IR_STATUS] & valid:
            time.sleep(poll)
        t2 = time.perf_counter()
        if k < WARM_UP:
            continue
        job = str(k + 1)
        inspection = (done[job] - started[job]) * 1000.0
        cycles.append((t1 - t0) * 1000.0)
        inspections.append(inspection)
        model_ms.append(regs[IR_MODEL_MS])
        overheads.append(cycles[-1] - inspection)
        to_start.append((started[job] - t0) * 1000.0)
        to_seen.append((t1 - done[job]) * 1000.0)
        acks.append((t2 - t1) * 1000.0)
    load_after = os.getloadavg()[0]
    plc.close()
    device.stop()
    station.stop(drain=False)

    print(f"\n{name}: {model.name} (flip test {'on' if detector.flip_test else 'off'}), {args.handshakes} handshakes, "
          f"PLC polls every {args.poll_ms:g} ms")
    print(f"  cycle, trigger -> result valid seen:   {summary(cycles)}")
    print(f"  inspection (started -> done, logged):  {summary(inspections)}   (model alone: {summary(model_ms)})")
    print(f"  protocol overhead (cycle - inspection): {summary(overheads)}")
    print(f"    of which trigger written -> inspection started: {summary(to_start)}")
    print(f"    and inspection done -> result valid seen:       {summary(to_seen)}")
    print(f"  acknowledge, trigger cleared -> result valid cleared seen: {summary(acks)}")
    print(f"  load average (1 min) {load_before:.1f} before, {load_after:.1f} after, on {os.cpu_count()} CPUs")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--handshakes", type=int, default=100)
    p.add_argument("--poll-ms", type=float, default=5.0, help="how often the PLC reads the registers")
    p.add_argument("--frame", default="1280x960", help="camera frame size WxH")
    p.add_argument("--roi", default="160,120,960,720", help="inspection region x,y,w,h")
    p.add_argument("--models", default="fp32,int8", help=f"which shipped models: {', '.join(MODELS)}")
    p.add_argument("--threads", type=int, help="CPU threads for the network")
    args = p.parse_args()

    import cv2

    from synthetic import camera_frame

    w, h = (int(v) for v in args.frame.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frames = tmp / "frames"
        frames.mkdir()
        for i in range(2):
            cv2.imwrite(str(frames / f"{i}_{'scratch' if i == 0 else 'clean'}.png"), cv2.resize(camera_frame(i == 0, i), (w, h)))
        print(f"frames {w}x{h}, region {args.roi}, threads {args.threads or 'runtime default'}")
        for name in args.models.split(","):
            if name not in MODELS:
                sys.exit(f"unknown model {name!r}: choose from {', '.join(MODELS)}")
            run_model(name, MODELS[name], args, frames, tmp)


if __name__ == "__main__":
    main()
