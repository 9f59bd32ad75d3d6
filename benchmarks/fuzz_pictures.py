"""Fuzz the picture checks with mutated JPEG/PNG files, and measure header bombs' peak memory.

    .venv/bin/python benchmarks/fuzz_pictures.py [--n 6000] [--seed 0] [--detect 300]
    .venv/bin/python benchmarks/fuzz_pictures.py --before HEAD~3     # the same files through an older images.py
    .venv/bin/python benchmarks/fuzz_pictures.py --memory [--before REV]
    .venv/bin/python benchmarks/fuzz_pictures.py --speed [--before REV]    # load_grey and detect() on normal pictures

Valid pictures (generated part frames, grey and colour; baseline, progressive and
restart-marker JPEGs; 8- and 16-bit PNGs) are mutated with a seeded generator: bit
flips anywhere, bit flips inside the compressed data only (JPEG scan, PNG IDAT with
its CRC fixed up), byte insertions and deletions, truncation, chunk/segment length
changes, header dimension changes (PNG IHDR CRC fixed up), and bytes appended after a
complete picture. Each file goes through `load_grey`; a file is "damaged" when its
accepted pixels differ from the pristine file's (appended bytes leave them intact, so
those files must be accepted). A sample also goes through `Detector.detect`.

--before REV loads `git show REV:detector/images.py` under another module name, so the
old checks are measured on exactly the same files without touching the work tree.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

KINDS = ("bitflip", "data-bitflip", "insert", "delete", "truncate", "length", "dimensions", "appended")


def base_pictures() -> list[tuple[str, bytes]]:
    """(name, file bytes) of valid pictures to mutate."""
    from synthetic import camera_frame, steel_texture

    out = []
    for seed in range(4):
        bgr = camera_frame(seed % 2 == 0, seed=seed)
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        steel = steel_texture(200, np.random.default_rng(seed))
        jpegs = {
            "grey-q90": (grey, [cv2.IMWRITE_JPEG_QUALITY, 90]),
            "bgr-q75": (bgr, [cv2.IMWRITE_JPEG_QUALITY, 75]),
            "progressive": (bgr, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
            "restart": (grey, [cv2.IMWRITE_JPEG_RST_INTERVAL, 4]),
            "steel": (steel, []),
        }
        for name, (image, params) in jpegs.items():
            out.append((f"{name}-{seed}.jpg", cv2.imencode(".jpg", image, params)[1].tobytes()))
        pngs = {
            "grey": (grey, [cv2.IMWRITE_PNG_COMPRESSION, 3]),
            "bgr": (bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9]),
            "grey16": ((grey.astype(np.uint16) * 257), []),
        }
        for name, (image, params) in pngs.items():
            out.append((f"{name}-{seed}.png", cv2.imencode(".png", image, params)[1].tobytes()))
    return out


def png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, start, length) of each chunk that lies wholly inside the data."""
    out, pos = [], 8
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if pos + 12 + length > len(data):
            break
        out.append((kind, pos, length))
        pos += 12 + length
    return out


def jpeg_segments(data: bytes) -> tuple[list[tuple[int, int, int]], int, int]:
    """(marker, start, length) of the header segments, and the first scan's data start and end."""
    segs, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker, (length,) = data[pos + 1], struct.unpack_from(">H", data, pos + 2)
        segs.append((marker, pos, length))
        pos += 2 + length
        if marker == 0xDA:
            break
    return segs, pos, len(data) - 2  # scan data up to the EOI


