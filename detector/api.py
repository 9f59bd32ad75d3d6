"""`Detector` and `detect()`: the interface other programs call."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from detector.centernet_decode import decode
from detector.detection import Detection
from detector.images import letterbox, load_grey
from detector.model_file import ModelMetadata

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_NAME = "centernet_neu_scratch_pit"
# The station runs the ONNX file; the .pth beside it is the same model for the
# MMDetection stack (training, export, parity checks).
DEFAULT_MODEL = REPO_ROOT / "resources" / "models" / f"{DEFAULT_MODEL_NAME}.onnx"
DEFAULT_TORCH_MODEL = DEFAULT_MODEL.with_suffix(".pth")
# Where a non-editable `pip install .` puts the default model (pyproject data-files).
INSTALLED_MODEL = Path(sys.prefix) / "share" / "metal-inspection-station" / "models" / f"{DEFAULT_MODEL_NAME}.onnx"
MODEL_ENV_VAR = "INSPECTION_MODEL"  # lets a plant point every tool at its own model


def default_model_path() -> Path:
    if os.environ.get(MODEL_ENV_VAR):
        return Path(os.environ[MODEL_ENV_VAR])
    for candidate in (DEFAULT_MODEL, INSTALLED_MODEL):
        if candidate.is_file():
            return candidate
    return DEFAULT_MODEL  # missing: the error message names the expected place


def normalised_batch(
    greys: Sequence[np.ndarray], metadata: ModelMetadata
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Grey uint8 pictures as the network input, and each one's (x, y) resize scale.

    Letterboxed to the input size, repeated to three channels, normalised with
    the model's mean/std: float32 (N, 3, S, S). The one definition of the
    preprocessing, shared by `Detector` and int8 calibration (`detector.quantize`).
    """
    size = metadata.input_size
    canvases, scales = [], []
    for grey in greys:
        canvas, sx, sy = letterbox(grey, size)
        canvases.append(canvas)
        scales.append((sx, sy))
    mean = np.asarray(metadata.mean, np.float32).reshape(1, 3, 1, 1)
    inv_std = (1.0 / np.asarray(metadata.std, np.float32)).reshape(1, 3, 1, 1)
    batch = np.repeat(np.stack(canvases)[:, None].astype(np.float32), 3, axis=1)
    return (batch - mean) * inv_std, scales


@dataclass(frozen=True)
class NetworkMaps:
    """One picture's network output before decoding, and where its boxes map back to."""

    heat: np.ndarray  # (classes, H, W) centre heatmap
    wh: np.ndarray  # (2, H, W) box sizes
    offset: np.ndarray  # (2, H, W) sub-cell centre offsets
    input_size: int  # the network input it came from
    scale: tuple[float, float]  # letterbox (x, y) factor
    image_size: tuple[int, int]  # (width, height) of the picture


