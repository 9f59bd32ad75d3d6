"""The six-class NEU-DET model: trained from the data set's own classes, and the station working with it.

The station tests drive its public pieces (inspection, verdict rules, overlay,
reports, gallery filters, the window) with the shipped six-class model file,
`resources/models/centernet_neu_six_class.onnx`.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import cv2
import numpy as np
import pytest
from window_fixtures import has_colour, inspect_and_wait, wait_for_frame

from app.inspection import Inspector
from app.overlay import FALLBACK_COLOUR, contrast_ratio, hex_to_bgr
from app.recipes import Recipe
from app.reports import daily_summary, export_csv, per_inspection
from app.store import GalleryFilter, InspectionRecord, InspectionStore
from app.verdict import FAIL, PASS, ClassRule, VerdictRule, judge
from detector import Detection, Detector
from detector.api import REPO_ROOT
from detector.cli import main
from detector.data.annotations import AnnotatedImage, Box
from detector.data.voc import write_voc_xml
from detector.model_file import DEFAULT_COLOURS, load_model_file
from detector.regions import Roi
from synthetic import camera_frame, steel_texture

SIX_MODEL = REPO_ROOT / "resources" / "models" / "centernet_neu_six_class.onnx"
SIX_CLASSES = ("scratch", "pit", "crazing", "inclusion", "patches", "rolled-in_scale")
NEU_NAMES = ("scratches", "pitted_surface", "crazing", "inclusion", "patches", "rolled-in_scale")
T0 = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc)


# -- training: the model learns the data set's classes -------------------------------------------


def draw_defect(image: np.ndarray, kind: str, rng: np.random.Generator) -> Box:
    """One crude defect of a NEU class on a steel-like picture (enough to make six labelled classes)."""
    s = image.shape[0]
    x, y = (int(v) for v in rng.integers(s // 5, s * 3 // 5, 2))
    w, h = s // 4, s // 4
    if kind == "scratches":
        cv2.line(image, (x, y), (x + 3, y + 2 * h), 215, 2)
        return Box(kind, x - 2, y - 2, x + 6, y + 2 * h + 2)
    if kind == "pitted_surface":
        for _ in range(8):
            cv2.circle(image, (x + int(rng.integers(0, w)), y + int(rng.integers(0, h))), 1, 40, -1)
    elif kind == "crazing":
        for k in range(4):
            cv2.line(image, (x, y + k * h // 4), (x + w, y + (k + 1) * h // 4), 90, 1)
    elif kind == "inclusion":
        cv2.ellipse(image, (x + w // 2, y + h // 2), (w // 2, h // 6), 30, 0, 360, 50, -1)
    elif kind == "patches":
        cv2.rectangle(image, (x, y), (x + w, y + h), 60, -1)
    else:  # rolled-in_scale
        for k in range(5):
            cv2.circle(image, (x + k * w // 5, y + (k % 2) * h // 2), 3, 190, -1)
    return Box(kind, x, y, x + w, y + h)


def make_six_class_voc(root, per_class: int = 2, size: int = 96):
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for kind in NEU_NAMES:
        for i in range(per_class):
            image = steel_texture(size, rng)
            box = draw_defect(image, kind, rng)
            path = root / "images" / f"{kind}_{i}.jpg"
            cv2.imwrite(str(path), image)
            write_voc_xml(AnnotatedImage(path, size, size, [box]), root / "annotations" / f"{kind}_{i}.xml")
    return root


def test_training_takes_the_classes_of_the_data_set_with_a_colour_each(tmp_path):
    make_six_class_voc(tmp_path / "src")
    assert main(["dataset", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "data"), "--val-fraction", "0.5",
                 "--class-map", "scratches=scratch,pitted_surface=pit", "--keep-unmapped"]) == 0
    assert main(["train", "--data", str(tmp_path / "data"), "--work-dir", str(tmp_path / "work"), "--epochs", "1",
                 "--input-size", "64", "--batch-size", "4", "--threads", "2", "--device", "cpu",
                 "--config", "centernet_mobilenetv2_ellipse"]) == 0
    model = load_model_file(tmp_path / "work" / "model.pth")
    meta = model.metadata
    assert meta.class_names == SIX_CLASSES  # mapped classes first, then the others sorted
    assert model.model_cfg["bbox_head"]["num_classes"] == 6
    assert model.state_dict["bbox_head.heatmap_head.2.weight"].shape[0] == 6
    assert set(meta.training["validation"]["classes"]) == set(SIX_CLASSES)
    colours = list(meta.colours.values())
    assert len(set(colours)) == 6 and FALLBACK_COLOUR not in colours
    assert meta.colours["scratch"] == DEFAULT_COLOURS["scratch"] and meta.colours["pit"] == DEFAULT_COLOURS["pit"]
    heat, _, _ = Detector(tmp_path / "work" / "model.pth", device="cpu")._backend.forward(np.zeros((1, 3, 64, 64), np.float32))
    assert heat.shape[1] == 6


# -- the station with the shipped six-class model ------------------------------------------------


@pytest.fixture(scope="module")
def six() -> Detector:
    return Detector(SIX_MODEL, device="cpu")


@pytest.fixture(scope="module")
def detector(six) -> Detector:
    """The station-window fixtures (make_window) run this model."""
    return six


def one_of_each(shift: float = 0.0) -> list[Detection]:
    """A detection of every class, side by side in a 640x160 frame, scores 0.9 .. 0.4."""
    return [Detection(c, 0.9 - 0.1 * i, (10 + 105 * i + shift, 30, 90 + 105 * i + shift, 130)) for i, c in enumerate(SIX_CLASSES)]


def test_six_class_model_files_agree_and_colours_are_distinct_and_legible(six):
    meta = six.metadata
    assert meta.class_names == SIX_CLASSES and not six.metadata.default_threshold > 0.5
    assert meta == Detector(SIX_MODEL.with_suffix(".pth"), device="cpu").metadata
    colours = [meta.colours[c] for c in SIX_CLASSES]
    assert len(set(colours)) == 6 and FALLBACK_COLOUR not in colours
    # The legend writes class names in black on the class colour.
    assert all(contrast_ratio(hex_to_bgr(c)[::-1], (0, 0, 0)) >= 4.0 for c in colours)
    assert SIX_MODEL.with_suffix(".md").is_file()


def test_rules_per_class_and_overlay_colours(six):
    dets = one_of_each()
    # crazing is tolerated below 200 px, inclusion needs a score of 0.95: neither fails here.
    rule = VerdictRule(classes={"crazing": ClassRule(0.0, 200.0), "inclusion": ClassRule(0.95, 0.0)})
    verdict = judge(dets, 0.3, rule)
    assert verdict.verdict == FAIL and [dets[i].label for i in verdict.failing] == ["scratch", "pit", "patches",
                                                                                    "rolled-in_scale"]
    assert judge(dets, 0.3, VerdictRule(classes={c: ClassRule(1.0, 0.0) for c in SIX_CLASSES})).verdict == PASS
    inspector = Inspector(six, None, "line 1")
    frame = np.full((160, 640, 3), 128, np.uint8)
    from app.overlay import draw_overlay

    drawn = draw_overlay(frame, dets, range(6), inspector.colours, failing=verdict.failing)
    rgb = drawn[:, :, ::-1]
    for c in SIX_CLASSES:
        want = np.array(hex_to_bgr(six.metadata.colours[c])[::-1])
        assert (np.abs(rgb.astype(int) - want).max(axis=2) <= 12).any(), c


def test_inspection_logs_six_class_detections_and_reports_have_a_column_per_class(six, tmp_path):
    store = InspectionStore(tmp_path / "data" / "inspections.sqlite")
    inspector = Inspector(six, store, "line 1")
    result = inspector.inspect(camera_frame(True, seed=3), Recipe("default"))
    assert result.inspection_id is not None and {d.label for d in result.detections} <= set(SIX_CLASSES)
    for i, c in enumerate(SIX_CLASSES):  # one failing defect of each class, an hour apart
        det = [Detection(c, 0.8, (5, 5, 60, 60))]
        store.record(InspectionRecord(
            station="line 1", source="test", frame_size=(640, 160), roi=Roi(0, 0, 640, 160), model_id=six.model_id,
            model_version=six.metadata.created, threshold=0.3, rule_json="{}", verdict=FAIL, detections=det,
            shown=[0], failing=[0], operator="ana", part_id=f"SN-{i}", created_at=T0 + timedelta(hours=i)))
    for c in SIX_CLASSES:
        assert store.gallery_count(GalleryFilter(label=c)) >= 1, c
    assert set(store.labels()) >= set(SIX_CLASSES)
    day = date(2026, 11, 2)
    table = daily_summary(store.db_path, day, day, tz=timezone.utc, classes=six.metadata.class_names)
    columns = dict(zip(table.header, table.rows[0]))
    assert all(columns[f"defects_{c}"] == 1 for c in SIX_CLASSES)
    assert all(f"failing_{c}" in per_inspection(store.db_path, day, day, tz=timezone.utc,
                                                classes=six.metadata.class_names).header for c in SIX_CLASSES)
    out = tmp_path / "daily.csv"
    export_csv(store.db_path, day, day, out, tz=timezone.utc, classes=six.metadata.class_names)
    header = next(csv.reader(out.open(encoding="utf-8-sig")))
    assert [h for h in header if h.startswith("defects_")] == [f"defects_{c}" for c in sorted(SIX_CLASSES)]
    store.close()


def test_window_shows_the_six_classes_in_their_colours_and_inspects(make_window, qtbot, tmp_path, six):
    folder = tmp_path / "parts"
    folder.mkdir()
    cv2.imwrite(str(folder / "part_000.png"), camera_frame(True, seed=1))
    window = make_window(source=str(folder))
    legend = window.legend.text()
    for c in SIX_CLASSES:
        assert f"background:{six.metadata.colours[c]}" in legend and f"&nbsp;{c}&nbsp;" in legend
    wait_for_frame(qtbot, window)
    result = inspect_and_wait(qtbot, window)
    assert result is not None and {d.label for d in result.detections} <= set(SIX_CLASSES)
    assert has_colour(window.view.image(), six.metadata.colours["scratch"]) or not result.verdict.shown


def test_six_class_model_on_held_out_neu_pictures(six, neu_det, tmp_path):
    """On its own validation split (never trained on): the recorded AP50s, and one class per picture named right."""
    from detector.data.classmap import parse_class_map
    from detector.data.coco import load_coco
    from detector.data.pipeline import build_dataset
    from detector.evaluate import evaluate_model

    training = six.metadata.training
    options = training["dataset"]["options"]
    build_dataset([neu_det], tmp_path, class_map=parse_class_map(training["dataset"]["class_map"], keep_unmapped=True),
                  val_fraction=options["val_fraction"], seed=options["seed"])
    val = load_coco(tmp_path / "val" / "annotations.json", tmp_path / "val" / "images")
    card = training["validation"]
    result = evaluate_model(six, val).to_json()
    assert len(val) == card["n_images"]
    for c in SIX_CLASSES:
        assert result["classes"][c]["ap50"] == pytest.approx(card["classes"][c]["ap50"], abs=0.01), c
    single = [im for im in val if len(im.labels()) == 1]
    batch = six.detect_batch([im.image_path for im in single])
    right = sum(bool(d) and d[0].label in im.labels() for im, d in zip(single, batch))
    # Chance is 1 in 6: a class order mixed up between the files would fall to about that. The shipped file
    # names 71% right (193 of 271); its weak classes (crazing AP50 0.44) are confused with the others.
    assert right / len(single) >= 0.6, f"{right}/{len(single)}"


def test_rule_defaults_cover_classes_a_rule_does_not_name(six):
    """A rule written for scratch/pit still fails the four new classes (an unknown defect must not pass)."""
    dets = one_of_each()
    verdict = judge(dets, 0.3, replace(VerdictRule(), classes={"scratch": ClassRule(0.5, 0.0), "pit": ClassRule(0.5, 0.0)}))
    assert {dets[i].label for i in verdict.failing} == set(SIX_CLASSES)
