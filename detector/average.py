"""Averaging the weights of model files fine-tuned from one model ("model soup").

Runs that start from the same model file and differ only in their seed (the
order and the variations of the pictures) end near each other, so the mean of
their weights is itself a working model, about as good as their mean or a
little better (README, seed-2 runs), and costs nothing at inference: one network. Networks trained from different
starting points do not average (their units are not in the same order), so
the runs must share their parent, which the files' lineage shows. The command
line is `python -m detector average`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from detector.model_file import ModelFile, load_model_file, save_model_file

# Metadata that must agree: it says how the network is fed and what its outputs mean.
SAME_METADATA = ("class_names", "input_size", "mean", "std")


def _parent(model: ModelFile) -> str | None:
    lineage = model.metadata.training.get("lineage") or []
    return lineage[-1].get("sha256") if lineage else None


def check_averageable(paths: list[Path], models: list[ModelFile]) -> None:
    """ValueError naming the file and the reason when `models` cannot be averaged into one network."""
    if len(models) < 2:
        raise ValueError("averaging needs at least two model files")
    first, first_path = models[0], paths[0]
    parent = _parent(first)
    if parent is None:
        raise ValueError(f"{first_path} was not fine-tuned from another model file (no lineage): runs from "
                         "different starting points do not average; train each from one model (--init-from)")
    seen = {}
    for path, model in zip(paths, models):
        if model.sha256 in seen:  # it would count twice in the mean
            raise ValueError(f"{path} is the same model as {seen[model.sha256]}")
        seen[model.sha256] = path
    for path, model in zip(paths[1:], models[1:]):
        if _parent(model) != parent:
            raise ValueError(f"{path} starts from a different model ({_parent(model)}) than {first_path} ({parent}): "
                             "only runs from the same parent average into a working network")
        if model.model_cfg != first.model_cfg:
            raise ValueError(f"{path} has another architecture than {first_path}")
        for name in SAME_METADATA:
            if getattr(model.metadata, name) != getattr(first.metadata, name):
                raise ValueError(f"{path}: {name} {getattr(model.metadata, name)!r} differs from {first_path}'s "
                                 f"{getattr(first.metadata, name)!r}")
        if model.state_dict.keys() != first.state_dict.keys():
            raise ValueError(f"{path} has other weights than {first_path}")
        for key, value in model.state_dict.items():
            if value.shape != first.state_dict[key].shape:
                raise ValueError(f"{path}: {key} has shape {tuple(value.shape)}, {first_path} "
                                 f"{tuple(first.state_dict[key].shape)}")


def average_weights(state_dicts: list[dict]) -> dict:
    """The element-wise mean of every floating-point tensor; other tensors (BatchNorm's batch counters) from the first."""
    import torch

    averaged = {}
    for key, value in state_dicts[0].items():
        if torch.is_floating_point(value):
            total = torch.zeros_like(value, dtype=torch.float64)
            for sd in state_dicts:
                total += sd[key].to(torch.float64)
            averaged[key] = (total / len(state_dicts)).to(value.dtype)
        else:
            averaged[key] = value.clone()
    return averaged


def average_model_files(paths: list[Path], out: Path, *, validate: Path | None = None, command: str = "") -> ModelFile:
    """Write the weight average of the model files at `paths` to `out`, with its card.

    The new file takes the first file's settings (name, threshold, flip test,
    NMS) and records each ingredient; its validation figures are measured on
    `validate` (a split folder of `detector dataset`) or left out, never copied.
    """
    from detector.model_card import write_model_card
    from detector.train import validate_model_file

    paths = [Path(p) for p in paths]
    models = [load_model_file(p) for p in paths]
    check_averageable(paths, models)
    first = models[0]
    training = {k: v for k, v in first.metadata.training.items() if k not in ("validation", "settings_changes")}
    training["averaged"] = {
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "ingredients": [{
            "file": str(path), "sha256": model.sha256[:16], "command": model.metadata.training.get("command"),
            "validation_map50": (model.metadata.training.get("validation") or {}).get("map50"),
            "cpu_seconds_total": model.metadata.training.get("cpu_seconds_total"),
            "wall_seconds_total": model.metadata.training.get("wall_seconds_total"),
        } for path, model in zip(paths, models)],
    }
    result = ModelFile(
        metadata=replace(first.metadata, training=training,
                         created=datetime.now(timezone.utc).isoformat(timespec="seconds")),
        model_cfg=first.model_cfg,
        state_dict=average_weights([m.state_dict for m in models]),
    )
    save_model_file(out, result)
    if validate:
        training["validation"] = validate_model_file(out, validate)
        save_model_file(out, result)
    write_model_card(out)
    return result
