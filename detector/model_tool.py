"""Changing how a model file runs after training (flip test, NMS, threshold, name), with provenance.

Changing how a model runs changes its accuracy, so the file's validation
figures are re-measured on a validation split or dropped. The command line is
`python -m detector model` (`detector.cli.model`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from detector.model_file import ModelFile

# Metadata fields whose change invalidates the recorded validation figures.
ACCURACY_SETTINGS = ("flip_test", "nms_iou", "default_threshold")


def change_settings(path: Path, model: ModelFile, changes: dict[str, Any], *, validate: Path | None = None,
                    command: str = "") -> ModelFile:
    """Apply `changes` (ModelMetadata fields) to `model`, loaded from `path`, and save it there with its card.

    The changes are listed in the file's training record with `command`. With
    `validate` (a split folder of `detector dataset`) validation is re-measured
    with the new settings; otherwise it is dropped when an ACCURACY_SETTINGS
    field changes. `model` is updated in place and returned.
    """
    from detector.model_card import write_model_card
    from detector.model_file import save_model_file

    meta = model.metadata
    training = dict(meta.training)
    if any(k in changes for k in ACCURACY_SETTINGS) and not validate:
        training.pop("validation", None)  # measured under other settings: no longer true
    if changes:  # provenance: the card lists what was changed after training, and how
        from datetime import datetime, timezone

        training["settings_changes"] = [*training.get("settings_changes", []), {
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "changes": dict(changes),
            "command": command,
        }]
    model.metadata = replace(meta, training=training, **changes)
    save_model_file(path, model)
    if validate:
        from detector.train import validate_model_file

        training["validation"] = validate_model_file(path, validate)  # `training` is model's dict
        save_model_file(path, model)
    write_model_card(path)
    return model
