"""`build_dataset` and the `dataset` command end to end on generated data, plus NEU-DET's split."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from detector.cli.dataset import register
from detector.data.annotations import AnnotatedImage, Box
from detector.data.coco import load_coco, write_coco
from detector.data.pipeline import build_dataset, detect_format
from detector.data.split import duplicate_groups, split_train_val
from detector.data.voc import load_voc_dir, write_voc_xml

NEU_DET = Path(__file__).resolve().parents[2] / "shared/datasets/neu-det"
CLASS_MAP = "scratches=scratch,pitted_surface=pit"


def make_voc_source(root: Path) -> Path:
    """16 colour JPEGs 64x64 in NEU-DET's layout: scratches, pits, other defects, a duplicate pair."""
    rng = np.random.default_rng(0)
    plan = [("scratches", 6), ("pitted_surface", 4), ("crazing", 5)]
    for label, count in plan:
        for k in range(count):
            grey = rng.integers(60, 200, (64, 64), dtype=np.uint8)
            path = root / "images" / f"{label}_{k}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
            boxes = [Box(label, 10 + k, 12, 30 + k, 50)]
            if label == "scratches" and k == 0:
                boxes.append(Box("pitted_surface", 40, 40, 60, 60, difficult=True))
            write_voc_xml(AnnotatedImage(path, 64, 64, boxes), root / "annotations" / f"{label}_{k}.xml")
    # crazing_5 is crazing_0's picture again, annotated differently
    shutil.copy(root / "images/crazing_0.jpg", root / "images/crazing_5.jpg")
    write_voc_xml(AnnotatedImage(root / "images/crazing_5.jpg", 64, 64, [Box("crazing", 1, 1, 9, 9)]),
                  root / "annotations/crazing_5.xml")
    return root


@pytest.fixture()
def voc_source(tmp_path) -> Path:
    return make_voc_source(tmp_path / "source")


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_build_dataset_writes_coco_splits_and_summary(voc_source, tmp_path):
    from detector.data.classmap import parse_class_map

    out = tmp_path / "out"
    summary = build_dataset([voc_source], out, class_map=parse_class_map(CLASS_MAP), val_fraction=0.25,
                            seed=3, expand_variants=2)
    assert summary["classes"] == ["scratch", "pit"]
    assert summary["sources"][0]["format"] == "voc" and summary["sources"][0]["images"] == 16
    assert summary["duplicate_groups"] == [["crazing_0.jpg", "crazing_5.jpg"]]
    assert json.loads((out / "dataset.json").read_text()) == summary
    n_train, n_val = summary["source_images"]["train"], summary["source_images"]["val"]
    assert n_train + n_val == 16
    # val: the original pictures only; train: originals plus two variants each
    train = load_coco(out / "train/annotations.json")
    val = load_coco(out / "val/annotations.json")
    assert len(val) == n_val and not any("_aug" in im.name for im in val)
    assert len(train) == 3 * n_train
    for split, images in (("train", train), ("val", val)):
        assert summary["splits"][split]["images"] == len(images)
        assert {p.name for p in (out / split / "images").iterdir()} == {im.name for im in images}
        for im in images:
            assert cv2.imread(str(im.image_path), cv2.IMREAD_UNCHANGED).ndim == 2
            assert {b.label for b in im.boxes} <= {"scratch", "pit"}
    crazing = [im for im in train + val if im.name.startswith("crazing_") and "_aug" not in im.name]
    assert len(crazing) == 6 and all(not im.boxes for im in crazing)  # unmapped: negatives now
    val_names = {im.name for im in val}
    assert ("crazing_0.png" in val_names) == ("crazing_5.png" in val_names)
    originals = [im for im in train + val if "_aug" not in im.name]
    assert sum(len(im.boxes) for im in originals) == 6 + 4 + 1
    assert sum(b.difficult for im in originals for b in im.boxes) == 1
    # stratified: five pictures hold a pit (rarest class), five more only scratches: 0.25 -> 1 each
    assert sum(1 for im in val if "pit" in im.labels()) == 1
    assert sum(1 for im in val if im.labels() == {"scratch"}) == 1

    coco_api = pytest.importorskip("pycocotools.coco")
    api = coco_api.COCO(str(out / "train/annotations.json"))
    assert [c["name"] for c in api.loadCats(api.getCatIds())] == ["scratch", "pit"]


def test_build_dataset_is_reproducible_and_guards_existing_output(voc_source, tmp_path):
    options = dict(val_fraction=0.25, seed=1, expand_variants=1)
    build_dataset([voc_source], tmp_path / "a", **options)
    build_dataset([voc_source], tmp_path / "b", **options)
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    with pytest.raises(FileExistsError):
        build_dataset([voc_source], tmp_path / "a", **options)
    build_dataset([voc_source], tmp_path / "a", **{**options, "seed": 2}, overwrite=True)
    assert tree_bytes(tmp_path / "a") != tree_bytes(tmp_path / "b")


