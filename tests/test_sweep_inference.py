"""benchmarks/sweep_inference.py measures what the station would: at a model's own settings it agrees with `evaluate_model`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from detector import Detector
from detector.data.classmap import parse_class_map
from detector.data.coco import write_coco
from detector.data.voc import load_voc_dir
from detector.evaluate import evaluate_model
from synthetic import make_voc_dataset

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "resources/models/centernet_neu_scratch_pit.onnx"


def test_the_sweep_at_the_model_s_own_settings_matches_evaluate_model(tmp_path):
    split = make_voc_dataset(tmp_path / "split", n_images=12, size=200)
    images = load_voc_dir(split, parse_class_map("scratches=scratch,pitted_surface=pit"))
    write_coco(images, ["scratch", "pit"], split / "annotations.json")
    detector = Detector(MODEL, threads=2)
    assert (detector.metadata.input_size, detector.flip_test, detector.nms_iou) == (256, True, 0.5)

    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/sweep_inference.py"), "--model", str(MODEL), "--split", str(split),
         "--sizes", "256", "--nms", "0.5,off", "--flip", "on"],
        capture_output=True, text=True, check=True, cwd=REPO)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["size"], r["flip"], r["nms_iou"]) for r in rows] == [(256, True, 0.5), (256, True, None)]

    expected = evaluate_model(detector, images)
    own = rows[0]
    assert expected.classes["scratch"].ap50 > 0 and expected.classes["pit"].ap50 > 0  # it finds some of each
    assert own["ap50_scratch"] == round(expected.classes["scratch"].ap50, 3)
    assert own["ap50_pit"] == round(expected.classes["pit"].ap50, 3)
    assert own["map50"] == round(expected.map50, 3)