def fix_png_crc(data: bytearray, start: int, length: int) -> None:
    body = bytes(data[start + 4:start + 8 + length])
    data[start + 8 + length:start + 12 + length] = struct.pack(">I", zlib.crc32(body))


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    d = bytearray(data)
    png = data.startswith(b"\x89PNG")
    if kind == "bitflip":
        for _ in range(int(rng.integers(1, 9))):
            p = int(rng.integers(2, len(d)))
            d[p] ^= 1 << int(rng.integers(0, 8))
    elif kind == "data-bitflip":
        if png:
            idats = [(s, n) for k, s, n in png_chunks(data) if k == b"IDAT"]
            start, length = idats[int(rng.integers(0, len(idats)))]
            for _ in range(int(rng.integers(1, 5))):
                d[start + 8 + int(rng.integers(0, length))] ^= 1 << int(rng.integers(0, 8))
            fix_png_crc(d, start, length)
        else:
            _, lo, hi = jpeg_segments(data)
            for _ in range(int(rng.integers(1, 5))):
                d[int(rng.integers(lo, hi))] ^= 1 << int(rng.integers(0, 8))
    elif kind == "insert":
        p = int(rng.integers(2, len(d)))
        d[p:p] = rng.integers(0, 256, int(rng.integers(1, 17))).astype(np.uint8).tobytes()
    elif kind == "delete":
        p = int(rng.integers(2, len(d) - 1))
        del d[p:p + int(rng.integers(1, 65))]
    elif kind == "truncate":
        del d[int(rng.integers(2, len(d))):]
    elif kind == "length":
        delta = int(rng.choice([-64, -16, -4, -1, 1, 4, 16, 64, 4096]))
        if png:
            _, start, length = png_chunks(data)[int(rng.integers(0, len(png_chunks(data))))]
            d[start:start + 4] = struct.pack(">I", max(0, length + delta))
        else:
            segs, _, _ = jpeg_segments(data)
            _, start, length = segs[int(rng.integers(0, len(segs)))]
            d[start + 2:start + 4] = struct.pack(">H", min(65535, max(0, length + delta)))
    elif kind == "dimensions":
        factor = float(rng.choice([0.5, 0.99, 1.01, 2.0, 100.0]))
        which = int(rng.integers(0, 2))
        if png:
            start = 8
            (old,) = struct.unpack_from(">I", d, start + 8 + 4 * which)
            struct.pack_into(">I", d, start + 8 + 4 * which, max(1, int(old * factor)))
            fix_png_crc(d, start, 13)
        else:
            segs, _, _ = jpeg_segments(data)
            start = next(s for m, s, _ in segs if m in (0xC0, 0xC2))
            (old,) = struct.unpack_from(">H", d, start + 5 + 2 * (1 - which))
            struct.pack_into(">H", d, start + 5 + 2 * (1 - which), min(65535, max(1, int(old * factor))))
    elif kind == "appended":
        d += rng.integers(0, 256, int(rng.integers(1, 4097))).astype(np.uint8).tobytes()
    return bytes(d)