def test_build_dataset_roi_negatives_and_other_formats(voc_source, tmp_path):
    from detector.data.classmap import parse_class_map

    cm = parse_class_map(CLASS_MAP)
    summary = build_dataset([voc_source], tmp_path / "roi", class_map=cm, roi=(8, 8, 48, 48),
                            negatives_fraction=0.0, val_fraction=0.0)
    assert summary["negatives"] == {"found": 6, "kept_in_train": 0, "in_val": 0}
    images = load_coco(tmp_path / "roi/train/annotations.json")
    assert len(images) == 10 and all(im.boxes for im in images)
    assert {(im.width, im.height) for im in images} == {(48, 48)}
    with pytest.raises(ValueError, match="ROI"):
        build_dataset([voc_source], tmp_path / "badroi", roi=(40, 40, 48, 48))

    # a COCO file and a LabelMe folder are recognised and load like the VOC source
    voc_images = load_voc_dir(voc_source)
    write_coco(voc_images, ["crazing", "pitted_surface", "scratches"], voc_source / "coco.json",
               images_dir=voc_source / "images")
    labelme = tmp_path / "labelme"
    labelme.mkdir()
    for im in voc_images[-3:]:  # scratches_3..5, names that clash with the COCO source's
        shutil.copy(im.image_path, labelme / im.name)
        shapes = [{"label": b.label, "shape_type": "rectangle", "points": [[b.x1, b.y1], [b.x2, b.y2]]}
                  for b in im.boxes]
        (labelme / f"{im.image_path.stem}.json").write_text(json.dumps({"imagePath": im.name, "shapes": shapes}))
    assert detect_format(voc_source) == "voc"
    assert detect_format(voc_source / "coco.json") == "coco"
    assert detect_format(labelme) == "labelme"
    (tmp_path / "coco_src").mkdir()
    shutil.copy(voc_source / "coco.json", tmp_path / "coco_src/annotations.json")
    shutil.copytree(voc_source / "images", tmp_path / "coco_src/images")
    summary = build_dataset([tmp_path / "coco_src", labelme], tmp_path / "mixed", class_map=cm, val_fraction=0.0)
    assert [s["format"] for s in summary["sources"]] == ["coco", "labelme"]
    assert summary["splits"]["train"]["images"] == 19  # 16 + 3; same names made unique
    assert summary["splits"]["train"]["boxes"] == {"scratch": 6 + 3, "pit": 4 + 1}
    assert "scratches_3_2.png" in {p.name for p in (tmp_path / "mixed/train/images").iterdir()}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detector")
    register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_end_to_end(voc_source, tmp_path, capsys):
    parser = make_parser()
    args = parser.parse_args(["dataset", "--source", str(voc_source), "--out", str(tmp_path / "out"),
                              "--class-map", CLASS_MAP, "--expand", "1", "--max-rotation", "5",
                              "--roi", "0,0,60,60", "--seed", "7", "--val-fraction", "0.25"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "scratch" in printed and "pit" in printed and "train" in printed and "val" in printed
    summary = json.loads((tmp_path / "out/dataset.json").read_text())
    assert summary["options"]["seed"] == 7 and summary["options"]["roi"] == [0, 0, 60, 60]
    assert summary["options"]["expand_params"]["max_rotation"] == 5
    assert summary["class_map"] == CLASS_MAP


def test_cli_reports_bad_input_without_traceback(voc_source, tmp_path, capsys):
    parser = make_parser()
    for argv in (["--source", str(tmp_path / "nowhere")],
                 ["--source", str(voc_source), "--class-map", "scratches"],
                 ["--source", str(voc_source), "--roi", "100,100,10,10"]):
        args = parser.parse_args(["dataset", *argv, "--out", str(tmp_path / "out")])
        assert args.func(args) != 0
        err = capsys.readouterr().err
        assert err.startswith("error:") and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["dataset", "--source", "x", "--out", "y", "--roi", "1,2,3"])
    assert exit_info.value.code == 2
    assert "x,y,w,h" in capsys.readouterr().err


def test_cli_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_parser().parse_args(["dataset", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ["--format", "--source", "--out", "--class-map", "--keep-unmapped", "--roi",
                   "--val-fraction", "--seed", "--expand", "--max-rotation", "--min-scale", "--max-scale",
                   "--min-crop", "--brightness", "--contrast", "--negatives-fraction", "--paste"]:
        assert option in text


@pytest.mark.skipif(not NEU_DET.is_dir(), reason="NEU-DET share not present")
def test_neu_det_split_keeps_the_duplicate_pair_together():
    from detector.data.classmap import parse_class_map

    images = load_voc_dir(NEU_DET, parse_class_map(CLASS_MAP))
    groups = duplicate_groups(images)
    assert [sorted(images[i].name for i in g) for g in groups if len(g) > 1] == [
        ["patches_101.jpg", "patches_105.jpg"]]
    for seed in (0, 1, 2):
        train, val = split_train_val(images, 0.2, seed, groups=groups)
        val_names = {im.name for im in val}
        assert ("patches_101.jpg" in val_names) == ("patches_105.jpg" in val_names)
        assert len(val) == 288
        # 240 scratch and 241 pit pictures (one holds both): about 48 of each in val
        for label in ("scratch", "pit"):
            assert 48 <= sum(1 for im in val if label in im.labels()) <= 49
