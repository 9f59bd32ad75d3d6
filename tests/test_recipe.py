"""`python -m detector train --recipe`: the whole schedule in one command, on generated pictures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detector import Detector
from detector.cli import main
from detector.model_file import load_model_file
from detector.recipe import RECIPE_DIR, REPO_ROOT, RecipeError, load_recipe
from synthetic import make_voc_dataset

TINY_RECIPE = """
name = "tiny_scratch_pit"
[dataset]
class-map = "scratches=scratch,pitted_surface=pit"
val-fraction = 0.34
expand = 1
[model]
keep = "last"
nms-iou = 0.5
threshold = 0.2
[[stage]]
config = "centernet_mobilenetv2_ellipse"
epochs = 2
input-size = 64
batch-size = 4
precision = "bf16"
val-interval = 2
[[stage]]
config = "centernet_mobilenetv2_ellipse"
epochs = 1
input-size = 96
batch-size = 4
lr = 3e-4
ema = true
"""


def test_shipped_recipes_load_and_name_real_options():
    names = sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))
    assert "neu_scratch_pit" in names
    for name in names:
        recipe = load_recipe(name)
        assert recipe.stages and all(s["epochs"] >= 1 for s in recipe.stages)
        assert recipe.source == REPO_ROOT / "../shared/datasets/neu-det"
    station = load_recipe("neu_scratch_pit")
    assert station.dataset["class-map"] == "scratches=scratch,pitted_surface=pit" and station.model["keep"] == "last"
    # The shipped model's recipe: the same with a multi-scale 256-px stage and its own threshold.
    shipped = load_recipe("neu_scratch_pit_ms")
    assert shipped.dataset == station.dataset and shipped.model == {**station.model, "threshold": 0.15}
    assert [{k: v for k, v in s.items() if k != "multi-scale"} for s in shipped.stages] == list(station.stages)
    assert shipped.stages[-1]["multi-scale"] == "224,288"


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    make_voc_dataset(root / "src", n_images=9, size=96)
    (root / "tiny.toml").write_text(TINY_RECIPE)
    argv = ["train", "--recipe", str(root / "tiny.toml"), "--source", str(root / "src"), "--work-dir", str(root / "work"),
            "--threads", "2", "--device", "cpu"]
    assert main(argv) == 0
    return root, argv


def test_recipe_builds_the_data_set_trains_every_stage_and_records_its_cost(recipe_run):
    root, _ = recipe_run
    work = root / "work"
    summary = json.loads((work / "data" / "dataset.json").read_text())
    assert summary["options"]["expand_variants"] == 1 and summary["class_map"] == "scratches=scratch,pitted_surface=pit"
    model = load_model_file(work / "model.pth")
    training = model.metadata.training
    assert model.metadata.name == "tiny_scratch_pit" and model.metadata.input_size == 96
    # [model] threshold: the file's default, and the final validation counts PASS/FAIL at it.
    assert model.metadata.default_threshold == 0.2 and training["validation"]["verdicts"][0]["threshold"] == 0.2
    (stage1,) = training["lineage"]  # stage 2 started from stage 1's model file
    assert stage1["epochs_run"] == 2 and "--precision bf16" in stage1["command"]
    assert training["kept"] == "last" and training["best_checkpoint"] == "epoch_1.pth"
    record = training["recipe"]
    steps = json.loads((work / "recipe.json").read_text())["steps"]
    assert list(steps) == ["startup", "data", "stage1", "stage2"] and steps["stage1"]["cpu_s"] > 0 < steps["stage2"]["cpu_s"]
    assert record["cpu_s"] == pytest.approx(sum(s["cpu_s"] for s in steps.values()), abs=0.2)
    curve = record["curve"]
    assert [(r["stage"], r["epoch"]) for r in curve] == [(1, 2), (2, 3)]  # stage 1 validates every 2nd epoch
    assert all(a["cpu_s"] < b["cpu_s"] for a, b in zip(curve, curve[1:])) and curve[-1]["cpu_s"] < record["cpu_s"]
    assert {"station/ap50_scratch", "station/ap50_pit", "station/mAP50"} <= set(curve[0])
    card = (work / "model.md").read_text()
    assert "## Recipe (the whole schedule in one command)" in card and "| 2 | 3 |" in card
    assert "nothing was picked on this split" in card
    assert Detector(work / "model.pth", device="cpu").detect(root / "src" / "images" / "scratches_0.jpg", threshold=0.0)


def test_an_ema_stage_ships_the_averaged_weights(recipe_run):
    import torch

    root, _ = recipe_run
    work = root / "work"
    checkpoint = torch.load(work / "stage2" / "epoch_1.pth", map_location="cpu", weights_only=False)
    averaged, trained = checkpoint["state_dict"], checkpoint["ema_state_dict"]  # MMEngine swaps them on saving
    shipped = load_model_file(work / "model.pth").state_dict
    key = "bbox_head.heatmap_head.2.weight"
    assert torch.equal(shipped[key], averaged[key]) and not torch.equal(shipped[key], trained[f"module.{key}"])
    assert load_model_file(work / "model.pth").metadata.training["ema"] is True
    assert "weights averaged (EMA)" in (work / "stage2" / "model.md").read_text()


def test_resume_skips_finished_steps_and_resumes_an_interrupted_stage(recipe_run):
    root, argv = recipe_run
    work = root / "work"
    stage1 = (work / "stage1" / "model.pth").stat().st_mtime_ns
    # Stage 2 "interrupted" after its checkpoint: no model file yet.
    (work / "stage2" / "model.pth").unlink()
    assert main([*argv, "--resume"]) == 0
    assert (work / "stage1" / "model.pth").stat().st_mtime_ns == stage1
    logs = sorted((work / "stage2").glob("*/*.log"))
    assert "resumed epoch: 1" in logs[-1].read_text()
    assert load_model_file(work / "model.pth").metadata.training["recipe"]["curve"][-1]["epoch"] == 3


@pytest.mark.parametrize(("text", "message"), [
    ('[[stage]]\nconfig = "centernet_mobilenetv2"\nepochs = 1\nlearning-rate = 1', "'learning-rate': not an option"),
    ('[[stage]]\nepochs = 1\nwork-dir = "x"', "'work-dir': set by the recipe runner"),
    ('[dataset]\nexpand = 1', "no [[stage]]"),
    ('[[stage]]\nepochs = 0', "'epochs' must be a whole number"),
    ('[[stage]]\nepochs = 2\nflip-test = true', "belong in [model]"),
    ('[[stage]]\nepochs = 2\nconfig = ["a"]', "must be a number, text or true/false"),
    ('[[stage]\nepochs = 2', "not valid TOML"),
])
def test_bad_recipes_are_refused_with_the_reason(tmp_path, capsys, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=message.replace("[", r"\[")):
        load_recipe(str(path))
    make_voc_dataset(tmp_path / "src", n_images=3, size=64)
    assert main(["train", "--recipe", str(path), "--source", str(tmp_path / "src"), "--work-dir", str(tmp_path / "w")]) == 2
    assert message in capsys.readouterr().err


def test_recipe_errors_name_the_problem(tmp_path, capsys):
    assert main(["train", "--recipe", "no_such_recipe", "--work-dir", str(tmp_path)]) == 2
    assert "no recipe 'no_such_recipe'; known: " in capsys.readouterr().err
    assert main(["train", "--recipe", "neu_scratch_pit", "--source", str(tmp_path / "missing"), "--work-dir", str(tmp_path)]) == 2
    assert "pictures not found" in capsys.readouterr().err
    assert main(["train", "--work-dir", str(tmp_path)]) == 2
    assert "give --data" in capsys.readouterr().err


def test_station_metric_applies_the_station_nms(tmp_path):
    """Per-epoch AP50: a duplicate box on a found defect is a false positive without NMS, gone with it."""
    import torch

    from detector.data.annotations import AnnotatedImage, Box
    from detector.data.coco import write_coco
    from detector.mm_modules import StationAP50Metric

    images = []
    for i in range(2):
        path = tmp_path / "images" / f"p{i}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"")
        images.append(AnnotatedImage(path, 100, 100, [Box("pit", 10, 10, 50, 50)]))
    write_coco(images, ["scratch", "pit"], tmp_path / "annotations.json")

    def samples(i: int, boxes: list, scores: list) -> dict:
        return {"img_path": str(tmp_path / "images" / f"p{i}.png"), "pred_instances": {
            "bboxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores),
            "labels": torch.tensor([1] * len(boxes))}}

    # Image 0: the pit and a near-duplicate scoring above image 1's pit.
    preds = [samples(0, [[10, 10, 50, 50], [12, 12, 52, 52]], [0.9, 0.8]), samples(1, [[10, 10, 50, 50]], [0.7])]
    results = {}
    for nms in (0.5, None):
        metric = StationAP50Metric(ann_file=str(tmp_path / "annotations.json"), nms_iou=nms)
        metric.dataset_meta = {"classes": ("scratch", "pit")}
        metric.process({}, preds)
        results[nms] = metric.compute_metrics(metric.results)
    assert results[0.5]["ap50_pit"] == pytest.approx(1.0)
    assert results[None]["ap50_pit"] == pytest.approx(0.5 + 0.5 * 2 / 3)  # the duplicate ranks before the second pit
    assert np.isnan(results[0.5]["ap50_scratch"]) and results[0.5]["mAP50"] == pytest.approx(1.0)
