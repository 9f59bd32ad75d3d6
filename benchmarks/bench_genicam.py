"""GenICam source speed against Aravis' fake GigE Vision camera: free-run frames/s and software-trigger latency.

    .venv/bin/python benchmarks/bench_genicam.py [--seconds 10] [--frame-rate 1000] [--triggers 200] [--rounds 2]

Starts arv-fake-gv-camera-0.8 on 127.0.0.1 (tests/fake_genicam.py; none may be running already), then, through
app.sources_genicam.GenICamSource exactly as the station reads it (GVSP packets over loopback, Aravis' stream
thread, buffer to numpy, 8-bit frame):

- free-run, 512x512 Mono8, the camera asked for `--frame-rate`: frames the camera completed per second (the
  stream's count), frames the reader took per second (it takes the newest and drops what waited), incomplete
  and lost frames;
- software trigger: `fire_trigger()` (a GVCP register write) until the frame is in hand (`read()` returned it),
  median and p99 over `--triggers` triggers, and the share of that spent in the trigger command itself.
  Triggers come at random moments (0-50 ms after the last frame, as parts do).

The fake camera looks at its trigger register at its own 25 Hz tick (Aravis' fake device), so the trigger
latency measured here is mostly waiting for that tick (0-40 ms, 20 ms on average); a real camera starts
exposing within microseconds of the command.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def free_run(seconds: float, frame_rate: float) -> dict:
    from app.settings import CameraSettings
    from app.sources_genicam import GenICamSource
    from fake_genicam import DEVICE_ID

    src = GenICamSource(DEVICE_ID, CameraSettings(pixel_format="Mono8", roi=(0, 0, 512, 512), frame_rate=frame_rate))
    src.open()
    try:
        src.read()  # the stream is running
        before, t0 = src.health(), time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            frame = src.read()
        elapsed = time.perf_counter() - t0
        after = src.health()
        applied = src.applied.frame_rate
    finally:
        src.close()
    assert frame.shape == (512, 512)
    delta = {k: after[k] - before[k] for k in after}
    return {"asked": frame_rate, "applied": applied, "camera_fps": delta["frames"] / elapsed,
            "read_fps": delta["read"] / elapsed, "incomplete": delta["incomplete"], "lost": delta["lost"]}


def software_trigger(triggers: int) -> dict:
    from app.settings import CameraSettings
    from app.sources_genicam import GenICamSource
    from fake_genicam import DEVICE_ID

    src = GenICamSource(DEVICE_ID, CameraSettings(pixel_format="Mono8", roi=(0, 0, 512, 512), trigger="software"))
    src.open()
    total, command = [], []
    try:
        rng = random.Random(1)
        for _ in range(triggers):
            time.sleep(rng.uniform(0.0, 0.05))
            t0 = time.perf_counter()
            src.fire_trigger()
            t1 = time.perf_counter()
            frame = src.read()
            t2 = time.perf_counter()
            command.append(t1 - t0)
            total.append(t2 - t0)
        health = src.health()
    finally:
        src.close()
    assert frame.shape == (512, 512)
    return {"median_ms": 1000 * statistics.median(total), "p99_ms": 1000 * percentile(total, 0.99),
            "command_median_ms": 1000 * statistics.median(command), "retriggers": health["retriggers"],
            "incomplete": health["incomplete"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="length of each free-run measurement")
    p.add_argument("--frame-rate", type=float, default=1000.0, help="frame rate asked of the camera in free-run")
    p.add_argument("--triggers", type=int, default=200, help="software triggers per measurement")
    p.add_argument("--rounds", type=int, default=2, help="measurements of each kind")
    args = p.parse_args()

    from fake_genicam import FakeCamera, _gvcp_port_taken

    if _gvcp_port_taken():
        sys.exit("a GigE Vision camera already listens on 127.0.0.1:3956; stop it first")
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at start")
    with tempfile.TemporaryDirectory() as folder:
        camera = FakeCamera(Path(folder)).start()
        try:
            for r in range(args.rounds):
                f = free_run(args.seconds, args.frame_rate)
                print(f"free-run 512x512 Mono8, asked {f['asked']:g} fps (camera took {f['applied']:g}): camera completed "
                      f"{f['camera_fps']:.0f} frames/s, reader took {f['read_fps']:.0f} frames/s, "
                      f"{f['incomplete']} incomplete, {f['lost']} lost  [round {r + 1}]")
            for r in range(args.rounds):
                t = software_trigger(args.triggers)
                print(f"software trigger -> frame in hand ({args.triggers} triggers): median {t['median_ms']:.1f} ms, "
                      f"p99 {t['p99_ms']:.1f} ms (trigger command median {t['command_median_ms']:.2f} ms; "
                      f"{t['retriggers']} re-fired, {t['incomplete']} incomplete)  [round {r + 1}]")
        finally:
            camera.kill()
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
    main()
