"""The station's model file: one `.pth` holding weights plus plain metadata.

Everything in it is tensors, dicts, lists, strings and numbers, so it loads
with `torch.load(weights_only=True)`: opening a model file never runs code
from it. The model architecture travels as a plain dict (MMDetection's
`model` config), not as config source text, for the same reason.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT_NAME = "metal-inspection-centernet"
FORMAT_VERSION = 1

# The exported ONNX model carries the same metadata as JSON strings in its
# `metadata_props`, so the .onnx file alone is a complete station model.
ONNX_FORMAT_NAME = "metal-inspection-centernet-onnx"
ONNX_FORMAT_VERSION = 1
ONNX_INPUT = "input"
ONNX_OUTPUTS = ("heatmap", "wh", "offset")

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
DEFAULT_COLOURS = {"scratch": "#E69F00", "pit": "#0072B2"}
# For the other classes of a model, in class order: the rest of Okabe-Ito (without black,
# and without #CC79A7, the station's colour for a label the model does not know), then Paul
# Tol's light colours. Black text stays readable (contrast >= 4.5) on every one of them
# (the legend writes class names in black on the class colour). Beyond these, colours repeat.
MORE_COLOURS = ("#009E73", "#D55E00", "#56B4E9", "#F0E442", "#77AADD", "#EE8866", "#EEDD88", "#FFAABB", "#99DDFF",
                "#44BB99", "#BBCC33")


def class_colours(class_names) -> dict[str, str]:
    """A distinct colour per class: the station's two fixed ones, then MORE_COLOURS in class order."""
    free = [c for c in MORE_COLOURS if c not in DEFAULT_COLOURS.values()]
    others = [name for name in class_names if name not in DEFAULT_COLOURS]
    picked = {name: free[i % len(free)] for i, name in enumerate(others)}
    return {name: DEFAULT_COLOURS.get(name) or picked[name] for name in class_names}
# The station's CenterNet sees the input at 1/4 resolution (stride-32 backbone, three
# 2x deconvolutions); backends that can read it from the model use theirs.
NETWORK_STRIDE = 4
INPUT_CHANNELS = 3  # grey replicated to three channels


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    class_names: tuple[str, ...]
    colours: dict[str, str]  # label -> "#RRGGBB"
    input_size: int  # square network input in pixels
    default_threshold: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    created: str = ""
    training: dict[str, Any] = field(default_factory=dict)  # data, split, time, AP...
    # Average the network's maps over the picture and its mirror images
    # (detector.api.forward_with_flips): more accurate boxes, 3x the compute.
    flip_test: bool = False
    # Class-wise NMS of the decoded boxes at this IoU (detector.centernet_decode);
    # None: every heatmap peak is a detection (files made before this setting).
    nms_iou: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def validate(self, stride: int = NETWORK_STRIDE) -> ModelMetadata:
        """Refuse metadata no inspection can be trusted with: ValueError naming the field.

        A threshold of 5.0 would pass every part, a zero std divides by zero,
        class names that do not match the heatmap mislabel or crash mid-run.
        `stride`: the network's output stride, when the backend can read it.
        """
        names = self.class_names
        if not names or not all(isinstance(n, str) and n.strip() for n in names):
            raise ValueError(f"model metadata field 'class_names' must be non-empty names, got {list(names)!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"model metadata field 'class_names' has duplicates: {list(names)!r}")
        if not (isinstance(self.default_threshold, float) and 0.0 <= self.default_threshold <= 1.0):
            raise ValueError(f"model metadata field 'default_threshold' must be within 0..1, got {self.default_threshold!r}")
        for key, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != INPUT_CHANNELS or not all(math.isfinite(v) for v in values):
                raise ValueError(f"model metadata field {key!r} must be {INPUT_CHANNELS} finite numbers "
                                 f"(one per input channel), got {list(values)!r}")
        if not all(v > 0 for v in self.std):
            raise ValueError(f"model metadata field 'std' must be > 0 in every channel, got {list(self.std)!r}")
        if not (stride > 0 and self.input_size > 0 and self.input_size % stride == 0):
            raise ValueError(f"model metadata field 'input_size' must be a positive multiple of the network stride "
                             f"{stride}, got {self.input_size}")
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMetadata:
        """Metadata read from a model file, checked (`validate`)."""
        return cls._from_dict(d).validate()

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> ModelMetadata:
        try:
            return cls(
                name=str(d["name"]),
                class_names=_names(d["class_names"]),
                colours=dict(d["colours"]),
                input_size=int(d["input_size"]),
                default_threshold=float(d["default_threshold"]),
                mean=tuple(float(v) for v in d["mean"]),
                std=tuple(float(v) for v in d["std"]),
                created=str(d.get("created", "")),
                training=dict(d.get("training", {})),
                flip_test=bool(d.get("flip_test", False)),
                nms_iou=None if d.get("nms_iou") is None else _iou_setting(d["nms_iou"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"model metadata is incomplete or malformed: {exc}") from exc


def _names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"class_names must be a list of names, got {type(value).__name__}")
    return tuple(value)


def _iou_setting(value: Any) -> float:
    iou = float(value)
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"nms_iou must be within (0, 1], got {value!r}")
    return iou


def threshold_argument(text: str) -> float:
    """argparse type of a detection threshold: a score within 0..1."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a threshold must be within 0..1, got {value}")
    return value


def nms_iou_argument(text: str) -> float | None:
    """argparse type of the --nms-iou options: an IoU in (0, 1], or 'off' (None)."""
    import argparse

    if text.strip().lower() == "off":
        return None
    try:
        return _iou_setting(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an IoU within (0, 1] or 'off', got {text!r}") from None


@dataclass
class ModelFile:
    metadata: ModelMetadata
    model_cfg: dict[str, Any]  # MMDetection `model` config as plain data
    state_dict: dict[str, Any]
    sha256: str = ""  # of the file it was read from


_REPO = Path(__file__).resolve().parents[1]
# An absolute path into this checkout or beside it (../shared/...), not part of a longer path.
_ROOTS = [str(_REPO)] + ([str(_REPO.parent)] if _REPO.parent != _REPO.parent.parent else [])  # never "/" itself
_MACHINE_PATH = re.compile(rf"(?<![\w./-])({'|'.join(map(re.escape, _ROOTS))})(/|(?![\w.-]))")


def portable_paths(value: Any) -> Any:
    """`value` with absolute paths of this checkout written relative to it ("runs/x", "../shared/..."), recursively.

    A model file travels to other machines; its record (commands, data sources) must not name this one's folders.
    """
    if isinstance(value, str):
        return _MACHINE_PATH.sub(lambda m: ("" if m.group(2) else ".") if m.group(1) == str(_REPO)
                                 else ("../" if m.group(2) else ".."), value)
    if isinstance(value, dict):
        return {k: portable_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(portable_paths(v) for v in value)
    return value


def save_model_file(path: Path, model: ModelFile) -> Path:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "metadata": portable_paths(model.metadata.to_dict()),
        "model_cfg": model.model_cfg,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict.items()},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # never leave a half-written model where the station looks
    return path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_model_file(path: Path) -> ModelFile:
    """Read and check a model file; clear errors for every way it can be wrong."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.suffix.lower() not in (".pth", ".pt"):
        raise ValueError(f"unknown model format {path.suffix!r} for {path}; expected a .pth model file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ValueError(
            f"cannot read model file {path}: corrupt, truncated, or not a plain weights file "
            "(MMEngine training checkpoints are not model files; `python -m detector train` writes the model file): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not a {FORMAT_NAME} model file")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has model format version {payload.get('format_version')}; this station reads {FORMAT_VERSION}")
    if not isinstance(payload.get("model_cfg"), dict) or not isinstance(payload.get("state_dict"), dict):
        raise ValueError(f"{path} lacks the model architecture or weights")
    return ModelFile(
        metadata=ModelMetadata.from_dict(payload.get("metadata") or {}),
        model_cfg=payload["model_cfg"],
        state_dict=payload["state_dict"],
        sha256=file_sha256(path),
    )


def onnx_metadata_props(metadata: ModelMetadata, source_sha256: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The key/value strings an exported ONNX model carries (see `metadata_from_onnx_props`)."""
    import json

    props = {
        "format": ONNX_FORMAT_NAME,
        "format_version": str(ONNX_FORMAT_VERSION),
        "metadata": json.dumps(portable_paths(metadata.to_dict()), sort_keys=True),
        "source_sha256": source_sha256,
        # Plain copies for people looking at the file in a model viewer.
        "name": metadata.name,
        "class_names": ",".join(metadata.class_names),
        "input_size": str(metadata.input_size),
    }
    props.update(extra or {})
    return props


def metadata_from_onnx_props(props: dict[str, str], path: Path) -> ModelMetadata:
    """Read and check the station metadata of an ONNX model; ValueError if absent or wrong."""
    import json

    if props.get("format") != ONNX_FORMAT_NAME:
        raise ValueError(
            f"{path} is not a {ONNX_FORMAT_NAME} model (no station metadata); "
            "make ONNX models with `python -m detector export`"
        )
    if props.get("format_version") != str(ONNX_FORMAT_VERSION):
        raise ValueError(f"{path} has ONNX model format version {props.get('format_version')}; this station reads {ONNX_FORMAT_VERSION}")
    try:
        raw = json.loads(props.get("metadata", ""))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: model metadata is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: model metadata is not a JSON object")
    return ModelMetadata.from_dict(raw)
