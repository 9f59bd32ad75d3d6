"""Model runtimes. Each backend maps a normalised batch to CenterNet head outputs.

A backend takes float32 (N, 3, S, S) and returns numpy (heatmap, wh, offset);
preprocessing and decoding live in `detector.api` and are shared.

`TorchBackend` runs `.pth` model files with MMDetection (the training stack);
`OnnxBackend` runs `.onnx` files made by `python -m detector export` with ONNX
Runtime and never imports torch, so a station needs only onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detector.model_file import (
    ONNX_INPUT,
    ONNX_OUTPUTS,
    ModelMetadata,
    load_model_file,
    metadata_from_onnx_props,
)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'")
    return device


def build_mmdet_model(model_cfg: dict):
    """Build an MMDetection detector from a plain `model` config dict."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    from mmengine.config import ConfigDict

    import detector.mm_modules  # noqa: F401  (registers the station's own model parts)

    # ConfigDict: MMDetection heads read their test_cfg by attribute.
    return MODELS.build(ConfigDict(model_cfg))


class TorchBackend:
    """MMDetection's CenterNet in PyTorch (the training stack)."""

    name = "mmdet"

    def __init__(self, model_path: Path, device: str = "auto", threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)  # process-wide: torch has no per-model setting
        model_file = load_model_file(model_path)
        self.metadata: ModelMetadata = model_file.metadata
        self.sha256 = model_file.sha256
        self.device = resolve_device(device)
        try:
            model = build_mmdet_model(model_file.model_cfg)
            model.load_state_dict(model_file.state_dict, strict=True)
        except (KeyError, RuntimeError, TypeError) as exc:
            raise ValueError(f"model file {model_path} does not match its own architecture: {exc}") from exc
        _check_head(model, self.metadata, model_file.model_cfg, model_path)
        self.model = model.to(self.device).eval()
        self._torch = torch

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            feats = self.model.extract_feat(x)
            heat, wh, offset = self.model.bbox_head.forward(feats)
        return heat[0].float().cpu().numpy(), wh[0].float().cpu().numpy(), offset[0].float().cpu().numpy()


def _check_head(model, metadata: ModelMetadata, model_cfg: dict, model_path: Path) -> None:
    """The metadata against the built network: one heatmap channel per class name, the real stride."""
    channels = model.bbox_head.heatmap_head[-1].out_channels
    if channels != len(metadata.class_names):
        raise ValueError(f"{model_path}: model metadata field 'class_names' does not fit the network: heatmap has "
                         f"{channels} channels for {len(metadata.class_names)} class names {list(metadata.class_names)}")
    # CTResNetNeck: a stride-32 backbone, upsampled 2x by each deconvolution.
    deconvs = len(model_cfg.get("neck", {}).get("num_deconv_filters", ())) or 3
    metadata.validate(stride=max(1, 32 // 2 ** deconvs))


# Preferred first; ONNX Runtime falls back along the list (TensorRT -> CUDA -> CPU)
# when a provider cannot start, e.g. TensorRT libraries missing.
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def _onnx_providers(device: str, available: list[str]) -> list:
    """ONNX Runtime execution providers for a device string (same words as TorchBackend)."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "auto":
        return [p for p in _GPU_PROVIDERS if p in available] + ["CPUExecutionProvider"]
    if device == "cuda" or device.startswith("cuda:"):
        index = device.partition(":")[2] or "0"
        if not index.isdigit():
            raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'")
        gpu = [(p, {"device_id": int(index)}) for p in _GPU_PROVIDERS if p in available]
        if not gpu:
            raise ValueError(f"device {device!r} requested but ONNX Runtime has no CUDA execution provider "
                             "(install onnxruntime-gpu)")
        return [*gpu, "CPUExecutionProvider"]
    raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'")


class OnnxBackend:
    """The exported model in ONNX Runtime (the light station runtime, no torch)."""

    name = "onnxruntime"

    def __init__(self, model_path: Path, device: str = "auto", threads: int | None = None):
        import hashlib

        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError("ONNX models need onnxruntime: pip install onnxruntime") from exc

        model_path = Path(model_path)
        if not model_path.exists():
            raise FileNotFoundError(f"model file not found: {model_path}")
        if not model_path.is_file():
            raise ValueError(f"not a model file: {model_path}")
        data = model_path.read_bytes()  # read once: hash and session see the same bytes
        self.sha256 = hashlib.sha256(data).hexdigest()
        providers = _onnx_providers(device, ort.get_available_providers())
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1  # a single chain of convs: nothing to run side by side
        try:
            session = ort.InferenceSession(data, sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise ValueError(f"cannot load ONNX model {model_path} (corrupt, truncated or not an ONNX file?): "
                             f"{type(exc).__name__}: {first}") from exc
        self.metadata: ModelMetadata = metadata_from_onnx_props(session.get_modelmeta().custom_metadata_map, model_path)
        self.source_sha256 = session.get_modelmeta().custom_metadata_map.get("source_sha256", "")
        self._check_signature(session, model_path)
        self.session = session
        self.providers: list[str] = session.get_providers()
        gpu = self.providers[0] in _GPU_PROVIDERS
        if device.startswith("cuda") and not gpu:
            raise ValueError(f"device {device!r} requested but ONNX Runtime's CUDA execution provider could not start")
        self.device = (device if device.startswith("cuda") else "cuda") if gpu else "cpu"
        self.threads = threads

    def _check_signature(self, session, model_path: Path) -> None:
        inputs, outputs = session.get_inputs(), session.get_outputs()
        size = self.metadata.input_size
        if [i.name for i in inputs] != [ONNX_INPUT] or [o.name for o in outputs] != list(ONNX_OUTPUTS):
            raise ValueError(f"{model_path}: graph inputs/outputs are {[i.name for i in inputs]} -> "
                             f"{[o.name for o in outputs]}, expected {[ONNX_INPUT]} -> {list(ONNX_OUTPUTS)}")
        if list(inputs[0].shape[1:]) != [3, size, size]:
            raise ValueError(f"{model_path}: graph input shape {inputs[0].shape} does not match "
                             f"the metadata's input size {size}")
        channels = outputs[0].shape[1]
        if isinstance(channels, int) and channels != len(self.metadata.class_names):
            raise ValueError(f"{model_path}: model metadata field 'class_names' does not fit the graph: heatmap has "
                             f"{channels} channels for {len(self.metadata.class_names)} class names "
                             f"{list(self.metadata.class_names)}")
        height = outputs[0].shape[2]
        if isinstance(height, int) and height > 0:  # a static graph says its stride
            self.metadata.validate(stride=max(1, round(size / height)))

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        heat, wh, offset = self.session.run(list(ONNX_OUTPUTS), {ONNX_INPUT: batch})
        return heat, wh, offset


def open_backend(model_path: Path, device: str, threads: int | None = None):
    """The backend for a model file, chosen by its suffix (.pth/.pt or .onnx)."""
    suffix = Path(model_path).suffix.lower()
    if suffix in (".pth", ".pt"):
        return TorchBackend(model_path, device, threads)
    if suffix == ".onnx":
        return OnnxBackend(model_path, device, threads)
    raise ValueError(f"unknown model format {suffix!r} for {model_path}; expected a .pth or .onnx model file")
