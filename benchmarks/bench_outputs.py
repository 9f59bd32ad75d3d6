"""What a result output costs in serve mode: inspections/s without and with an MQTT output, and the delay to the subscriber.

    .venv/bin/python benchmarks/bench_outputs.py [--seconds 20] [--rounds 2] [--frame 1280x960] [--threads 2] [--model PATH]

Runs the Station as `python -m app serve --trigger continuous` does, on a
simulated 30 fps camera of generated frames (the real path: the recipe's region
crop, the model, the verdict, both pictures saved, the SQLite commit; frames the
model has no time for are dropped), once with no output and once with an MQTT
output to a local mosquitto started on a free loopback port. A subscriber in
another process notes when each result arrives; the delay is measured from the
moment the station tells its outputs of the committed row to that arrival, on
the same monotonic clock. Needs /usr/sbin/mosquitto (scripts/setup.sh installs it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
STATION = "bench"


def subscribe(port: int, topic: str) -> None:
    """Subscriber process: prints "ready", then "SEQ MONOTONIC_TIME" for each result that arrives."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    def on_message(client, userdata, message):
        arrived = time.monotonic()
        print(json.loads(message.payload)["seq"], f"{arrived:.6f}", flush=True)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda c, u, mid, rcs, p: print("ready", flush=True)
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_forever()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0, help="length of each run")
    p.add_argument("--rounds", type=int, default=2, help="runs per side, alternated")
    p.add_argument("--frame", default="1280x960", help="camera frame size WxH")
    p.add_argument("--roi", default="160,120,960,720", help="inspection region x,y,w,h")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the network")
    p.add_argument("--model", help="model file (default: the shipped one)")
    p.add_argument("--subscribe", nargs=2, metavar=("PORT", "TOPIC"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.subscribe:
        subscribe(int(args.subscribe[0]), args.subscribe[1])
        return

    from dataclasses import replace

    import cv2

    from app.recipes import Recipe, Region
    from app.settings import StationSettings
    from app.sources import FrameSource
    from app.station import InspectionDone, Station
    from app.users import SETUP_USER
    from detector import Detector
    from detector.regions import Roi
    from mqtt_broker import MOSQUITTO, Mosquitto
    from synthetic import camera_frame

    if not MOSQUITTO.is_file():
        sys.exit(f"{MOSQUITTO} not found: install Debian's mosquitto (scripts/setup.sh does)")
    w, h = (int(v) for v in args.frame.lower().split("x"))
    frames = [cv2.resize(camera_frame(i % 2 == 0, seed=i), (w, h)) for i in range(4)]
    recipe = Recipe("bench", regions=(Region("part", Roi.parse(args.roi)),))
    detector = Detector(args.model, threads=args.threads)

    class SimulatedCamera(FrameSource):
        """A camera at `fps` giving the generated frames in turn (the station drops what it has no time for)."""

        name, live = "simulated camera", True

        def __init__(self, fps: float = 30.0):
            self.interval, self.n, self.next_at = 1.0 / fps, 0, 0.0

        def open(self) -> None:
            self.next_at = time.monotonic()

        def read(self):
            self.next_at += self.interval
            time.sleep(max(0.0, self.next_at - time.monotonic()))
            self.n += 1
            return frames[self.n % len(frames)]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def run(name: str, with_mqtt: bool):
            """The station as `serve --trigger continuous` runs it, on a 30 fps camera, for `args.seconds`."""
            broker = Mosquitto(tmp / name / "broker").start() if with_mqtt else None
            sub = None
            arrivals: dict[int, float] = {}
            if broker is not None:
                sub = subprocess.Popen([sys.executable, __file__, "--subscribe", str(broker.port), f"plant/{STATION}/result"],
                                       stdout=subprocess.PIPE, text=True, cwd=REPO)
                if sub.stdout.readline().strip() != "ready":
                    sys.exit("subscriber did not start")
                threading.Thread(target=lambda: [arrivals.setdefault(int(s), float(t)) for s, t in
                                                 (line.split() for line in sub.stdout)], daemon=True).start()
            settings = replace(StationSettings(), station_name=STATION, data_dir=str(tmp / name / "data"))
            station = Station(settings, config_path=tmp / name / "station.json", detector=detector,
                              sinks=[f"mqtt://127.0.0.1:{broker.port}/plant"] if broker else [])
            logged: list[tuple[int, float]] = []
            committed = [time.monotonic()]  # when the station last told the outputs of a committed row
            # The station tells the outputs first and its observers after: InspectionDone comes later than the
            # commit (and often later than the MQTT message), so the delay is timed from that notify.
            station.subscribe(lambda e: logged.append((e.result.inspection_id, committed[0] if broker else time.monotonic()))
                              if isinstance(e, InspectionDone) and e.result.inspection_id else None)
            try:
                station.start(open_configured_source=False)
                if station.outputs is not None:
                    notify = station.outputs.notify
                    station.outputs.notify = lambda: (committed.__setitem__(0, time.monotonic()), notify())[1]
                station.save_recipe(recipe, SETUP_USER)
                station.select_recipe("bench", trigger="line")
                station.open_source(SimulatedCamera())
                station.set_continuous(True)
                time.sleep(2.0)  # warm-up (model, caches, page cache)
                start = len(logged)
                time.sleep(args.seconds)
                counted = logged[start:]
                drained = station.stop(drain=True, timeout=30)
                if not drained:
                    print("warning: the output did not drain within 30 s", file=sys.stderr)
                deadline = time.monotonic() + 10
                while broker and len([i for i, _ in counted if i in arrivals]) < len(counted) and time.monotonic() < deadline:
                    time.sleep(0.05)
            finally:
                if sub is not None:
                    sub.kill()
                if broker is not None:
                    broker.stop()
            return counted, arrivals

        plain, with_mqtt, delays, missing = [], [], [], 0
        for r in range(args.rounds):  # alternated, so that a busy moment of the machine does not favour one side
            plain.append(len(run(f"plain{r}", with_mqtt=False)[0]) / args.seconds)
            logged, arrivals = run(f"mqtt{r}", with_mqtt=True)
            with_mqtt.append(len(logged) / args.seconds)
            delays += [(arrivals[i] - t) * 1000.0 for i, t in logged if i in arrivals]
            missing += sum(1 for i, _ in logged if i not in arrivals)

    rate_plain, rate_mqtt = statistics.mean(plain), statistics.mean(with_mqtt)
    print(f"frames {w}x{h}, region {args.roi}, model threads {args.threads}, {args.rounds} x {args.seconds:g} s per side")
    print(f"inspections/s without outputs: {rate_plain:.2f} (runs: {', '.join(f'{v:.2f}' for v in plain)})")
    print(f"inspections/s with MQTT:       {rate_mqtt:.2f} (runs: {', '.join(f'{v:.2f}' for v in with_mqtt)};"
          f" {rate_mqtt / rate_plain - 1:+.1%})")
    if delays:
        print(f"row committed -> MQTT message at subscriber: median {statistics.median(delays):.2f} ms,"
              f" p99 {percentile(delays, 0.99):.2f} ms, max {max(delays):.2f} ms over {len(delays)} results"
              + (f"; {missing} NOT received" if missing else ""))
    else:
        print("no result reached the subscriber")


if __name__ == "__main__":
    main()
