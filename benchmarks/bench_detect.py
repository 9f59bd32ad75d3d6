"""Median `detect()` latency per image at the model's input size.

    .venv/bin/python benchmarks/bench_detect.py [--model PATH] [--runs 30] [--threads N]

Uses a generated picture of exactly the model's input size (so no resize
cost is hidden or added) and, when ../shared/datasets/neu-det is present, a
real NEU-DET picture as well. Prints the thread count with the figures.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

NEU_IMAGE = Path(__file__).resolve().parents[2] / "shared/datasets/neu-det/images/scratches_1.jpg"


def time_detect(det, image, runs: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        det.detect(image)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        det.detect(image)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model file, .onnx or .pth (default: the shipped .onnx)")
    parser.add_argument("--runs", type=int, default=30, help="timed runs after warm-up (>= 20)")
    parser.add_argument("--threads", type=int, help="CPU threads for the network (default: the runtime's choice)")
    args = parser.parse_args()

    from detector import Detector

    t0 = time.perf_counter()
    det = Detector(args.model, device="cpu", threads=args.threads)
    load_ms = (time.perf_counter() - t0) * 1000
    size = det.metadata.input_size
    rng = np.random.default_rng(0)
    synthetic = rng.integers(60, 200, (size, size), dtype=np.uint8)
    print(f"model: {det.model_id} ({det.model_path.suffix[1:]} backend)  input {size}x{size}  device {det.device}  "
          f"threads {args.threads or 'runtime default'}")
    print(f"model load: {load_ms:.0f} ms")
    cases = [(f"generated {size}x{size}", synthetic), ("generated 512x512 region", rng.integers(60, 200, (512, 512), dtype=np.uint8))]
    if NEU_IMAGE.is_file():
        cases.append(("NEU-DET 200x200 file", str(NEU_IMAGE)))
    for name, image in cases:
        times = time_detect(det, image, args.runs)
        print(f"{name:28s} median {statistics.median(times):7.1f} ms   p90 {np.percentile(times, 90):7.1f} ms   ({args.runs} runs)")


if __name__ == "__main__":
    main()
