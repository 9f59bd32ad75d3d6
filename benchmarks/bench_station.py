"""The operator screen's speed: click -> verdict latency and live (continuous) inspection rate.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_station.py [--clicks 30] [--seconds 10]
        [--frame 1280x960] [--model PATH] [--threads N]

Drives the real StationWindow (real model, real SQLite log and saved frames in
a temporary data folder) with generated camera frames:
- click -> verdict: clicks Inspect and waits until the verdict is on screen,
  which includes the region crop, detect(), the verdict, saving both frames and
  the database commit. Median and 90th percentile over --clicks clicks.
- live mode: a generated video played as a camera with Continuous on; prints
  the camera frame rate, inspections per second and the share of frames dropped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clicks", type=int, default=30)
    p.add_argument("--seconds", type=float, default=10.0, help="duration of the live-mode run")
    p.add_argument("--frame", default="1280x960", help="camera frame size WxH")
    p.add_argument("--roi", default="160,120,960,720", help="inspection region x,y,w,h")
    p.add_argument("--model", help="model file (default: the shipped one)")
    p.add_argument("--threads", type=int, help="CPU threads for the network")
    args = p.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    import cv2

    from app.settings import StationSettings
    from app.ui.run import qt_application, wait_until
    from detector import Detector
    from detector.regions import Roi
    from synthetic import camera_frame

    w, h = (int(v) for v in args.frame.lower().split("x"))
    app = qt_application()
    from app.ui.station_window import StationWindow

    detector = Detector(args.model, threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frames = tmp / "frames"
        frames.mkdir()
        for i in range(4):
            cv2.imwrite(str(frames / f"{i}.png"), cv2.resize(camera_frame(i % 2 == 0, i), (w, h)))
        video = tmp / "camera.avi"
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (w, h))
        for i in range(60):
            writer.write(cv2.resize(camera_frame(i % 2 == 0, i), (w, h)))
        writer.release()

        settings = replace(StationSettings(), source=str(frames), data_dir=str(tmp / "data"), roi=Roi.parse(args.roi))
        window = StationWindow(settings, tmp / "station.json", detector=detector)
        window.resize(1280, 800)
        window.show()
        if not wait_until(app, lambda: window.view.image() is not None, 30):
            sys.exit("no frame arrived")

        latencies, detect_ms = [], []
        for i in range(args.clicks + 3):
            before = window.inspections_done
            window.inspect_button.click()
            if not wait_until(app, lambda before=before: window.inspections_done > before, 30):
                sys.exit("inspection did not finish")
            if i >= 3:  # warm-up
                latencies.append(window.last_click_to_verdict_ms)
                detect_ms.append(window.last_result.inference_ms)
        latencies.sort()
        print(f"model {detector.model_id} (flip test {'on' if detector.flip_test else 'off'}), frame {w}x{h}, "
              f"region {args.roi}, threads {args.threads or 'runtime default'}")
        p90 = latencies[int(0.9 * (len(latencies) - 1))]
        print(f"click -> verdict on screen: median {statistics.median(latencies):.1f} ms, p90 {p90:.1f} ms over "
              f"{len(latencies)} clicks (crop + detect() alone: median {statistics.median(detect_ms):.1f} ms)")

        window.open_source(str(video), remember=False)
        wait_until(app, lambda: window.feed.fps() > 0, 30)
        start_done = window.inspections_done
        start_seq = window.feed.latest().seq
        window.continuous_check.setChecked(True)
        t0 = time.monotonic()
        fps_samples = []
        while time.monotonic() - t0 < args.seconds:
            wait_until(app, lambda: False, 0.25)
            fps_samples.append(window.feed.fps())
        window.continuous_check.setChecked(False)
        elapsed = time.monotonic() - t0
        wait_until(app, lambda: not window.runner.busy, 10)
        inspected = window.inspections_done - start_done
        frames_seen = window.feed.latest().seq - start_seq
        print(f"live mode: camera {statistics.median(fps_samples):.1f} fps, {inspected / elapsed:.1f} inspections/s "
              f"(each logged with both frames), {max(0, frames_seen - inspected)} of {frames_seen} frames dropped "
              f"rather than queued")
        window.close()


if __name__ == "__main__":
    main()
