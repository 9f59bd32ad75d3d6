"""Model files are checked when loaded: doctored copies of the shipped ONNX and .pth are refused, naming the field."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from detector import Detector
from detector.api import DEFAULT_MODEL, DEFAULT_TORCH_MODEL

# (what is changed in the metadata, the field the error must name)
DOCTORED = {
    "threshold 5.0": ({"default_threshold": 5.0}, "default_threshold"),
    "threshold NaN": ({"default_threshold": math.nan}, "default_threshold"),
    "std zero": ({"std": [58.4, 0.0, 57.4]}, "std"),
    "std two channels": ({"std": [58.4, 57.1]}, "std"),
    "mean four channels": ({"mean": [123.7, 116.3, 103.5, 1.0]}, "mean"),
    "mean infinite": ({"mean": [123.7, math.inf, 103.5]}, "mean"),
    "three class names": ({"class_names": ["scratch", "pit", "dent"]}, "class_names"),
    "one class name": ({"class_names": ["scratch"]}, "class_names"),
    "no class names": ({"class_names": []}, "class_names"),
    "duplicate class names": ({"class_names": ["pit", "pit"]}, "class_names"),
    "input size 510": ({"input_size": 510}, "input_size"),
    "input size 0": ({"input_size": 0}, "input_size"),
}


def doctored_onnx(tmp_path, change: dict):
    import onnx

    model = onnx.load(str(DEFAULT_MODEL))
    for prop in model.metadata_props:
        if prop.key == "metadata":
            prop.value = json.dumps({**json.loads(prop.value), **change})
    path = tmp_path / "doctored.onnx"
    onnx.save(model, str(path))
    return path


def doctored_pth(tmp_path, change: dict):
    import torch

    payload = torch.load(DEFAULT_TORCH_MODEL, map_location="cpu", weights_only=True)
    payload["metadata"] = {**payload["metadata"], **change}
    path = tmp_path / "doctored.pth"
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("case", DOCTORED)
def test_doctored_onnx_metadata_is_refused(tmp_path, case):
    change, field = DOCTORED[case]
    with pytest.raises(ValueError, match=rf"'{field}'"):
        Detector(doctored_onnx(tmp_path, change), device="cpu")


@pytest.mark.parametrize("case", DOCTORED)
def test_doctored_pth_metadata_is_refused(tmp_path, case):
    """Today threshold 5.0 or std 0 load and PASS every part; three class names crash mid-run with IndexError."""
    change, field = DOCTORED[case]
    with pytest.raises(ValueError, match=rf"'{field}'"):
        Detector(doctored_pth(tmp_path, change), device="cpu")


def test_heatmap_channels_are_checked_against_the_built_network(tmp_path):
    with pytest.raises(ValueError, match="'class_names' does not fit the network: heatmap has 2 channels for 3 class names"):
        Detector(doctored_pth(tmp_path, {"class_names": ["scratch", "pit", "dent"]}), device="cpu")


def test_the_shipped_models_pass_the_checks(scratch_image):
    image, _ = scratch_image
    for path in (DEFAULT_MODEL, DEFAULT_TORCH_MODEL):
        det = Detector(path, device="cpu")
        assert 0 <= det.metadata.default_threshold <= 1 and det.detect(image, threshold=0.3)


def test_model_records_name_no_folder_of_the_machine_that_made_them(tmp_path):
    """Commands and data sources in a model file are written relative to the checkout, so the file travels."""
    from detector.model_file import portable_paths

    repo = Path(__file__).resolve().parents[1]
    record = {"command": f"python -m detector train --data {repo}/runs/data",
              "stages": [str(repo), "/elsewhere/x", f"/srv{repo}/y"]}
    assert portable_paths(record) == {"command": "python -m detector train --data runs/data",
                                      "stages": [".", "/elsewhere/x", f"/srv{repo}/y"]}
    if repo.parent != repo.parent.parent:  # a checkout beside others (../shared): those are written relative too
        assert portable_paths(f"--source {repo.parent}/shared/neu-det") == "--source ../shared/neu-det"
    for shipped in (repo / "resources" / "models").iterdir():
        data = shipped.read_bytes()
        assert f"{repo}/".encode() not in data, shipped.name
        assert repo.parent == repo.parent.parent or f"{repo.parent}/".encode() not in data, shipped.name
