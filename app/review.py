"""QA review: gallery queries, verdict overrides, box corrections, training-set export.

Nothing here rewrites what the station logged: the inspection's verdict and
detections stay as they were (the database refuses to change them). QA's word
is appended, never updated: each QA action adds a `reviews` row (its verdict)
and, for a box correction, a `review_boxes` row, with an audit record (who,
when, old, new, reason) in the same transaction. QA's current word on an
inspection is its latest `reviews` row: the `current_reviews` view
(inspection_id, qa_verdict, reviewer, reviewed_at, audit_id), one row per
reviewed inspection.

Every QA action marks the inspection reviewed. A box correction (false positive,
missed defect) keeps the verdict in force (QA's latest, else the station's):
changing the verdict is always an explicit confirm/override with its own reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2

from app.audit import audit
from app.roi import Roi
from app.store import InspectionStore, iso_utc
from app.users import User, UserDirectory
from app.verdict import FAIL, PASS

SORTS = {
    "newest": "i.created_at DESC, i.id DESC",
    "oldest": "i.created_at ASC, i.id ASC",
    "highest score": "i.max_score DESC, i.id DESC",
    "part id": "i.part_id ASC, i.id DESC",
}


@dataclass(frozen=True)
class GalleryFilter:
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    verdict: str | None = None  # the station's verdict, PASS or FAIL
    qa_verdict: str | None = None  # QA's verdict, PASS or FAIL (reviewed ones only)
    label: str | None = None  # has a shown detection of this class
    operator: str | None = None
    part_id: str | None = None  # substring
    reviewed: bool | None = None
    min_score: float | None = None  # has a shown detection scoring at least this
    max_score: float | None = None  # ... and at most this

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if self.start is not None:
            clauses.append("i.created_at >= ?")
            params.append(iso_utc(self.start))
        if self.end is not None:
            clauses.append("i.created_at < ?")
            params.append(iso_utc(self.end))
        if self.verdict:
            clauses.append("i.verdict = ?")
            params.append(self.verdict)
        if self.operator:
            clauses.append("i.operator = ?")
            params.append(self.operator)
        if self.part_id:
            clauses.append("i.part_id LIKE ? ESCAPE '\\'")
            params.append("%" + self.part_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        if self.reviewed is not None:
            clauses.append(("" if self.reviewed else "NOT ") + "EXISTS (SELECT 1 FROM reviews r WHERE r.inspection_id = i.id)")
        if self.qa_verdict:
            clauses.append("EXISTS (SELECT 1 FROM current_reviews r WHERE r.inspection_id = i.id AND r.qa_verdict = ?)")
            params.append(self.qa_verdict)
        det = ["d.inspection_id = i.id", "d.shown = 1"]
        det_params: list[Any] = []
        if self.label:
            det.append("d.label = ?")
            det_params.append(self.label)
        if self.min_score is not None:
            det.append("d.score >= ?")
            det_params.append(float(self.min_score))
        if self.max_score is not None:
            det.append("d.score <= ?")
            det_params.append(float(self.max_score))
        if det_params:
            clauses.append(f"EXISTS (SELECT 1 FROM detections d WHERE {' AND '.join(det)})")
            params += det_params
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


GALLERY_COLUMNS = (
    "i.id, i.created_at, i.station, i.operator, i.part_id, i.verdict, i.max_score, i.annotated_path, i.image_path,"
    " (SELECT r.qa_verdict FROM current_reviews r WHERE r.inspection_id = i.id) AS qa_verdict"
)


def gallery_page(store: InspectionStore, flt: GalleryFilter, sort: str = "newest", page: int = 0,
                 page_size: int = 48) -> list[dict]:
    """One page of inspections matching `flt`, as dicts (no detections)."""
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}")
    where, params = flt.where()
    rows = store.query(f"SELECT {GALLERY_COLUMNS} FROM inspections i{where} ORDER BY {SORTS[sort]} LIMIT ? OFFSET ?",
                       [*params, int(page_size), int(page) * int(page_size)])
    return [dict(r) for r in rows]


def gallery_count(store: InspectionStore, flt: GalleryFilter) -> int:
    where, params = flt.where()
    return int(store.query(f"SELECT COUNT(*) FROM inspections i{where}", params)[0][0])


def distinct_values(store: InspectionStore, column: str) -> list[str]:
    """Operators or classes present in the log, for filter choices."""
    sql = {"operator": "SELECT DISTINCT operator FROM inspections WHERE operator != '' ORDER BY operator",
           "label": "SELECT DISTINCT label FROM detections ORDER BY label"}[column]
    return [r[0] for r in store.query(sql)]


# -- review actions --------------------------------------------------------------------


@dataclass
class ReviewState:
    """An inspection as QA sees it: the station's record plus QA's corrections."""

    inspection: dict
    qa_verdict: str | None
    false_positive_ids: set[int]
    missed: list[dict]  # {"label", "box"}
    history: list[dict]  # audit records, oldest first

    @property
    def effective_verdict(self) -> str:
        return self.qa_verdict or self.inspection["verdict"]


def review_state(store: InspectionStore, inspection_id: int) -> ReviewState:
    """An inspection with QA's current word, box corrections and audit history (no user needed: reading)."""
    insp = store.get(inspection_id)
    if insp is None:
        raise ValueError(f"no inspection #{inspection_id}")
    review = store.query("SELECT qa_verdict FROM current_reviews WHERE inspection_id = ?", (inspection_id,))
    boxes = store.query("SELECT detection_id, kind, label, x1, y1, x2, y2 FROM review_boxes WHERE inspection_id = ? ORDER BY id",
                        (inspection_id,))
    history = store.query("SELECT * FROM audit WHERE inspection_id = ? ORDER BY id", (inspection_id,))
    return ReviewState(
        inspection=insp,
        qa_verdict=review[0]["qa_verdict"] if review else None,
        false_positive_ids={b["detection_id"] for b in boxes if b["kind"] == "false_positive"},
        missed=[{"label": b["label"], "box": (b["x1"], b["y1"], b["x2"], b["y2"])} for b in boxes if b["kind"] == "missed"],
        history=[dict(h) for h in history],
    )


