"""One inspection: frame -> the recipe's regions -> one detect_batch() -> a verdict per region -> the part's -> log.

Used alike by the station (window, service, line) and `python -m app inspect`,
so a part is judged and logged the same way whichever started it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from app.overlay import RegionMark, draw_overlay
from app.recipes import Recipe
from app.store import InspectionRecord, InspectionStore, RegionRecord, StoreError
from app.verdict import FAIL, PASS, Verdict, VerdictRule, judge
from detector import Detection, Detector
from detector.images import range_warning
from detector.regions import Roi, crop, to_frame

# The detector runs at this floor and every detection above it is logged, so the
# threshold slider can show weaker ones again without re-running the model and
# QA sees near misses.
DETECTION_FLOOR = 0.1


@dataclass(frozen=True)
class RegionResult:
    """One region's own judgement; `verdict`'s indices point into InspectionResult.detections."""

    name: str
    roi: Roi  # as used: clipped to the frame
    threshold: float
    rule: VerdictRule
    verdict: Verdict


@dataclass
class InspectionResult:
    frame: np.ndarray
    regions: list[RegionResult]
    detections: list[Detection]  # frame pixels, score >= DETECTION_FLOOR; region by region, best first
    detection_regions: list[str]  # the region each detection was found in
    verdict: Verdict  # the part's: FAIL if any region fails; shown/failing over all regions
    inference_ms: float
    recipe: Recipe
    threshold: float  # the recipe's decision threshold (a region may have its own)
    source: str = ""
    part_id: str = ""
    trigger: str = "operator"
    job_id: str = ""
    inspection_id: int | None = None  # None: not logged (see warnings/error)
    uid: str = ""
    created_at: datetime | None = None  # the logged time (None: not logged)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None  # the log could not be written

    @property
    def roi(self) -> Roi:
        """The part of the frame the regions cover (their bounding box)."""
        return bounding_roi([r.roi for r in self.regions])

    def displayed(self, display_threshold: float) -> tuple[int, ...]:
        """Indices of detections to draw under the operator's display filter.

        The filter shows weaker boxes or hides non-failing ones; it never
        changes the verdict, and a box that fails the part is always drawn.
        """
        failing = set(self.verdict.failing)
        return tuple(i for i, d in enumerate(self.detections) if d.score >= display_threshold or i in failing)


def bounding_roi(rois: Sequence[Roi]) -> Roi:
    x1, y1 = min(r.x for r in rois), min(r.y for r in rois)
    x2, y2 = max(r.x + r.w for r in rois), max(r.y + r.h for r in rois)
    return Roi(x1, y1, x2 - x1, y2 - y1)


class Inspector:
    """Runs and logs inspections with one model for one station."""

    def __init__(self, detector: Detector, store: InspectionStore | None, station: str, keep_pictures: str = "all"):
        self.detector = detector
        self.store = store
        self.station = station
        self.keep_pictures = keep_pictures  # "all" or "fail": which inspections keep their pictures
        self.colours = dict(detector.metadata.colours)

    def detect_regions(self, frame: np.ndarray, rois: Sequence[Roi | None]) -> tuple[list[list[Detection]], list[Roi], float]:
        """Each region cropped and detected in one batch; detections in frame pixels, the regions as used, ms."""
        crops = [crop(frame, roi) for roi in rois]
        t0 = time.perf_counter()
        found = self.detector.detect_batch([c for c, _ in crops], threshold=DETECTION_FLOOR)
        ms = (time.perf_counter() - t0) * 1000.0
        return ([[Detection(d.label, d.score, to_frame(d.box, used)) for d in dets] for dets, (_, used) in zip(found, crops)],
                [used for _, used in crops], ms)

    def inspect(self, frame: np.ndarray, recipe: Recipe, *, source: str = "", operator: str = "", part_id: str = "",
                trigger: str = "operator", job_id: str = "", log: bool = True,
                frame_warnings: Sequence[str] | None = None) -> InspectionResult:
        """Inspect one frame under `recipe`; logs it when a store is set and `log` is true.

        Every region is cropped and detected (one batch) and judged by its own
        rule and threshold; the part fails if any region does. `frame_warnings`:
        what the source found doubtful about the frame (shown and logged); None:
        checked here (a frame using under 1/16 of its range). Raises ValueError
        for a frame the detector cannot take, a region outside the frame, or a
        recipe whose thresholds were set for another model (nothing is logged
        then). A failing log write does not raise: the result carries the error
        so the operator sees it.
        """
        problem = recipe.threshold_model_problem(self.detector.weights_id)
        if problem:
            raise ValueError(problem)
        default = self.detector.metadata.default_threshold
        per_region, used, ms = self.detect_regions(frame, [r.roi for r in recipe.regions])
        detections: list[Detection] = []
        detection_regions: list[str] = []
        regions: list[RegionResult] = []
        for region, dets, roi in zip(recipe.regions, per_region, used):
            threshold = max(DETECTION_FLOOR, recipe.threshold_for(region, default))
            rule = recipe.rule_for(region)
            local = judge(dets, threshold, rule)
            offset = len(detections)
            detections += dets
            detection_regions += [region.name] * len(dets)
            regions.append(RegionResult(region.name, roi, threshold, rule,
                                        Verdict(local.verdict, tuple(offset + i for i in local.shown),
                                                tuple(offset + i for i in local.failing))))
        shown = tuple(i for r in regions for i in r.verdict.shown)
        failing = tuple(i for r in regions for i in r.verdict.failing)
        part = Verdict(FAIL if any(r.verdict.verdict == FAIL for r in regions) else PASS, shown, failing)
        result = InspectionResult(frame, regions, detections, detection_regions, part, ms, recipe,
                                  max(DETECTION_FLOOR, recipe.threshold if recipe.threshold is not None else default),
                                  source=source, part_id=part_id, trigger=trigger, job_id=job_id)
        if frame_warnings is None:
            warning = range_warning(frame)
            frame_warnings = (warning,) if warning else ()
        result.warnings.extend(frame_warnings)
        if log and self.store is not None:
            self._log(result, operator)
        return result

    def annotate(self, result: InspectionResult, shown: tuple[int, ...] | None = None, badge: bool = True) -> np.ndarray:
        """The frame with the regions (named, with their verdict when there are several), the boxes
        (`shown`, default: those at the decision threshold; failing ones always) and the verdict badge."""
        verdict = result.verdict
        several = len(result.regions) > 1
        marks = [RegionMark(r.roi, r.name if several else "", r.verdict.verdict if several else None) for r in result.regions]
        return draw_overlay(result.frame, result.detections, verdict.shown if shown is None else shown, self.colours,
                            failing=verdict.failing, verdict=verdict.verdict if badge else None, regions=marks)

    def _log(self, result: InspectionResult, operator: str) -> None:
        meta = self.detector.metadata
        h, w = result.frame.shape[:2]
        rec = InspectionRecord(
            station=self.station, source=result.source, frame_size=(w, h), roi=result.roi,
            model_id=self.detector.model_id, model_version=meta.created or "unknown",
            threshold=result.threshold, rule_json=result.recipe.rule.to_json(), verdict=result.verdict.verdict,
            detections=result.detections, shown=result.verdict.shown, failing=result.verdict.failing,
            operator=operator, part_id=result.part_id, inference_ms=result.inference_ms, notes=tuple(result.warnings),
            trigger=result.trigger, job_id=result.job_id, recipe=result.recipe.name, recipe_version=result.recipe.version,
            regions=[RegionRecord(r.name, r.roi, r.threshold, r.rule.to_json(), r.verdict.verdict) for r in result.regions],
            detection_regions=result.detection_regions,
        )
        result.uid = rec.uid
        try:
            if self.keep_pictures == "all" or result.verdict.verdict == FAIL:
                stored = self.store.record(rec, result.frame, self.annotate(result))
            else:
                stored = self.store.record(rec)  # logged without pictures, as the settings ask
        except StoreError as exc:
            result.error = str(exc)
            return
        result.inspection_id, result.created_at = stored.id, rec.created_at
        result.warnings.extend(stored.warnings[len(rec.notes):])  # the store's own (pictures not saved)
