"""MMDetection (PyTorch) vs ONNX Runtime: `detect()` latency, FLOPs, fraction of fp32 peak.

    .venv/bin/python benchmarks/bench_backends.py [--model PTH] [--onnx ONNX] [--runs 30] [--threads N]

One run, same pictures, same thread count for both backends and for the peak
measurement. Prints, per case (a generated picture at the model's input size and
a generated 512x512 inspection region, letterboxed to the input size):
the median `detect()` latency of each backend and their ratio; then the
network alone (`forward` on a prepared batch), the model's FLOPs per image
(Conv/ConvTranspose/Gemm/MatMul MACs of the ONNX graph x 2), the achieved
GFLOP/s, the cores' measured fp32 peak (best of a 2048x2048 float32 matmul in
numpy and in torch) and the fraction of it; and the peak memory (max RSS) of
a fresh process that loads the model and runs 100 detections (Linux).

Without --onnx the .pth is exported to a temporary folder first. The backends
are timed in alternating blocks, so a machine that gets busier or quieter
during the run affects both alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_MEMORY_CHILD = r"""
import sys
import numpy as np
from detector import Detector
det = Detector(sys.argv[1], device="cpu", threads=int(sys.argv[2]))
image = np.random.default_rng(0).integers(60, 200, (512, 512), dtype=np.uint8)
for _ in range(100):
    det.detect(image)
