"""The shipped model on the real NEU-DET validation split it never trained on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detector import Detector
from detector.api import DEFAULT_MODEL
from detector.cli import main
from detector.data.coco import load_coco
from detector.evaluate import box_iou, evaluate_model, noisy_copies_ap50
from detector.model_file import NETWORK_STRIDE, file_sha256
from detector.quantize import int8_rule
from synthetic import make_voc_dataset

INT8_MODEL = DEFAULT_MODEL.with_suffix(".int8.onnx")


@pytest.fixture(scope="module")
def shipped() -> Detector:
    return Detector(device="cpu")


@pytest.fixture(scope="module")
def shipped_int8() -> Detector:
    return Detector(INT8_MODEL, device="cpu")


def _quantization(det: Detector) -> dict:
    return json.loads(det._backend.session.get_modelmeta().custom_metadata_map["quantization"])


@pytest.fixture(scope="module")
def neu_val(neu_det, tmp_path_factory, shipped):
    """Rebuild the exact validation split recorded in the model's metadata."""
    from detector.data.classmap import parse_class_map
    from detector.data.pipeline import build_dataset

    options = shipped.metadata.training["dataset"]["options"]
    out = tmp_path_factory.mktemp("neu")
    # Only the split matters here: no expansion, negatives all kept in val anyway.
    build_dataset([neu_det], out, class_map=parse_class_map(shipped.metadata.training["dataset"]["class_map"]),
                  val_fraction=options["val_fraction"], seed=options["seed"],
                  negatives_fraction=options["negatives_fraction"])
    return load_coco(out / "val" / "annotations.json", out / "val" / "images")


def test_validation_ap_matches_the_model_card(shipped, neu_val):
    card = shipped.metadata.training["validation"]
    result = evaluate_model(shipped, neu_val).to_json()
    assert len(neu_val) == card["n_images"]
    for name in ("scratch", "pit"):
        assert result["classes"][name]["ap50"] == pytest.approx(card["classes"][name]["ap50"], abs=0.01)
    assert result["map50"] == pytest.approx(card["map50"], abs=0.01)


def test_top_detection_names_the_defect_on_held_out_pictures(shipped, neu_val):
    """On validation pictures holding one defect class, the best detection has that class."""
    single = [im for im in neu_val if len(im.labels()) == 1]
    assert len(single) >= 90
    batch = shipped.detect_batch([im.image_path for im in single])
    right = sum(bool(dets) and dets[0].label in im.labels() for im, dets in zip(single, batch))
    assert right / len(single) >= 0.9, f"{right}/{len(single)}"  # measured 95/96


def test_defect_free_pictures_mostly_pass(shipped, neu_val):
    clean = [im for im in neu_val if not im.boxes]
    flagged = sum(bool(dets) for dets in shipped.detect_batch([im.image_path for im in clean]))
    assert flagged / len(clean) <= 0.05, f"{flagged}/{len(clean)} defect-free pictures flagged"  # measured 0/192


def test_evaluate_cli_with_the_shipped_model(tmp_path, capsys):
    make_voc_dataset(tmp_path / "voc", n_images=6, size=200)
    out = tmp_path / "eval.json"
    plot = tmp_path / "pr.png"
    code = main(["evaluate", "--data", str(tmp_path / "voc"), "--class-map", "scratches=scratch,pitted_surface=pit",
                 "--json", str(out), "--plot", str(plot)])
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["classes"]) == {"scratch", "pit"}
    assert result["classes"]["scratch"]["n_gt"] == 2 and result["classes"]["pit"]["n_gt"] == 2
    assert 0.0 <= result["map50"] <= 1.0
    assert plot.stat().st_size > 1000
    assert "scratch" in capsys.readouterr().out


