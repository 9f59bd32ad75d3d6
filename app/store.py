"""The inspection log: a SQLite database plus the frames saved beside it.

Layout of a data folder:
    inspections.sqlite                  the log (WAL mode)
    images/YYYY-MM-DD/<uid>.png         the inspected frame, lossless
    images/YYYY-MM-DD/<uid>_annotated.jpg   the same with boxes and verdict

Durability: images are written first (temp file + rename), then the
inspection and all its detections go into the database in one transaction.
A process killed at any point loses at most the inspection in flight; WAL
keeps the database itself consistent. The schema is versioned with
`PRAGMA user_version` and migrated forward on open.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from app.files import atomic_write_bytes
from app.roi import Roi
from detector import Detection


class StoreError(RuntimeError):
    """The inspection log could not be written or read (message says why)."""


# Each entry migrates the schema from version i to i + 1. Never edit a released
# step: add a new one.
MIGRATIONS: list[str | Callable[[sqlite3.Connection], None]] = [
    """
    CREATE TABLE inspections (
        id INTEGER PRIMARY KEY,
        uid TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,            -- ISO 8601, UTC, milliseconds
        station TEXT NOT NULL,
        operator TEXT NOT NULL DEFAULT '',
        part_id TEXT NOT NULL DEFAULT '',
        source TEXT NOT NULL DEFAULT '',
        frame_w INTEGER NOT NULL,
        frame_h INTEGER NOT NULL,
        roi_x INTEGER NOT NULL, roi_y INTEGER NOT NULL, roi_w INTEGER NOT NULL, roi_h INTEGER NOT NULL,
        model_id TEXT NOT NULL,
        model_version TEXT NOT NULL,
        threshold REAL NOT NULL,
        rule_json TEXT NOT NULL,
        verdict TEXT NOT NULL CHECK (verdict IN ('PASS', 'FAIL')),
        n_detections INTEGER NOT NULL,       -- rows in detections, to prove none went missing
        inference_ms REAL,
        image_path TEXT,                     -- relative to the data folder; NULL if it could not be saved
        annotated_path TEXT,
        note TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX ix_inspections_created ON inspections (created_at);
    CREATE INDEX ix_inspections_verdict_created ON inspections (verdict, created_at);
    CREATE INDEX ix_inspections_part ON inspections (part_id);
    CREATE TABLE detections (
        id INTEGER PRIMARY KEY,
        inspection_id INTEGER NOT NULL REFERENCES inspections (id) ON DELETE CASCADE,
        label TEXT NOT NULL,
        score REAL NOT NULL,
        x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,  -- frame pixels
        shown INTEGER NOT NULL,              -- at or above the threshold
        fails INTEGER NOT NULL               -- made the part fail
    );
    CREATE INDEX ix_detections_inspection ON detections (inspection_id);
    CREATE INDEX ix_detections_label ON detections (label);
    """,
    # v2: QA review, users, and the append-only audit trail.
    """
    ALTER TABLE inspections ADD COLUMN max_score REAL NOT NULL DEFAULT 0;  -- best shown detection, for sorting
    UPDATE inspections SET max_score = COALESCE(
        (SELECT MAX(score) FROM detections d WHERE d.inspection_id = inspections.id AND d.shown = 1), 0);
    CREATE INDEX ix_inspections_operator ON inspections (operator);
    CREATE INDEX ix_detections_label_score ON detections (label, score);
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE COLLATE NOCASE,
        role TEXT NOT NULL CHECK (role IN ('operator', 'qa', 'supervisor', 'admin')),
        secret_hash TEXT NOT NULL,           -- scrypt with a per-user salt, never the PIN itself
        active INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        user TEXT NOT NULL,
        action TEXT NOT NULL,
        inspection_id INTEGER REFERENCES inspections (id),
        old_value TEXT,                      -- JSON
        new_value TEXT,                      -- JSON
        reason TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX ix_audit_inspection ON audit (inspection_id);
    CREATE INDEX ix_audit_at ON audit (at);
    CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
    CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
    CREATE TABLE reviews (                   -- QA's current word on an inspection (history: audit)
        inspection_id INTEGER PRIMARY KEY REFERENCES inspections (id),
        qa_verdict TEXT NOT NULL CHECK (qa_verdict IN ('PASS', 'FAIL')),
        reviewer TEXT NOT NULL,
        reviewed_at TEXT NOT NULL,
        audit_id INTEGER NOT NULL REFERENCES audit (id)
    );
    CREATE TABLE review_boxes (              -- boxes QA rejected (false positive) or added (missed)
        id INTEGER PRIMARY KEY,
        inspection_id INTEGER NOT NULL REFERENCES inspections (id),
        detection_id INTEGER REFERENCES detections (id),
        kind TEXT NOT NULL CHECK (kind IN ('false_positive', 'missed')),
        label TEXT NOT NULL,
        x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,  -- frame pixels
        audit_id INTEGER NOT NULL REFERENCES audit (id)
    );
    CREATE INDEX ix_review_boxes_inspection ON review_boxes (inspection_id);
    """,
]

# v3, before the existing audit records are chained (app.audit.chain_existing).
_V3_SCHEMA = """
ALTER TABLE audit ADD COLUMN prev_hash TEXT;  -- hash of the record before it (app.audit)
ALTER TABLE audit ADD COLUMN hash TEXT;       -- SHA-256 of this record's canonical content, prev_hash included
DROP TRIGGER audit_append_only_update;        -- back in _V3_GUARDS once the existing records are hashed
ALTER TABLE inspections ADD COLUMN image_sha256 TEXT;      -- SHA-256 of the saved file (NULL: none, or logged before v3)
ALTER TABLE inspections ADD COLUMN annotated_sha256 TEXT;
ALTER TABLE inspections ADD COLUMN prev_hash TEXT;         -- hash chain of the inspections, as for the audit records
ALTER TABLE inspections ADD COLUMN hash TEXT;              -- over the row, its detections and prev_hash (app.audit)
ALTER TABLE users ADD COLUMN failed_attempts INTEGER NOT NULL DEFAULT 0;  -- wrong PINs since the last good one
ALTER TABLE users ADD COLUMN locked_until TEXT;                           -- ISO 8601 UTC; sign-in refused until then
CREATE TABLE reviews_v3 (                     -- QA's word, append-only: the latest row per inspection is current
    id INTEGER PRIMARY KEY,
    inspection_id INTEGER NOT NULL REFERENCES inspections (id),
    qa_verdict TEXT NOT NULL CHECK (qa_verdict IN ('PASS', 'FAIL')),
    reviewer TEXT NOT NULL,
    reviewed_at TEXT NOT NULL,
    audit_id INTEGER NOT NULL REFERENCES audit (id)
);
-- v2 kept one row per inspection; a box correction alone left none: it now counts as
-- a review that keeps the station's verdict (what QA's correction meant then).
INSERT INTO reviews_v3 (inspection_id, qa_verdict, reviewer, reviewed_at, audit_id)
    SELECT inspection_id, qa_verdict, reviewer, reviewed_at, audit_id FROM (
        SELECT inspection_id, qa_verdict, reviewer, reviewed_at, audit_id FROM reviews
        UNION ALL
        SELECT b.inspection_id, i.verdict, a.user, a.at, a.id FROM review_boxes b
            JOIN inspections i ON i.id = b.inspection_id JOIN audit a ON a.id = b.audit_id
            WHERE b.id IN (SELECT MAX(id) FROM review_boxes GROUP BY inspection_id)
            AND NOT EXISTS (SELECT 1 FROM reviews r WHERE r.inspection_id = b.inspection_id)
    ) ORDER BY audit_id;
