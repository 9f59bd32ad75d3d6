"""`python -m detector quantize`: an int8 ONNX model for the station's CPUs.

ONNX Runtime static quantization of a model made by `python -m detector export`:
weights int8 per output channel, activations 8-bit with ranges calibrated on
real training pictures, preprocessed by the very function `Detector` uses
(`detector.api.normalised_batch`), so the calibrated ranges are those the
station sees. The result is still an ONNX file with the same input/outputs and
metadata, so `Detector("model.int8.onnx")` runs it unchanged.

Steps: `quant_pre_process` (ONNX Runtime graph optimisation plus shape
inference); the exact rewrites of `detector.onnx_graph` for files exported
before `export` applied them (the neck's ConvTransposes have no integer kernel;
as phase convs they run in int8 too; checked against the fp32 graph);
calibration; quantization
(QDQ: ONNX Runtime fuses each DequantizeLinear -> op -> QuantizeLinear group into
an integer kernel when it loads the file), with the heatmap's last Conv and
Sigmoid left fp32 (`heatmap_nodes`); metadata; a fp32-vs-int8 heatmap check on
calibration pictures; optionally (`--validate`) AP50 of both models on a
validation split and on noisy copies of it, recorded in the file and judged by
`int8_rule`; an atomic write.

Measured on the shipped model (256 input, flip test, 2 threads of AVX-512 VNNI
cores): int8 `detect()` 1.6-1.8x faster than the fp32 ONNX model and 3.8x faster
than MMDetection; validation AP50 scratch 0.931 -> 0.919, pit 0.875 -> 0.878, and
on 8 noisy copies a mean paired drop of 0.09 (scratch) and 0.02 (pit) points.

Needs onnx and onnxruntime (the `.[train]` extra); the file it writes needs
only onnxruntime.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from detector.files import atomic_write_bytes
from detector.model_file import ONNX_INPUT, ONNX_OUTPUTS, ModelMetadata, metadata_from_onnx_props, portable_paths
from detector.onnx_graph import optimize_for_cpu

# Every picture of the calibration split by default: measured on the shipped model, the
# validation AP50 of int8 files calibrated on different random 100- or 1000-picture
# samples scattered by up to 3 points of pit AP50 on the exact validation pictures,
# while on noisy copies of them (Gaussian noise of 1 grey level, 8 draws, fp32 and int8
# on the same copies) all came within 0.2 points of fp32. The split itself is the one
# sample nobody picked.
DEFAULT_COUNT = None
# Chosen by measurement (MobileNetV2 CenterNet, AVX-512 VNNI cores, onnxruntime 1.32):
# uint8 activations x int8 weights is what the VNNI kernels run; int8 activations
# left the depthwise convs in fp32 (0.85x fp32 speed). QDQ and QOperator become the
# same integer kernels; QDQ is ONNX Runtime's recommended form. Per-channel and
# per-tensor weights measured alike in speed and AP; per-channel is the safer one.
# Percentile calibration (99.999 %) kept AP50 within 0.5 points where MinMax lost 5.8
# (99.99 %: 3.3, 99.9 %: 5.8; Entropy gave MinMax's ranges exactly, so it is not offered).
DEFAULT_FORMAT = "qdq"
DEFAULT_ACTIVATIONS = "u8"
DEFAULT_CALIBRATION = "percentile"
# One picture per calibration run: ORT's histogram calibrators need equal-sized batches.
CALIB_BATCH = 1
# ONNX Runtime's calibrators keep every activation of every picture they are given
# before reducing them (measured: 100 pictures at 256 px fit in 24 GB, 300 were
# killed for memory); fed in chunks, they merge ranges/histograms chunk by chunk.
CALIB_CHUNK = 25
# The backbone's high-resolution stem (MobileNetV2's stem conv and stages 1-4,
# MMDetection's node names) stays fp32 by default. Measured on the shipped
# 256-px model, validation AP50 drop in points, pit / scratch: everything int8
# 3.0 / 1.6; stem + stages 1-2 fp32 1.7 / -1.2; stem + stages 1-4 fp32 0.2..1.8
# (mean 1.2) / -1.4..0 over six calibration samples, at 1.6x the fp32 speed:
# those layers are mostly memory-bound depthwise work that int8 barely speeds
# up. Patterns that match nothing (another backbone) are skipped.
DEFAULT_FP32_STEM = ("/backbone/conv1/*", "/backbone/layer[1-4]/*")
CHECK_PICTURES = 8  # calibration pictures re-run through fp32 and int8 as a sanity check
# The shipping rule for an int8 file: at most 1 point of AP50 lost per class. On a
# 288-picture split one scratch box is 1.2 points and one pit box 1.4, and a score
# moving by 0.01 can swap a true and a false detection, so the rule is judged on
# noisy copies of the split (1 grey level of Gaussian noise, far below a camera's),
# fp32 and int8 on the same copies: the mean paired drop plus two standard errors.
AP50_DROP_LIMIT = 1.0  # points
NOISE_DRAWS = 8
NOISE_SIGMA = 1.0  # grey levels
# Below this the int8 file is refused: a broken quantization, not a small loss
# (a weak early checkpoint with a flat heatmap measured 0.87..0.99; AP is the real
# gate, measured by benchmarks/bench_int8.py on a validation split).
MIN_HEATMAP_CORRELATION = 0.5


@dataclass(frozen=True)
class QuantizeResult:
    path: Path
    size_bytes: int
    fp32_size_bytes: int
    calibration_count: int
    fp32_nodes: list[str]  # nodes left unquantized on purpose
    rewrites: dict[str, int]  # exact graph rewrites applied here (see detector.onnx_graph)
    # fp32 vs int8 on CHECK_PICTURES calibration pictures
    heatmap_correlation: float
    heatmap_max_diff: float
    settings: dict[str, str] = field(default_factory=dict)
    validation: dict | None = None  # AP50 of fp32 and int8 on a validation split, when asked for


# --------------------------------------------------------------------------- #
# Calibration pictures
# --------------------------------------------------------------------------- #


def calibration_pictures(calib: Path, images_dir: Path | None = None, count: int | None = DEFAULT_COUNT,
                         seed: int = 0) -> list[Path]:
    """`count` picture files drawn (seeded, without replacement) from a COCO file or a folder; None: all.

    `calib` may be a COCO JSON, a data-set split folder holding `annotations.json`
    (as `python -m detector dataset` writes), or a folder of pictures (its
    `images/` subfolder when present).
    """
    from detector.data.coco import load_coco
    from detector.data.imagefiles import is_image_file

    calib = Path(calib)
    if calib.is_file():
        paths = [img.image_path for img in load_coco(calib, images_dir=images_dir)]
    elif calib.is_dir():
        if (calib / "annotations.json").is_file():
            paths = [img.image_path for img in load_coco(calib / "annotations.json", images_dir=images_dir)]
        else:
            folder = images_dir or (calib / "images" if (calib / "images").is_dir() else calib)
            paths = sorted(p for p in Path(folder).iterdir() if p.is_file() and is_image_file(p))
    else:
        raise FileNotFoundError(f"calibration data not found: {calib}")
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError(f"no calibration pictures in {calib}")
    if count is None:
        return paths
    if count < 1:
        raise ValueError(f"calibration count must be at least 1, got {count}")
    if count < len(paths):
        rng = np.random.default_rng(seed)
        paths = [paths[i] for i in sorted(rng.choice(len(paths), size=count, replace=False))]
    return paths


def calibration_batches(pictures: Sequence[Path], metadata: ModelMetadata, batch: int = CALIB_BATCH) -> Iterator[np.ndarray]:
    """Normalised (N, 3, S, S) batches of the pictures, exactly as `Detector` feeds them."""
    from detector.api import normalised_batch
    from detector.images import load_grey

    for start in range(0, len(pictures), batch):
        greys = [load_grey(p) for p in pictures[start:start + batch]]
        yield normalised_batch(greys, metadata)[0]


def _reader(pictures: Sequence[Path], metadata: ModelMetadata):
    """ONNX Runtime's calibration reader over the pictures; `set_range` serves one chunk at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.set_range(0, len(pictures))

        def __len__(self) -> int:
            return len(pictures)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._batches = calibration_batches(list(pictures)[start_index:end_index], metadata)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {ONNX_INPUT: batch}

    return Reader()


def calibration_chunk(count: int, limit: int = CALIB_CHUNK) -> int:
    """Largest divisor of `count` up to `limit`: ONNX Runtime's chunked calibration needs equal chunks."""
    return max(d for d in range(1, min(count, limit) + 1) if count % d == 0)


# --------------------------------------------------------------------------- #
# Graph helpers
# --------------------------------------------------------------------------- #


def heatmap_nodes(model) -> list[str]:
    """Names of the nodes from the heatmap head's last Conv to the `heatmap` output (Conv, Sigmoid).

    They stay fp32: an 8-bit heatmap has only 256 levels, so neighbouring
    positions tie, and the decoder's 3x3 local-maximum test then keeps every
    tied position as a separate peak: duplicate detections (measured: AP50 of
    pits 52 -> 40 with the heatmap quantized, 46 with these two nodes in fp32,
    same calibration). They cost ~1 % of the int8 run time. The size/offset
    convs are quantized: keeping them fp32 measured no AP difference.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    names = []
    node = producer.get(ONNX_OUTPUTS[0])
    while node is not None:
        names.append(node.name)
        if node.op_type == "Conv":
            return names
        # step back through single-input activations (Sigmoid, Identity)
        node = producer.get(node.input[0]) if len(node.input) == 1 else None
    raise ValueError("cannot find the convolution computing the heatmap output")


def _matching_nodes(model, patterns: Sequence[str], required: bool = True) -> list[str]:
    """Names of the graph's nodes matching any of the shell-style patterns.

    `required`: a pattern that matches no node is an error (a typo would
    otherwise silently quantize what the user meant to keep).
    """
    from fnmatch import fnmatchcase

    names = [node.name for node in model.graph.node]
    found = []
    for pattern in patterns:
        hits = [n for n in names if fnmatchcase(n, pattern)]
        if not hits and required:
            raise ValueError(f"--keep-fp32 {pattern!r} matches no node of the graph")
        found += hits
    return found


def _settings(quant_format: str, activations: str, calibration: str):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    types = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    for name, value, allowed in (("format", quant_format, formats), ("activations", activations, types),
                                 ("calibration", calibration, methods)):
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")
    # Weights are always int8: the integer kernels (VNNI u8 x s8, and s8 x s8) take signed weights.
    return formats[quant_format], types[activations], QuantType.QInt8, methods[calibration]


def _check_same_outputs(before: bytes, after: bytes, metadata: ModelMetadata) -> None:
    """A graph rewrite must not change what the fp32 model computes (ValueError if it does)."""
    import onnxruntime as ort

    from detector.export import REGRESSION_TOL, check_batch

    batch = check_batch(metadata)
    runs = [ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(list(ONNX_OUTPUTS), {ONNX_INPUT: batch})
            for data in (before, after)]
    for name, a, b in zip(ONNX_OUTPUTS, *runs):
        allowed = REGRESSION_TOL * max(1.0, float(np.max(np.abs(a))))
        if not np.max(np.abs(a - b)) <= allowed:
            raise ValueError(f"internal error: a graph rewrite changed the {name} output "
                             f"by {np.max(np.abs(a - b)):.3g}")


def _heatmap_agreement(fp32: bytes, int8: bytes, batches: list[np.ndarray]) -> tuple[float, float]:
    """Pearson correlation and largest difference of the two models' heatmaps."""
    import onnxruntime as ort

    sessions = [ort.InferenceSession(data, providers=["CPUExecutionProvider"]) for data in (fp32, int8)]
    heats = [np.concatenate([s.run([ONNX_OUTPUTS[0]], {ONNX_INPUT: b})[0] for b in batches]) for s in sessions]
    a, b = (h.astype(np.float64).ravel() for h in heats)
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    return corr, float(np.max(np.abs(a - b)))