def load_module(rev: str | None):
    """detector.images, or the file as it was at git revision `rev` under another name."""
    if rev is None:
        import detector.images

        return detector.images
    source = subprocess.run(["git", "show", f"{rev}:detector/images.py"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout
    path = Path(tempfile.mkdtemp()) / "images_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("images_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def outcome(load, path: Path, expected: np.ndarray) -> str:
    try:
        grey = load(path)
    except (ValueError, FileNotFoundError):
        return "refused"
    except Exception as exc:  # what must never happen: counted and named
        return f"other:{type(exc).__name__}"
    return "accepted-intact" if grey.shape == expected.shape and np.array_equal(grey, expected) else "accepted-damaged"


def libjpeg_warns(data: bytes) -> bool:
    """Whether libjpeg, driven by OpenCV, prints a warning about the data (OpenCV only prints them)."""
    with tempfile.TemporaryFile() as f:
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read()
    return b"Corrupt JPEG data" in text or b"Premature end" in text


def fuzz(args) -> None:
    images = load_module(args.before)
    rng = np.random.default_rng(args.seed)
    bases = base_pictures()
    folder = Path(tempfile.mkdtemp(prefix="fuzz_pictures_"))
    expected = {}
    for name, data in bases:
        (folder / name).write_bytes(data)
        expected[name] = images.load_grey(folder / name)
    table: dict[tuple[str, str], Counter] = defaultdict(Counter)
    others: Counter = Counter()
    samples: list[tuple[Path, str, str]] = []
    t0 = time.perf_counter()
    for i in range(args.n):
        name, data = bases[i % len(bases)]
        kind = KINDS[int(rng.integers(0, len(KINDS)))]
        path = folder / f"{i:05d}_{kind}_{name}"
        path.write_bytes(mutate(data, kind, rng))
        result = outcome(images.load_grey, path, expected[name])
        fmt = "JPEG" if name.endswith(".jpg") else "PNG"
        table[(fmt, kind)][result.split(":")[0]] += 1
        if fmt == "JPEG" and result.startswith("accepted") and libjpeg_warns(path.read_bytes()):
            table[(fmt, kind)]["accepted-libjpeg-warned"] += 1
        if result.startswith("other"):
            others[result] += 1
        if len(samples) < args.detect:
            samples.append((path, name, result))
        else:
            path.unlink()
    seconds = time.perf_counter() - t0

    label = f"images.py at {args.before}" if args.before else "detector/images.py (work tree)"
    print(f"fuzz: {args.n} mutated files, seed {args.seed}, {label}, {seconds:.1f} s")
    cols = ("tried", "refused", "accepted-intact", "accepted-damaged", "accepted-libjpeg-warned", "other")
    print("accepted-libjpeg-warned: accepted although libjpeg (as OpenCV drives it) printed a corrupt-data/premature-end warning")
    print(f"{'format':6} {'mutation':13} " + " ".join(f"{c:>16}" for c in cols))
    totals: Counter = Counter()
    for (fmt, kind), c in sorted(table.items()):
        row = {"tried": sum(c[k] for k in ("refused", "accepted-intact", "accepted-damaged", "other")), **c}
        totals.update(row)
        print(f"{fmt:6} {kind:13} " + " ".join(f"{row.get(col, 0):>16}" for col in cols))
    print(f"{'all':20} " + " ".join(f"{totals.get(col, 0):>16}" for col in cols))
    if others:
        print("other exceptions: " + ", ".join(f"{k[6:]} {v}" for k, v in others.most_common()))
    if args.detect:
        detect_sample(samples, images, args.before)


def detect_sample(samples, images, before) -> None:
    """The first files again through Detector.detect (the old module: its load_grey patched in)."""
    import detector.api
    from detector import Detector

    if before:
        detector.api.load_grey = images.load_grey
    det = Detector(device="cpu")
    counts: Counter = Counter()
    for path, _, result in samples:
        try:
            found = det.detect(path, threshold=0.3)
        except (ValueError, FileNotFoundError):
            counts["refused"] += 1
            continue
        except Exception as exc:
            counts[f"other {type(exc).__name__}"] += 1
            continue
        counts["judged"] += 1
        if result == "accepted-damaged":
            counts["judged damaged"] += 1
            counts["judged damaged with detections"] += bool(found)
    print(f"detect() on the first {len(samples)}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


# -- peak memory of header bombs ----------------------------------------------------------

# Peak memory is read from /proc/self/status (VmHWM): ru_maxrss of a child started by
# this (large) process would include this process's size, which Linux carries over exec.
PROBE = """
import sys, time
sys.path.insert(0, {repo!r})
{load}
t = time.perf_counter()
try:
    out = load({path!r})
    result = "accepted %s" % (out.shape,)
except Exception as exc:
    result = "%s: %s" % (type(exc).__name__, str(exc).splitlines()[0][:110])
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print("%.0f MB, %.2f s, %s" % (peak / 1024, time.perf_counter() - t, result))
"""


def bomb_files(folder: Path) -> dict[str, Path]:
    from synthetic import camera_frame, jpeg_with_size, png_bomb

    normal = cv2.resize(camera_frame(True, 0), (1280, 960))
    files = {
        "PNG 20000x20000 grey, 1/4": png_bomb(rows=5000),  # ~100 KB: zero rows for a quarter of it
        "PNG 20000x20000 grey": png_bomb(rows=None),  # ~390 KB: a complete, valid picture
        "JPEG SOF 65000x65000": jpeg_with_size(cv2.imencode(".jpg", camera_frame(True, 0))[1].tobytes(), 65000, 65000),
        "normal PNG 1280x960": cv2.imencode(".png", normal)[1].tobytes(),
        "normal JPEG 1280x960": cv2.imencode(".jpg", normal)[1].tobytes(),
    }
    out = {}
    for name, data in files.items():
        out[name] = folder / (name.replace(" ", "_").replace(",", "").replace("/", "of") + (".png" if "PNG" in name else ".jpg"))
        out[name].write_bytes(data)
    return out


def memory(args) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bombs_"))
    files = bomb_files(folder)
    loaders = {"load_grey": "from detector.images import load_grey as load"}
    if args.before:
        module = load_module(args.before).__file__
        loaders = {f"load_grey at {args.before}": (
            f"import importlib.util; s = importlib.util.spec_from_file_location('old', {module!r});"
            " m = importlib.util.module_from_spec(s); s.loader.exec_module(m); load = m.load_grey")}
    loaders["cv2.imdecode, OPENCV_IO_MAX_IMAGE_PIXELS=1e8"] = (
        "import os; os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'] = '100000000'; import cv2, numpy as np\n"
        "def load(p):\n    r = cv2.imdecode(np.fromfile(p, np.uint8), cv2.IMREAD_UNCHANGED)\n"
        "    if r is None: raise ValueError('imdecode returned None')\n    return r")
    first = next(iter(loaders.values()))
    baseline = subprocess.run([sys.executable, "-c", PROBE.format(repo=str(REPO), load=first, path="/nonexistent")],
                              capture_output=True, text=True)
    print(f"peak memory (VmHWM of a fresh python), imports only: {baseline.stdout.split(',')[0]}")
    for loader, code in loaders.items():
        for name, path in files.items():
            r = subprocess.run([sys.executable, "-c", PROBE.format(repo=str(REPO), load=code, path=str(path))],
                               capture_output=True, text=True)
            size = path.stat().st_size / 1e3
            print(f"{loader:46} {name:26} {size:5.0f} KB  {(r.stdout.strip() or r.stderr.strip().splitlines()[-1])}")


def speed(args) -> None:
    """Median load_grey and detect() times on normal 1280x960 picture files (the checks' cost)."""
    import statistics

    import detector.api
    from detector import Detector
    from synthetic import camera_frame

    images = load_module(args.before)
    detector.api.load_grey = images.load_grey
    det = Detector(device="cpu")
    frame = cv2.resize(camera_frame(True, 0), (1280, 960))
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    folder = Path(tempfile.mkdtemp(prefix="speed_"))
    files = {"grey PNG": (grey, ".png"), "BGR PNG": (frame, ".png"), "grey JPEG": (grey, ".jpg"), "BGR JPEG": (frame, ".jpg"),
             "16-bit grey PNG": (grey.astype(np.uint16) * 257, ".png")}

    def median_ms(fn, path, runs):
        fn(path)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn(path)
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)

    label = f"images.py at {args.before}" if args.before else "detector/images.py (work tree)"
    print(f"median of 30 (load_grey) / 15 (detect) runs, 1280x960 files, {label}")
    for name, (image, suffix) in files.items():
        path = folder / (name.replace(" ", "_") + suffix)
        cv2.imwrite(str(path), image)
        print(f"{name:16} load_grey {median_ms(images.load_grey, path, 30):6.1f} ms   detect {median_ms(det.detect, path, 15):6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=6000, help="mutated files to try")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--detect", type=int, default=300, help="how many of them also go through Detector.detect")
    parser.add_argument("--before", metavar="REV", help="measure detector/images.py as it was at this git revision")
    parser.add_argument("--memory", action="store_true", help="peak memory of header bombs instead of the fuzz run")
    parser.add_argument("--speed", action="store_true", help="load_grey and detect() times on normal pictures")
    args = parser.parse_args()
    memory(args) if args.memory else speed(args) if args.speed else fuzz(args)


if __name__ == "__main__":
    main()
