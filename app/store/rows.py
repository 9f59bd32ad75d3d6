"""What goes into the inspection log and what comes back out: typed rows, the same for every implementation.

Times are the log's own text: ISO 8601, UTC, milliseconds, "Z" (`iso_utc`), so
that text order is time order and hashes are computed over exactly what is
stored. Inspections carry a `uid` besides their `id`: the id is local to one
log, the uid is the same everywhere a row is copied to (the plant database,
a receiver of result outputs).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from detector import Detection
from detector.regions import Roi


class StoreError(RuntimeError):
    """The inspection log could not be written or read (message says why)."""


def iso_utc(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- writing an inspection ---------------------------------------------------------------


@dataclass(frozen=True)
class RegionRecord:
    """One inspection region's own result, as logged."""

    name: str
    roi: Roi  # as used: clipped to the frame
    threshold: float
    rule_json: str
    verdict: str


@dataclass
class InspectionRecord:
    """Everything logged about one inspection (detections in frame pixels).

    `regions`: each region's result; `detection_regions`: the region name of each
    detection (same order as `detections`). Both empty for a whole-frame inspection
    logged without recipes.
    """

    station: str
    source: str
    frame_size: tuple[int, int]  # (w, h)
    roi: Roi
    model_id: str
    model_version: str
    threshold: float
    rule_json: str
    verdict: str
    detections: Sequence[Detection]
    shown: Sequence[int]
    failing: Sequence[int]
    operator: str = ""
    part_id: str = ""
    inference_ms: float | None = None
    notes: Sequence[str] = ()  # what was doubtful about the frame (e.g. nearly black), kept on the row
    trigger: str = "operator"  # what started it: operator, continuous or line
    job_id: str = ""  # the id the trigger carried
    recipe: str = ""
    recipe_version: int = 0
    regions: Sequence[RegionRecord] = ()
    detection_regions: Sequence[str | None] = ()
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class StoredInspection:
    id: int
    uid: str
    image_path: Path | None
    annotated_path: Path | None
    warnings: list[str]


# -- reading inspections -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DetectionRow:
    id: int
    label: str
    score: float
    x1: float
    y1: float
    x2: float
    y2: float  # frame pixels
    shown: bool  # at or above the threshold
    fails: bool  # made the part fail
    region: str | None = None  # the region it was found in (None before recipes)

    @property
    def box(self) -> tuple[float, float, float, float]:
        return self.x1, self.y1, self.x2, self.y2


@dataclass(frozen=True, slots=True)
class RegionRow:
    name: str
    x: int
    y: int
    w: int
    h: int
    threshold: float
    rule_json: str
    verdict: str

    @property
    def roi(self) -> Roi:
        return Roi(self.x, self.y, self.w, self.h)


@dataclass(frozen=True, slots=True)
class InspectionRow:
    """One logged inspection with its detections (best first) and regions (in order)."""

    id: int
    uid: str
    created_at: str
    station: str
    operator: str
    part_id: str
    source: str
    frame_w: int
    frame_h: int
    roi_x: int
    roi_y: int
    roi_w: int
    roi_h: int
    model_id: str
    model_version: str
    threshold: float
    rule_json: str
    verdict: str
    n_detections: int
    max_score: float = 0.0
    inference_ms: float | None = None
    image_path: str | None = None  # as the log names them: `InspectionLog.resolve` gives the file
    annotated_path: str | None = None
    note: str = ""
    image_sha256: str | None = None
    annotated_sha256: str | None = None
    trigger: str = "operator"
    job_id: str = ""
    recipe: str = ""
    recipe_version: int = 0
    hash_version: int = 1
    prev_hash: str | None = None
    hash: str | None = None
    detections: tuple[DetectionRow, ...] = ()
    regions: tuple[RegionRow, ...] = ()

    @property
    def roi(self) -> Roi:
        return Roi(self.roi_x, self.roi_y, self.roi_w, self.roi_h)

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> InspectionRow:
        """From `InspectionLog.get()`'s dict (columns a log of an older schema lacks take their defaults)."""
        fields = {k: row[k] for k in cls.__dataclass_fields__ if k in row and k not in ("detections", "regions")}
        dets = tuple(DetectionRow(d["id"], d["label"], d["score"], d["x1"], d["y1"], d["x2"], d["y2"], bool(d["shown"]),
                                  bool(d["fails"]), d.get("region")) for d in row.get("detections", ()))
        regions = tuple(RegionRow(**r) for r in row.get("regions", ()))
        return cls(**fields, detections=dets, regions=regions)


# -- QA gallery ------------------------------------------------------------------------------

GALLERY_SORTS = ("newest", "oldest", "highest score", "part id")


@dataclass(frozen=True)
class GalleryFilter:
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    verdict: str | None = None  # the station's verdict, PASS or FAIL
    qa_verdict: str | None = None  # QA's verdict, PASS or FAIL (reviewed ones only)
    label: str | None = None  # has a shown detection of this class
    operator: str | None = None
    part_id: str | None = None  # substring, taken literally
    reviewed: bool | None = None
    min_score: float | None = None  # has a shown detection scoring at least this
    max_score: float | None = None  # ... and at most this
    station: str | None = None  # logged by this station (the plant log holds many)


