"""`python -m detector export`: the station model as one ONNX file.

The exported graph is backbone + neck + CenterNet heads: it maps a normalised
(N, 3, S, S) batch to the three head maps (heatmap after sigmoid, wh, offset),
exactly what `TorchBackend.forward` returns, so preprocessing and decoding stay
shared. The batch dimension is dynamic, height and width are the model's input
size. The model metadata travels in the ONNX `metadata_props`. The exporter's
graph then gets the exact rewrites of `detector.onnx_graph` (upsampling as phase
convolutions), which ONNX Runtime runs faster; the check against
PyTorch below covers them.

Needs the training stack (torch, MMDetection) plus onnx and onnxruntime; the
file it writes needs only onnxruntime.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from detector.files import atomic_write_bytes
from detector.model_file import ONNX_INPUT, ONNX_OUTPUTS, onnx_metadata_props
from detector.onnx_graph import optimize_for_cpu

DEFAULT_OPSET = 17
MIN_OPSET = 11  # DepthToSpace with its `mode` attribute (the phase convolutions)
# Largest allowed difference between PyTorch and ONNX Runtime on the check
# batch, relative to the output's largest magnitude (at least 1). The heatmap
# bound is the parity test's score tolerance; wh/offset are in feature pixels,
# where 1e-3 is far below an image pixel. fp32 reordering and BatchNorm folding
# give 1e-7..1e-4 (trained vs random weights); a wrong graph gives > 1e-2.
HEATMAP_TOL = 1e-3
REGRESSION_TOL = 1e-3


@dataclass(frozen=True)
class ExportResult:
    path: Path
    opset: int
    size_bytes: int
    max_diff: dict[str, float]  # per output, |PyTorch - ONNX Runtime| on the check batch
    rewrites: dict[str, int]  # exact graph rewrites applied (see detector.onnx_graph)


def _head_outputs_module(model):
    """Wrap an MMDetection CenterNet as a module returning its three head maps."""
    import torch

    class CenterNetHeadMaps(torch.nn.Module):
        def __init__(self, detector):
            super().__init__()
            self.detector = detector

        def forward(self, x):
            # Same calls as TorchBackend.forward: the graph is what the station runs.
            heat, wh, offset = self.detector.bbox_head.forward(self.detector.extract_feat(x))
            return heat[0], wh[0], offset[0]

    return CenterNetHeadMaps(model).eval()


def check_batch(metadata, n: int = 2, seed: int = 0) -> np.ndarray:
    """A normalised batch of grey-looking pictures (n > 1 exercises the dynamic batch)."""
    rng = np.random.default_rng(seed)
    size = metadata.input_size
    grey = rng.integers(40, 220, (n, 1, size, size)).astype(np.float32)
    batch = np.repeat(grey, 3, axis=1)
    mean = np.asarray(metadata.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(metadata.std, np.float32).reshape(1, 3, 1, 1)
    return (batch - mean) / std


def export_onnx(model_path: Path, out: Path, opset: int = DEFAULT_OPSET) -> ExportResult:
    """Export a station `.pth` model file to `out` (.onnx), checked and verified.

    Raises FileNotFoundError / ValueError for a bad model file or an export whose
    ONNX Runtime outputs differ from PyTorch's; `out` is never left half-written.
    """
    import onnx
    import onnxruntime as ort
    import torch

    from detector.backends import TorchBackend

    model_path, out = Path(model_path), Path(out)
    backend = TorchBackend(model_path, device="cpu")
    meta = backend.metadata
    net = _head_outputs_module(backend.model)
    size = meta.input_size
    dummy = torch.zeros(1, 3, size, size)
    dynamic = {name: {0: "batch"} for name in (ONNX_INPUT, *ONNX_OUTPUTS)}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, but it
        # needs no extra packages and handles this plain conv net exactly.
        warnings.simplefilter("ignore")
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                net, (dummy,), buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[ONNX_INPUT],
                output_names=list(ONNX_OUTPUTS),
                dynamic_axes=dynamic,
                do_constant_folding=True,  # folds BatchNorm into the convs
            )
    proto = onnx.load_model_from_string(buffer.getvalue())
    rewrites = optimize_for_cpu(proto)
    proto.doc_string = f"{meta.name}: CenterNet {', '.join(meta.class_names)} detector for the metal inspection station"
    props = onnx_metadata_props(
        meta,
        backend.sha256,
        extra={
            "source_file": model_path.name,
            "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "exporter": f"torch {torch.__version__} TorchScript exporter, opset {opset}",
            "graph_rewrites": json.dumps(rewrites, sort_keys=True),
        },
    )
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ValueError(f"exported ONNX graph fails the ONNX checker: {exc}") from exc
    data = proto.SerializeToString()

    # Verify before writing: the file must compute what the PyTorch model computes.
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    batch = check_batch(meta)
    expected = backend.forward(batch)
    got = session.run(list(ONNX_OUTPUTS), {ONNX_INPUT: batch})
    max_diff = {name: float(np.max(np.abs(e - g))) for name, e, g in zip(ONNX_OUTPUTS, expected, got)}
    for (name, diff), e, tol in zip(max_diff.items(), expected, (HEATMAP_TOL, REGRESSION_TOL, REGRESSION_TOL)):
        allowed = tol * max(1.0, float(np.max(np.abs(e))))
        if not diff <= allowed:  # also catches NaN
            raise ValueError(f"exported model disagrees with PyTorch: max |{name} difference| {diff:.3g} > {allowed:.3g}")

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, data)  # never leave a half-written model where the station looks
    return ExportResult(path=out, opset=opset, size_bytes=len(data), max_diff=max_diff, rewrites=rewrites)