# VmHWM, not ru_maxrss: Linux carries the parent's ru_maxrss over fork + exec.
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(int(hwm.split()[1]), "torch" in sys.modules)
"""


def model_macs(onnx_path: Path) -> dict[str, int]:
    """Multiply-accumulates per image of the graph's Conv/ConvTranspose/Gemm/MatMul nodes, by op type.

    Convolutions count one MAC per nonzero weight per output (Conv) or input
    (ConvTranspose) position: the model's work, whatever form the graph takes
    (a rewritten layer's structural zeros are not work).
    """
    import numpy as np
    import onnx

    from detector.onnx_graph import constant_values

    model = onnx.load(str(onnx_path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # one image
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    values = constant_values(model.graph)
    shapes = {name: v.shape for name, v in values.items()}
    for info in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = tuple(d.dim_value for d in dims)
    macs: dict[str, int] = {}
    for node in model.graph.node:
        op = node.op_type
        if op not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        if op in ("Conv", "ConvTranspose"):
            # weight (M, C/g, kh, kw) for Conv, (C, M/g, kh, kw) for ConvTranspose: every
            # weight element is used once per output / input position (per image).
            positions = shapes[node.output[0] if op == "Conv" else node.input[0]][2:]
            n = int(np.prod(positions)) * int(np.count_nonzero(values[node.input[1]]))
        else:
            a, out = shapes[node.input[0]], shapes[node.output[0]]
            transposed = next((x.i for x in node.attribute if x.name == "transA"), 0)
            k = a[-2] if transposed else a[-1]
            n = int(np.prod(out)) * int(k)
        macs[op] = macs.get(op, 0) + n
    return macs


def fp32_peak_gflops(threads: int, size: int = 2048, repeats: int = 7) -> dict[str, float]:
    """Best-of-`repeats` GFLOP/s of a size x size float32 matmul, numpy and torch."""
    import numpy as np
    import torch

    flops = 2.0 * size**3
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    result = {}
    for name, mm, x, y in (
        ("numpy", np.matmul, a, b),
        ("torch", torch.mm, torch.from_numpy(a), torch.from_numpy(b)),
    ):
        mm(x, y)  # warm-up: thread pool start, page faults
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            mm(x, y)
            best = min(best, time.perf_counter() - t0)
        result[name] = flops / best / 1e9
    return result


def time_alternating(calls: dict[str, callable], runs: int, warmup: int = 5, block: int = 10) -> dict[str, list[float]]:
    """Milliseconds per call for each entry, in alternating blocks of `block` calls.

    Blocks, not single calls: torch's OpenMP threads and ONNX Runtime's pool
    both spin for a while after each call, so strict call-by-call alternation
    makes each runtime wait on the other's spinning threads (measured: both
    ~1.5-2x slower). Each block starts with one untimed call after a pause.
    """
    for _ in range(warmup):
        for f in calls.values():
            f()
    times: dict[str, list[float]] = {name: [] for name in calls}
    while min(len(t) for t in times.values()) < runs:
        for name, f in calls.items():
            time.sleep(0.2)  # let the other runtime's threads stop spinning
            f()
            for _ in range(min(block, runs - len(times[name]))):
                t0 = time.perf_counter()
                f()
                times[name].append((time.perf_counter() - t0) * 1000)
    return times


def peak_memory_mib(model: Path, threads: int) -> tuple[float, bool]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(model), str(threads)],
        capture_output=True, text=True, env=env, check=True,
    ).stdout.split()
    return int(out[0]) / 1024, out[1] == "True"  # VmHWM is in KiB


def cpu_description() -> str:
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("", platform.machine()):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile") if f in flags]
    return f"{name} [{' '.join(isa)}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="station .pth model file (default: the shipped model)")
    parser.add_argument("--onnx", type=Path, help="its ONNX export (default: exported now to a temporary folder)")
    parser.add_argument("--runs", type=int, default=30, help="timed rounds after warm-up (default 30)")
    parser.add_argument("--threads", type=int, help="CPU threads for every measurement (default: OMP_NUM_THREADS or all cores)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--flip-test", choices=["model", "on", "off"], default="model",
                        help="mirror averaging at inference: as the model file says, or forced on/off")
    args = parser.parse_args()
    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1
    # Before numpy loads its BLAS: the peak matmul must use the same thread count.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)

    import numpy as np
    import onnxruntime as ort
    import torch

    from detector import Detector
    from detector.api import DEFAULT_TORCH_MODEL
    from detector.export import export_onnx

    torch.set_num_threads(threads)
    pth = args.model or DEFAULT_TORCH_MODEL
    tmp = tempfile.TemporaryDirectory(prefix="bench-onnx-")
    onnx_path = args.onnx
    if onnx_path is None:
        t0 = time.perf_counter()
        onnx_path = export_onnx(pth, Path(tmp.name) / (pth.stem + ".onnx")).path
        print(f"exported {pth.name} to ONNX in {time.perf_counter() - t0:.1f} s")
    flip = {"model": None, "on": True, "off": False}[args.flip_test]
    dets = {
        "mmdet": Detector(pth, device="cpu", threads=threads, flip_test=flip),
        "onnx": Detector(onnx_path, device="cpu", threads=threads, flip_test=flip),
    }
    # With flip test one detect() runs the network on 3 pictures (it and its two mirror images).
    passes = 3 if dets["onnx"].flip_test else 1
    source = dets["onnx"]._backend.source_sha256
    if source and source != dets["mmdet"]._backend.sha256:
        print(f"warning: {onnx_path.name} was exported from a different .pth than {pth.name}")
    meta = dets["mmdet"].metadata
    size = meta.input_size
    ort_threads = dets["onnx"]._backend.session.get_session_options().intra_op_num_threads
    print(f"cpu: {cpu_description()}, {os.cpu_count()} logical cores, load average {os.getloadavg()[0]:.1f}")
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {ort.__version__} "
          f"({ort_threads} intra-op threads), numpy BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}")
    print(f"model: {meta.name}  input {size}x{size}  .pth {dets['mmdet'].model_id}  .onnx {dets['onnx'].model_id}  "
          f"flip test {'on (3 network passes per detect)' if passes == 3 else 'off'}")

    rng = np.random.default_rng(0)
    cases = {
        f"{size}x{size} (input size)": rng.integers(60, 200, (size, size), dtype=np.uint8),
        "512x512 region": rng.integers(60, 200, (512, 512), dtype=np.uint8),
    }
    print(f"\ndetect() end to end, median of {args.runs} (ms):")
    print(f"  {'picture':24s} {'mmdet':>8s} {'onnx':>8s} {'mmdet/onnx':>11s}")
    medians = {}
    for case, image in cases.items():
        times = time_alternating({name: (lambda d=d, im=image: d.detect(im)) for name, d in dets.items()}, args.runs)
        m = {name: statistics.median(t) for name, t in times.items()}
        medians[case] = m
        print(f"  {case:24s} {m['mmdet']:8.1f} {m['onnx']:8.1f} {m['mmdet'] / m['onnx']:10.2f}x")

    # The network alone on the same normalised batch (no resize, no decoding).
    batch = np.random.default_rng(1).standard_normal((1, 3, size, size)).astype(np.float32)
    fwd = time_alternating({name: (lambda d=d: d._backend.forward(batch)) for name, d in dets.items()}, args.runs)
    fwd_ms = {name: statistics.median(t) for name, t in fwd.items()}

    macs = model_macs(onnx_path)
    gflop = 2 * sum(macs.values()) / 1e9
    peak = fp32_peak_gflops(threads)
    best_peak = max(peak.values())
    print(f"\nmodel: {gflop:.3f} GFLOP per image ({sum(macs.values()) / 1e9:.3f} GMAC: "
          + ", ".join(f"{op} {v / 1e9:.3f}" for op, v in macs.items()) + ")")
    print(f"fp32 peak of {threads} thread(s), 2048x2048 matmul: numpy {peak['numpy']:.1f} GFLOP/s, "
          f"torch {peak['torch']:.1f} GFLOP/s")
    print(f"  {'':24s} {'ms':>8s} {'GFLOP/s':>8s} {'of peak':>8s}")
    first = next(iter(medians))
    for label, ms in (
        ("mmdet forward", fwd_ms["mmdet"]), ("onnx forward", fwd_ms["onnx"]),
        ("mmdet detect()", medians[first]["mmdet"]), ("onnx detect()", medians[first]["onnx"]),
    ):
        rate = gflop * (passes if "detect" in label else 1) / (ms / 1000)
        print(f"  {label:24s} {ms:8.1f} {rate:8.1f} {rate / best_peak:8.0%}")
    print(f"  (detect() rows: the {first} case; forward ratio mmdet/onnx {fwd_ms['mmdet'] / fwd_ms['onnx']:.2f}x)")

    if not args.no_memory:
        print("\npeak memory (max RSS) of a process that loads the model and runs 100 detections of a 512x512 region:")
        for name, path in (("mmdet", pth), ("onnx", onnx_path)):
            mib, with_torch = peak_memory_mib(path, threads)
            print(f"  {name:6s} {mib:7.0f} MiB   torch imported: {with_torch}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
