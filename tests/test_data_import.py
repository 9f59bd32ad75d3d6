"""Importers (VOC, COCO, LabelMe) and the class map, on generated files and on NEU-DET."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from detector.data.annotations import AnnotatedImage, Box
from detector.data.classmap import ClassMap, parse_class_map
from detector.data.coco import load_coco, write_coco
from detector.data.labelme import load_labelme_dir
from detector.data.voc import load_voc_dir, write_voc_xml

NEU_DET = Path(__file__).resolve().parents[2] / "shared/datasets/neu-det"


def make_image(path: Path, width: int = 64, height: int = 48, seed: int = 0, colour: bool = True) -> Path:
    """A small noisy picture; colour=True stores grey content as 3 channels, like NEU-DET."""
    grey = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR) if colour else grey)
    return path


def voc_xml(filename: str, width: int, height: int, objects: list[tuple]) -> str:
    """objects: (name_text, xmin, ymin, xmax, ymax, difficult)."""
    parts = [
        f"<annotation><folder>x</folder><filename>{filename}</filename>",
        f"<size><width>{width}</width><height>{height}</height><depth>1</depth></size>",
    ]
    for name, xmin, ymin, xmax, ymax, difficult in objects:
        parts.append(
            f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>"


def write_xml(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# --- class map ---------------------------------------------------------------


def test_parse_class_map_reads_pairs_and_blank_means_none():
    cm = parse_class_map(" scratches = scratch , pitted_surface=pit, crazing=pit,")
    assert cm.mapping == {"scratches": "scratch", "pitted_surface": "pit", "crazing": "pit"}
    assert cm.target_classes() == ["scratch", "pit"]
    assert not cm.keep_unmapped
    assert parse_class_map(None) is None
    assert parse_class_map("   ") is None
    assert parse_class_map("a=b", keep_unmapped=True).keep_unmapped


@pytest.mark.parametrize("text", ["scratches", "a=b=c", "=pit", "scratches=", "a=b,a=c", ",,"])
def test_parse_class_map_rejects_malformed_text(text):
    with pytest.raises(ValueError):
        parse_class_map(text)


def test_class_map_drops_unmapped_boxes_but_keeps_images():
    images = [
        AnnotatedImage(Path("a.jpg"), 10, 10, [Box("scratches", 0, 0, 5, 5), Box("crazing", 1, 1, 4, 4)]),
        AnnotatedImage(Path("b.jpg"), 10, 10, [Box("crazing", 0, 0, 5, 5, difficult=True)]),
    ]
    mapped = parse_class_map("scratches=scratch").apply(images)
    assert [im.name for im in mapped] == ["a.jpg", "b.jpg"]
    assert mapped[0].boxes == [Box("scratch", 0, 0, 5, 5)]
    assert mapped[1].boxes == []  # now a negative example
    kept = ClassMap({"scratches": "scratch"}, keep_unmapped=True).apply(images)
    assert [b.label for b in kept[0].boxes] == ["scratch", "crazing"]
    assert kept[1].boxes == [Box("crazing", 0, 0, 5, 5, difficult=True)]
    assert images[0].boxes[0].label == "scratches"  # input untouched


# --- VOC -----------------------------------------------------------------------


def test_voc_handles_neu_det_quirks(tmp_path, caplog):
    make_image(tmp_path / "images/scratches_1.jpg", 200, 200)
    make_image(tmp_path / "images/patches_2.jpg", 200, 200, seed=1)
    # <filename> without .jpg, names padded with whitespace/newlines, several classes,
    # a difficult box, a box past the edge and a degenerate one.
    write_xml(tmp_path / "annotations/scratches_1.xml", voc_xml("scratches_1", 200, 200, [
        ("  scratches\n", 1, 1, 10, 20, 0),
        ("pitted_surface ", 50, 60, 205, 80, 1),
        ("scratches", 90, 90, 80, 120, 0),
    ]))
    write_xml(tmp_path / "annotations/patches_2.xml", voc_xml("wrong_name.jpg", 200, 200, [
        ("patches", 100, 100, 100, 100, 0),
    ]))
    with caplog.at_level(logging.WARNING):
        images = load_voc_dir(tmp_path)
    assert [im.name for im in images] == ["patches_2.jpg", "scratches_1.jpg"]
    scratches = images[1]
    assert (scratches.width, scratches.height) == (200, 200)
    assert scratches.boxes == [
        Box("scratches", 0, 0, 10, 20),  # 1-based inclusive -> continuous
        Box("pitted_surface", 49, 59, 200, 80, difficult=True),  # clipped to the image
    ]
    assert "degenerate" in caplog.text
    assert images[0].boxes == [Box("patches", 99, 99, 100, 100)]  # a one-pixel box is fine


def test_voc_accepts_jpegimages_layout_other_extensions_and_missing_size(tmp_path, caplog):
    make_image(tmp_path / "JPEGImages/part_a.PNG", 40, 30, colour=False)
    make_image(tmp_path / "JPEGImages/part_b.bmp", 40, 30)
    write_xml(tmp_path / "Annotations/part_a.xml", voc_xml("part_a.png", 0, 0, [("pit", 2, 3, 10, 12, 0)]))
    write_xml(tmp_path / "Annotations/part_b.xml", voc_xml("part_b.bmp", 40, 30, []))
    write_xml(tmp_path / "Annotations/part_c.xml", voc_xml("part_c.jpg", 40, 30, []))  # no image
    with caplog.at_level(logging.WARNING):
        images = load_voc_dir(tmp_path)
    assert [im.name for im in images] == ["part_a.PNG", "part_b.bmp"]
    assert (images[0].width, images[0].height) == (40, 30)  # read from the picture
    assert images[0].boxes == [Box("pit", 1, 2, 10, 12)]
    assert images[1].boxes == []
    assert "part_c" in caplog.text


def test_voc_applies_class_map_and_reports_bad_folders(tmp_path):
    make_image(tmp_path / "images/a.jpg")
    write_xml(tmp_path / "annotations/a.xml", voc_xml("a.jpg", 64, 48, [
        ("scratches", 1, 1, 5, 5, 0), ("inclusion", 1, 1, 5, 5, 0)]))
    images = load_voc_dir(tmp_path, parse_class_map("scratches=scratch"))
    assert images[0].boxes == [Box("scratch", 0, 0, 5, 5)]
    with pytest.raises(FileNotFoundError):
        load_voc_dir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        load_voc_dir(tmp_path / "empty")


def test_write_voc_xml_round_trips(tmp_path):
    image = AnnotatedImage(make_image(tmp_path / "images/x.jpg"), 64, 48, [
        Box("scratch", 0, 0, 10, 20), Box("pit", 5, 6, 64, 48, difficult=True)])
    write_voc_xml(image, tmp_path / "annotations/x.xml")
    text = (tmp_path / "annotations/x.xml").read_text()
    assert "<xmin>1</xmin>" in text and "<xmax>64</xmax>" in text
    (loaded,) = load_voc_dir(tmp_path)
    assert loaded.boxes == image.boxes
    assert (loaded.width, loaded.height) == (64, 48)


# --- COCO ----------------------------------------------------------------------


def test_coco_round_trip_and_mmdetection_fields(tmp_path):
    images = [
        AnnotatedImage(make_image(tmp_path / "images/a.png"), 64, 48, [
            Box("scratch", 1, 2, 11.5, 22), Box("pit", 0, 0, 64, 48, difficult=True)]),
        AnnotatedImage(make_image(tmp_path / "images/sub/b.png", seed=2), 64, 48, []),
    ]
    data = write_coco(images, ["scratch", "pit"], tmp_path / "annotations.json")
    assert [c["id"] for c in data["categories"]] == [1, 2]
    assert [c["name"] for c in data["categories"]] == ["scratch", "pit"]
    assert [im["file_name"] for im in data["images"]] == ["a.png", "sub/b.png"]
    assert [im["id"] for im in data["images"]] == [1, 2]
    first, second = data["annotations"]
    assert first == {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10.5, 20], "area": 210,
                     "iscrowd": 0}
    assert second["iscrowd"] == 1 and second["category_id"] == 2
    loaded = load_coco(tmp_path / "annotations.json")
    assert [im.image_path for im in loaded] == [im.image_path for im in images]
    assert [im.boxes for im in loaded] == [im.boxes for im in images]

    coco_api = pytest.importorskip("pycocotools.coco")
    api = coco_api.COCO(str(tmp_path / "annotations.json"))
    assert len(api.getAnnIds(imgIds=[1])) == 2 and api.getAnnIds(imgIds=[2]) == []

    with pytest.raises(ValueError):
        write_coco(images, ["scratch"], tmp_path / "bad.json")  # 'pit' has no category


def test_load_coco_external_file(tmp_path, caplog):
    make_image(tmp_path / "pics/a.jpg", 50, 40)
    make_image(tmp_path / "pics/b.jpg", 50, 40, seed=3)
    (tmp_path / "ann.json").write_text(json.dumps({
        "images": [{"id": 7, "file_name": "a.jpg"}, {"id": 8, "file_name": "b.jpg", "width": 50, "height": 40},
                   {"id": 9, "file_name": "gone.jpg", "width": 50, "height": 40}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10.5, 5, 20, 10], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 4, "bbox": [40, 30, 20, 20], "iscrowd": 1},
            {"id": 3, "image_id": 8, "category_id": 4, "bbox": [1, 1, 2, 2]},
        ],
        "categories": [{"id": 3, "name": "scratches"}, {"id": 4, "name": " pitted_surface"}],
    }))
    with caplog.at_level(logging.WARNING):
        images = load_coco(tmp_path / "ann.json", tmp_path / "pics", parse_class_map("pitted_surface=pit"))
    assert "gone.jpg" in caplog.text
    assert [im.name for im in images] == ["a.jpg", "b.jpg"]
    assert (images[0].width, images[0].height) == (50, 40)  # read from the picture
    assert images[0].boxes == [Box("pit", 40, 30, 50, 40, difficult=True)]  # clipped, crowd -> difficult
    assert images[1].boxes == [Box("pit", 1, 1, 3, 3)]
    with pytest.raises(ValueError):
        (tmp_path / "broken.json").write_text("{not json")
        load_coco(tmp_path / "broken.json")


# --- LabelMe -------------------------------------------------------------------


def test_labelme_import(tmp_path, caplog):
    make_image(tmp_path / "shots/imgs/a.jpg", 80, 60)
    make_image(tmp_path / "shots/b.png", 80, 60, seed=4)
    (tmp_path / "shots/a.json").write_text(json.dumps({
        "imagePath": "imgs\\a.jpg", "imageHeight": 60, "imageWidth": 80, "imageData": None,
        "shapes": [
            {"label": " scratch ", "shape_type": "rectangle", "points": [[30, 40], [10, 5]]},
            {"label": "pit", "shape_type": "polygon", "points": [[50, 10], [60, 30], [55, 50], [45, 20]],
             "flags": {"difficult": True}},
            {"label": "pit", "shape_type": "circle", "points": [[70, 50], [70, 55]]},
            {"label": "pit", "shape_type": "point", "points": [[5, 5]]},
            {"label": "scratch", "shape_type": "line", "points": [[0, 0], [9, 9]]},
        ],
    }))
    (tmp_path / "shots/b.json").write_text(json.dumps({"imagePath": "b.png", "shapes": []}))
    (tmp_path / "shots/notes.json").write_text(json.dumps({"images": []}))  # not LabelMe: ignored
    with caplog.at_level(logging.WARNING):
        images = load_labelme_dir(tmp_path / "shots")
    assert "point" in caplog.text and "line" in caplog.text
    assert [im.name for im in images] == ["a.jpg", "b.png"]
    assert images[0].boxes == [
        Box("scratch", 10, 5, 30, 40),
        Box("pit", 45, 10, 60, 50, difficult=True),
        Box("pit", 65, 45, 75, 55),
    ]
    assert (images[1].width, images[1].height, images[1].boxes) == (80, 60, [])
    mapped = load_labelme_dir(tmp_path / "shots", parse_class_map("pit=defect"))
    assert [b.label for b in mapped[0].boxes] == ["defect", "defect"]


# --- the real NEU-DET share ------------------------------------------------------


@pytest.mark.skipif(not NEU_DET.is_dir(), reason="NEU-DET share not present")
def test_neu_det_imports_completely():
    tags = Counter()
    difficult = 0
    for xml in (NEU_DET / "annotations").glob("*.xml"):
        text = xml.read_text()
        tags.update(name.strip() for name in re.findall(r"<name>(.*?)</name>", text, re.S))
        difficult += len(re.findall(r"<difficult>\s*1\s*</difficult>", text))
    everything = load_voc_dir(NEU_DET)
    assert len(everything) == 1440
    assert Counter(b.label for im in everything for b in im.boxes) == tags
    assert sum(b.difficult for im in everything for b in im.boxes) == difficult
    assert all((im.width, im.height) == (200, 200) and im.image_path.is_file() for im in everything)

    mapped = load_voc_dir(NEU_DET, parse_class_map("scratches=scratch,pitted_surface=pit"))
    assert len(mapped) == 1440
    counts = Counter(b.label for im in mapped for b in im.boxes)
    assert counts == {"scratch": tags["scratches"], "pit": tags["pitted_surface"]}
    assert counts == {"scratch": 440, "pit": 353}
