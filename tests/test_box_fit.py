"""benchmarks/box_fit.py: how well a model's boxes fit, and the training boxes' own shapes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from detector import Detection
from detector.data.annotations import AnnotatedImage, Box
from detector.data.classmap import parse_class_map
from detector.data.coco import write_coco
from detector.data.voc import load_voc_dir
from synthetic import make_voc_dataset

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks/box_fit.py"
MODEL = REPO / "resources/models/centernet_neu_scratch_pit.onnx"


def _box_fit():
    spec = importlib.util.spec_from_file_location("box_fit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_box_drawn_twice_as_wide_shows_a_short_side_ratio_of_two():
    box_fit = _box_fit()
    upright = AnnotatedImage(Path("a.png"), 200, 200, [Box("scratch", 90, 10, 100, 190)])  # 10 wide, 180 long
    lying = AnnotatedImage(Path("b.png"), 200, 200, [Box("scratch", 10, 90, 190, 100)])
    missed = AnnotatedImage(Path("c.png"), 200, 200, [Box("scratch", 0, 0, 50, 50)])
    found = [[Detection("scratch", 0.9, (85.0, 10.0, 105.0, 190.0))],  # twice as wide, same length: IoU 0.5
             [Detection("scratch", 0.9, (10.0, 90.0, 190.0, 100.0)), Detection("pit", 0.9, (0.0, 0.0, 9.0, 9.0))],
             [Detection("scratch", 0.01, (0.0, 0.0, 50.0, 50.0))]]  # below the fit's score floor: a miss
    rows = {tuple(r["best_iou"]): r for r in box_fit.box_fit_rows([upright, lying, missed], found, ["scratch"])}
    assert rows[(0.5, 0.7)] == {"class": "scratch", "best_iou": [0.5, 0.7], "boxes": 1,
                                "long_side_ratio": 1.0, "short_side_ratio": 2.0}
    assert rows[(0.7, 1.0)]["boxes"] == 1 and rows[(0.7, 1.0)]["short_side_ratio"] == 1.0
    assert rows[(0.0, 0.3)]["boxes"] == 1 and rows[(0.0, 0.3)]["short_side_ratio"] is None


def test_label_shapes_tell_originals_from_expanded_copies():
    box_fit = _box_fit()
    images = [AnnotatedImage(Path("scratches_1.png"), 200, 200, [Box("scratch", 0, 0, 10, 100)]),
              AnnotatedImage(Path("scratches_1_aug01.png"), 200, 200, [Box("scratch", 0, 0, 20, 100)]),
              AnnotatedImage(Path("augmented_part.png"), 200, 200, [Box("pit", 0, 0, 50, 100)])]
    rows = {r["class"]: r for r in box_fit.label_shape_rows(images, ["scratch", "pit"])}
    assert rows["scratch"]["short_long_ratio_original"] == 0.1
    assert rows["scratch"]["short_long_ratio_expanded_copy"] == 0.2
    assert rows["pit"]["training_boxes"] == {"original": 1, "expanded_copy": 0}


def test_touching_boxes_merge_into_their_union_on_both_sides():
    """An area the annotator cut in two and the model boxed whole: missed half the time before merging, found after."""
    fit = _box_fit()
    left, right, apart = Box("pit", 0, 0, 40, 100), Box("pit", 40, 0, 100, 100), Box("pit", 150, 150, 170, 170)
    image = AnnotatedImage(Path("a.png"), 200, 200, [left, right, apart, Box("scratch", 0, 120, 100, 130)])
    found = [Detection("pit", 0.9, (0, 0, 100, 100)), Detection("pit", 0.8, (150, 150, 170, 170)),
             Detection("pit", 0.2, (0, 0, 30, 30)),  # weaker than the station shows: left as it is
             Detection("scratch", 0.9, (0, 100, 100, 140))]
    groups = fit.touching_unions([(0, 0, 10, 10), (20, 0, 30, 10), (10, 0, 20, 10)])  # the middle one links them
    assert groups == [([0.0, 0.0, 30.0, 10.0], [0, 2, 1])]
    (merged_image,), (merged_found,) = fit.merge_touching([image], [found], ["pit"])
    pits = sorted((b.x1, b.y1, b.x2, b.y2) for b in merged_image.boxes if b.label == "pit")
    assert pits == [(0, 0, 100, 100), (150, 150, 170, 170)]
    assert sorted((d.label, d.score) for d in merged_found) == [("pit", 0.2), ("pit", 0.8), ("pit", 0.9), ("scratch", 0.9)]
    assert [d.score for d in merged_found] == [0.9, 0.9, 0.8, 0.2]  # best first, as the detector gives them
    from detector.evaluate import evaluate_detections

    before = evaluate_detections([image], {"a.png": found}, ["pit"], coco=False).classes["pit"]
    after = evaluate_detections([merged_image], {"a.png": merged_found}, ["pit"], coco=False).classes["pit"]
    assert (before.n_gt, before.n_tp, after.n_gt, after.n_tp) == (3, 2, 2, 2)
    assert after.ap50 == 1.0 > before.ap50


def test_the_script_on_generated_pictures_with_the_shipped_model(tmp_path):
    split = make_voc_dataset(tmp_path / "split", n_images=9, size=200)
    images = load_voc_dir(split, parse_class_map("scratches=scratch,pitted_surface=pit"))
    write_coco(images, ["scratch", "pit"], split / "annotations.json")
    out = subprocess.run([sys.executable, str(SCRIPT), "--model", str(MODEL), "--split", str(split),
                          "--train-split", str(split), "--merge-touching", "pit"],
                         capture_output=True, text=True, check=True, cwd=REPO)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    (merged,) = [r for r in rows if "touching_boxes_merged_ap50" in r]
    assert merged["class"] == "pit" and merged["merged_boxes"] <= merged["boxes"]
    rows.remove(merged)
    ap_rows = {r["class"]: r for r in rows if "ap50" in r}
    assert set(ap_rows) == {"scratch", "pit"}
    for r in ap_rows.values():
        assert r["ap30"] >= r["ap50"] >= r["ap70"] and r["ap50"] > 0  # a looser match can only find more
    fits = [r for r in rows if "best_iou" in r]
    assert len(fits) == 8 and sum(r["boxes"] for r in fits if r["class"] == "scratch") == 3
    assert [r["training_boxes"] for r in rows if "training_boxes" in r] == [{"original": 3, "expanded_copy": 0}] * 2
