"""Model runtimes. Each backend maps a normalised batch to CenterNet head outputs.

A backend takes float32 (N, 3, S, S) and returns numpy (heatmap, wh, offset);
preprocessing and decoding live in `detector.api` and are shared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detector.model_file import ModelMetadata, load_model_file


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
    import detector.mm_modules  # noqa: F401  (registers the station's own model parts)

    return MODELS.build(model_cfg)


class TorchBackend:
    """MMDetection's CenterNet in PyTorch (the training stack)."""

    name = "mmdet"

    def __init__(self, model_path: Path, device: str = "auto"):
        import torch

        model_file = load_model_file(model_path)
        self.metadata: ModelMetadata = model_file.metadata
        self.sha256 = model_file.sha256
        self.device = resolve_device(device)
        try:
            model = build_mmdet_model(model_file.model_cfg)
            model.load_state_dict(model_file.state_dict, strict=True)
        except (KeyError, RuntimeError, TypeError) as exc:
            raise ValueError(f"model file {model_path} does not match its own architecture: {exc}") from exc
        self.model = model.to(self.device).eval()
        self._torch = torch

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            feats = self.model.extract_feat(x)
            heat, wh, offset = self.model.bbox_head.forward(feats)
        return heat[0].float().cpu().numpy(), wh[0].float().cpu().numpy(), offset[0].float().cpu().numpy()


def open_backend(model_path: Path, device: str):
    suffix = Path(model_path).suffix.lower()
    if suffix in (".pth", ".pt"):
        return TorchBackend(model_path, device)
    raise ValueError(f"unknown model format {suffix!r} for {model_path}; expected a .pth model file")