class Detector:
    """Finds scratches and pits in a picture.

    >>> det = Detector()                      # the shipped model
    >>> det.detect("part.png")                # -> [Detection(label, score, box), ...]
    """

    def __init__(self, model_path: str | Path | None = None, device: str = "auto", threads: int | None = None,
                 flip_test: bool | None = None):
        """`model_path`: a .pth model file (MMDetection) or an exported .onnx (ONNX Runtime).

        `threads`: CPU threads for the network (default: the runtime's choice);
        for .pth models it sets torch's process-wide thread count.
        `flip_test`: average over mirror images (see `forward_with_flips`);
        default: what the model file says.
        """
        from detector.backends import open_backend

        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        self._backend = open_backend(self.model_path, device, threads)
        self.flip_test = self._backend.metadata.flip_test if flip_test is None else bool(flip_test)
        # Class-wise NMS IoU of the decoded boxes, as the model file says (None: off).
        self.nms_iou: float | None = self._backend.metadata.nms_iou

    @property
    def metadata(self) -> ModelMetadata:
        """Class names, colours, input size, default threshold, training summary."""
        return self._backend.metadata

    @property
    def model_id(self) -> str:
        """Short, stable identity of the loaded weights (for inspection logs)."""
        return f"{self.metadata.name}@{self._backend.sha256[:12]}"

    @property
    def weights_id(self) -> str:
        """Identity of the weights behind this file: the .pth's sha256, which ONNX files exported (and
        quantized) from it carry as their source. A recipe binds the thresholds an admin set to it,
        since another model's scores sit elsewhere."""
        sha = getattr(self._backend, "source_sha256", "") or self._backend.sha256
        return f"{self.metadata.name}@{sha[:12]}"

    @property
    def device(self) -> str:
        return self._backend.device

    def detect(self, image: np.ndarray | str | Path, threshold: float | None = None) -> list[Detection]:
        """Detections with score >= threshold (default: the model's), best first."""
        return self.detect_batch([image], threshold)[0]

    def detect_batch(
        self, images: Sequence[np.ndarray | str | Path], threshold: float | None = None
    ) -> list[list[Detection]]:
        threshold = self.metadata.default_threshold if threshold is None else float(threshold)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within 0..1, got {threshold}")
        if len(images) == 0:
            return []
        maps = self.network_maps([load_grey(img) for img in images])
        return self.decode_maps(maps, threshold, self.nms_iou)

    def network_maps(
        self, greys: Sequence[np.ndarray], *, input_size: int | None = None, flip_test: bool | None = None
    ) -> list[NetworkMaps]:
        """The network's maps for each grey uint8 picture, before decoding (one forward pass).

        `input_size` and `flip_test` default to this detector's; only a settings
        sweep (benchmarks/sweep_inference.py) passes others. Another input size
        needs the .pth model: an exported .onnx has its size fixed.
        """
        metadata = self.metadata if input_size is None else replace(self.metadata, input_size=input_size)
        flip_test = self.flip_test if flip_test is None else flip_test
        batch, scales = normalised_batch(greys, metadata)
        forward = forward_with_flips if flip_test else _plain_forward
        heat, wh, offset = forward(self._backend, batch)
        return [
            NetworkMaps(heat[i], wh[i], offset[i], metadata.input_size, scales[i], (grey.shape[1], grey.shape[0]))
            for i, grey in enumerate(greys)
        ]

    def decode_maps(
        self, maps: Sequence[NetworkMaps], threshold: float, nms_iou: float | None
    ) -> list[list[Detection]]:
        """Detections (score >= threshold, best first) from `network_maps`, NMS at `nms_iou` (None: off)."""
        return [
            decode(
                m.heat, m.wh, m.offset,
                input_size=m.input_size,
                scale=m.scale,
                image_size=m.image_size,
                class_names=self.metadata.class_names,
                threshold=threshold,
                nms_iou=nms_iou,
            )
            for m in maps
        ]


def _plain_forward(backend, batch: np.ndarray):
    return backend.forward(batch)


def forward_with_flips(backend, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Network maps averaged over each picture and its horizontal and vertical mirror.

    Heatmaps and sizes are mirrored back and averaged (sizes are mirror-invariant);
    sub-cell offsets come from the unflipped picture, as in CenterNet's own flip
    test. One forward pass on a 3x batch. Measured on the NEU validation split:
    AP50 pit +0.09, scratch about equal, COCO mAP +0.035.
    """
    n = len(batch)
    heat, wh, offset = backend.forward(np.concatenate([batch, batch[..., ::-1], batch[..., ::-1, :]]))

    def averaged(maps: np.ndarray) -> np.ndarray:
        return (maps[:n] + maps[n:2 * n][..., ::-1] + maps[2 * n:][..., ::-1, :]) / 3.0

    return averaged(heat), averaged(wh), offset[:n]


_default: Detector | None = None
_default_lock = threading.Lock()


def detect(image: np.ndarray | str | Path, threshold: float | None = None) -> list[Detection]:
    """`Detector().detect(image)` with one lazily created default detector."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Detector()
    return _default.detect(image, threshold)
