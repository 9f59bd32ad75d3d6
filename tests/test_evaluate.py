"""Tests of detector.evaluate and its command (detector.cli.evaluate): hand-computed AP, pycocotools cross-check, I/O."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import detector.cli.evaluate as evaluate_cli
from detector.cli.evaluate import register, run
from detector.data.annotations import AnnotatedImage, Box
from detector.detection import Detection
from detector.evaluate import (
    EvaluationResult,
    box_iou,
    evaluate_detections,
    evaluate_model,
    picture_verdicts,
    plot_pr_curves,
    voc_ap,
)


def img(name: str, *boxes: Box, w: int = 256, h: int = 256) -> AnnotatedImage:
    return AnnotatedImage(Path(name), w, h, list(boxes))


def det(label: str, score: float, x1: float, y1: float, x2: float, y2: float) -> Detection:
    return Detection(label, score, (x1, y1, x2, y2))


def on(box: Box, score: float, label: str | None = None) -> Detection:
    """A detection exactly on a GT box."""
    return Detection(label or box.label, score, (box.x1, box.y1, box.x2, box.y2))


# --------------------------------------------------------------------------- #
# IoU
# --------------------------------------------------------------------------- #


def test_box_iou_edge_cases() -> None:
    a = np.array([[0, 0, 10, 10]], dtype=float)
    cases = {
        (0, 0, 10, 10): 1.0,            # identical
        (10, 0, 20, 10): 0.0,           # touching edges share no area (no +1)
        (20, 20, 30, 30): 0.0,          # disjoint
        (0, 0, 10, 5): 0.5,             # half: 50 / 100
        (1, 1, 11, 11): 81 / 119,       # continuous coordinates: 9*9 / (200-81)
        (5, 5, 5, 5): 0.0,              # zero-area box
        (2.5, 0, 12.5, 10): 75 / 125,   # sub-pixel shift
    }
    b = np.array(list(cases), dtype=float)
    with np.errstate(all="raise"):      # degenerate boxes must not warn
        got = box_iou(a, b)[0]
    np.testing.assert_allclose(got, list(cases.values()), rtol=0, atol=1e-12)
    assert box_iou(np.zeros((0, 4)), b).shape == (0, len(cases))
    assert box_iou(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0, 0)


def test_iou_exactly_at_threshold_matches() -> None:
    g = Box("scratch", 0, 0, 10, 10)
    gt = [img("a.png", g)]
    # IoU exactly 0.5 is a match (>=, as pycocotools) ...
    r = evaluate_detections(gt, {"a.png": [det("scratch", 0.9, 0, 0, 10, 5)]}, ["scratch"], coco=False)
    assert r.classes["scratch"].ap50 == 1.0
    # ... just below is not.
    r = evaluate_detections(gt, {"a.png": [det("scratch", 0.9, 0, 0, 10, 4.99)]}, ["scratch"], coco=False)
    assert r.classes["scratch"].ap50 == 0.0
    # A stricter threshold turns the half box into a miss.
    r = evaluate_detections(gt, {"a.png": [det("scratch", 0.9, 0, 0, 10, 5)]}, ["scratch"], iou_threshold=0.7, coco=False)
    assert r.classes["scratch"].ap50 == 0.0


# --------------------------------------------------------------------------- #
# Hand-computed AP
# --------------------------------------------------------------------------- #


def test_perfect_detections_give_one() -> None:
    g1, g2, g3 = Box("scratch", 0, 0, 10, 10), Box("pit", 50, 50, 60, 58), Box("scratch", 100, 20, 140, 30)
    gt = [img("a.png", g1, g2), img("b.png", g3)]
    dets = {"a.png": [on(g1, 0.9), on(g2, 0.4)], "b.png": [on(g3, 0.7)]}
    r = evaluate_detections(gt, dets, ["scratch", "pit"])
    for c in r.classes.values():
        assert c.ap50 == 1.0
        assert c.ap == pytest.approx(1.0)  # IoU 1 passes every COCO threshold
        assert c.coco_ap50 == pytest.approx(1.0)
    assert r.map50 == 1.0 and r.map == pytest.approx(1.0)
    assert r.classes["scratch"].n_gt == 2 and r.classes["scratch"].n_det == 2


def test_known_pr_sequence() -> None:
    # 4 GT boxes over two images; detections in score order are
    #   T  F  T  F  T      (F = on empty background)
    # cumulative TP:        1    1    2    2    3
    # precision:            1   1/2  2/3  1/2  3/5
    # recall (of 4):       .25  .25  .50  .50  .75
    # Interpolated precision (max to the right): 1, 2/3, 2/3, 3/5, 3/5.
    # All-point AP = .25*1 + .25*(2/3) + .25*(3/5) + .25*0 (recall never hits 1)
    #              = .25 + .1666... + .15 = 0.5666...
    g = [Box("scratch", 40 * i, 0, 40 * i + 10, 10) for i in range(4)]
    gt = [img("a.png", g[0], g[1]), img("b.png", g[2], g[3])]
    dets = {
        "a.png": [on(g[0], 0.9), det("scratch", 0.6, 200, 200, 210, 210)],
        "b.png": [det("scratch", 0.8, 200, 200, 210, 210), on(g[2], 0.7), on(g[3], 0.5)],
    }
    r = evaluate_detections(gt, dets, ["scratch"])
    c = r.classes["scratch"]
    assert c.ap50 == pytest.approx(0.25 + 0.25 * 2 / 3 + 0.25 * 3 / 5, abs=1e-12)
    assert c.ap50 == pytest.approx(0.5666666666666667, abs=1e-12)
    np.testing.assert_allclose(c.precision, [1, 1 / 2, 2 / 3, 1 / 2, 3 / 5])
    np.testing.assert_allclose(c.recall, [0.25, 0.25, 0.5, 0.5, 0.75])
    np.testing.assert_allclose(c.scores, [0.9, 0.8, 0.7, 0.6, 0.5])
    assert c.n_tp == 3 and c.n_det == 5 and c.n_gt == 4


def test_voc_ap_direct() -> None:
    assert voc_ap(np.array([]), np.array([])) == 0.0
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == 1.0
    # A dip followed by a recovery is lifted to the later, higher precision.
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_duplicates_are_false_positives() -> None:
    g0, g1 = Box("pit", 0, 0, 10, 10), Box("pit", 50, 0, 60, 10)
    # Scores: g0 (TP) .9, duplicate of g0 (FP) .8, g1 (TP) .7
    # precision 1, 1/2, 2/3; recall .5, .5, 1  ->  AP = .5*1 + .5*(2/3) = 0.8333
    dets = {"a.png": [on(g0, 0.9), det("pit", 0.8, 0.5, 0, 10.5, 10), on(g1, 0.7)]}
    r = evaluate_detections([img("a.png", g0, g1)], dets, ["pit"])
    c = r.classes["pit"]
    assert c.ap50 == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert c.n_tp == 2
    np.testing.assert_allclose(c.precision, [1, 0.5, 2 / 3])


def test_detection_goes_to_best_free_gt() -> None:
    # B's best GT is g0, already taken by A; its second best, g1 (IoU .538),
    # is free, so B is a TP (COCO's rule; the VOC devkit would call it FP).
    g0, g1 = Box("scratch", 0, 0, 10, 10), Box("scratch", 4, 0, 14, 10)
    dets = {"a.png": [on(g0, 0.9), det("scratch", 0.8, 1, 0, 11, 10)]}
    r = evaluate_detections([img("a.png", g0, g1)], dets, ["scratch"])
    assert r.classes["scratch"].n_tp == 2
    assert r.classes["scratch"].ap50 == 1.0


def test_difficult_boxes_are_ignored() -> None:
    g = Box("scratch", 0, 0, 10, 10)
    hard = Box("scratch", 100, 100, 120, 110, difficult=True)
    dets = {"a.png": [on(hard, 0.95), det("scratch", 0.9, 101, 100, 121, 110), on(g, 0.5)]}
    r = evaluate_detections([img("a.png", g, hard)], dets, ["scratch"])
    c = r.classes["scratch"]
    # Both detections on the difficult box are neither TP nor FP; the missed
    # difficult box costs no recall.
    assert c.n_gt == 1 and c.n_difficult == 1 and c.n_det == 3
    assert c.ap50 == 1.0
    assert len(c.precision) == 1
    assert c.ap == pytest.approx(1.0)  # pycocotools agrees via iscrowd=1
    # Without any detection on the regular box, AP is 0 (not NaN).
    r = evaluate_detections([img("a.png", g, hard)], {"a.png": [on(hard, 0.9)]}, ["scratch"])
    assert r.classes["scratch"].ap50 == 0.0


def test_class_without_ground_truth() -> None:
    g = Box("scratch", 0, 0, 10, 10)
    only_hard = Box("dent", 30, 30, 40, 40, difficult=True)
    gt = [img("a.png", g, only_hard)]
    dets = {"a.png": [on(g, 0.9), det("pit", 0.8, 50, 50, 60, 60), det("dent", 0.7, 80, 80, 90, 90)]}
    r = evaluate_detections(gt, dets, ["scratch", "pit", "dent"])
    for name in ("pit", "dent"):  # no GT at all / only difficult GT
        c = r.classes[name]
        assert c.n_gt == 0 and c.n_det == 1
        assert math.isnan(c.ap50) and math.isnan(c.ap) and math.isnan(c.coco_ap50)
    # ... and they don't drag the mean down.
    assert r.map50 == 1.0 and r.map == pytest.approx(1.0)
    j = r.to_json()
    assert j["classes"]["pit"]["ap50"] is None and j["classes"]["pit"]["n_gt"] == 0


def test_no_detections_and_no_classes() -> None:
    g = Box("scratch", 0, 0, 10, 10)
    r = evaluate_detections([img("a.png", g)], {}, ["scratch"])  # pycocotools with 0 detections
    assert r.classes["scratch"].ap50 == 0.0 and r.classes["scratch"].ap == 0.0
    r = evaluate_detections([img("a.png")], {}, ["scratch"])
    assert math.isnan(r.map50) and math.isnan(r.map)
    r = evaluate_detections([], {}, ["scratch"])
    assert math.isnan(r.map50)


def test_detection_keys_and_unknown_labels() -> None:
    g = Box("scratch", 0, 0, 10, 10)
    gt = [img("set/a.png", g, Box("rust", 5, 5, 9, 9))]
    by_path = evaluate_detections(gt, {"set/a.png": [on(g, 0.9)]}, ["scratch"])
    by_name = evaluate_detections(gt, {"a.png": [on(g, 0.9), det("blob", 0.3, 0, 0, 1, 1)]}, ["scratch"])
    assert by_path.map50 == by_name.map50 == 1.0
    assert by_name.unknown_gt_labels == {"rust": 1}
    assert by_name.unknown_det_labels == {"blob": 1}
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate_detections(gt, {"b.png": []}, ["scratch"])
    # Ambiguous names must be keyed by path.
    twins = [img("x/a.png", g), img("y/a.png", g)]
    r = evaluate_detections(twins, {"x/a.png": [on(g, 0.9)], "y/a.png": [on(g, 0.8)]}, ["scratch"])
    assert r.map50 == 1.0
    with pytest.raises(ValueError):
        evaluate_detections(twins, {"a.png": [on(g, 0.9)]}, ["scratch"])


# --------------------------------------------------------------------------- #
# Cross-check against pycocotools
# --------------------------------------------------------------------------- #

CLASSES = ["scratch", "pit", "dent"]


def random_dataset(seed: int, n_images: int = 25) -> tuple[list[AnnotatedImage], dict[str, list[Detection]]]:
    """Seeded GT plus detections of mixed quality: jittered hits (IoU spread
    around 0.5), duplicates, background false positives and wrong labels."""
    rng = np.random.default_rng(seed)
    gts: list[AnnotatedImage] = []
    dets: dict[str, list[Detection]] = {}
    for i in range(n_images):
        name = f"img{i:03d}.png"
        boxes = []
        for _ in range(rng.integers(0, 7)):
            w, h = rng.uniform(8, 60, 2)
            x, y = rng.uniform(0, 256 - w), rng.uniform(0, 256 - h)
            boxes.append(Box(CLASSES[rng.integers(0, 3)], x, y, x + w, y + h))
        out: list[Detection] = []
        for b in boxes:
            for _ in range(rng.choice([0, 1, 1, 1, 2])):  # miss, hit, duplicate
                s = rng.uniform(0.0, 0.35)  # jitter as a fraction of size
                dx, dy = rng.normal(0, s, 2) * (b.width, b.height)
                sw, sh = np.exp(rng.normal(0, s, 2))
                cx, cy = (b.x1 + b.x2) / 2 + dx, (b.y1 + b.y2) / 2 + dy
                hw, hh = b.width * sw / 2, b.height * sh / 2
                label = b.label if rng.random() > 0.1 else CLASSES[rng.integers(0, 3)]
                score = float(np.clip(rng.normal(0.8 - s, 0.2), 0.001, 1.0))
                out.append(Detection(label, score, (cx - hw, cy - hh, cx + hw, cy + hh)))
        for _ in range(rng.integers(0, 4)):  # background
            w, h = rng.uniform(8, 40, 2)
            x, y = rng.uniform(0, 256 - w), rng.uniform(0, 256 - h)
            out.append(Detection(CLASSES[rng.integers(0, 3)], float(rng.uniform(0.001, 0.7)), (x, y, x + w, y + h)))
        gts.append(img(name, *boxes))
        dets[name] = out
    return gts, dets


def reference_cocoeval(tmp_path: Path, gts: list[AnnotatedImage], dets: dict[str, list[Detection]]):
    """pycocotools driven the textbook way (json file + loadRes), independent
    of the in-memory wrapper in detector.evaluate."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, res = [], [], []
    for i, g in enumerate(gts, start=1):
        images.append({"id": i, "file_name": g.name, "width": g.width, "height": g.height})
        for b in g.boxes:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": CLASSES.index(b.label) + 1,
                         "bbox": [b.x1, b.y1, b.width, b.height], "area": b.width * b.height, "iscrowd": 0})
        for d in dets[g.name]:
            x1, y1, x2, y2 = d.box
            res.append({"image_id": i, "category_id": CLASSES.index(d.label) + 1,
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "score": d.score})
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": k + 1, "name": c} for k, c in enumerate(CLASSES)]}))
    coco_gt = COCO(str(path))
    coco_dt = coco_gt.loadRes(res)
    e = COCOeval(coco_gt, coco_dt, "bbox")
    e.params.maxDets = [1, 10, 1000]
    e.evaluate()
    e.accumulate()
    return e.eval["precision"][:, :, :, 0, -1], e.params.recThrs  # [T, R, K]


def interp101(recall: np.ndarray, precision: np.ndarray, rec_thrs: np.ndarray) -> np.ndarray:
    """pycocotools' sampling of a PR curve at 101 recall points."""
    env = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    idx = np.searchsorted(recall, rec_thrs, side="left")
    return np.array([env[i] if i < len(env) else 0.0 for i in idx])


@pytest.mark.parametrize("seed", [0, 1])
def test_ap50_agrees_with_pycocotools(tmp_path: Path, seed: int) -> None:
    gts, dets = random_dataset(seed)
    r = evaluate_detections(gts, dets, CLASSES)
    prec, rec_thrs = reference_cocoeval(tmp_path, gts, dets)
    for k, name in enumerate(CLASSES):
        c = r.classes[name]
        assert c.n_gt > 10 and c.n_det > c.n_tp > 0  # the case is non-trivial
        # 1) Exact: our matching gives the very same PR points as pycocotools,
        #    so sampling our curve at COCO's 101 recall points reproduces its
        #    precision array bit for bit (up to float rounding).
        np.testing.assert_allclose(interp101(c.recall, c.precision, rec_thrs), prec[0, :, k], atol=1e-12)
        # 2) Loose: the AP values differ only by interpolation. Ours integrates
        #    the monotone curve exactly; COCO averages it at 101 recall points,
        #    a Riemann sum of a non-increasing step function whose error is
        #    about one step width (1/100) times the precision drop, so they
        #    must agree within 0.02.
        assert c.ap50 == pytest.approx(float(prec[0, :, k].mean()), abs=0.02)
        # 3) The in-memory pycocotools wrapper agrees with the textbook path.
        assert c.coco_ap50 == pytest.approx(float(prec[0, :, k].mean()), abs=1e-12)
        assert c.ap == pytest.approx(float(prec[:, :, k].mean()), abs=1e-12)
    assert r.map50 == pytest.approx(r.coco_map50, abs=0.02)
    assert 0.0 < r.map < r.map50 < 1.0


def test_wrapper_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    gts, dets = random_dataset(3, n_images=5)
    evaluate_detections(gts, dets, CLASSES)
    assert capsys.readouterr().out == ""


# --------------------------------------------------------------------------- #
# Output
# --------------------------------------------------------------------------- #


def test_to_json_shape_and_table() -> None:
    gts, dets = random_dataset(0, n_images=8)
    r = evaluate_detections(gts, dets, CLASSES + ["rust"])
    j = r.to_json()
    assert set(j) == {"classes", "map50", "map"}
    assert list(j["classes"]) == CLASSES + ["rust"]
    for entry in j["classes"].values():
        assert {"ap50", "ap", "n_gt"} <= set(entry)
        assert isinstance(entry["n_gt"], int)
    assert j["classes"]["rust"]["ap"] is None
    assert isinstance(j["map50"], float) and isinstance(j["map"], float)
    assert json.loads(json.dumps(j, allow_nan=False)) == j  # strict JSON, no NaN
    table = r.format_table()
    assert all(name in table for name in CLASSES + ["rust", "mean", "AP50"])
    assert f"{r.map50:.4f}" in table


def test_plot_pr_curves_writes_png(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    gts, dets = random_dataset(1, n_images=10)
    r = evaluate_detections(gts, dets, CLASSES + ["rust"], coco=False)
    out = plot_pr_curves(r, tmp_path / "sub" / "pr.png")
    assert out == tmp_path / "sub" / "pr.png"
    im = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert im is not None and im.shape[0] > 200 and im.shape[1] > 200
    assert im.std() > 5  # not blank
    # Coloured curve pixels exist (axes and text alone are grey-scale).
    spread = im.max(axis=2).astype(int) - im.min(axis=2).astype(int)
    assert (spread > 60).sum() > 200
    # An all-empty result still renders.
    empty = evaluate_detections([img("a.png")], {}, ["scratch"], coco=False)
    assert cv2.imread(str(plot_pr_curves(empty, tmp_path / "empty.png"))) is not None


# --------------------------------------------------------------------------- #
# Model evaluation and CLI
# --------------------------------------------------------------------------- #


class FakeDetector:
    """Stands in for detector.Detector: answers from a dict of detections."""

    def __init__(self, by_path: dict[str, list[Detection]], class_names: list[str]) -> None:
        self.by_path = by_path
        self.metadata = SimpleNamespace(class_names=class_names, default_threshold=0.3)
        self.thresholds: list[float | None] = []

    def detect(self, image, threshold=None):  # noqa: ANN001
        self.thresholds.append(threshold)
        return [d for d in self.by_path[str(image)] if threshold is None or d.score >= threshold]


def test_evaluate_model_with_fake_detector() -> None:
    rng = np.random.default_rng(7)
    images, by_path = [], {}
    for i in range(6):
        boxes = [Box(["scratch", "pit"][j % 2], 30.0 * j, 10.0, 30.0 * j + 20, 10.0 + rng.uniform(5, 40)) for j in range(i % 4 + 1)]
        images.append(img(f"data/images/{i}.png", *boxes))
        by_path[f"data/images/{i}.png"] = [on(b, float(rng.uniform(0.002, 1))) for b in boxes]
    model = FakeDetector(by_path, ["scratch", "pit"])
    calls: list[tuple[int, int]] = []
    r = evaluate_model(model, images, progress=lambda done, total: calls.append((done, total)))
    assert isinstance(r, EvaluationResult)
    assert all(t is not None and t <= 0.01 for t in model.thresholds)  # full PR curve
    assert calls[-1] == (6, 6) and len(calls) == 6
    assert r.map50 == 1.0 and r.map == pytest.approx(1.0)
    assert list(r.classes) == ["scratch", "pit"] and r.n_images == 6


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detector")
    register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_bad_paths_fail_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = make_parser()
    for argv in (
        ["evaluate", "--data", str(tmp_path / "nope")],
        ["evaluate", "--coco", str(tmp_path / "nope.json")],
        ["evaluate", "--data", str(tmp_path), "--model", str(tmp_path / "missing.pth")],
        ["evaluate", "--data", str(tmp_path), "--format", "voc"],  # an empty folder is no VOC data set
    ):
        args = parser.parse_args(argv)
        assert args.func is run
        assert run(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and "Traceback" not in err
    with pytest.raises(SystemExit):  # --data and --coco are exclusive
        parser.parse_args(["evaluate", "--data", "a", "--coco", "b"])
    capsys.readouterr()


def test_cli_run_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    gts, dets = random_dataset(2, n_images=6)
    model = FakeDetector({str(g.image_path): dets[g.name] for g in gts}, CLASSES)
    monkeypatch.setattr(evaluate_cli, "_load_ground_truth", lambda args: gts)
    monkeypatch.setattr(evaluate_cli, "_load_detector", lambda args: model)
    out_json, out_png = tmp_path / "m.json", tmp_path / "pr.png"
    args = make_parser().parse_args(
        ["evaluate", "--data", str(tmp_path), "--json", str(out_json), "--plot", str(out_png)]
    )
    assert run(args) == 0
    captured = capsys.readouterr()
    assert "mean" in captured.out and "scratch" in captured.out
    data = json.loads(out_json.read_text())
    assert set(data) == {"classes", "map50", "map", "verdicts"} and set(data["classes"]) == set(CLASSES)
    assert [v["threshold"] for v in data["verdicts"]] == [0.3]  # the model's default threshold
    assert out_png.stat().st_size > 1000

    # A model that fails to load is one line on stderr, exit 1.
    def boom(args: argparse.Namespace) -> None:
        raise KeyError("meta")

    monkeypatch.setattr(evaluate_cli, "_load_detector", boom)
    assert run(args) == 1
    err = capsys.readouterr().err
    assert "could not load the model" in err and "Traceback" not in err


def test_cli_with_real_voc_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """run() on a tiny VOC folder read by detector.data.voc, with a fake model."""
    cv2 = pytest.importorskip("cv2")
    voc = pytest.importorskip("detector.data.voc")
    root = tmp_path / "voc"
    (root / "images").mkdir(parents=True)
    truth = {
        "a": [Box("scratches", 9, 19, 40, 120)],
        "b": [Box("pitted_surface", 50, 50, 70, 66), Box("inclusion", 0, 0, 5, 5)],
    }
    for stem, boxes in truth.items():
        cv2.imwrite(str(root / "images" / f"{stem}.png"), np.full((200, 200), 128, np.uint8))
        voc.write_voc_xml(img(f"{stem}.png", *boxes, w=200, h=200), root / "annotations" / f"{stem}.xml")
    # The fake model finds exactly the (renamed) boxes.
    names = {"scratches": "scratch", "pitted_surface": "pit"}
    by_path = {
        str(root / "images" / f"{stem}.png"): [
            Detection(names[b.label], 0.9, (b.x1, b.y1, b.x2, b.y2)) for b in boxes if b.label in names
        ]
        for stem, boxes in truth.items()
    }
    monkeypatch.setattr(evaluate_cli, "_load_detector", lambda args: FakeDetector(by_path, ["scratch", "pit"]))
    out_json = tmp_path / "metrics.json"
    argv = ["evaluate", "--data", str(root), "--class-map", "scratches=scratch,pitted_surface=pit", "--json", str(out_json)]
    assert run(make_parser().parse_args(argv)) == 0, capsys.readouterr().err
    data = json.loads(out_json.read_text())
    assert data["map50"] == 1.0 and data["classes"]["pit"]["n_gt"] == 1
    # A broken class map is a one-line error too.
    argv[4] = "scratches"
    assert run(make_parser().parse_args(argv)) != 0
    assert "Traceback" not in capsys.readouterr().err


def test_cli_reads_a_split_folder_of_detector_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--data OUT/val` works on what `detector dataset` writes (annotations.json + images/)."""
    cv2 = pytest.importorskip("cv2")
    from detector.data.annotations import AnnotatedImage
    from detector.data.coco import write_coco

    split = tmp_path / "data" / "val"
    (split / "images").mkdir(parents=True)
    truth = {"a": [Box("scratch", 9, 19, 40, 120)], "b": [Box("pit", 50, 50, 70, 66)], "c": []}
    images = []
    for stem, boxes in truth.items():
        path = split / "images" / f"{stem}.png"
        cv2.imwrite(str(path), np.full((200, 200), 128, np.uint8))
        images.append(AnnotatedImage(path, 200, 200, boxes))
    write_coco(images, ["scratch", "pit"], split / "annotations.json")
    found = {str(split / "images" / f"{stem}.png"): [] for stem in truth}
    found[str(split / "images" / "a.png")] = [Detection("scratch", 0.9, (9, 19, 40, 120))]
    monkeypatch.setattr(evaluate_cli, "_load_detector", lambda args: FakeDetector(found, ["scratch", "pit"]))
    out_json = tmp_path / "metrics.json"
    assert run(make_parser().parse_args(["evaluate", "--data", str(split), "--json", str(out_json)])) == 0
    capsys.readouterr()
    data = json.loads(out_json.read_text())
    assert data["classes"]["scratch"]["ap50"] == 1.0 and data["classes"]["pit"]["ap50"] == 0.0


# --------------------------------------------------------------------------- #
# PASS/FAIL per picture
# --------------------------------------------------------------------------- #


def test_picture_verdicts_count_escapes_and_false_rejects() -> None:
    scratch, pit = Box("scratch", 10, 10, 20, 80), Box("pit", 50, 50, 70, 70)
    images = [
        img("a.png", scratch),                      # found as scratch
        img("b.png", pit),                          # flagged, but as scratch: FAIL all the same
        img("c.png", pit),                          # a weak pit: an escape at 0.3
        img("d.png"),                               # clean, a false alarm at 0.4
        img("e.png"),                               # clean, nothing found
        img("f.png", replace(pit, difficult=True)),  # only a difficult box: neither
        img("g.png", scratch, pit),                 # both held, pit found
    ]
    found = [
        [on(scratch, 0.9)],
        [det("scratch", 0.5, 0, 0, 9, 9)],
        [on(pit, 0.2)],
        [det("pit", 0.4, 0, 0, 9, 9)],
        [],
        [on(pit, 0.9)],
        [on(pit, 0.8)],
    ]
    v = picture_verdicts(images, found, ["scratch", "pit"], 0.3)
    assert (v.defect_pictures, v.clean_pictures, v.not_counted) == (4, 2, 1)
    assert v.escapes == ["c.png"] and v.false_rejects == ["d.png"]
    assert v.class_pictures == {"scratch": 2, "pit": 3} and v.class_found == {"scratch": 1, "pit": 1}
    # A higher threshold trades false rejects for escapes; a lower one the other way.
    high = picture_verdicts(images, found, ["scratch", "pit"], 0.6)
    assert high.escapes == ["b.png", "c.png"] and high.false_rejects == []
    low = picture_verdicts(images, found, ["scratch", "pit"], 0.1)
    assert low.escapes == [] and low.false_rejects == ["d.png"] and low.class_found["pit"] == 2
    text = "\n".join(v.format_lines())
    assert "4: 3 FAIL, 1 PASS (escapes): c.png" in text and "2: 1 PASS, 1 FAIL (false rejects): d.png" in text
    assert v.to_json()["classes"]["pit"] == {"pictures": 3, "found": 1}
    with pytest.raises(ValueError, match="within 0..1"):
        picture_verdicts(images, found, ["scratch", "pit"], 1.5)
    with pytest.raises(ValueError, match="detection lists"):
        picture_verdicts(images, found[:-1], ["scratch", "pit"], 0.3)


def test_cli_prints_pass_fail_per_picture_at_each_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scratch, pit = Box("scratch", 9, 19, 40, 120), Box("pit", 50, 50, 70, 66)
    gts = [img("a.png", scratch), img("b.png", pit), img("c.png")]
    by_path = {"a.png": [on(scratch, 0.9)], "b.png": [on(pit, 0.5)], "c.png": [det("pit", 0.35, 0, 0, 9, 9)]}
    monkeypatch.setattr(evaluate_cli, "_load_ground_truth", lambda args: gts)
    monkeypatch.setattr(evaluate_cli, "_load_detector", lambda args: FakeDetector(by_path, ["scratch", "pit"]))
    out_json = tmp_path / "m.json"
    argv = ["evaluate", "--data", str(tmp_path), "--json", str(out_json), "--verdict-threshold", "0.3,0.6"]
    assert run(make_parser().parse_args(argv)) == 0
    out = capsys.readouterr().out
    assert "PASS/FAIL per picture at threshold 0.3 " in out and "at threshold 0.6 " in out
    data = json.loads(out_json.read_text())["verdicts"]
    assert [(v["escapes"], v["false_rejects"]) for v in data] == [([], ["c.png"]), (["b.png"], [])]
    for bad in ("1.5", "x"):
        with pytest.raises(SystemExit):
            make_parser().parse_args(["evaluate", "--data", str(tmp_path), "--verdict-threshold", bad])
    capsys.readouterr()