@dataclass(frozen=True, slots=True)
class GalleryItem:
    """One thumbnail of the gallery: the inspection without its detections, and QA's current verdict."""

    id: int
    created_at: str
    station: str
    operator: str
    part_id: str
    verdict: str
    max_score: float
    annotated_path: str | None
    image_path: str | None
    qa_verdict: str | None  # None: not reviewed


# -- QA reviews, audit trail, users -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReviewRow:
    """QA's word on an inspection (append-only; the latest row per inspection is current)."""

    inspection_id: int
    qa_verdict: str
    reviewer: str
    reviewed_at: str
    audit_id: int  # the audit record that made it
    id: int | None = None  # None when read as QA's current word (which the audit record identifies)


@dataclass(frozen=True, slots=True)
class ReviewBoxRow:
    """A box QA rejected (kind "false_positive", naming the detection) or added (kind "missed")."""

    id: int
    inspection_id: int
    detection_id: int | None
    kind: str
    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    audit_id: int

    @property
    def box(self) -> tuple[float, float, float, float]:
        return self.x1, self.y1, self.x2, self.y2


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One record of the hash-chained audit trail; old and new values are the JSON text as written."""

    id: int
    at: str
    user: str
    action: str
    inspection_id: int | None
    old_value: str | None
    new_value: str | None
    reason: str
    prev_hash: str | None = None
    hash: str | None = None


@dataclass(frozen=True, slots=True)
class UserRow:
    id: int
    name: str
    role: str
    active: bool
    created_at: str
    secret_hash: str  # scrypt with a per-user salt, never the PIN
    failed_attempts: int = 0  # wrong PINs since the last good one
    locked_until: str | None = None  # sign-in refused until then


# -- supervisor reports: every row of a created_at range [lo, hi) -------------------------------
# Named tuples, not dataclasses: a month of a busy station is ~100,000 of each.


class ReportInspection(NamedTuple):
    id: int
    created_at: str
    station: str
    verdict: str


class ReportListRow(NamedTuple):
    """An inspection as the per-inspection CSV lists it."""

    id: int
    created_at: str
    station: str
    verdict: str
    operator: str
    part_id: str
    source: str
    model_id: str
    model_version: str
    threshold: float
    n_detections: int
    image_path: str | None
    note: str
    recipe: str  # "" and 0 before recipes (schema v4)
    recipe_version: int
    trigger: str
    job_id: str
    regions: str | None  # each region's verdict, "left=PASS; right=FAIL" (None: logged without regions)


# Per inspection id, per class: (detections that made the part fail, best shown score; None: none shown).
# An aggregate, built straight from the query's rows: ~100,000 (inspection, class) pairs a month.
ClassStats = dict[int, dict[str, tuple[int, "float | None"]]]


class ShownScore(NamedTuple):
    label: str
    score: float


class ReportGroup(NamedTuple):
    """The counts of one (report day, station, shift), as a log that groups them itself gives them."""

    day: date
    station: str
    shift: str  # "" without shifts
    inspected: int
    passed: int
    failed: int
    qa_reviewed: int
    qa_passed: int
    qa_failed: int
    overridden: int  # QA's current verdict differs from the station's


class ReportDefects(NamedTuple):
    """Failing detections of one class in one (report day, station, shift)."""

    day: date
    station: str
    shift: str
    label: str
    failing: int


class QaReview(NamedTuple):
    """QA's current word on an inspection, with the reason of the record that made it."""

    inspection_id: int
    qa_verdict: str
    reviewer: str
    reviewed_at: str
    reason: str | None


# -- replication to the plant database ---------------------------------------------------------

REPLICATED_TABLES = ("audit", "inspections", "reviews", "review_boxes", "recipes")


@dataclass
class ReplicationBatch:
    """What a station ships to the plant in one transaction: per table, the rows after its cursor, in id order.

    Rows are dicts exactly as the station stored and hashed them: audit records with app.audit.FIELDS and
    "hash"; inspections with INSPECTION_FIELDS_V2, "hash", and their "detections" and "regions" (each with
    its id). A review, box correction or recipe version comes only once its audit record and inspection are
    in this batch or an earlier one, so the plant never holds one without the other. `users`: every user of
    the station, given only when the batch carries every audit record logged so far (a user's role at the
    plant then matches the audit trail that changed it); None otherwise.
    """

    audit: list[dict[str, Any]] = field(default_factory=list)
    inspections: list[dict[str, Any]] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    review_boxes: list[dict[str, Any]] = field(default_factory=list)
    recipes: list[dict[str, Any]] = field(default_factory=list)
    users: list[UserRow] | None = None

    def rows(self) -> int:
        """Rows of the history tables in the batch (users not counted: they are a snapshot)."""
        return sum(len(getattr(self, t)) for t in REPLICATED_TABLES)

    def last_ids(self) -> dict[str, int]:
        """Per table with rows in the batch, the id of its last row: where its cursor moves once the plant committed."""
        return {t: getattr(self, t)[-1]["id"] for t in REPLICATED_TABLES if getattr(self, t)}
