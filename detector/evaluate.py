"""Detection quality metrics: VOC-style AP@IoU and COCO mAP@[.5:.95].

Pure numpy at import time (no torch, no Qt); pycocotools and matplotlib are
imported only when needed.

Conventions
-----------
* Boxes use the continuous pixel coordinates of `detector.data.annotations`,
  so IoU is computed without the legacy VOC "+1".
* A detection matches a ground-truth (GT) box when IoU >= the threshold
  (pycocotools' convention; the VOC devkit uses ">", which only differs when
  IoU is exactly the threshold).
* Matching is greedy in descending score order, per image and class. Each
  detection goes to the best-overlapping GT box that is still unmatched
  (COCO's rule; the VOC devkit instead looks only at the best-overlapping GT
  and calls the detection FP if that one is taken). Each GT box is matched at
  most once, so duplicates are false positives.
* `difficult` GT boxes do not count towards recall, and a detection that
  matches no regular box but overlaps a difficult one (IoU >= threshold) is
  ignored: neither TP nor FP. Difficult boxes may absorb any number of
  detections. For the COCO numbers they are passed as `iscrowd=1`, and
  pycocotools then measures overlap with them as intersection / detection
  area, so the two metrics can treat detections near difficult boxes a little
  differently.
* Classes without any non-difficult GT box get `n_gt == 0` and NaN for every
  AP (null in `to_json()`), and are left out of the means.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from detector.data.annotations import AnnotatedImage
from detector.detection import Detection

__all__ = [
    "ClassResult",
    "EvaluationResult",
    "PictureVerdicts",
    "picture_verdicts",
    "box_iou",
    "voc_ap",
    "image_key",
    "evaluate_detections",
    "evaluate_model",
    "plot_pr_curves",
]

# Detections scoring below this are dropped by the detector during evaluation.
# Kept very low so the precision-recall curve reaches as far as it can.
EVAL_SCORE_THRESHOLD = 0.001

_TP, _FP, _IGNORED = 1, 0, -1


# --------------------------------------------------------------------------- #
# Results
# --------------------------------------------------------------------------- #


@dataclass
class ClassResult:
    """Metrics of one class.

    `ap50` is the all-point-interpolated AP at the evaluation's IoU threshold
    (0.5 unless asked otherwise). `ap` is COCO's AP averaged over IoU
    0.50:0.05:0.95 and `coco_ap50` pycocotools' own AP at IoU 0.5 (101-point
    interpolation), kept to cross-check `ap50`.

    `precision`, `recall` and `scores` describe the raw PR curve: one entry per
    non-ignored detection in descending score order (empty when n_gt == 0).
    """

    name: str
    n_gt: int
    n_det: int
    n_difficult: int = 0
    n_tp: int = 0
    ap50: float = math.nan
    ap: float = math.nan
    coco_ap50: float = math.nan
    precision: np.ndarray = field(default_factory=lambda: np.zeros(0))
    recall: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class EvaluationResult:
    """Per-class and mean metrics. Means skip classes with n_gt == 0."""

    classes: dict[str, ClassResult]
    map50: float
    map: float
    coco_map50: float = math.nan
    iou_threshold: float = 0.5
    n_images: int = 0
    # Labels that are not in `classes`; their boxes / detections were ignored.
    unknown_gt_labels: dict[str, int] = field(default_factory=dict)
    unknown_det_labels: dict[str, int] = field(default_factory=dict)
    # PASS/FAIL per picture at each asked-for threshold (`evaluate_model(verdict_thresholds=...)`).
    verdicts: list[PictureVerdicts] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict; NaN becomes None so `json.dumps` stays strict.

        Shape: {"classes": {name: {"ap50", "ap", "n_gt", ...}}, "map50", "map"}, and
        "verdicts" when PASS/FAIL per picture was asked for. "ap50" is measured at
        `iou_threshold` (0.5 by default).
        """
        return {
            "classes": {
                name: {
                    "ap50": _json_float(c.ap50),
                    "ap": _json_float(c.ap),
                    "n_gt": c.n_gt,
                    "n_det": c.n_det,
                    "n_difficult": c.n_difficult,
                    "coco_ap50": _json_float(c.coco_ap50),
                }
                for name, c in self.classes.items()
            },
            "map50": _json_float(self.map50),
            "map": _json_float(self.map),
            **({"verdicts": [v.to_json() for v in self.verdicts]} if self.verdicts else {}),
        }

    def format_table(self) -> str:
        """Fixed-width table for the console."""
        ap_head = _iou_label(self.iou_threshold)
        name_w = max([len("class"), len("mean")] + [len(n) for n in self.classes])
        head = (
            f"{'class':<{name_w}}  {'GT':>6}  {'det':>7}  {ap_head:>8}  "
            f"{'AP50coco':>8}  {'AP.5:.95':>8}"
        )
        lines = [head, "-" * len(head)]
        for name, c in self.classes.items():
            lines.append(
                f"{name:<{name_w}}  {c.n_gt:>6}  {c.n_det:>7}  {_fmt(c.ap50):>8}  "
                f"{_fmt(c.coco_ap50):>8}  {_fmt(c.ap):>8}"
            )
        lines.append("-" * len(head))
        n_gt = sum(c.n_gt for c in self.classes.values())
        n_det = sum(c.n_det for c in self.classes.values())
        lines.append(
            f"{'mean':<{name_w}}  {n_gt:>6}  {n_det:>7}  {_fmt(self.map50):>8}  "
            f"{_fmt(self.coco_map50):>8}  {_fmt(self.map):>8}"
        )
        return "\n".join(lines)


@dataclass
class PictureVerdicts:
    """What the station would say about each picture: PASS, or FAIL when any detection reaches `threshold`.

    That is the station's verdict under its default rule (no minimum size or
    score per class). AP50 scores boxes; a plant counts parts: a defective part
    that passes (an escape) and a good part that fails (a false reject).
    Defect pictures hold at least one regular box of the model's classes; clean
    pictures hold no box at all. Pictures whose only boxes are difficult or of
    classes the model does not know are neither, and are counted apart.
    """

    threshold: float
    defect_pictures: int
    clean_pictures: int
    escapes: list[str]  # defect pictures with no detection at the threshold: PASS
    false_rejects: list[str]  # clean pictures with a detection at the threshold: FAIL
    not_counted: int
    # Per class: pictures holding it, and of those, how many have a detection of that class at the threshold.
    class_pictures: dict[str, int] = field(default_factory=dict)
    class_found: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "defect_pictures": self.defect_pictures,
            "clean_pictures": self.clean_pictures,
            "escapes": self.escapes,
            "false_rejects": self.false_rejects,
            "not_counted": self.not_counted,
            "classes": {c: {"pictures": n, "found": self.class_found[c]} for c, n in self.class_pictures.items()},
        }

    def format_lines(self) -> list[str]:
        """Console lines: the escapes and false rejects, with the first few names."""
        d, c = self.defect_pictures, self.clean_pictures
        lines = [
            f"PASS/FAIL per picture at threshold {self.threshold:g} (FAIL: any detection at the threshold):",
            f"  defect pictures {d}: {d - len(self.escapes)} FAIL, {len(self.escapes)} PASS (escapes){listed_names(self.escapes)}",
            f"  clean pictures {c}: {c - len(self.false_rejects)} PASS, {len(self.false_rejects)} FAIL "
            f"(false rejects){listed_names(self.false_rejects)}",
        ]
        for name, n in self.class_pictures.items():
            lines.append(f"  {name}: found on {self.class_found[name]} of the {n} pictures that hold it")
        if self.not_counted:
            lines.append(f"  not counted: {self.not_counted} pictures whose only boxes are difficult or of unknown classes")
        return lines


def listed_names(names: Sequence[str], shown: int = 5) -> str:
    """": a.png, b.png and 3 more" for the first `shown` names; "" for none."""
    if not names:
        return ""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ": " + ", ".join(names[:shown]) + more


def verdict_counts_text(verdicts: Mapping[str, Any]) -> str:
    """One recorded `PictureVerdicts.to_json()` in a phrase: how many defect pictures PASS, clean ones FAIL."""
    return (f"at threshold {verdicts['threshold']:g}: {len(verdicts['escapes'])} of {verdicts['defect_pictures']} "
            f"defect pictures PASS, {len(verdicts['false_rejects'])} of {verdicts['clean_pictures']} clean pictures FAIL")


def picture_verdicts(
    ground_truth: Sequence[AnnotatedImage],
    detections: Sequence[Sequence[Detection]],
    classes: Sequence[str],
    threshold: float,
) -> PictureVerdicts:
    """PASS/FAIL per picture at `threshold` against what each picture holds.

    `detections` are aligned with `ground_truth` (one sequence per picture), as
    found at a lower threshold: the station's NMS only lets a box suppress
    lower-scoring ones, so the boxes at or above `threshold` are the ones the
    station would have shown.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within 0..1, got {threshold}")
    if len(detections) != len(ground_truth):
        raise ValueError(f"{len(detections)} detection lists for {len(ground_truth)} pictures")
    classes = list(dict.fromkeys(classes))
    known = set(classes)
    pictures = {c: 0 for c in classes}
    found = {c: 0 for c in classes}
    escapes: list[str] = []
    false_rejects: list[str] = []
    defect = clean = not_counted = 0
    for img, dets in zip(ground_truth, detections):
        flagged = {d.label for d in dets if d.score >= threshold}
        held = {b.label for b in img.boxes if b.label in known and not b.difficult}
        if held:
            defect += 1
            if not flagged:
                escapes.append(img.name)
            for label in held:
                pictures[label] += 1
                found[label] += label in flagged
        elif not img.boxes:
            clean += 1
            if flagged:
                false_rejects.append(img.name)
        else:
            not_counted += 1
    return PictureVerdicts(
        threshold=float(threshold), defect_pictures=defect, clean_pictures=clean, escapes=escapes,
        false_rejects=false_rejects, not_counted=not_counted, class_pictures=pictures, class_found=found,
    )


def _json_float(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


def _fmt(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.4f}"


def _iou_label(iou: float) -> str:
    return "AP50" if abs(iou - 0.5) < 1e-9 else f"AP{round(iou * 100):d}"


def _nanmean(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


# --------------------------------------------------------------------------- #
# Core maths
# --------------------------------------------------------------------------- #


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) x1y1x2y2 boxes -> (N, M).

    Continuous coordinates (no +1). Degenerate boxes give IoU 0, not NaN.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the PR curve with all-point interpolation (VOC2010+).

    Precision is first made non-increasing from the right (the best precision
    reachable at this recall or higher), then summed as Σ Δrecall × precision.
    Recall beyond the last point contributes nothing.
    """
    mrec = np.concatenate(([0.0], np.asarray(recall, dtype=np.float64), [1.0]))
    mpre = np.concatenate(([0.0], np.asarray(precision, dtype=np.float64), [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    return float(np.sum(np.diff(mrec) * mpre[1:]))


def _match_image(
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    gt_boxes: np.ndarray,
    gt_difficult: np.ndarray,
    iou_threshold: float,
) -> np.ndarray:
    """Greedy matching for one image and class -> status per detection.

    Returns _TP / _FP / _IGNORED aligned with the *input* order of detections.
    Greedy order is descending score, ties in input order (as pycocotools).
    """
    n_det, n_gt = len(det_scores), len(gt_boxes)
    status = np.full(n_det, _FP, dtype=np.int8)
    if n_det == 0 or n_gt == 0:
        return status
    ious = box_iou(det_boxes, gt_boxes)
    order = np.argsort(-det_scores, kind="mergesort")
    matched = np.zeros(n_gt, dtype=bool)
    free_regular = ~gt_difficult
    for i in order:
        row = ious[i]
        cand = np.where(free_regular & ~matched, row, -1.0)
        # Among equal IoUs pycocotools keeps the last box; mirror it so the
        # cross-check against pycocotools is exact even on ties.
        j = n_gt - 1 - int(np.argmax(cand[::-1]))
        if cand[j] >= iou_threshold:
            matched[j] = True
            status[i] = _TP
        elif np.any(gt_difficult & (row >= iou_threshold)):
            status[i] = _IGNORED
    return status


def image_key(image: AnnotatedImage) -> str:
    """Key of `image` in the detections dict: the image path as a string.

    `evaluate_detections` also accepts the bare file name (`image.name`) when
    names are unique within the ground truth.
    """
    return str(image.image_path)


def _align_detections(
    ground_truth: Sequence[AnnotatedImage],
    detections: Mapping[str, Sequence[Detection]],
) -> list[Sequence[Detection]]:
    """Look up each image's detections by path string, else by unique name."""
    names = Counter(img.name for img in ground_truth)
    used: set[str] = set()
    aligned: list[Sequence[Detection]] = []
    for img in ground_truth:
        key = image_key(img)
        if key in detections:
            used.add(key)
            aligned.append(detections[key])
        elif names[img.name] == 1 and img.name in detections:
            used.add(img.name)
            aligned.append(detections[img.name])
        else:
            aligned.append(())  # the model found nothing on this image
    unused = [k for k in detections if k not in used]
    if unused:
        # Almost always a keying mistake; silently dropping them would make
        # the model look worse than it is.
        shown = ", ".join(repr(k) for k in unused[:5])
        more = f" (and {len(unused) - 5} more)" if len(unused) > 5 else ""
        raise ValueError(
            f"detections given for images not in the ground truth: {shown}{more}. "
            "Key detections by str(image.image_path) or by unique image name."
        )
    return aligned


def evaluate_detections(
    ground_truth: Sequence[AnnotatedImage],
    detections: Mapping[str, Sequence[Detection]],
    classes: Sequence[str],
    iou_threshold: float = 0.5,
    coco: bool = True,
) -> EvaluationResult:
    """Score `detections` against `ground_truth` for `classes`.

    `detections` is keyed by `image_key(image)` (= str(image.image_path)) or by
    the bare file name when that is unique; images without an entry had no
    detections. Keys matching no image raise ValueError. Boxes and detections
    whose label is not in `classes` are ignored and counted in
    `unknown_gt_labels` / `unknown_det_labels`.

    `coco=False` skips pycocotools (then `ap`, `coco_ap50` and `map` are NaN).
    """
    aligned = _align_detections(ground_truth, detections)
    return _evaluate_aligned(ground_truth, aligned, classes, iou_threshold, coco)


def _evaluate_aligned(
    ground_truth: Sequence[AnnotatedImage],
    detections: Sequence[Sequence[Detection]],
    classes: Sequence[str],
    iou_threshold: float,
    coco: bool,
) -> EvaluationResult:
    classes = list(dict.fromkeys(classes))  # de-duplicate, keep order
    class_set = set(classes)
    unknown_gt = Counter(b.label for img in ground_truth for b in img.boxes if b.label not in class_set)
    unknown_det = Counter(d.label for dets in detections for d in dets if d.label not in class_set)

    results: dict[str, ClassResult] = {}
    for cls in classes:
        all_scores: list[np.ndarray] = []
        all_status: list[np.ndarray] = []
        n_gt = n_difficult = n_det = 0
        for img, dets in zip(ground_truth, detections):
            gts = [b for b in img.boxes if b.label == cls]
            cds = [d for d in dets if d.label == cls]
            gt_boxes = np.array([(b.x1, b.y1, b.x2, b.y2) for b in gts], dtype=np.float64).reshape(-1, 4)
            gt_diff = np.array([b.difficult for b in gts], dtype=bool)
            det_boxes = np.array([d.box for d in cds], dtype=np.float64).reshape(-1, 4)
            det_scores = np.array([d.score for d in cds], dtype=np.float64)
            n_difficult += int(gt_diff.sum())
            n_gt += len(gts) - int(gt_diff.sum())
            n_det += len(cds)
            all_scores.append(det_scores)
            all_status.append(_match_image(det_boxes, det_scores, gt_boxes, gt_diff, iou_threshold))

        scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
        status = np.concatenate(all_status) if all_status else np.zeros(0, dtype=np.int8)
        # Stable global sort: ties keep image order, then within-image order.
        order = np.argsort(-scores, kind="mergesort")
        scores, status = scores[order], status[order]
        keep = status != _IGNORED
        scores, is_tp = scores[keep], status[keep] == _TP

        res = ClassResult(name=cls, n_gt=n_gt, n_det=n_det, n_difficult=n_difficult, n_tp=int(is_tp.sum()))
        if n_gt > 0:
            tp = np.cumsum(is_tp)
            fp = np.cumsum(~is_tp)
            res.recall = tp / n_gt
            res.precision = tp / np.maximum(tp + fp, 1)
            res.scores = scores
            res.ap50 = voc_ap(res.recall, res.precision)
        results[cls] = res

    if coco and classes:
        ap, ap50 = _coco_eval(ground_truth, detections, classes)
        for k, cls in enumerate(classes):
            results[cls].ap = float(ap[k])
            results[cls].coco_ap50 = float(ap50[k])

    # pycocotools reports -1 (here NaN) for classes without GT; force the same
    # for our own numbers so both means use the same set of classes.
    for res in results.values():
        if res.n_gt == 0:
            res.ap = res.coco_ap50 = res.ap50 = math.nan

    return EvaluationResult(
        classes=results,
        map50=_nanmean([r.ap50 for r in results.values()]),
        map=_nanmean([r.ap for r in results.values()]),
        coco_map50=_nanmean([r.coco_ap50 for r in results.values()]),
        iou_threshold=iou_threshold,
        n_images=len(ground_truth),
        unknown_gt_labels=dict(unknown_gt),
        unknown_det_labels=dict(unknown_det),
    )


def _coco_eval(
    ground_truth: Sequence[AnnotatedImage],
    detections: Sequence[Sequence[Detection]],
    classes: Sequence[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class COCO AP@[.5:.95] and AP@.5 via pycocotools (NaN where no GT)."""
    nan = np.full(len(classes), np.nan)
    if not ground_truth:
        return nan, nan.copy()
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "COCO metrics need pycocotools (pip install pycocotools), "
            "or call evaluate_detections(..., coco=False)"
        ) from exc

    cat_id = {c: k + 1 for k, c in enumerate(classes)}
    images = [
        {"id": i + 1, "width": int(img.width), "height": int(img.height), "file_name": str(img.image_path)}
        for i, img in enumerate(ground_truth)
    ]
    categories = [{"id": cat_id[c], "name": c} for c in classes]

    def xywh(x1: float, y1: float, x2: float, y2: float) -> list[float]:
        return [float(x1), float(y1), max(float(x2 - x1), 0.0), max(float(y2 - y1), 0.0)]

    # Ids start at 1: pycocotools treats a matched id of 0 as "unmatched".
    gt_anns: list[dict[str, Any]] = []
    for i, img in enumerate(ground_truth):
        for b in img.boxes:
            if b.label in cat_id:
                bb = xywh(b.x1, b.y1, b.x2, b.y2)
                gt_anns.append({
                    "id": len(gt_anns) + 1, "image_id": i + 1, "category_id": cat_id[b.label],
                    "bbox": bb, "area": bb[2] * bb[3], "iscrowd": int(b.difficult),
                })
    dt_anns: list[dict[str, Any]] = []
    max_per_image = 0
    for i, dets in enumerate(detections):
        n = 0
        for d in dets:
            if d.label in cat_id:
                bb = xywh(*d.box)
                dt_anns.append({
                    "id": len(dt_anns) + 1, "image_id": i + 1, "category_id": cat_id[d.label],
                    "bbox": bb, "area": bb[2] * bb[3], "score": float(d.score),
                })
                n += 1
        max_per_image = max(max_per_image, n)

    # Built in memory rather than through loadRes(), which fails on an empty
    # detection list; stdout is swallowed because pycocotools prints progress.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "categories": categories, "annotations": gt_anns}
        coco_gt.createIndex()
        coco_dt = COCO()
        coco_dt.dataset = {"images": images, "categories": categories, "annotations": dt_anns}
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        # COCO's default caps detections at 100 per image; evaluating with a
        # very low score threshold can exceed that, and the VOC numbers have
        # no cap, so lift it to keep the two comparable.
        ev.params.maxDets = [1, 10, max(100, max_per_image)]
        ev.evaluate()
        ev.accumulate()

    # precision: [T iou thresholds, R recall points, K classes, A areas, M maxDets]
    prec = np.asarray(ev.eval["precision"])[:, :, :, 0, -1]
    ap = nan.copy()
    ap50 = nan.copy()
    for k in range(len(classes)):
        p = prec[:, :, k]
        if np.any(p > -1):
            ap[k] = float(np.mean(p[p > -1]))
        p0 = p[0]  # iouThrs[0] == 0.5
        if np.any(p0 > -1):
            ap50[k] = float(np.mean(p0[p0 > -1]))
    return ap, ap50


# --------------------------------------------------------------------------- #
# Model evaluation (shared with training)
# --------------------------------------------------------------------------- #


class _Metadata(Protocol):
    class_names: list[str]


class _DetectorLike(Protocol):
    metadata: _Metadata

    def detect(self, image: Any, threshold: float | None = None) -> list[Detection]: ...


def evaluate_model(
    detector: _DetectorLike,
    images: Sequence[AnnotatedImage],
    iou_threshold: float = 0.5,
    *,
    score_threshold: float = EVAL_SCORE_THRESHOLD,
    progress: Callable[[int, int], None] | None = None,
    verdict_thresholds: Sequence[float] = (),
) -> EvaluationResult:
    """Run `detector` on every image and evaluate against its own classes.

    `progress(done, total)` is called after each image (e.g. for a GUI bar).
    `verdict_thresholds`: also the PASS/FAIL per picture at each (`picture_verdicts`).
    """
    dets: list[Sequence[Detection]] = []
    total = len(images)
    for i, img in enumerate(images):
        dets.append(detector.detect(str(img.image_path), threshold=score_threshold))
        if progress is not None:
            progress(i + 1, total)
    classes = list(detector.metadata.class_names)
    result = _evaluate_aligned(images, dets, classes, iou_threshold, coco=True)
    result.verdicts = [picture_verdicts(images, dets, classes, t) for t in verdict_thresholds]
    return result


def noisy_copies_ap50(
    detectors: Mapping[str, _DetectorLike],
    images: Sequence[AnnotatedImage],
    draws: int,
    sigma: float = 1.0,
    iou_threshold: float = 0.5,
) -> dict[str, list[dict[str, float | None]]]:
    """AP50 per class of each detector on `draws` noisy copies of `images`, every detector on the same copies.

    Copy k adds Gaussian noise of `sigma` grey levels drawn with seed k, so the copies
    are the same on every run. Why: on a small split one box moves AP50 by a point or
    more, and a score that shifts by 0.01 can swap a true and a false detection; the
    same comparison averaged over copies tells a model's change apart from those edges.
    Returns {name: [ {class: AP50 or None}, ... one per copy ]}.
    """
    from detector.images import load_grey

    greys = [load_grey(img.image_path) for img in images]
    out: dict[str, list[dict[str, float | None]]] = {name: [] for name in detectors}
    for seed in range(draws):
        rng = np.random.default_rng(seed)
        noisy = [np.clip(g + rng.normal(0.0, sigma, g.shape), 0, 255).round().astype(np.uint8) for g in greys]
        for name, det in detectors.items():
            dets = [det.detect(x, threshold=EVAL_SCORE_THRESHOLD) for x in noisy]
            classes = list(det.metadata.class_names)
            result = _evaluate_aligned(images, dets, classes, iou_threshold, coco=False)
            out[name].append({c: _json_float(result.classes[c].ap50) for c in classes})
    return out


# --------------------------------------------------------------------------- #
# Plotting
# --------------------------------------------------------------------------- #


def plot_pr_curves(result: EvaluationResult, out_png: str | Path) -> Path:
    """Write one precision-recall curve per class (with GT) to `out_png`.

    Draws the interpolated (monotone) curve whose area is the reported AP,
    with the raw curve faintly behind it. Uses the Agg canvas directly so it
    never touches pyplot's global backend (safe inside the Qt app).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(7, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    plotted = 0
    for name, c in result.classes.items():
        if c.n_gt == 0:
            continue
        if len(c.recall):
            rec = np.concatenate(([0.0], c.recall, [c.recall[-1]]))
            pre = np.concatenate(([c.precision[0]], c.precision, [0.0]))
        else:
            rec, pre = np.array([0.0, 0.0]), np.array([0.0, 0.0])
        envelope = np.maximum.accumulate(pre[::-1])[::-1]
        (line,) = ax.step(rec, envelope, where="post", linewidth=2, label=f"{name}  AP={_fmt(c.ap50)}")
        ax.plot(rec, pre, color=line.get_color(), alpha=0.3, linewidth=1)
        plotted += 1
    if plotted == 0:
        ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(True, alpha=0.3)
    ax.set_title(
        f"Precision-recall @ IoU {result.iou_threshold:g}   "
        f"m{_iou_label(result.iou_threshold)}={_fmt(result.map50)}   mAP.5:.95={_fmt(result.map)}"
    )
    if plotted:
        ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(out, format="png")
    return out
