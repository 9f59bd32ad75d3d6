"""fp32 ONNX vs int8 ONNX (and optionally the MMDetection .pth): `detect()` latency and AP50.

    .venv/bin/python benchmarks/bench_int8.py [--onnx FP32.onnx] [--int8 INT8.onnx | --calib TRAIN_DIR]
        [--model PTH] [--val runs/data_e1/val/annotations.json] [--runs 30] [--threads N]

One run, same pictures and thread count for every model. Prints the median
`detect()` latency (end to end: decode, letterbox, normalise, network, decoding)
at the model's input size and for a 512x512 inspection region, and the network
alone on a prepared batch, with speed-up ratios; then, with --val, AP50 per
class of the fp32 and the int8 model on that COCO split and the drop in points,
against the issue's targets (int8 >= 2.5x faster than MMDetection, AP50 drop
<= 1 point per class).

Without --int8 the fp32 model is quantized now (`detector.quantize` defaults)
into a temporary folder, calibrated on --calib. Models are timed in
alternation, so a machine that gets busier or quieter during the run affects
all alike; on a machine busy with other work the absolute numbers are high
and noisy, the ratios less so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
DEFAULT_ONNX = REPO / "resources" / "models" / "centernet_neu_scratch_pit.onnx"
AP_DROP_LIMIT = 1.0  # points of AP50 per class (issue 3)
SPEEDUP_TARGET = 2.5  # int8 vs MMDetection (issue 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, default=DEFAULT_ONNX, help="fp32 ONNX model (default: the shipped one)")
    parser.add_argument("--int8", type=Path, help="its int8 model (default: quantized now, see --calib)")
    parser.add_argument("--calib", type=Path, default=REPO / "runs" / "data_e1" / "train",
                        help="calibration data when quantizing now (default: runs/data_e1/train)")
    parser.add_argument("--count", type=int, default=100, help="calibration pictures when quantizing now (default 100)")
    parser.add_argument("--model", type=Path, help="the .pth it was exported from, to time MMDetection too")
    parser.add_argument("--val", type=Path, help="COCO annotations of a validation split for AP50 (skipped if absent)")
    parser.add_argument("--runs", type=int, default=30, help="timed rounds after warm-up (default 30)")
    parser.add_argument("--threads", type=int, help="CPU threads for every model (default: OMP_NUM_THREADS or all cores)")
    args = parser.parse_args()
    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1

    import numpy as np
    import onnxruntime as ort
    from bench_backends import cpu_description, time_alternating

    from detector import Detector

    tmp = tempfile.TemporaryDirectory(prefix="bench-int8-")
    int8_path = args.int8
    if int8_path is None:
        from detector.quantize import calibration_pictures, quantize_onnx

        t0 = time.perf_counter()
        pictures = calibration_pictures(args.calib, count=args.count)
        int8_path = quantize_onnx(args.onnx, Path(tmp.name) / (args.onnx.stem + ".int8.onnx"), pictures,
                                  calibration_source=str(args.calib)).path
        print(f"quantized {args.onnx.name} on {len(pictures)} pictures in {time.perf_counter() - t0:.1f} s")

    dets = {"fp32": Detector(args.onnx, device="cpu", threads=threads), "int8": Detector(int8_path, device="cpu", threads=threads)}
    if args.model is not None:
        import torch

        torch.set_num_threads(threads)
        dets = {"mmdet": Detector(args.model, device="cpu", threads=threads), **dets}
    meta = dets["fp32"].metadata
    size = meta.input_size
    props = dets["int8"]._backend.session.get_modelmeta().custom_metadata_map
    quant = json.loads(props.get("quantization", "{}"))
    if not quant:
        print(f"warning: {int8_path.name} carries no quantization info; is it really the int8 model?")
    print(f"cpu: {cpu_description()}, {os.cpu_count()} logical cores, load average {os.getloadavg()[0]:.1f}")
    torch_note = ""
    if "torch" in sys.modules:
        torch_note = f"; torch {sys.modules['torch'].__version__} with {sys.modules['torch'].get_num_threads()} thread(s)"
    print(f"onnxruntime {ort.__version__}: {threads} intra-op thread(s) for every model{torch_note}")
    print(f"model: {meta.name}  input {size}x{size}")
    print(f"  fp32 {args.onnx.name} ({args.onnx.stat().st_size / 1e6:.1f} MB) {dets['fp32'].model_id}")
    shown = ("format", "activations", "weights", "calibration", "calibration_count", "deconvs_as_convs", "fp32_nodes")
    print(f"  int8 {int8_path.name} ({int8_path.stat().st_size / 1e6:.1f} MB) {dets['int8'].model_id}: "
          + ", ".join(f"{k} {quant[k]}" for k in shown if k in quant))
    if quant.get("fp32_model_sha256") and quant["fp32_model_sha256"] != dets["fp32"]._backend.sha256:
        print(f"warning: {int8_path.name} was quantized from a different file than {args.onnx.name}")

    rng = np.random.default_rng(0)
    cases = {
        f"{size}x{size} (input size)": rng.integers(60, 200, (size, size), dtype=np.uint8),
        "512x512 region": rng.integers(60, 200, (512, 512), dtype=np.uint8),
    }
    names = list(dets)
    pairs = [("fp32", "int8")] + ([("mmdet", "int8"), ("mmdet", "fp32")] if "mmdet" in dets else [])
    header = "".join(f"{n:>9s}" for n in names) + "".join(f"{a + '/' + b:>12s}" for a, b in pairs)
    print(f"\nmedian latency of {args.runs} rounds (ms), ratios = speed-up:")
    print(f"  {'':34s}{header}")
    batch = np.random.default_rng(1).standard_normal((1, 3, size, size)).astype(np.float32)
    rows = {f"detect() {case}": {n: (lambda d=d, im=image: d.detect(im)) for n, d in dets.items()} for case, image in cases.items()}
    rows["network alone (forward)"] = {n: (lambda d=d: d._backend.forward(batch)) for n, d in dets.items()}
    speedups: dict[str, float] = {}
    for label, calls in rows.items():
        m = {n: statistics.median(t) for n, t in time_alternating(calls, args.runs).items()}
        ratios = {f"{a}/{b}": m[a] / m[b] for a, b in pairs}
        speedups.update({f"{label}: {k}": v for k, v in ratios.items()})
        print(f"  {label:34s}" + "".join(f"{m[n]:9.1f}" for n in names) + "".join(f"{r:11.2f}x" for r in ratios.values()))

    if args.val is not None:
        from detector.data.coco import load_coco
        from detector.evaluate import evaluate_model

        images = load_coco(args.val)
        print(f"\nAP50 on {args.val} ({len(images)} pictures):")
        ap = {}
        for name in ("fp32", "int8"):
            t0 = time.perf_counter()
            result = evaluate_model(dets[name], images, iou_threshold=0.5).to_json()
            ap[name] = {c: v["ap50"] for c, v in result["classes"].items()}
            ap[name]["mean"] = result["map50"]
            print(f"  ({name} evaluated in {time.perf_counter() - t0:.0f} s)")
        print(f"  {'class':10s} {'fp32':>7s} {'int8':>7s} {'drop (points)':>14s}")
        worst = 0.0
        for cls in ap["fp32"]:
            a, b = ap["fp32"][cls], ap["int8"][cls]
            if a is None or b is None:
                print(f"  {cls:10s} {'-':>7s} {'-':>7s} {'(no ground truth)':>14s}")
                continue
            drop = 100 * (a - b)
            if cls != "mean":
                worst = max(worst, drop)
            print(f"  {cls:10s} {100 * a:7.2f} {100 * b:7.2f} {drop:14.2f}")
        verdict = "within" if worst <= AP_DROP_LIMIT else "OVER"
        print(f"  largest per-class drop {worst:.2f} points: {verdict} the {AP_DROP_LIMIT:g}-point limit")
    if "mmdet" in dets:
        s = speedups["detect() 512x512 region: mmdet/int8"]
        print(f"\nint8 vs MMDetection, 512x512 region: {s:.2f}x ({'meets' if s >= SPEEDUP_TARGET else 'below'} "
              f"the {SPEEDUP_TARGET}x target)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
