"""QA review: verdict overrides, box corrections, training-set export (the gallery's queries are the log's methods).

Nothing here rewrites what the station logged: the inspection's verdict and
detections stay as they were (the database refuses to change them). QA's word
is appended, never updated: each QA action adds a `reviews` row (its verdict)
and, for a box correction, a `review_boxes` row, with an audit record (who,
when, old, new, reason) in the same transaction. QA's current word on an
inspection is its latest `reviews` row (`InspectionLog.current_review`).

Every QA action marks the inspection reviewed. A box correction (false positive,
missed defect) keeps the verdict in force (QA's latest, else the station's):
changing the verdict is always an explicit confirm/override with its own reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import cv2

from app.store import GALLERY_SORTS, AuditRecord, GalleryFilter, InspectionLog, InspectionRow, LogTransaction, ReviewBoxRow
from app.users import User, UserDirectory
from app.verdict import FAIL, PASS

SORTS = GALLERY_SORTS  # the gallery's sort choices
__all__ = ["SORTS", "GalleryFilter", "ReviewService", "ReviewState", "export_training_set", "record_setting_change",
           "review_state"]


@dataclass
class ReviewState:
    """An inspection as QA sees it: the station's record plus QA's corrections."""

    inspection: InspectionRow
    qa_verdict: str | None
    false_positive_ids: set[int]
    missed: list[ReviewBoxRow]  # defects QA added (kind "missed")
    history: list[AuditRecord]  # oldest first

    @property
    def effective_verdict(self) -> str:
        return self.qa_verdict or self.inspection.verdict


def review_state(store: InspectionLog, inspection_id: int) -> ReviewState:
    """An inspection with QA's current word, box corrections and audit history (no user needed: reading)."""
    insp = store.inspection(inspection_id)
    if insp is None:
        raise ValueError(f"no inspection #{inspection_id}")
    review = store.current_review(inspection_id)
    boxes = store.review_boxes(inspection_id)
    return ReviewState(
        inspection=insp,
        qa_verdict=review.qa_verdict if review else None,
        false_positive_ids={b.detection_id for b in boxes if b.kind == "false_positive"},
        missed=[b for b in boxes if b.kind == "missed"],
        history=store.audit_records(inspection_id=inspection_id),
    )


class ReviewService:
    """Review actions by one user; each is one transaction with its audit record.

    Every action re-reads the user's record (`UserDirectory.require`): a user
    disabled or moved out of QA since the service was made is refused at once.
    """

    def __init__(self, store: InspectionLog, user: User, users: UserDirectory | None = None):
        self.store = store
        self.user = user
        self.users = users or UserDirectory(store)

    def state(self, inspection_id: int) -> ReviewState:
        return review_state(self.store, inspection_id)

    def _reason(self, reason: str) -> str:
        reason = (reason or "").strip()
        if not reason:
            raise ValueError("a reason is required for every review change")
        return reason

    def _begin(self, tx: LogTransaction, inspection_id: int) -> tuple[User, InspectionRow, str]:
        """Inside the action's transaction: the reviewer as the database knows them now, the inspection,
        and the verdict in force (QA's latest, else the station's)."""
        reviewer = self.users.require(self.user, "review", tx)
        insp = tx.inspection(inspection_id)
        if insp is None:
            raise ValueError(f"no inspection #{inspection_id}")
        current = tx.current_review(inspection_id)
        return reviewer, insp, current.qa_verdict if current else insp.verdict

    def set_verdict(self, inspection_id: int, verdict: str, reason: str) -> None:
        """Confirm (same verdict as the station's) or override it."""
        if verdict not in (PASS, FAIL):
            raise ValueError(f"verdict must be PASS or FAIL, got {verdict!r}")
        reason = self._reason(reason)
        now = datetime.now(timezone.utc)
        with self.store.write() as tx:
            reviewer, insp, in_force = self._begin(tx, inspection_id)
            action = "review.confirm" if verdict == insp.verdict else "review.override"
            audit_id = tx.append_audit(reviewer.name, action, inspection_id=inspection_id,
                                       old={"verdict": in_force, "station_verdict": insp.verdict},
                                       new={"verdict": verdict}, reason=reason, at=now)
            tx.add_review(inspection_id, verdict, reviewer.name, now, audit_id)

    def mark_false_positive(self, inspection_id: int, detection_id: int, reason: str) -> None:
        reason = self._reason(reason)
        now = datetime.now(timezone.utc)
        with self.store.write() as tx:
            reviewer, insp, in_force = self._begin(tx, inspection_id)
            d = tx.detection(inspection_id, detection_id)
            if d is None:
                raise ValueError(f"inspection #{inspection_id} has no detection {detection_id}")
            if any(b.kind == "false_positive" and b.detection_id == detection_id for b in tx.review_boxes(inspection_id)):
                raise ValueError(f"detection {detection_id} is already marked as a false positive")
            audit_id = tx.append_audit(reviewer.name, "review.false_positive", inspection_id=inspection_id,
                                       old={"detection_id": detection_id, "label": d.label, "score": d.score},
                                       new={"false_positive": True, "verdict": in_force}, reason=reason, at=now)
            tx.add_review_box(inspection_id, "false_positive", d.label, d.box, audit_id, detection_id=detection_id)
            tx.add_review(inspection_id, in_force, reviewer.name, now, audit_id)

    def add_missed(self, inspection_id: int, label: str, box: tuple[float, float, float, float], reason: str) -> None:
        """A defect the model missed, drawn by QA (frame pixels)."""
        reason = self._reason(reason)
        if not label.strip():
            raise ValueError("pick the class of the missed defect")
        now = datetime.now(timezone.utc)
        with self.store.write() as tx:
            reviewer, insp, in_force = self._begin(tx, inspection_id)
            x1, y1, x2, y2 = (float(v) for v in box)
            x1, x2 = sorted((max(0.0, x1), min(float(insp.frame_w), x2)))
            y1, y2 = sorted((max(0.0, y1), min(float(insp.frame_h), y2)))
            if x2 - x1 < 1 or y2 - y1 < 1:
                raise ValueError("the box is empty or outside the frame")
            audit_id = tx.append_audit(reviewer.name, "review.missed", inspection_id=inspection_id,
                                       new={"label": label, "box": [x1, y1, x2, y2], "verdict": in_force}, reason=reason, at=now)
            tx.add_review_box(inspection_id, "missed", label, (x1, y1, x2, y2), audit_id)
            tx.add_review(inspection_id, in_force, reviewer.name, now, audit_id)