# --------------------------------------------------------------------------- #
# Quantization
# --------------------------------------------------------------------------- #


def quantize_onnx(
    model_path: Path,
    out: Path,
    pictures: Sequence[Path],
    *,
    quant_format: str = DEFAULT_FORMAT,
    activations: str = DEFAULT_ACTIVATIONS,
    per_channel: bool = True,
    calibration: str = DEFAULT_CALIBRATION,
    fp32_heatmap: bool = True,
    fp32_stem: bool = True,
    exclude: Sequence[str] = (),
    preprocess: bool = True,
    calibration_source: str = "",
    extra_options: dict | None = None,
    validation: Path | None = None,
    noise_draws: int = NOISE_DRAWS,
    command: str = "",
) -> QuantizeResult:
    """Quantize the fp32 station ONNX model at `model_path` to `out`, calibrated on `pictures`.

    `fp32_heatmap` keeps the heatmap's last Conv and Sigmoid in fp32 (see
    `heatmap_nodes`); `fp32_stem` keeps the backbone's first stages fp32 (see
    DEFAULT_FP32_STEM); `exclude` names further nodes to keep fp32 (shell-style
    patterns such as "/neck/*" allowed; one that matches nothing is an error); `extra_options`
    go to ONNX Runtime's `quantize_static` (e.g. {"CalibPercentile": 99.99}).
    `validation`: a split folder (annotations.json + images/, as `detector dataset`
    writes) on which the fp32 and the int8 model are both evaluated before writing;
    their AP50 is recorded in the file's quantization metadata (and so in the model card),
    and with `noise_draws` their AP50 on that many noisy copies of it (`int8_rule` judges them).

    Raises FileNotFoundError / ValueError for a bad model or pictures, or an
    int8 model whose heatmap no longer follows the fp32 one; `out` is never
    left half-written.
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model_path, out = Path(model_path), Path(out)
    if not model_path.is_file():
        raise FileNotFoundError(f"model file not found: {model_path}")
    if not pictures:
        raise ValueError("no calibration pictures")
    fp32_bytes = model_path.read_bytes()
    source = onnx.load_model_from_string(fp32_bytes)
    props = {p.key: p.value for p in source.metadata_props}
    metadata = metadata_from_onnx_props(props, model_path)  # ValueError if not a station model
    if "quantization" in props:
        raise ValueError(f"{model_path} is already quantized; quantize the fp32 export")
    fmt, act_type, weight_type, method = _settings(quant_format, activations, calibration)

    with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
        work = Path(tmp)
        prepared = work / "prepared.onnx"
        if preprocess:
            quant_pre_process(source, prepared)
        else:
            prepared.write_bytes(fp32_bytes)
        graph = onnx.load(str(prepared))
        rewrites = {k: v for k, v in optimize_for_cpu(graph).items() if v}
        if rewrites:
            graph = onnx.shape_inference.infer_shapes(graph)
            _check_same_outputs(prepared.read_bytes(), graph.SerializeToString(), metadata)
            onnx.save(graph, str(prepared))
        # Node names of the prepared graph (the optimiser may fuse and rename).
        stem = _matching_nodes(graph, DEFAULT_FP32_STEM, required=False) if fp32_stem else []
        fp32_nodes = [*stem, *_matching_nodes(graph, exclude), *(heatmap_nodes(graph) if fp32_heatmap else [])]
        fp32_nodes = list(dict.fromkeys(fp32_nodes))  # once each, in order
        quantized = work / "int8.onnx"
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress
            quantize_static(
                prepared, quantized, _reader(pictures, metadata),
                quant_format=fmt,
                per_channel=per_channel,
                activation_type=act_type,
                weight_type=weight_type,
                nodes_to_exclude=fp32_nodes,
                calibrate_method=method,
                extra_options={"CalibStridedMinMax": calibration_chunk(len(pictures)), **(extra_options or {})},
            )
        model = onnx.load(str(quantized))

    info = {
        "method": "onnxruntime static quantization",
        "onnxruntime": ort.__version__,
        "format": "QDQ" if quant_format == "qdq" else "QOperator",
        "activations": "uint8" if activations == "u8" else "int8",
        "weights": "int8 " + ("per-channel" if per_channel else "per-tensor"),
        "calibration": calibration if calibration != "percentile"
        else f"percentile {(extra_options or {}).get('CalibPercentile', 99.999)}",
        "calibration_count": len(pictures),
        "calibration_source": calibration_source,
        "fp32_nodes": fp32_nodes,
        "fp32_stem_patterns": list(DEFAULT_FP32_STEM) if fp32_stem else [],
        "graph_rewrites": rewrites,
        "fp32_model_sha256": hashlib.sha256(fp32_bytes).hexdigest(),
        "fp32_model_file": model_path.name,
        "quantized": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **({"command": command} if command else {}),
    }
    model.doc_string = (source.doc_string + " (int8)").strip()

    def serialized() -> bytes:
        # The station metadata as exported (source_sha256 stays the .pth's), plus how this file was made.
        props["quantization"] = json.dumps(portable_paths(info), sort_keys=True)
        del model.metadata_props[:]
        for key, value in props.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        return model.SerializeToString()

    data = serialized()
    # Check before writing: the int8 heatmap must still follow the fp32 one.
    batches = list(calibration_batches(list(pictures)[:CHECK_PICTURES], metadata))
    corr, max_diff = _heatmap_agreement(fp32_bytes, data, batches)
    if not corr >= MIN_HEATMAP_CORRELATION:  # also catches NaN
        raise ValueError(f"int8 heatmap correlates only {corr:.3f} with fp32 (max difference {max_diff:.3f}); "
                         "try more calibration pictures or keeping the heads in fp32")
    if validation is not None:
        info["validation"] = validation_ap50({"fp32": fp32_bytes, "int8": data}, Path(validation), noise_draws)
        data = serialized()

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, data)  # never leave a half-written model where the station looks
    return QuantizeResult(
        path=out,
        size_bytes=len(data),
        fp32_size_bytes=len(fp32_bytes),
        calibration_count=len(pictures),
        fp32_nodes=fp32_nodes,
        rewrites=rewrites,
        heatmap_correlation=corr,
        heatmap_max_diff=max_diff,
        settings={k: str(info[k]) for k in ("format", "activations", "weights", "calibration")},
        validation=info.get("validation"),
    )


def validation_ap50(models: dict[str, bytes], val_dir: Path, noise_draws: int = 0) -> dict:
    """AP50 per class and mAP50 of each serialized model on a validation split, measured as `train` does;
    with `noise_draws`, also on that many noisy copies of it (`evaluate.noisy_copies_ap50`)."""
    from detector import Detector
    from detector.data.coco import load_coco
    from detector.evaluate import noisy_copies_ap50
    from detector.train import validate_model_file

    ap50 = {}
    with tempfile.TemporaryDirectory(prefix="quantize-val-") as tmp:
        paths = {name: Path(tmp) / f"{name}.onnx" for name in models}
        for name, data in models.items():
            paths[name].write_bytes(data)
            r = validate_model_file(paths[name], val_dir)
            ap50[name] = {**{c: v["ap50"] for c, v in r["classes"].items()}, "map50": r["map50"]}
        result = {"source": str(val_dir), **{k: r[k] for k in ("n_images", "iou_threshold", "flip_test", "nms_iou")},
                  "ap50": ap50}
        if noise_draws:
            images = load_coco(val_dir / "annotations.json", val_dir / "images")
            detectors = {name: Detector(path, device="cpu") for name, path in paths.items()}
            result["noisy_copies"] = {"draws": noise_draws, "sigma": NOISE_SIGMA,
                                      "ap50": noisy_copies_ap50(detectors, images, noise_draws, NOISE_SIGMA)}
    return result


def ap50_drops(validation: dict) -> dict[str, float]:
    """fp32 minus int8 AP50 per class, in points (classes without ground truth left out)."""
    fp32, int8 = validation["ap50"]["fp32"], validation["ap50"]["int8"]
    return {c: 100 * (fp32[c] - int8[c]) for c in fp32 if c != "map50" and fp32[c] is not None and int8[c] is not None}


def noisy_ap50_drops(validation: dict) -> dict[str, tuple[float, float, float]]:
    """Per class, the paired fp32 - int8 AP50 drop on the recorded noisy copies, in points:
    (mean, standard deviation, mean + 2 standard errors). Empty when none were recorded."""
    import statistics

    copies = validation.get("noisy_copies")
    if not copies:
        return {}
    fp32, int8 = copies["ap50"]["fp32"], copies["ap50"]["int8"]
    out = {}
    for c in fp32[0]:
        d = [100 * (a[c] - b[c]) for a, b in zip(fp32, int8) if a[c] is not None and b[c] is not None]
        if len(d) >= 2:
            mean, sd = statistics.mean(d), statistics.stdev(d)
            out[c] = (mean, sd, mean + 2 * sd / len(d) ** 0.5)
    return out


def int8_rule(validation: dict) -> tuple[bool, str]:
    """The shipping rule for an int8 file: at most AP50_DROP_LIMIT points of AP50 lost per class.

    Judged on the noisy copies where they were measured (the mean paired drop plus two
    standard errors, per class), else on the split itself. Returns (met, one line saying why).
    """
    noisy = noisy_ap50_drops(validation)
    if noisy:
        worst = max(noisy.items(), key=lambda kv: kv[1][2])
        met = worst[1][2] <= AP50_DROP_LIMIT
        return met, (f"{'within' if met else 'OVER'} the {AP50_DROP_LIMIT:g}-point rule: on "
                     f"{validation['noisy_copies']['draws']} noisy copies the largest paired drop is {worst[0]}'s, "
                     f"{worst[1][0]:.2f} points (sd {worst[1][1]:.2f}; with two standard errors {worst[1][2]:.2f})")
    drops = ap50_drops(validation)
    if not drops:
        return False, f"not judged by the {AP50_DROP_LIMIT:g}-point rule: no class has ground truth in the split"
    worst = max(drops.items(), key=lambda kv: kv[1])
    met = worst[1] <= AP50_DROP_LIMIT
    return met, (f"{'within' if met else 'OVER'} the {AP50_DROP_LIMIT:g}-point rule: the largest drop on the split "
                 f"is {worst[0]}'s, {worst[1]:.2f} points (no noisy copies measured)")