DROP TABLE reviews;
ALTER TABLE reviews_v3 RENAME TO reviews;
CREATE INDEX ix_reviews_inspection ON reviews (inspection_id, id);
CREATE VIEW current_reviews AS                -- QA's current word per reviewed inspection
    SELECT r.inspection_id, r.qa_verdict, r.reviewer, r.reviewed_at, r.audit_id FROM reviews r
    WHERE r.id = (SELECT MAX(r2.id) FROM reviews r2 WHERE r2.inspection_id = r.inspection_id);
"""
# v3 guards, for every connection (not only ours). REPLACE deletes the old row without
# firing DELETE triggers (unless the per-connection recursive_triggers pragma is on), so
# each table also refuses an INSERT whose key exists. Tables with history are append-only;
# users change (role, PIN, lock) but are disabled, never deleted.
_V3_GUARDS = """
CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER audit_no_replace BEFORE INSERT ON audit WHEN EXISTS (SELECT 1 FROM audit WHERE id = NEW.id)
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only: a record with this id exists (REPLACE refused)'); END;
CREATE TRIGGER inspections_no_update BEFORE UPDATE ON inspections
    BEGIN SELECT RAISE(ABORT, 'inspections are immutable once logged'); END;
CREATE TRIGGER inspections_no_delete BEFORE DELETE ON inspections
    BEGIN SELECT RAISE(ABORT, 'inspections are immutable once logged'); END;
