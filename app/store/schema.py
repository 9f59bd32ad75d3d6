"""The SQLite log's schema: ordered migrations, the triggers that keep history append-only, and the v3 chaining.

The schema is versioned with `PRAGMA user_version` and migrated forward on
open (app.store.sqlite.connect). Never edit a released step: add a new one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator

from app.audit import (
    DETECTION_FIELDS,
    DETECTION_FIELDS_V2,
    FIELDS,
    GENESIS,
    INSPECTION_FIELDS,
    INSPECTION_FIELDS_V2,
    REGION_FIELDS,
    inspection_hash,
    record_hash,
)

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

# v3, before the existing audit records are chained (chain_existing).
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
    for statement in statements(_V3_SCHEMA):
        conn.execute(statement)
    chain_existing(conn)
    for statement in statements(_V3_GUARDS):
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


def guard_triggers() -> dict[str, str]:
    """The triggers that protect the log, by name, as the migrations create them."""
    out: dict[str, str] = {}
    for script in (MIGRATIONS[1], _V3_SCHEMA, _V3_GUARDS, _V4_SCHEMA):
        for statement in statements(script):
            words = statement.split()
            if words[:2] == ["CREATE", "TRIGGER"]:
                out[words[2]] = statement
            elif words[:2] == ["DROP", "TRIGGER"]:
                out.pop(words[2].rstrip(";"), None)
    return out


def statements(script: str) -> list[str]:
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



# -- the chains as hashed: read by the v3 migration and by `audit verify` ---------------------------


def audit_chain_rows(conn: sqlite3.Connection) -> Iterator[dict]:
    """Audit records in id order with exactly the hashed fields (and "hash")."""
    names = (*FIELDS, "hash")
    for r in conn.execute(f"SELECT {', '.join(names)} FROM audit ORDER BY id"):
        yield dict(zip(names, r))


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def inspection_chain_rows(conn: sqlite3.Connection) -> Iterator[dict]:
    """Inspections in id order, each with its detections and regions (ordered cursors, merged: one pass over each table).

    Works on logs of any schema version (verify opens a log read-only, never migrating it).
    """
    v4 = "hash_version" in _columns(conn, "inspections")
    names = (*(INSPECTION_FIELDS_V2 if v4 else INSPECTION_FIELDS), "hash")
    det_fields = DETECTION_FIELDS_V2 if v4 else DETECTION_FIELDS
    dets = conn.cursor().execute(f"SELECT inspection_id, {', '.join(det_fields)} FROM detections ORDER BY inspection_id, id")
    regions = (conn.cursor().execute(f"SELECT inspection_id, {', '.join(REGION_FIELDS)} FROM inspection_regions"
                                     " ORDER BY inspection_id, id") if v4 else iter(()))
    pending, pending_region = next(dets, None), next(regions, None)
    for r in conn.cursor().execute(f"SELECT {', '.join(names)} FROM inspections ORDER BY id"):
        row = dict(zip(names, r))
        row["detections"], row["regions"] = [], []
        while pending is not None and pending[0] <= row["id"]:
            if pending[0] == row["id"]:
                row["detections"].append(dict(zip(det_fields, pending[1:])))
            pending = next(dets, None)
        while pending_region is not None and pending_region[0] <= row["id"]:
            if pending_region[0] == row["id"]:
                row["regions"].append(dict(zip(REGION_FIELDS, pending_region[1:])))
            pending_region = next(regions, None)
        yield row


def chain_existing(conn: sqlite3.Connection) -> None:
    """Hash rows written before the chains existed (schema v3 migration), in id order."""
    prev = GENESIS
    for row in list(audit_chain_rows(conn)):
        row["prev_hash"] = prev
        prev = record_hash(row)
        conn.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?", (row["prev_hash"], prev, row["id"]))
    prev = GENESIS
    for row in list(inspection_chain_rows(conn)):
        row["prev_hash"] = prev
        prev = inspection_hash(row)
        conn.execute("UPDATE inspections SET prev_hash = ?, hash = ? WHERE id = ?", (row["prev_hash"], prev, row["id"]))