class ReviewService:
    """Review actions by one user; each is one transaction with its audit record.

    Every action re-reads the user's record (`UserDirectory.require`): a user
    disabled or moved out of QA since the service was made is refused at once.
    """

    def __init__(self, store: InspectionStore, user: User, users: UserDirectory | None = None):
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

    def _begin(self, conn, inspection_id: int) -> tuple[User, dict, str]:
        """Inside the action's transaction: the reviewer as the database knows them now, the inspection,
        and the verdict in force (QA's latest, else the station's)."""
        reviewer = self.users.require(self.user, "review", conn)
        insp = conn.execute("SELECT id, verdict, frame_w, frame_h FROM inspections WHERE id = ?", (inspection_id,)).fetchone()
        if insp is None:
            raise ValueError(f"no inspection #{inspection_id}")
        current = conn.execute("SELECT qa_verdict FROM current_reviews WHERE inspection_id = ?", (inspection_id,)).fetchone()
        return reviewer, dict(insp), current[0] if current else insp["verdict"]

    @staticmethod
    def _review(conn, inspection_id: int, verdict: str, reviewer: User, audit_id: int, at: datetime) -> None:
        conn.execute("INSERT INTO reviews (inspection_id, qa_verdict, reviewer, reviewed_at, audit_id) VALUES (?,?,?,?,?)",
                     (inspection_id, verdict, reviewer.name, iso_utc(at), audit_id))

    def set_verdict(self, inspection_id: int, verdict: str, reason: str) -> None:
        """Confirm (same verdict as the station's) or override it."""
        if verdict not in (PASS, FAIL):
            raise ValueError(f"verdict must be PASS or FAIL, got {verdict!r}")
        reason = self._reason(reason)
        now = datetime.now(timezone.utc)
        with self.store.transaction() as conn:
            reviewer, insp, in_force = self._begin(conn, inspection_id)
            action = "review.confirm" if verdict == insp["verdict"] else "review.override"
            audit_id = audit(conn, reviewer.name, action, inspection_id=inspection_id,
                             old={"verdict": in_force, "station_verdict": insp["verdict"]},
                             new={"verdict": verdict}, reason=reason, at=now)
            self._review(conn, inspection_id, verdict, reviewer, audit_id, now)

    def mark_false_positive(self, inspection_id: int, detection_id: int, reason: str) -> None:
        reason = self._reason(reason)
        now = datetime.now(timezone.utc)
        with self.store.transaction() as conn:
            reviewer, insp, in_force = self._begin(conn, inspection_id)
            d = conn.execute("SELECT id, label, score, x1, y1, x2, y2 FROM detections WHERE id = ? AND inspection_id = ?",
                             (detection_id, inspection_id)).fetchone()
            if d is None:
                raise ValueError(f"inspection #{inspection_id} has no detection {detection_id}")
            if conn.execute("SELECT 1 FROM review_boxes WHERE detection_id = ? AND kind = 'false_positive'",
                            (detection_id,)).fetchone():
                raise ValueError(f"detection {detection_id} is already marked as a false positive")
            audit_id = audit(conn, reviewer.name, "review.false_positive", inspection_id=inspection_id,
                             old={"detection_id": detection_id, "label": d["label"], "score": d["score"]},
                             new={"false_positive": True, "verdict": in_force}, reason=reason, at=now)
            conn.execute("INSERT INTO review_boxes (inspection_id, detection_id, kind, label, x1, y1, x2, y2, audit_id)"
                         " VALUES (?,?,?,?,?,?,?,?,?)",
                         (inspection_id, detection_id, "false_positive", d["label"], d["x1"], d["y1"], d["x2"], d["y2"], audit_id))
            self._review(conn, inspection_id, in_force, reviewer, audit_id, now)

    def add_missed(self, inspection_id: int, label: str, box: tuple[float, float, float, float], reason: str) -> None:
        """A defect the model missed, drawn by QA (frame pixels)."""
        reason = self._reason(reason)
        if not label.strip():
            raise ValueError("pick the class of the missed defect")
        now = datetime.now(timezone.utc)
        with self.store.transaction() as conn:
            reviewer, insp, in_force = self._begin(conn, inspection_id)
            x1, y1, x2, y2 = (float(v) for v in box)
            x1, x2 = sorted((max(0.0, x1), min(float(insp["frame_w"]), x2)))
            y1, y2 = sorted((max(0.0, y1), min(float(insp["frame_h"]), y2)))
            if x2 - x1 < 1 or y2 - y1 < 1:
                raise ValueError("the box is empty or outside the frame")
            audit_id = audit(conn, reviewer.name, "review.missed", inspection_id=inspection_id,
                             new={"label": label, "box": [x1, y1, x2, y2], "verdict": in_force}, reason=reason, at=now)
            conn.execute("INSERT INTO review_boxes (inspection_id, detection_id, kind, label, x1, y1, x2, y2, audit_id)"
                         " VALUES (?,?,?,?,?,?,?,?,?)", (inspection_id, None, "missed", label, x1, y1, x2, y2, audit_id))
            self._review(conn, inspection_id, in_force, reviewer, audit_id, now)


