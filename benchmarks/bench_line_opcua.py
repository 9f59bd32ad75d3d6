"""The PLC's round trip over OPC UA Machine Vision: StartSingleJob call -> ResultReady event received.

    .venv/bin/python benchmarks/bench_line_opcua.py [--jobs 100] [--frame 1280x960] [--roi 160,120,960,720]
        [--models fp32,int8] [--threads N] [--anonymous]

For each model (the shipped fp32 .onnx and its .int8.onnx): a Station on a live
generated camera (1280x960, inspection region 960x720, real SQLite log keeping
both pictures, as on the line) and the OPC UA server on loopback. A PLC in its
own process (asyncua, Basic256Sha256 Sign&Encrypt signed in as a station user;
`--anonymous`: the unsecured lab endpoint) prepares the recipe and runs --jobs
single jobs one after the other, subscribed to events on the Server object with
a publishing interval of 0 (as fast as the server can). Per job:

- round trip: StartSingleJob called -> its ResultReady event received by the PLC;
- inspection: the station's own time for the job (InspectionStarted -> InspectionDone:
  crop, detect(), verdict, both pictures saved, the log committed), and within it detect();
- overhead = round trip - inspection: the OPC UA call, the hand-over to the station's
  worker, the event and its encryption, the PLC decoding it. Target: under 10 ms median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
MODELS = {"fp32": "resources/models/centernet_neu_scratch_pit.onnx",
          "int8": "resources/models/centernet_neu_scratch_pit.int8.onnx"}
USER, PIN = "plc", "424242"


def plc(url: str, cert: str, client_dir: str, jobs: int, anonymous: bool) -> None:
    """The PLC side (run in its own process): prints one JSON line per job."""
    from asyncua import ua
    from opcua_plc import Plc, connect

    async def run() -> None:
        secure = not anonymous
        async with connect(url, Path(cert) if secure else None, Path(client_dir), USER if secure else None,
                           PIN if secure else None, secure=secure) as client:
            await client.load_data_type_definitions()
            p = await Plc(client).find()
            await p.subscribe(("ResultReady", "Ready"))
            ready = p.type_id("ResultReady")
            await p.call(p.sm, "Reset", 0, "")
            await p.call(p.sm, "SelectModeAutomatic")
            await p.call(p.recipes, "PrepareRecipe", ua.RecipeIdExternalDataType(Id="BENCH"), None)
            for i in range(jobs):
                seen = len(p.events)
                t0 = time.perf_counter()
                job = await p.start_single_job(f"M{i}", f"P{i}")
                t_call = time.perf_counter()
                event = await p.wait_for(lambda e, job=job: e.EventType == ready and e.JobId.Id == job, since=seen)
                t_event = next(t for t, e in p.events[seen:] if e is event)
                print(json.dumps({"job": job, "t0": t0, "t_event": t_event, "round_ms": (t_event - t0) * 1000,
                                  "call_ms": (t_call - t0) * 1000,
                                  "detect_ms": event.ProcessingTimes.ProcessingDuration}), flush=True)
                await p.wait_for(lambda e, job=job: e.EventType == p.type_id("Ready") and e.JobId.Id == job)

    asyncio.run(run())


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def bench(name: str, model: str, args, tmp: Path) -> dict:
    import cv2

    from app.line.opcua_mv import OpcUaVisionServer
    from app.recipes import Recipe, Region
    from app.settings import StationSettings
    from app.sources import FrameSource
    from app.station import InspectionDone, InspectionStarted, Station
    from app.users import SETUP_USER
    from detector import Detector
    from detector.regions import Roi
    from synthetic import camera_frame

    w, h = (int(v) for v in args.frame.lower().split("x"))
    frames = [cv2.resize(camera_frame(i % 2 == 0, i), (w, h)) for i in range(4)]

    class Camera(FrameSource):
        name, live = "bench camera", True

        def __init__(self):
            self.i = 0

        def open(self):
            pass

        def read(self):
            time.sleep(1 / 30)
            self.i += 1
            return frames[self.i % len(frames)]

    folder = tmp / name
    station = Station(replace(StationSettings(), data_dir=str(folder / "data")), config_path=folder / "station.json",
                      detector=Detector(REPO / model, threads=args.threads)).start(open_configured_source=False)
    station.open_source(Camera())
    admin = station.users.add(USER, "admin", PIN, SETUP_USER)
    station.save_recipe(Recipe("bench", (Region("part", Roi.parse(args.roi)),), external_id="BENCH"), admin)
    started, done = {}, {}

    def observe(event) -> None:  # perf_counter is the system's monotonic clock: comparable with the PLC process's
        if isinstance(event, InspectionStarted):
            started[event.job.job_id] = time.perf_counter()
        elif isinstance(event, InspectionDone):
            done[event.job.job_id] = time.perf_counter()

    station.subscribe(observe)
    port = 48400 + os.getpid() % 1000
    url = f"opc.tcp://127.0.0.1:{port}"
    from opcua_plc import trust_plc

    trust_plc(folder / "plc", station.opcua_folder)  # the PLC's certificate, trusted as an admin would
    server = OpcUaVisionServer(station, url, allow_anonymous=args.anonymous).start()
    try:
        proc = subprocess.run([sys.executable, __file__, "--plc", url, str(server.cert_path), str(folder / "plc"),
                               str(args.jobs + args.warmup)] + (["--anonymous"] if args.anonymous else []),
                              capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            sys.exit(f"the PLC failed:\n{proc.stderr[-3000:]}")
    finally:
        server.stop()
        station.stop(drain=False, timeout=10)
    jobs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")][args.warmup:]
    ms = 1000.0
    return {"model": name, "jobs": len(jobs), "round": [j["round_ms"] for j in jobs],
            "inspection": [(done[j["job"]] - started[j["job"]]) * ms for j in jobs],
            "overhead": [j["round_ms"] - (done[j["job"]] - started[j["job"]]) * ms for j in jobs],
            "to_station": [(started[j["job"]] - j["t0"]) * ms for j in jobs],
            "to_plc": [(j["t_event"] - done[j["job"]]) * ms for j in jobs],
            "detect": [j["detect_ms"] for j in jobs], "call": [j["call_ms"] for j in jobs]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--frame", default="1280x960", help="camera frame size WxH")
    p.add_argument("--roi", default="160,120,960,720", help="inspection region x,y,w,h")
    p.add_argument("--models", default="fp32,int8", help="which of fp32,int8")
    p.add_argument("--threads", type=int, help="CPU threads for the network (default: the runtime's)")
    p.add_argument("--anonymous", action="store_true", help="the unsecured lab endpoint instead of Sign&Encrypt")
    p.add_argument("--plc", nargs=4, metavar=("URL", "CERT", "DIR", "JOBS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.plc:
        url, cert, client_dir, jobs = args.plc
        plc(url, cert, client_dir, int(jobs), args.anonymous)
        return
    import logging

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench(name, MODELS[name], args, Path(tmp)) for name in args.models.split(",")]
    load = os.getloadavg()
    print(f"\nPLC round trip over OPC UA ({'unsecured lab endpoint' if args.anonymous else 'Basic256Sha256 Sign&Encrypt'}), "
          f"frame {args.frame}, region {args.roi}, {os.cpu_count()} CPUs, threads {args.threads or 'runtime default'}, "
          f"load average {load[0]:.1f} (other work on this machine counts in every figure)")
    print(f"{'model':6} {'jobs':>5} | {'round trip':>17} | {'inspection':>17} | {'detect()':>8} | {'overhead':>17} | "
          f"{'call->station':>13} {'result->PLC':>11} | {'call returns':>12}")
    print(f"{'':6} {'':>5} | {'median':>8} {'p99':>8} | {'median':>8} {'p99':>8} | {'median':>8} | {'median':>8} {'p99':>8} | "
          f"{'median':>13} {'median':>11} | {'median':>12}")
    for r in rows:
        print(f"{r['model']:6} {r['jobs']:>5} | {statistics.median(r['round']):8.1f} {pct(r['round'], 0.99):8.1f} | "
              f"{statistics.median(r['inspection']):8.1f} {pct(r['inspection'], 0.99):8.1f} | "
              f"{statistics.median(r['detect']):8.1f} | {statistics.median(r['overhead']):8.1f} "
              f"{pct(r['overhead'], 0.99):8.1f} | {statistics.median(r['to_station']):13.1f} "
              f"{statistics.median(r['to_plc']):11.1f} | {statistics.median(r['call']):12.1f}")
    print("ms. overhead = round trip - inspection, per job (target: under 10 ms median) = call->station (StartSingleJob "
          "sent -> the station takes the frame) + result->PLC (InspectionDone -> the PLC has decoded ResultReady)")


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