def test_shipped_int8_model_is_of_the_shipped_model_and_met_the_shipping_rule(shipped, shipped_int8):
    info = _quantization(shipped_int8)
    assert info["fp32_model_sha256"] == file_sha256(DEFAULT_MODEL), "re-quantize after re-exporting the fp32 model"
    assert shipped_int8.metadata == shipped.metadata
    card, val = shipped.metadata.training["validation"], info["validation"]
    assert val["n_images"] == card["n_images"] and val["flip_test"] and val["nms_iou"] == shipped.metadata.nms_iou
    for name in ("scratch", "pit"):  # its fp32 reference is the card's figure
        assert val["ap50"]["fp32"][name] == pytest.approx(card["classes"][name]["ap50"], abs=0.01)
    # At most a point lost per class, judged on the 8 recorded noisy copies (README, int8).
    assert val["noisy_copies"]["draws"] == 8
    met, why = int8_rule(val)
    assert met, why


def test_shipped_int8_model_finds_what_fp32_finds(shipped, shipped_int8, scratch_image, part_pictures):
    """Above the default threshold both files give the same boxes: same labels, scores within 0.05, and each
    edge within one heatmap cell of the fp32 box (the decoder's grid; on the 18-px-wide generated scratch a
    2-px shift, less than a cell, already takes IoU to 0.76)."""
    import cv2

    pictures = [scratch_image[0], *part_pictures]
    sizes = [scratch_image[0].shape[:2], *(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).shape for p in part_pictures)]
    found = 0
    for fp32, int8, size in zip(shipped.detect_batch(pictures), shipped_int8.detect_batch(pictures), sizes):
        assert len(fp32) == len(int8)
        cell = NETWORK_STRIDE * max(size) / shipped.metadata.input_size  # picture pixels per heatmap cell
        for a in fp32:
            same = [b for b in int8 if b.label == a.label]
            assert same, (a, int8)
            b = same[int(np.argmax(box_iou([a.box], [b.box for b in same])[0]))]
            assert np.abs(np.subtract(a.box, b.box)).max() <= cell and abs(a.score - b.score) <= 0.05, (a, int8)
        found += len(fp32)
    assert found >= 4  # measured: a scratch on each scratched part, a scratch and a pit on the scratch picture


def test_int8_validation_ap_matches_its_record(shipped_int8, neu_val):
    recorded = _quantization(shipped_int8)["validation"]["ap50"]["int8"]
    result = evaluate_model(shipped_int8, neu_val).to_json()
    for name in ("scratch", "pit"):
        assert result["classes"][name]["ap50"] == pytest.approx(recorded[name], abs=0.01)


def test_int8_noisy_copy_matches_its_record(shipped, shipped_int8, neu_val):
    """The first recorded noisy copy (seed 0) measured again: the rule above was judged on real figures."""
    recorded = _quantization(shipped_int8)["validation"]["noisy_copies"]["ap50"]
    again = noisy_copies_ap50({"fp32": shipped, "int8": shipped_int8}, neu_val, 1)
    for name in ("fp32", "int8"):
        for cls in ("scratch", "pit"):
            assert again[name][0][cls] == pytest.approx(recorded[name][0][cls], abs=0.01)


def test_shipped_model_card_is_current():
    """The card beside the shipped model is what its files say now, int8 line included.

    After re-making a file beside it: `python -m detector model resources/models/centernet_neu_scratch_pit.pth --write-card`.
    """
    from detector.api import DEFAULT_TORCH_MODEL
    from detector.model_card import render_model_card
    from detector.model_file import load_model_file

    card = DEFAULT_TORCH_MODEL.with_suffix(".md").read_text(encoding="utf-8")
    assert render_model_card(load_model_file(DEFAULT_TORCH_MODEL), DEFAULT_TORCH_MODEL) == card
    assert "int8 variant: `centernet_neu_scratch_pit.int8.onnx`" in card and "pit 0.878 (0.875)" in card
    assert "mean paired drop scratch 0.09 points" in card and "within the 1-point rule" in card
