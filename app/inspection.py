"""One inspection: frame -> region crop -> detect() -> verdict -> log.

Used alike by the operator screen and `python -m app inspect`, so a part is
judged and logged the same way whichever started it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from app.overlay import draw_overlay
from app.roi import Roi, crop, to_frame
from app.store import InspectionRecord, InspectionStore, StoreError
from app.verdict import FAIL, Verdict, VerdictRule, judge
from detector import Detection, Detector
from detector.images import range_warning

# The detector runs at this floor and every detection above it is logged, so the
# threshold slider can show weaker ones again without re-running the model and
# QA sees near misses.
DETECTION_FLOOR = 0.1


@dataclass
class InspectionResult:
    frame: np.ndarray
    roi: Roi  # region used, clipped to the frame
    detections: list[Detection]  # frame pixels, score >= DETECTION_FLOOR, best first
    threshold: float
    verdict: Verdict
    inference_ms: float
    source: str = ""
    part_id: str = ""
    inspection_id: int | None = None  # None: not logged (see warnings/error)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None  # the log could not be written

    def displayed(self, display_threshold: float) -> tuple[int, ...]:
        """Indices of detections to draw under the operator's display filter.

        The filter shows weaker boxes or hides non-failing ones; it never
        changes the verdict, and a box that fails the part is always drawn.
        """
        failing = set(self.verdict.failing)
        return tuple(i for i, d in enumerate(self.detections) if d.score >= display_threshold or i in failing)


class Inspector:
    """Runs and logs inspections for one station."""

    def __init__(self, detector: Detector, store: InspectionStore | None, station: str, rule: VerdictRule,
                 keep_pictures: str = "all"):
        self.detector = detector
        self.store = store
        self.station = station
        self.rule = rule
        self.keep_pictures = keep_pictures  # "all" or "fail": which inspections keep their pictures
        self.colours = dict(detector.metadata.colours)

    def detect_region(self, frame: np.ndarray, roi: Roi | None) -> tuple[list[Detection], Roi, float]:
        region, used = crop(frame, roi)
        t0 = time.perf_counter()
        found = self.detector.detect(region, threshold=DETECTION_FLOOR)
        ms = (time.perf_counter() - t0) * 1000.0
        dets = [Detection(d.label, d.score, to_frame(d.box, used)) for d in found]
        return dets, used, ms

    def inspect(self, frame: np.ndarray, *, roi: Roi | None, threshold: float, source: str = "",
                operator: str = "", part_id: str = "", log: bool = True,
                frame_warnings: Sequence[str] | None = None) -> InspectionResult:
        """Inspect one frame; logs it when a store is set and `log` is true.

        `frame_warnings`: what the source found doubtful about the frame (e.g.
        a 12-bit frame read as 16-bit, nearly black); shown and logged with the
        result. None: checked here (a frame using under 1/16 of its range).
        Raises ValueError for a frame the detector cannot take or a region
        outside the frame (nothing is logged then). A failing log write does not
        raise: the result carries the error so the operator sees it.
        """
        threshold = max(DETECTION_FLOOR, float(threshold))
        dets, used, ms = self.detect_region(frame, roi)
        verdict = judge(dets, threshold, self.rule)
        result = InspectionResult(frame, used, dets, threshold, verdict, ms, source=source, part_id=part_id)
        if frame_warnings is None:
            warning = range_warning(frame)
            frame_warnings = (warning,) if warning else ()
        result.warnings.extend(frame_warnings)
        if log and self.store is not None:
            self._log(result, operator)
        return result

    def annotate(self, result: InspectionResult, shown: tuple[int, ...] | None = None, badge: bool = True) -> np.ndarray:
        """The frame with the region, the boxes (`shown`, default: those at the decision threshold;
        failing ones always) and the verdict badge."""
        verdict = result.verdict
        return draw_overlay(result.frame, result.detections, verdict.shown if shown is None else shown, self.colours,
                            result.roi, verdict.failing, verdict.verdict if badge else None)

    def _log(self, result: InspectionResult, operator: str) -> None:
        meta = self.detector.metadata
        h, w = result.frame.shape[:2]
        rec = InspectionRecord(
            station=self.station, source=result.source, frame_size=(w, h), roi=result.roi,
            model_id=self.detector.model_id, model_version=meta.created or "unknown",
            threshold=result.threshold, rule_json=self.rule.to_json(), verdict=result.verdict.verdict,
            detections=result.detections, shown=result.verdict.shown, failing=result.verdict.failing,
            operator=operator, part_id=result.part_id, inference_ms=result.inference_ms, notes=tuple(result.warnings),
        )
        try:
            if self.keep_pictures == "all" or result.verdict.verdict == FAIL:
                stored = self.store.record(rec, result.frame, self.annotate(result))
            else:
                stored = self.store.record(rec)  # logged without pictures, as the settings ask
        except StoreError as exc:
            result.error = str(exc)
            return
        result.inspection_id = stored.id
        result.warnings.extend(stored.warnings[len(rec.notes):])  # the store's own (pictures not saved)