def record_setting_change(store: InspectionStore, user: User, action: str, old, new, reason: str = "") -> None:
    """Audit a rule or model change (made in the settings)."""
    with store.transaction() as conn:
        audit(conn, user.name, action, old=old, new=new, reason=reason)


# -- back to training -------------------------------------------------------------------


def export_training_set(store: InspectionStore, out_dir: str | Path, flt: GalleryFilter | None = None,
                        crop_to_region: bool = True) -> dict:
    """Reviewed inspections as a COCO data set that `python -m detector dataset` reads.

    Boxes = the shown detections QA did not reject + the defects QA added. A
    reviewed PASS with no boxes is a defect-free example. Pictures are cropped
    to the inspection region the model saw (boxes shifted and clipped).
    Returns a summary {"images", "boxes", "skipped"}.
    """
    from detector.data.annotations import AnnotatedImage, Box
    from detector.data.coco import write_coco

    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    flt = flt or GalleryFilter()
    flt = GalleryFilter(**{**flt.__dict__, "reviewed": True})
    where, params = flt.where()
    ids = [r[0] for r in store.query(f"SELECT i.id FROM inspections i{where} ORDER BY i.id", params)]
    annotated, classes, skipped = [], set(), []
    for inspection_id in ids:
        st = review_state(store, inspection_id)
        insp = st.inspection
        frame_path = store.resolve(insp["image_path"])
        frame = cv2.imread(str(frame_path), cv2.IMREAD_UNCHANGED) if frame_path and frame_path.is_file() else None
        if frame is None:
            skipped.append(f"#{inspection_id}: frame missing")
            continue
        boxes = [(d["label"], (d["x1"], d["y1"], d["x2"], d["y2"])) for d in insp["detections"]
                 if d["shown"] and d["id"] not in st.false_positive_ids]
        boxes += [(m["label"], m["box"]) for m in st.missed]
        if st.effective_verdict == PASS and st.missed == [] and boxes:
            # QA passed the part yet left boxes unrejected: ambiguous, keep it out of training.
            skipped.append(f"#{inspection_id}: PASS with unrejected boxes")
            continue
        roi = Roi(insp["roi_x"], insp["roi_y"], insp["roi_w"], insp["roi_h"]) if crop_to_region else None
        if roi is not None:
            frame = frame[roi.y:roi.y + roi.h, roi.x:roi.x + roi.w]
        ox, oy = (roi.x, roi.y) if roi is not None else (0, 0)
        h, w = frame.shape[:2]
        out_boxes = []
        for label, (x1, y1, x2, y2) in boxes:
            bx1, by1 = max(0.0, x1 - ox), max(0.0, y1 - oy)
            bx2, by2 = min(float(w), x2 - ox), min(float(h), y2 - oy)
            if bx2 - bx1 >= 1 and by2 - by1 >= 1:
                out_boxes.append(Box(label, bx1, by1, bx2, by2))
                classes.add(label)
        path = images_dir / f"inspection_{inspection_id}.png"
        cv2.imwrite(str(path), frame)
        annotated.append(AnnotatedImage(path, w, h, out_boxes))
    json_path = out_dir / "annotations.json"
    write_coco(annotated, sorted(classes), json_path, images_dir)
    summary = {"images": len(annotated), "boxes": sum(len(a.boxes) for a in annotated), "skipped": skipped,
               "classes": sorted(classes), "annotations": str(json_path)}
    (out_dir / "export.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary
