"""Where a model's AP50 is lost: missed defects, false alarms or badly fitted boxes.

    .venv/bin/python benchmarks/box_fit.py --model MODEL --split SPLIT_DIR [--train-split TRAIN_DIR]
        [--merge-touching pit] [--threads 2]

Prints JSON lines:
- per class, AP at IoU 0.3 / 0.5 / 0.7, and AP50 on the pictures that hold a defect
  (the gap to AP50 is what false alarms on defect-free pictures cost);
- per class, how the best-overlapping detection (score >= 0.05) fits each annotated
  box, by IoU band: count, and the median ratio of its long and short side to the
  annotated box's (a short-side ratio above 1: boxes drawn too wide);
- with --train-split, per class, the median short/long side ratio of the training
  boxes on the original pictures and on the expanded copies (`*_augNN`): small
  turns make the box of a long thin defect wider than the defect;
- with --merge-touching, per class named, AP50 again after the boxes of that class
  that touch or overlap are merged into their union, in the annotations and among the
  detections the station would show (score >= 0.3): a pitted area cut into boxes
  one way by the annotator and another by the model then counts as found. A
  diagnosis of where AP50 goes, not a metric to report a model by.
Run it on pictures held out from training, not on the validation split the model is reported on.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

IOU_BANDS = ((0.0, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 1.0001))
FIT_MIN_SCORE = 0.05
EXPANDED_COPY = re.compile(r"_aug\d+$")  # the names `detector dataset --expand` gives its copies


def box_fit_rows(images, found, classes) -> list[dict]:
    from detector.evaluate import box_iou

    rows = []
    for name in classes:
        fits = []  # (best IoU, long-side ratio, short-side ratio) per annotated box
        for image, detections in zip(images, found):
            boxes = [d.box for d in detections if d.label == name and d.score >= FIT_MIN_SCORE]
            for gt in (b for b in image.boxes if b.label == name and not b.difficult):
                if not boxes:
                    fits.append((0.0, np.nan, np.nan))
                    continue
                iou = box_iou([(gt.x1, gt.y1, gt.x2, gt.y2)], boxes)[0]
                best = boxes[int(iou.argmax())]
                # Sides matched by the annotated box's orientation: a scratch's length against its length.
                width_ratio, height_ratio = (best[2] - best[0]) / gt.width, (best[3] - best[1]) / gt.height
                upright = gt.height >= gt.width
                fits.append((float(iou.max()), height_ratio if upright else width_ratio,
                             width_ratio if upright else height_ratio))
        fits = np.array(fits).reshape(-1, 3)
        for low, high in IOU_BANDS:
            band = fits[(fits[:, 0] >= low) & (fits[:, 0] < high)]
            matched = band[~np.isnan(band[:, 1])]
            rows.append({"class": name, "best_iou": [low, min(high, 1.0)], "boxes": len(band),
                         "long_side_ratio": round(float(np.median(matched[:, 1])), 2) if len(matched) else None,
                         "short_side_ratio": round(float(np.median(matched[:, 2])), 2) if len(matched) else None})
    return rows


def label_shape_rows(train_images, classes) -> list[dict]:
    rows = []
    for name in classes:
        ratios: dict[str, list[float]] = {"original": [], "expanded_copy": []}
        for image in train_images:
            kind = "expanded_copy" if EXPANDED_COPY.search(image.image_path.stem) else "original"
            for box in (b for b in image.boxes if b.label == name):
                ratios[kind].append(min(box.width, box.height) / max(box.width, box.height))
        rows.append({"class": name, "training_boxes": {k: len(v) for k, v in ratios.items()},
                     **{f"short_long_ratio_{k}": round(float(np.median(v)), 3) if v else None
                        for k, v in ratios.items()}})
    return rows


MERGE_MIN_SCORE = 0.3  # detections merged: those the station shows at its default threshold


def touching_unions(rects) -> list[tuple[list[float], list[int]]]:
    """Boxes (x1, y1, x2, y2) grouped while any two touch or overlap: (union box, member indices) per group."""
    groups = [([*map(float, r)], [i]) for i, r in enumerate(rects)]
    merged = True
    while merged:
        merged = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                a, b = groups[i][0], groups[j][0]
                if min(a[2], b[2]) >= max(a[0], b[0]) and min(a[3], b[3]) >= max(a[1], b[1]):
                    groups[i] = ([min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])],
                                 groups[i][1] + groups[j][1])
                    del groups[j]
                    merged = True
                    break
            if merged:
                break
    return groups


def merge_touching(images, found, classes, min_score: float = MERGE_MIN_SCORE):
    """`images` and `found` with the touching boxes of `classes` merged (difficult boxes and weaker detections kept
    as they are; a merged detection scores its best member)."""
    from detector import Detection
    from detector.data.annotations import AnnotatedImage, Box

    merged_images, merged_found = [], []
    for image, detections in zip(images, found):
        boxes = [b for b in image.boxes if b.label not in classes or b.difficult]
        kept = [d for d in detections if d.label not in classes or d.score < min_score]
        for name in classes:
            regular = [b for b in image.boxes if b.label == name and not b.difficult]
            boxes += [Box(name, *rect) for rect, _ in touching_unions([(b.x1, b.y1, b.x2, b.y2) for b in regular])]
            strong = [d for d in detections if d.label == name and d.score >= min_score]
            kept += [Detection(name, max(strong[k].score for k in members), tuple(rect))
                     for rect, members in touching_unions([d.box for d in strong])]
        merged_images.append(AnnotatedImage(image.image_path, image.width, image.height, boxes))
        merged_found.append(sorted(kept, key=lambda d: -d.score))
    return merged_images, merged_found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="model file (.pth or .onnx)")
    parser.add_argument("--split", type=Path, required=True, help="split folder: annotations.json + images/")
    parser.add_argument("--train-split", type=Path, help="the model's training split folder, for its label shapes")
    parser.add_argument("--merge-touching", default="", metavar="CLASS[,CLASS]",
                        help="also AP50 with the touching boxes of these classes merged (see above)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from detector.api import Detector
    from detector.data.coco import load_coco
    from detector.evaluate import EVAL_SCORE_THRESHOLD, evaluate_detections, image_key

    detector = Detector(args.model, threads=args.threads)
    classes = list(detector.metadata.class_names)
    merge = [c.strip() for c in args.merge_touching.split(",") if c.strip()]
    unknown = sorted(set(merge) - set(classes))
    if unknown:
        raise SystemExit(f"--merge-touching: not a class of this model: {', '.join(unknown)}")
    images = load_coco(args.split / "annotations.json")
    found = []
    for start in range(0, len(images), 16):
        found += detector.detect_batch([i.image_path for i in images[start:start + 16]], EVAL_SCORE_THRESHOLD)
    detections = {image_key(i): d for i, d in zip(images, found)}

    def ap(subset, iou):
        result = evaluate_detections(subset, {image_key(i): detections[image_key(i)] for i in subset}, classes,
                                     iou_threshold=iou, coco=False)
        return {name: round(r.ap50, 3) for name, r in result.classes.items()}

    by_iou = {iou: ap(images, iou) for iou in (0.3, 0.5, 0.7)}
    with_defects = ap([i for i in images if i.boxes], 0.5)
    for name in classes:
        print(json.dumps({"class": name, **{f"ap{round(iou * 100)}": v[name] for iou, v in by_iou.items()},
                          "ap50_defect_pictures_only": with_defects[name]}), flush=True)
    for row in box_fit_rows(images, found, classes):
        print(json.dumps(row), flush=True)
    if args.train_split:
        for row in label_shape_rows(load_coco(args.train_split / "annotations.json"), classes):
            print(json.dumps(row), flush=True)
    if merge:
        merged_images, merged_found = merge_touching(images, found, merge)
        result = evaluate_detections(merged_images, {image_key(i): d for i, d in zip(merged_images, merged_found)},
                                     classes, coco=False)
        for name in merge:
            print(json.dumps({"class": name, "ap50": by_iou[0.5][name], "touching_boxes_merged_ap50":
                              round(result.classes[name].ap50, 3), "boxes": sum(
                                  1 for i in images for b in i.boxes if b.label == name and not b.difficult),
                              "merged_boxes": result.classes[name].n_gt}), flush=True)


if __name__ == "__main__":
    main()