CREATE TRIGGER inspections_no_replace BEFORE INSERT ON inspections
    WHEN EXISTS (SELECT 1 FROM inspections WHERE id = NEW.id) OR EXISTS (SELECT 1 FROM inspections WHERE uid = NEW.uid)
    BEGIN SELECT RAISE(ABORT, 'inspections are immutable once logged: one with this id or uid exists (REPLACE refused)'); END;
CREATE TRIGGER detections_no_update BEFORE UPDATE ON detections
    BEGIN SELECT RAISE(ABORT, 'detections are immutable once logged'); END;
CREATE TRIGGER detections_no_delete BEFORE DELETE ON detections
    BEGIN SELECT RAISE(ABORT, 'detections are immutable once logged'); END;
CREATE TRIGGER detections_no_replace BEFORE INSERT ON detections WHEN EXISTS (SELECT 1 FROM detections WHERE id = NEW.id)
    BEGIN SELECT RAISE(ABORT, 'detections are immutable once logged: one with this id exists (REPLACE refused)'); END;
CREATE TRIGGER reviews_no_update BEFORE UPDATE ON reviews
    BEGIN SELECT RAISE(ABORT, 'QA reviews are append-only'); END;
CREATE TRIGGER reviews_no_delete BEFORE DELETE ON reviews
    BEGIN SELECT RAISE(ABORT, 'QA reviews are append-only'); END;
CREATE TRIGGER reviews_no_replace BEFORE INSERT ON reviews WHEN EXISTS (SELECT 1 FROM reviews WHERE id = NEW.id)
    BEGIN SELECT RAISE(ABORT, 'QA reviews are append-only: one with this id exists (REPLACE refused)'); END;
CREATE TRIGGER review_boxes_no_update BEFORE UPDATE ON review_boxes
    BEGIN SELECT RAISE(ABORT, 'QA box corrections are append-only'); END;
CREATE TRIGGER review_boxes_no_delete BEFORE DELETE ON review_boxes
    BEGIN SELECT RAISE(ABORT, 'QA box corrections are append-only'); END;
CREATE TRIGGER review_boxes_no_replace BEFORE INSERT ON review_boxes WHEN EXISTS (SELECT 1 FROM review_boxes WHERE id = NEW.id)
    BEGIN SELECT RAISE(ABORT, 'QA box corrections are append-only: one with this id exists (REPLACE refused)'); END;
CREATE TRIGGER users_no_delete BEFORE DELETE ON users
    BEGIN SELECT RAISE(ABORT, 'users are disabled, never deleted'); END;
"""


def _migrate_v3(conn: sqlite3.Connection) -> None:
    """v3: hash chains over the audit trail and the inspections, append-only QA reviews, an immutable log,
    sign-in lockout. Existing rows are chained in id order: they are vouched for from this moment on."""
    from app.audit import chain_existing

    for statement in _statements(_V3_SCHEMA):
        conn.execute(statement)
    chain_existing(conn)
    for statement in _statements(_V3_GUARDS):
        conn.execute(statement)


# v3 is Python: the existing rows are hashed between its schema change and its guards.
MIGRATIONS.append(_migrate_v3)

# v4: product recipes with several inspection regions, what triggered each inspection, and
# where each result output has got to. Rows logged before keep hash_version 1 (app.audit).
_V4_SCHEMA = """
ALTER TABLE inspections ADD COLUMN trigger TEXT NOT NULL DEFAULT 'operator';  -- operator, continuous or line
ALTER TABLE inspections ADD COLUMN job_id TEXT NOT NULL DEFAULT '';           -- the id the trigger carried (e.g. a PLC's)
ALTER TABLE inspections ADD COLUMN recipe TEXT NOT NULL DEFAULT '';           -- recipe name and version it was judged by
ALTER TABLE inspections ADD COLUMN recipe_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE inspections ADD COLUMN hash_version INTEGER NOT NULL DEFAULT 1;   -- which fields the row's hash covers
ALTER TABLE detections ADD COLUMN region TEXT;                               -- the region it was found in (NULL before v4)
CREATE TABLE inspection_regions (            -- each region's own verdict; the part fails if any region does
    id INTEGER PRIMARY KEY,
    inspection_id INTEGER NOT NULL REFERENCES inspections (id),
    name TEXT NOT NULL,
    x INTEGER NOT NULL, y INTEGER NOT NULL, w INTEGER NOT NULL, h INTEGER NOT NULL,  -- as used, clipped to the frame
    threshold REAL NOT NULL,
    rule_json TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('PASS', 'FAIL'))
);
CREATE INDEX ix_inspection_regions_inspection ON inspection_regions (inspection_id);
CREATE INDEX ix_inspections_recipe ON inspections (recipe, created_at);
CREATE TABLE recipes (                       -- every saved version of every recipe, append-only
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL COLLATE NOCASE,
    version INTEGER NOT NULL,
    external_id TEXT NOT NULL,               -- what the line calls it (PLC recipe id)
    definition TEXT NOT NULL,                -- JSON: model, regions, rule, threshold
    deleted INTEGER NOT NULL DEFAULT 0,      -- 1: this version marks the recipe deleted
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    audit_id INTEGER NOT NULL REFERENCES audit (id),
    UNIQUE (name, version)
);
CREATE TABLE output_cursors (                -- per result output: every inspection up to this id is delivered
    sink TEXT PRIMARY KEY,
    delivered_id INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TRIGGER inspection_regions_no_update BEFORE UPDATE ON inspection_regions
    BEGIN SELECT RAISE(ABORT, 'inspections are immutable once logged'); END;
CREATE TRIGGER inspection_regions_no_delete BEFORE DELETE ON inspection_regions
    BEGIN SELECT RAISE(ABORT, 'inspections are immutable once logged'); END;
CREATE TRIGGER inspection_regions_no_replace BEFORE INSERT ON inspection_regions
    WHEN EXISTS (SELECT 1 FROM inspection_regions WHERE id = NEW.id)
    BEGIN SELECT RAISE(ABORT, 'inspections are immutable once logged: a region row with this id exists (REPLACE refused)'); END;
CREATE TRIGGER recipes_no_update BEFORE UPDATE ON recipes
    BEGIN SELECT RAISE(ABORT, 'recipe versions are append-only: save a new version'); END;
CREATE TRIGGER recipes_no_delete BEFORE DELETE ON recipes
    BEGIN SELECT RAISE(ABORT, 'recipe versions are append-only: deleting a recipe saves a deleted version'); END;
CREATE TRIGGER recipes_no_replace BEFORE INSERT ON recipes
    WHEN EXISTS (SELECT 1 FROM recipes WHERE id = NEW.id)
    BEGIN SELECT RAISE(ABORT, 'recipe versions are append-only: one with this id exists (REPLACE refused)'); END;
"""
MIGRATIONS.append(_V4_SCHEMA)
SCHEMA_VERSION = len(MIGRATIONS)
# Pictures without a logged inspection are removed once they are this old (a younger one
# may belong to an inspection another process is committing right now).
ORPHAN_MIN_AGE_S = 600.0
_PICTURE_UID = re.compile(r"\.?([0-9a-f]{32})[._]")
_DAY_FOLDER = re.compile(r"\d{4}-\d{2}-\d{2}")


def guard_triggers() -> dict[str, str]:
    """The triggers that protect the log, by name, as the migrations create them."""
    out: dict[str, str] = {}
    for script in (MIGRATIONS[1], _V3_SCHEMA, _V3_GUARDS, _V4_SCHEMA):
        for statement in _statements(script):
            words = statement.split()
            if words[:2] == ["CREATE", "TRIGGER"]:
                out[words[2]] = statement
            elif words[:2] == ["DROP", "TRIGGER"]:
                out.pop(words[2].rstrip(";"), None)
    return out


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


def iso_utc(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def connect(db_path: str | Path) -> sqlite3.Connection:
    """A connection with the station's pragmas, schema migrated to the latest version."""
    db_path = Path(db_path)
    _check_writable(db_path)
    try:
        conn = sqlite3.connect(db_path, timeout=10.0, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open inspection database {db_path}: {exc}") from exc
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed inspection survives a power cut too, not just a killed process.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        _migrate(conn, db_path)
        _restore_guards(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        if isinstance(exc, sqlite3.OperationalError) and "readonly" in str(exc):
            raise StoreError(f"the inspection database {db_path} is read-only ({exc}): the station must write"
                             f" to it; fix its permissions or pick another data folder") from exc
        raise StoreError(f"{db_path} is not a usable inspection database: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _check_writable(db_path: Path) -> None:
    """Refuse, naming the folder and the reason, a data folder or database the station cannot write.

    SQLite itself only says "unable to open database file" for all of these.
    """
    folder = db_path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StoreError(f"cannot use {folder} as the data folder: it is a file, not a folder") from None
    except OSError as exc:
        raise StoreError(f"cannot create the data folder {folder}: {exc.strerror or exc}"
                         + (" (a part of that path is a file)" if isinstance(exc, NotADirectoryError) else "")) from exc
    if db_path.is_dir():
        raise StoreError(f"{db_path} is a folder, not an inspection database")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise StoreError(f"the data folder {folder} is not writable ({exc.strerror or exc}): the station writes its log"
                         " and pictures there; fix its permissions or pick another data folder") from exc
    if db_path.exists():
        try:
            with open(db_path, "r+b"):
                pass
        except OSError as exc:
            raise StoreError(f"the inspection database {db_path} is not writable ({exc.strerror or exc})") from exc


def _migrate(conn: sqlite3.Connection, db_path: Path) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{db_path} was written by a newer station (schema {version}, this one knows {SCHEMA_VERSION}); update the station"
        )
    while version < SCHEMA_VERSION:
        # Statements one by one inside our own transaction: executescript() would commit midway.
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process may have migrated meanwhile.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                step = MIGRATIONS[version]
                if callable(step):
                    step(conn)
                else:
                    for statement in _statements(step):
                        conn.execute(statement)
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _restore_guards(conn: sqlite3.Connection) -> None:
    """Put back protective triggers someone dropped, and say so in the audit trail.

    Whatever was changed while they were gone shows as a break in the chain
    (`audit verify`); this record shows that they were gone.
    """
    guards = guard_triggers()
    if _missing_guards(conn, guards):
        from app.audit import audit

        conn.execute("BEGIN IMMEDIATE")
        try:
            missing = _missing_guards(conn, guards)
            for name in missing:
                conn.execute(guards[name])
            if missing:
                audit(conn, "station", "db.guards_restored", new={"triggers": missing},
                      reason="protective triggers were found removed from the database")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        logging.getLogger(__name__).warning("restored protective triggers %s in the inspection log", ", ".join(missing))


def _missing_guards(conn: sqlite3.Connection, guards: dict[str, str]) -> list[str]:
    present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    return sorted(set(guards) - present)


def _statements(script: str) -> list[str]:
    """Split a migration into statements (sqlite3 knows where a trigger body ends)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


def _remove(path: Path) -> bool:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        return False
    return True


def _one_channel_if_mono(image: np.ndarray | None) -> np.ndarray | None:
    """A BGR frame whose three channels are equal (a mono camera read through OpenCV) as one channel.

    The same picture, still lossless (`cv2.imread` gives back the identical BGR
    array), in about 40% of the PNG bytes and half the encoding time (measured
    on a 1280x960 frame: 0.47 -> 0.30 MB, 39 -> 19 ms), which is most of the
    time between the click and the verdict.
    """
    if (image is not None and image.ndim == 3 and image.shape[2] == 3
            and np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])):
        return np.ascontiguousarray(image[..., 0])
    return image


class InspectionStore:
    """Thread-safe writer/reader of the inspection log in one data folder."""

    def __init__(self, db_path: str | Path, image_dir: str | Path | None = None, min_free_bytes: int = 0,
                 sweep_orphans: bool = True):
        self.db_path = Path(db_path)
        self.root = self.db_path.parent
        self.image_dir = Path(image_dir) if image_dir is not None else self.root / "images"
        # Disk reserve: a picture that would leave less free than this is not saved, so
        # that the log rows (small) can still be written when the disk fills up.
        self.min_free_bytes = int(min_free_bytes)
        self._lock = threading.Lock()
        self._conn = connect(self.db_path)
        if sweep_orphans:
            try:
                self.sweep_orphans()
            except (OSError, sqlite3.Error, StoreError) as exc:  # housekeeping: never stops the station
                logging.getLogger(__name__).warning("could not sweep orphan pictures in %s: %s", self.image_dir, exc)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> InspectionStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing -------------------------------------------------------------

    def record(self, rec: InspectionRecord, frame: np.ndarray | None = None,
               annotated: np.ndarray | None = None) -> StoredInspection:
        """Save the frames, then log the inspection; returns its id.

        Frames that cannot be saved (disk full, folder gone) are noted on the
        row and returned as warnings: the inspection itself is still logged.
        Raises StoreError only if the database write fails.
        """
        from app.audit import GENESIS, HASH_VERSION, INSPECTION_FIELDS_V2, REGION_FIELDS, inspection_hash

        warnings: list[str] = list(rec.notes)
        if self.query("SELECT 1 FROM inspections WHERE uid = ?", (rec.uid,)):
            # Its pictures would overwrite those of the logged one (and be removed when the insert fails).
            raise StoreError(f"inspection {rec.uid} is logged already in {self.db_path}")
        day = rec.created_at.astimezone(timezone.utc).strftime("%Y-%m-%d")
        image_path, image_sha = self._save_image(_one_channel_if_mono(frame), f"{day}/{rec.uid}.png", warnings, "frame")
        annotated_path, annotated_sha = self._save_image(annotated, f"{day}/{rec.uid}_annotated.jpg", warnings,
                                                         "annotated frame")
        shown, failing = set(rec.shown), set(rec.failing)
        # Typed as SQLite gives them back, so that the hash computed here is the one a later check recomputes.
        row: dict[str, Any] = {
            "uid": str(rec.uid), "created_at": iso_utc(rec.created_at), "station": str(rec.station),
            "operator": str(rec.operator), "part_id": str(rec.part_id), "source": str(rec.source),
            "frame_w": int(rec.frame_size[0]), "frame_h": int(rec.frame_size[1]),
            "roi_x": int(rec.roi.x), "roi_y": int(rec.roi.y), "roi_w": int(rec.roi.w), "roi_h": int(rec.roi.h),
            "model_id": str(rec.model_id), "model_version": str(rec.model_version), "threshold": float(rec.threshold),
            "rule_json": str(rec.rule_json), "verdict": str(rec.verdict), "n_detections": len(rec.detections),
            "max_score": max((float(rec.detections[i].score) for i in shown), default=0.0),
            "inference_ms": None if rec.inference_ms is None else float(rec.inference_ms),
            "image_path": self._relative(image_path), "annotated_path": self._relative(annotated_path),
            "note": "; ".join(warnings), "image_sha256": image_sha, "annotated_sha256": annotated_sha,
            "trigger": str(rec.trigger), "job_id": str(rec.job_id), "recipe": str(rec.recipe),
            "recipe_version": int(rec.recipe_version), "hash_version": HASH_VERSION,
        }
        if rec.detection_regions and len(rec.detection_regions) != len(rec.detections):
            raise ValueError("detection_regions must name one region per detection")
        det_regions = list(rec.detection_regions) or [None] * len(rec.detections)
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                last = self._conn.execute("SELECT id, hash FROM inspections ORDER BY id DESC LIMIT 1").fetchone()
                row["id"] = int(last[0]) + 1 if last else 1
                row["prev_hash"] = last[1] if last else GENESIS
                first_det = int(self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM detections").fetchone()[0]) + 1
                row["detections"] = [
                    {"id": first_det + i, "label": str(d.label), "score": float(d.score),
                     **dict(zip(("x1", "y1", "x2", "y2"), map(float, d.box))), "shown": int(i in shown), "fails": int(i in failing),
                     "region": None if det_regions[i] is None else str(det_regions[i])}
                    for i, d in enumerate(rec.detections)]
                first_region = int(self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM inspection_regions").fetchone()[0]) + 1
                row["regions"] = [
                    {"id": first_region + i, "name": str(r.name), "x": int(r.roi.x), "y": int(r.roi.y), "w": int(r.roi.w),
                     "h": int(r.roi.h), "threshold": float(r.threshold), "rule_json": str(r.rule_json), "verdict": str(r.verdict)}
                    for i, r in enumerate(rec.regions)]
                row["hash"] = inspection_hash(row)
                columns = (*INSPECTION_FIELDS_V2, "hash")
                self._conn.execute(f"INSERT INTO inspections ({', '.join(columns)}) VALUES ({','.join('?' * len(columns))})",
                                   [row[k] for k in columns])
                self._conn.executemany(
                    "INSERT INTO detections (id, inspection_id, label, score, x1, y1, x2, y2, shown, fails, region)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [(d["id"], row["id"], d["label"], d["score"], d["x1"], d["y1"], d["x2"], d["y2"], d["shown"], d["fails"],
                      d["region"]) for d in row["detections"]],
                )
                self._conn.executemany(
                    f"INSERT INTO inspection_regions (inspection_id, {', '.join(REGION_FIELDS)})"
                    f" VALUES (?, {','.join('?' * len(REGION_FIELDS))})",
                    [(row["id"], *(r[k] for k in REGION_FIELDS)) for r in row["regions"]],
                )
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                # Pictures of an inspection that is not in the log prove nothing: keep log and folder consistent.
                kept = [str(p) for p in (image_path, annotated_path) if p is not None and not _remove(p)]
                raise StoreError(f"could not log the inspection in {self.db_path}: {exc}"
                                 + (f" (its pictures could not be removed: {', '.join(kept)})" if kept else "")) from exc
        return StoredInspection(row["id"], rec.uid, image_path, annotated_path, warnings)

    def _save_image(self, image: np.ndarray | None, relative: str, warnings: list[str],
                    what: str) -> tuple[Path | None, str | None]:
        """The saved file and the SHA-256 of its bytes (logged with the row: a later check proves it unchanged)."""
        if image is None:
            return None, None
        path = self.image_dir / relative
        ext = path.suffix.lower()
        params = [cv2.IMWRITE_PNG_COMPRESSION, 1] if ext == ".png" else [cv2.IMWRITE_JPEG_QUALITY, 90]
        try:
            ok, buf = cv2.imencode(ext, image, params)
            if not ok:
                raise OSError("image encoder failed")
            if self.min_free_bytes:
                free = shutil.disk_usage(self.root).free
                if free - buf.nbytes < self.min_free_bytes:
                    raise OSError(f"disk nearly full: {free / 1e6:.0f} MB free in {self.root}, "
                                  f"reserve {self.min_free_bytes / 1e6:.0f} MB")
            path.parent.mkdir(parents=True, exist_ok=True)
            data = buf.tobytes()
            atomic_write_bytes(path, data)
        except (OSError, cv2.error) as exc:
            warnings.append(f"{what} not saved ({exc})")
            return None, None
        return path, hashlib.sha256(data).hexdigest()

    def _relative(self, path: Path | None) -> str | None:
        if path is None:
            return None
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def sweep_orphans(self, min_age_s: float = ORPHAN_MIN_AGE_S, now: float | None = None) -> list[Path]:
        """Remove pictures whose inspection is not in the log (older than `min_age_s`); returns them.

        They come from a process killed between saving the pictures and committing
        the row. Such a picture never backed a logged verdict, so it is deleted, not
        kept: the audit trail records which files went. Only day folders changed
        since the last sweep are read (a marker file keeps its time), so a start
        costs a directory listing of today's folder, not of the whole archive.
        """
        if not self.image_dir.is_dir():
            return []
        now = time.time() if now is None else now
        cutoff = now - min_age_s
        marker = self.image_dir / ".orphan-sweep"
        try:
            since = float(marker.read_text(encoding="ascii"))
        except (OSError, ValueError):
            since = 0.0
        removed: list[Path] = []
        for day in sorted(self.image_dir.iterdir()):
            if not (_DAY_FOLDER.fullmatch(day.name) and day.is_dir()) or day.stat().st_mtime < since:
                continue
            by_uid: dict[str, list[Path]] = {}
            for entry in os.scandir(day):
                m = _PICTURE_UID.match(entry.name)
                if m and entry.is_file(follow_symlinks=False):
                    by_uid.setdefault(m.group(1), []).append(Path(entry.path))
            logged = self._logged_uids(list(by_uid))
            for uid, paths in by_uid.items():
                for path in paths:
                    # Temp files of an interrupted write are garbage even when the row exists.
                    orphan = uid not in logged or path.name.startswith(".")
                    if orphan and path.stat().st_mtime < cutoff and _remove(path):
                        removed.append(path)
        if removed:
            from app.audit import audit

            with self.transaction() as conn:
                audit(conn, "station", "store.orphans_removed", new={"files": [self._relative(p) for p in removed]},
                      reason="pictures without a logged inspection (the process stopped before the row was committed)")
        try:
            atomic_write_bytes(marker, f"{cutoff:.3f}".encode("ascii"))
        except OSError:
            pass  # the next start reads every folder again: slower, still right
        return removed

    def _logged_uids(self, uids: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(uids), 500):
            chunk = uids[i:i + 500]
            found |= {r[0] for r in self.query(f"SELECT uid FROM inspections WHERE uid IN ({','.join('?' * len(chunk))})", chunk)}
        return found

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection inside one write transaction: all of it is committed, or none."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # -- reading -------------------------------------------------------------

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM inspections").fetchone()[0])

    def get(self, inspection_id: int) -> dict[str, Any] | None:
        """One inspection as a dict, with its detections (best first) under "detections" and its regions under "regions"."""
        with self._lock:
            row = self._conn.execute("SELECT * FROM inspections WHERE id = ?", (inspection_id,)).fetchone()
            if row is None:
                return None
            dets = self._conn.execute(
                "SELECT id, label, score, x1, y1, x2, y2, shown, fails, region FROM detections WHERE inspection_id = ?"
                " ORDER BY score DESC", (inspection_id,),
            ).fetchall()
            regions = self._conn.execute(
                "SELECT name, x, y, w, h, threshold, rule_json, verdict FROM inspection_regions WHERE inspection_id = ?"
                " ORDER BY id", (inspection_id,),
            ).fetchall()
        out = dict(row)
        out["detections"] = [dict(d) for d in dets]
        out["regions"] = [dict(r) for r in regions]
        return out

    # -- result outputs: the log itself is the outbox ------------------------------------------

    def logged_after(self, after_id: int, limit: int = 100) -> list[dict[str, Any]]:
        """Inspections with id > `after_id`, oldest first, each as `get()` gives it (at most `limit`).

        Result outputs read the immutable log in id order instead of a copy of
        it: an inspection is there only once it is durably committed, and the
        inspection's uid is the receiver's idempotency key.
        """
        ids = [r[0] for r in self.query("SELECT id FROM inspections WHERE id > ? ORDER BY id LIMIT ?",
                                        (int(after_id), int(limit)))]
        return [row for row in (self.get(i) for i in ids) if row is not None]

    def output_cursor(self, sink: str) -> int | None:
        """The last inspection id delivered to `sink` (None: the sink was never set up here)."""
        rows = self.query("SELECT delivered_id FROM output_cursors WHERE sink = ?", (sink,))
        return int(rows[0][0]) if rows else None

    def start_output(self, sink: str) -> int:
        """Set up a new sink's cursor at the newest inspection (it gets what is logged from now on); returns it."""
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO output_cursors (sink, delivered_id, updated_at)"
                         " VALUES (?, (SELECT COALESCE(MAX(id), 0) FROM inspections), ?)",
                         (sink, iso_utc(datetime.now(timezone.utc))))
            return int(conn.execute("SELECT delivered_id FROM output_cursors WHERE sink = ?", (sink,)).fetchone()[0])

    def mark_delivered(self, sink: str, delivered_id: int) -> None:
        """Every inspection up to `delivered_id` has reached `sink` (the cursor never moves back)."""
        with self.transaction() as conn:
            conn.execute("UPDATE output_cursors SET delivered_id = MAX(delivered_id, ?), updated_at = ? WHERE sink = ?",
                         (int(delivered_id), iso_utc(datetime.now(timezone.utc)), sink))

    def output_backlog(self, sink: str) -> tuple[int, str | None]:
        """(inspections not yet delivered to `sink`, created_at of the oldest of them or None)."""
        cursor = self.output_cursor(sink)
        if cursor is None:
            return 0, None
        row = self.query("SELECT COUNT(*), MIN(created_at) FROM inspections WHERE id > ?", (cursor,))[0]
        return int(row[0]), row[1]

    # -- recipes: every version kept ------------------------------------------------------------

    def recipe_versions(self, name: str | None = None) -> list[dict[str, Any]]:
        """Saved recipe versions (all, or one recipe's), oldest first."""
        if name is None:
            rows = self.query("SELECT * FROM recipes ORDER BY id")
        else:
            rows = self.query("SELECT * FROM recipes WHERE name = ? ORDER BY version", (name,))
        return [dict(r) for r in rows]

    def current_recipes(self) -> list[dict[str, Any]]:
        """The newest version of each recipe that is not deleted, by name."""
        rows = self.query("SELECT r.* FROM recipes r WHERE r.version = (SELECT MAX(version) FROM recipes r2 WHERE r2.name = r.name)"
                          " AND r.deleted = 0 ORDER BY r.name")
        return [dict(r) for r in rows]

    def add_recipe_version(self, conn: sqlite3.Connection, *, name: str, external_id: str, definition: str,
                           deleted: bool, created_by: str, audit_id: int) -> int:
        """Append the next version of recipe `name` inside the caller's transaction; returns the version number."""
        version = int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM recipes WHERE name = ?", (name,)).fetchone()[0]) + 1
        conn.execute("INSERT INTO recipes (name, version, external_id, definition, deleted, created_at, created_by, audit_id)"
                     " VALUES (?,?,?,?,?,?,?,?)",
                     (name, version, external_id, definition, int(deleted), iso_utc(datetime.now(timezone.utc)),
                      created_by, audit_id))
        return version

    def resolve(self, relative: str | None) -> Path | None:
        """The file a row's image_path/annotated_path names."""
        if not relative:
            return None
        p = Path(relative)
        return p if p.is_absolute() else self.root / p