def record_setting_change(store: InspectionLog, user: User, action: str, old, new, reason: str = "") -> None:
    """Audit a rule or model change (made in the settings)."""
    with store.write() as tx:
        tx.append_audit(user.name, action, old=old, new=new, reason=reason)


# -- back to training -------------------------------------------------------------------


def export_training_set(store: InspectionLog, out_dir: str | Path, flt: GalleryFilter | None = None,
                        crop_to_region: bool = True) -> dict:
    """Reviewed inspections as a COCO data set that `python -m detector dataset` reads.

    Boxes = the shown detections QA did not reject + the defects QA added. A
    reviewed PASS with no boxes is a defect-free example. Pictures are cropped
    to each inspection region the model saw, one picture per region (boxes
    shifted and clipped; a box less than 30% inside a region is not its).
    Returns a summary {"images", "boxes", "skipped"}.
    """
    from detector.data.annotations import AnnotatedImage, Box
    from detector.data.coco import write_coco
    from detector.data.roi import crop_boxes
    from detector.regions import crop

    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    flt = flt or GalleryFilter()
    ids = store.gallery_ids(replace(flt, reviewed=True))
    annotated, classes, skipped = [], set(), []
    for inspection_id in ids:
        st = review_state(store, inspection_id)
        insp = st.inspection
        frame_path = store.resolve(insp.image_path)
        frame = cv2.imread(str(frame_path), cv2.IMREAD_UNCHANGED) if frame_path and frame_path.is_file() else None
        if frame is None:
            skipped.append(f"#{inspection_id}: frame missing")
            continue
        boxes = [(d.label, d.box) for d in insp.detections if d.shown and d.id not in st.false_positive_ids]
        boxes += [(m.label, m.box) for m in st.missed]
        if st.effective_verdict == PASS and st.missed == [] and boxes:
            # QA passed the part yet left boxes unrejected: ambiguous, keep it out of training.
            skipped.append(f"#{inspection_id}: PASS with unrejected boxes")
            continue
        # What the model saw: each inspection region's crop with the boxes inside it (one picture per region).
        rois = [r.roi for r in insp.regions] or [insp.roi] if crop_to_region else [None]
        for n, roi in enumerate(rois):
            region = frame if roi is None else crop(frame, roi)[0]
            h, w = region.shape[:2]
            shown = [Box(label, *box) for label, box in boxes]
            out_boxes = [b for b in (crop_boxes(shown, roi, min_visible=0.3) if roi is not None else shown)
                         if b.x2 - b.x1 >= 1 and b.y2 - b.y1 >= 1]
            classes.update(b.label for b in out_boxes)
            path = images_dir / (f"inspection_{inspection_id}.png" if len(rois) == 1 else f"inspection_{inspection_id}_{n + 1}.png")
            cv2.imwrite(str(path), region)
            annotated.append(AnnotatedImage(path, w, h, out_boxes))
    json_path = out_dir / "annotations.json"
    write_coco(annotated, sorted(classes), json_path, images_dir)
    summary = {"images": len(annotated), "boxes": sum(len(a.boxes) for a in annotated), "skipped": skipped,
               "classes": sorted(classes), "annotations": str(json_path)}
    (out_dir / "export.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary
