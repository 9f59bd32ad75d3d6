"""The embedded inspection log: a SQLite database plus the frames saved beside it (the station's own, written first).

Layout of a data folder:
    inspections.sqlite                  the log (WAL mode)
    images/YYYY-MM-DD/<uid>.png         the inspected frame, lossless
    images/YYYY-MM-DD/<uid>_annotated.jpg   the same with boxes and verdict

Durability: images are written first (temp file + rename), then the
inspection and all its detections go into the database in one transaction.
A process killed at any point loses at most the inspection in flight; WAL
keeps the database itself consistent. The schema (app.store.schema) is
versioned with `PRAGMA user_version` and migrated forward on open.

Connections: one writer (all writes, under a lock) and one read-only
connection per reading thread, so a long report on the GUI thread never
holds up the inspection being logged (WAL lets readers and the writer run
side by side). Every SQL statement of the station is in this module and in
app.store.schema.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from app.audit import (
    DETECTION_FIELDS_V2,
    FIELDS,
    GENESIS,
    HASH_VERSION,
    INSPECTION_FIELDS_V2,
    REGION_FIELDS,
    inspection_hash,
    record_hash,
)
from app.store.rows import (
    GALLERY_SORTS,
    REPLICATED_TABLES,
    AuditRecord,
    ClassStats,
    DetectionRow,
    GalleryFilter,
    GalleryItem,
    InspectionRecord,
    InspectionRow,
    QaReview,
    ReplicationBatch,
    ReportInspection,
    ReportListRow,
    ReviewBoxRow,
    ReviewRow,
    ShownScore,
    StoredInspection,
    StoreError,
    UserRow,
    iso_utc,
)
from app.store.schema import MIGRATIONS, SCHEMA_VERSION, audit_chain_rows, guard_triggers, inspection_chain_rows, statements
from detector.files import atomic_write_bytes

# Pictures without a logged inspection are removed once they are this old (a younger one
# may belong to an inspection another process is committing right now).
ORPHAN_MIN_AGE_S = 600.0
_PICTURE_UID = re.compile(r"\.?([0-9a-f]{32})[._]")
_DAY_FOLDER = re.compile(r"\d{4}-\d{2}-\d{2}")


# -- opening ------------------------------------------------------------------------------------


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


def connect_read_only(db_path: str | Path) -> sqlite3.Connection:
    """The log opened read-only and never migrated: checking it or reporting from it must not change the evidence."""
    path = Path(db_path)
    if not path.is_file():
        raise StoreError(f"no inspection database at {path}")
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=10.0, check_same_thread=False,
                               isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA query_only=ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot read {path}: {exc}") from exc
    if version < 1 or not {"inspections", "detections"} <= tables:
        conn.close()
        raise StoreError(f"{path} is not an inspection database")
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
                    for statement in statements(step):
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
        conn.execute("BEGIN IMMEDIATE")
        try:
            missing = _missing_guards(conn, guards)
            for name in missing:
                conn.execute(guards[name])
            if missing:
                append_audit(conn, "station", "db.guards_restored", new={"triggers": missing},
                             reason="protective triggers were found removed from the database")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        logging.getLogger(__name__).warning("restored protective triggers %s in the inspection log", ", ".join(missing))


def _missing_guards(conn: sqlite3.Connection, guards: dict[str, str]) -> list[str]:
    present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    return sorted(set(guards) - present)


# -- the audit chain ---------------------------------------------------------------------------


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)


_AUDIT_COLUMNS = ", ".join((*FIELDS, "hash"))


def append_audit(conn: sqlite3.Connection, user: str, action: str, *, inspection_id: int | None = None, old: Any = None,
                 new: Any = None, reason: str = "", at: datetime | None = None) -> int:
    """Append one record to the chain, inside the caller's write transaction; returns its id."""
    if not conn.in_transaction:
        # The link to the last record must be read and written under one write lock.
        raise RuntimeError("audit records are appended inside a write transaction (store.write())")
    last = conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    row = {
        "id": int(last[0]) + 1 if last else 1,
        "at": iso_utc(at or datetime.now(timezone.utc)),
        "user": str(user),
        "action": str(action),
        "inspection_id": None if inspection_id is None else int(inspection_id),
        "old_value": _json(old),
        "new_value": _json(new),
        "reason": str(reason),
        "prev_hash": last[1] if last else GENESIS,
    }
    row["hash"] = record_hash(row)
    conn.execute(f"INSERT INTO audit ({_AUDIT_COLUMNS}) VALUES ({','.join('?' * (len(FIELDS) + 1))})",
                 [row[k] for k in (*FIELDS, "hash")])
    return row["id"]


# -- queries -----------------------------------------------------------------------------------

_DETECTION_COLUMNS = "id, label, score, x1, y1, x2, y2, shown, fails, region"
_REVIEW_BOX_COLUMNS = "id, inspection_id, detection_id, kind, label, x1, y1, x2, y2, audit_id"
_USER_COLUMNS = "id, name, role, active, created_at, secret_hash, failed_attempts, locked_until"
_SORT_SQL = {
    "newest": "i.created_at DESC, i.id DESC",
    "oldest": "i.created_at ASC, i.id ASC",
    "highest score": "i.max_score DESC, i.id DESC",
    "part id": "i.part_id ASC, i.id DESC",
}
assert tuple(_SORT_SQL) == GALLERY_SORTS
_GALLERY_COLUMNS = (
    "i.id, i.created_at, i.station, i.operator, i.part_id, i.verdict, i.max_score, i.annotated_path, i.image_path,"
    " (SELECT r.qa_verdict FROM current_reviews r WHERE r.inspection_id = i.id) AS qa_verdict"
)


def _gallery_where(flt: GalleryFilter) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if flt.start is not None:
        clauses.append("i.created_at >= ?")
        params.append(iso_utc(flt.start))
    if flt.end is not None:
        clauses.append("i.created_at < ?")
        params.append(iso_utc(flt.end))
    if flt.verdict:
        clauses.append("i.verdict = ?")
        params.append(flt.verdict)
    if flt.operator:
        clauses.append("i.operator = ?")
        params.append(flt.operator)
    if flt.station:
        clauses.append("i.station = ?")
        params.append(flt.station)
    if flt.part_id:
        clauses.append("i.part_id LIKE ? ESCAPE '\\'")
        params.append("%" + flt.part_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    if flt.reviewed is not None:
        clauses.append(("" if flt.reviewed else "NOT ") + "EXISTS (SELECT 1 FROM reviews r WHERE r.inspection_id = i.id)")
    if flt.qa_verdict:
        clauses.append("EXISTS (SELECT 1 FROM current_reviews r WHERE r.inspection_id = i.id AND r.qa_verdict = ?)")
        params.append(flt.qa_verdict)
    det = ["d.inspection_id = i.id", "d.shown = 1"]
    det_params: list[Any] = []
    if flt.label:
        det.append("d.label = ?")
        det_params.append(flt.label)
    if flt.min_score is not None:
        det.append("d.score >= ?")
        det_params.append(float(flt.min_score))
    if flt.max_score is not None:
        det.append("d.score <= ?")
        det_params.append(float(flt.max_score))
    if det_params:
        clauses.append(f"EXISTS (SELECT 1 FROM detections d WHERE {' AND '.join(det)})")
        params += det_params
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


# Reports: every query filters on the bare created_at column, so the ix_inspections_created index does the range.
REPORT_INSPECTIONS = ("SELECT id, created_at, station, verdict FROM inspections"
                      " WHERE created_at >= ? AND created_at < ? ORDER BY created_at, id")
REPORT_LIST = ("SELECT id, created_at, station, verdict, operator, part_id, source, model_id, model_version, threshold,"
               " n_detections, image_path, note, {v4} FROM inspections i WHERE created_at >= ? AND created_at < ?"
               " ORDER BY created_at, id")
# Recipe, trigger and each region's verdict ("left=PASS; right=FAIL") exist from schema v4 on.
REPORT_LIST_V4 = ("recipe, recipe_version, trigger, job_id, (SELECT GROUP_CONCAT(r.name || '=' || r.verdict, '; ')"
                  " FROM (SELECT name, verdict FROM inspection_regions WHERE inspection_id = i.id ORDER BY id) r)")
REPORT_LIST_BEFORE_V4 = "'', 0, '', '', ''"
REPORT_CLASS_STATS = ("SELECT d.inspection_id, d.label, SUM(d.fails), MAX(CASE WHEN d.shown THEN d.score END) FROM inspections i"
                      " JOIN detections d ON d.inspection_id = i.id"
                      " WHERE i.created_at >= ? AND i.created_at < ? GROUP BY d.inspection_id, d.label")
REPORT_SCORES = ("SELECT d.label, d.score FROM inspections i JOIN detections d ON d.inspection_id = i.id"
                 " WHERE i.created_at >= ? AND i.created_at < ? AND d.shown = 1")
# QA's current word: the current_reviews view over the append-only reviews (schema v3); in a v2 log
# (a read-only log is never migrated) the reviews table itself held one row per inspection.
REPORT_REVIEWS = ("SELECT r.inspection_id, r.qa_verdict, r.reviewer, r.reviewed_at, a.reason FROM inspections i"
                  " JOIN {reviews} r ON r.inspection_id = i.id LEFT JOIN audit a ON a.id = r.audit_id"
                  " WHERE i.created_at >= ? AND i.created_at < ?")


def _for_station(sql: str, lo: str, hi: str, station: str | None) -> tuple[str, tuple]:
    """A report query and its parameters, narrowed to one station's inspections when `station` is given."""
    if station is None:
        return sql, (lo, hi)
    return sql.replace("created_at < ?", "created_at < ? AND station = ?", 1), (lo, hi, station)


def _reviews_source(schema_version: int) -> str | None:
    """Where QA's current word is in a log of this schema; None before QA review (v1)."""
    return "current_reviews" if schema_version >= 3 else "reviews" if schema_version == 2 else None


class _Reads:
    """The reads a log and a transaction share, over whatever connection `_reading` gives."""

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        raise NotImplementedError
        yield

    def _rows(self, sql: str, params: tuple | list = ()) -> list[sqlite3.Row]:
        with self._reading() as conn:
            return conn.execute(sql, params).fetchall()

    def get(self, inspection_id: int) -> dict[str, Any] | None:
        """One inspection as a dict, with its detections (best first) under "detections" and its regions under "regions"."""
        with self._reading() as conn:
            row = conn.execute("SELECT * FROM inspections WHERE id = ?", (inspection_id,)).fetchone()
            if row is None:
                return None
            dets = conn.execute(f"SELECT {_DETECTION_COLUMNS} FROM detections WHERE inspection_id = ? ORDER BY score DESC",
                                (inspection_id,)).fetchall()
            regions = conn.execute("SELECT name, x, y, w, h, threshold, rule_json, verdict FROM inspection_regions"
                                   " WHERE inspection_id = ? ORDER BY id", (inspection_id,)).fetchall()
        out = dict(row)
        out["detections"] = [dict(d) for d in dets]
        out["regions"] = [dict(r) for r in regions]
        return out

    def inspection(self, inspection_id: int) -> InspectionRow | None:
        row = self.get(inspection_id)
        return None if row is None else InspectionRow.from_mapping(row)

    def inspection_id_by_uid(self, uid: str) -> int | None:
        rows = self._rows("SELECT id FROM inspections WHERE uid = ?", (str(uid),))
        return int(rows[0][0]) if rows else None

    def detection(self, inspection_id: int, detection_id: int) -> DetectionRow | None:
        rows = self._rows(f"SELECT {_DETECTION_COLUMNS} FROM detections WHERE id = ? AND inspection_id = ?",
                          (detection_id, inspection_id))
        return _detection(rows[0]) if rows else None

    def current_review(self, inspection_id: int) -> ReviewRow | None:
        rows = self._rows("SELECT inspection_id, qa_verdict, reviewer, reviewed_at, audit_id FROM current_reviews"
                          " WHERE inspection_id = ?", (inspection_id,))
        return ReviewRow(*rows[0]) if rows else None

    def review_boxes(self, inspection_id: int | None = None) -> list[ReviewBoxRow]:
        if inspection_id is None:
            rows = self._rows(f"SELECT {_REVIEW_BOX_COLUMNS} FROM review_boxes ORDER BY id")
        else:
            rows = self._rows(f"SELECT {_REVIEW_BOX_COLUMNS} FROM review_boxes WHERE inspection_id = ? ORDER BY id",
                              (inspection_id,))
        return [ReviewBoxRow(*r) for r in rows]

    def audit_records(self, *, action: str | None = None, inspection_id: int | None = None,
                      newest_first: bool = False) -> list[AuditRecord]:
        clauses, params = [], []
        if action is not None:
            clauses.append("action = ?")
            params.append(action)
        if inspection_id is not None:
            clauses.append("inspection_id = ?")
            params.append(inspection_id)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._rows(f"SELECT {_AUDIT_COLUMNS} FROM audit{where} ORDER BY id{' DESC' if newest_first else ''}", params)
        return [AuditRecord(*r) for r in rows]

    def audit_has(self, action: str) -> bool:
        return bool(self._rows("SELECT 1 FROM audit WHERE action = ? LIMIT 1", (action,)))

    def user(self, name: str) -> UserRow | None:
        rows = self._rows(f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (name,))  # the column is NOCASE
        return _user(rows[0]) if rows else None

    def any_user(self, active_only: bool = False) -> bool:
        return bool(self._rows("SELECT 1 FROM users" + (" WHERE active = 1" if active_only else "") + " LIMIT 1"))

    def active_admins(self) -> int:
        return int(self._rows("SELECT COUNT(*) FROM users WHERE role = 'admin' AND active = 1")[0][0])

    def recipe_versions(self, name: str | None = None) -> list[dict[str, Any]]:
        """Saved recipe versions (all, or one recipe's), oldest first."""
        if name is None:
            rows = self._rows("SELECT * FROM recipes ORDER BY id")
        else:
            rows = self._rows("SELECT * FROM recipes WHERE name = ? ORDER BY version", (name,))
        return [dict(r) for r in rows]

    def current_recipes(self) -> list[dict[str, Any]]:
        """The newest version of each recipe that is not deleted, by name."""
        rows = self._rows("SELECT r.* FROM recipes r WHERE r.version = (SELECT MAX(version) FROM recipes r2 WHERE r2.name = r.name)"
                          " AND r.deleted = 0 ORDER BY r.name")
        return [dict(r) for r in rows]


_REPLICATED_COLUMNS = {
    "reviews": ("id", "inspection_id", "qa_verdict", "reviewer", "reviewed_at", "audit_id"),
    "review_boxes": ("id", "inspection_id", "detection_id", "kind", "label", "x1", "y1", "x2", "y2", "audit_id"),
    "recipes": ("id", "name", "version", "external_id", "definition", "deleted", "created_at", "created_by", "audit_id"),
}


def _chain_range(conn: sqlite3.Connection, after_id: int, limit: int) -> list[dict[str, Any]]:
    """Inspections with id > `after_id` (at most `limit`), as hashed: with their detections and regions, ids included."""
    names = (*INSPECTION_FIELDS_V2, "hash")
    rows = [dict(zip(names, r)) for r in conn.execute(
        f"SELECT {', '.join(names)} FROM inspections WHERE id > ? ORDER BY id LIMIT ?", (int(after_id), int(limit)))]
    if not rows:
        return rows
    by_id = {r["id"]: r for r in rows}
    for r in rows:
        r["detections"], r["regions"] = [], []
    span = (rows[0]["id"], rows[-1]["id"])
    for d in conn.execute(f"SELECT inspection_id, {', '.join(DETECTION_FIELDS_V2)} FROM detections"
                          " WHERE inspection_id BETWEEN ? AND ? ORDER BY inspection_id, id", span):
        by_id[d[0]]["detections"].append(dict(zip(DETECTION_FIELDS_V2, d[1:])))
    for g in conn.execute(f"SELECT inspection_id, {', '.join(REGION_FIELDS)} FROM inspection_regions"
                          " WHERE inspection_id BETWEEN ? AND ? ORDER BY inspection_id, id", span):
        by_id[g[0]]["regions"].append(dict(zip(REGION_FIELDS, g[1:])))
    return rows


def _detection(r: sqlite3.Row) -> DetectionRow:
    return DetectionRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), bool(r[8]), r[9])


def _user(r: sqlite3.Row) -> UserRow:
    return UserRow(r[0], r[1], r[2], bool(r[3]), r[4], r[5], r[6], r[7])


class SqliteTransaction(_Reads):
    """One write transaction of the SQLite log (see app.store.base.LogTransaction)."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        yield self._conn

    def append_audit(self, user: str, action: str, *, inspection_id: int | None = None, old: Any = None, new: Any = None,
                     reason: str = "", at: datetime | None = None) -> int:
        return append_audit(self._conn, user, action, inspection_id=inspection_id, old=old, new=new, reason=reason, at=at)

    def add_review(self, inspection_id: int, verdict: str, reviewer: str, at: datetime, audit_id: int) -> None:
        self._conn.execute("INSERT INTO reviews (inspection_id, qa_verdict, reviewer, reviewed_at, audit_id) VALUES (?,?,?,?,?)",
                           (inspection_id, verdict, reviewer, iso_utc(at), audit_id))

    def add_review_box(self, inspection_id: int, kind: str, label: str, box: tuple[float, float, float, float],
                       audit_id: int, detection_id: int | None = None) -> None:
        x1, y1, x2, y2 = box
        self._conn.execute("INSERT INTO review_boxes (inspection_id, detection_id, kind, label, x1, y1, x2, y2, audit_id)"
                           " VALUES (?,?,?,?,?,?,?,?,?)", (inspection_id, detection_id, kind, label, x1, y1, x2, y2, audit_id))

    def add_user(self, name: str, role: str, secret_hash: str, created_at: datetime) -> None:
        if self.user(name) is not None:
            raise ValueError(f"a user named {name!r} exists already")
        self._conn.execute("INSERT INTO users (name, role, secret_hash, created_at) VALUES (?,?,?,?)",
                           (name, role, secret_hash, iso_utc(created_at)))

    def set_user_role(self, name: str, role: str) -> None:
        self._conn.execute("UPDATE users SET role = ? WHERE name = ?", (role, name))

    def set_user_active(self, name: str, active: bool) -> None:
        self._conn.execute("UPDATE users SET active = ? WHERE name = ?", (int(active), name))

    def set_user_secret(self, name: str, secret_hash: str) -> None:
        self._conn.execute("UPDATE users SET secret_hash = ?, failed_attempts = 0, locked_until = NULL WHERE name = ?",
                           (secret_hash, name))

    def count_failed_sign_in(self, name: str) -> int:
        return int(self._conn.execute("UPDATE users SET failed_attempts = failed_attempts + 1 WHERE name = ?"
                                      " RETURNING failed_attempts", (name,)).fetchone()[0])

    def lock_user(self, name: str, until: datetime) -> None:
        self._conn.execute("UPDATE users SET failed_attempts = 0, locked_until = ? WHERE name = ?", (iso_utc(until), name))

    def save_recipe_version(self, *, name: str, external_id: str, definition_json: str, deleted: bool, user: str,
                            audit_action: str, old: Any, new: Any, reason: str) -> int:
        audit_id = self.append_audit(user, audit_action, old=old, new=new, reason=reason)
        version = int(self._conn.execute("SELECT COALESCE(MAX(version), 0) FROM recipes WHERE name = ?",
                                         (name,)).fetchone()[0]) + 1
        self._conn.execute("INSERT INTO recipes (name, version, external_id, definition, deleted, created_at, created_by,"
                           " audit_id) VALUES (?,?,?,?,?,?,?,?)",
                           (name, version, external_id, definition_json, int(deleted), iso_utc(datetime.now(timezone.utc)),
                            user, audit_id))
        return version


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


class InspectionStore(_Reads):
    """The SQLite inspection log of one data folder (app.store.base.InspectionLog); thread-safe.

    `read_only=True` opens an existing log without migrating or writing anything
    (no orphan sweep, no guard repair): for `audit verify` and reports from a copy.
    """

    def __init__(self, db_path: str | Path, image_dir: str | Path | None = None, min_free_bytes: int = 0,
                 sweep_orphans: bool = True, *, read_only: bool = False):
        self.db_path = Path(db_path)
        self.root = self.db_path.parent
        self.image_dir = Path(image_dir) if image_dir is not None else self.root / "images"
        # Disk reserve: a picture that would leave less free than this is not saved, so
        # that the log rows (small) can still be written when the disk fills up.
        self.min_free_bytes = int(min_free_bytes)
        self.read_only = read_only
        self._lock = threading.Lock()
        self._local = threading.local()  # this thread's read connection
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        if read_only:
            self._conn: sqlite3.Connection | None = None
            first = connect_read_only(self.db_path)
            self._adopt_reader(first)
            self.schema_version = int(first.execute("PRAGMA user_version").fetchone()[0])
            return
        self._conn = connect(self.db_path)
        self.schema_version = SCHEMA_VERSION
        if sweep_orphans:
            try:
                self.sweep_orphans()
            except (OSError, sqlite3.Error, StoreError) as exc:  # housekeeping: never stops the station
                logging.getLogger(__name__).warning("could not sweep orphan pictures in %s: %s", self.image_dir, exc)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    def __enter__(self) -> InspectionStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- connections ----------------------------------------------------------------------------

    def _adopt_reader(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        with self._readers_lock:
            self._readers.append(conn)
        self._local.conn = conn
        return conn

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """This thread's read connection; database errors become StoreError."""
        try:
            conn = getattr(self._local, "conn", None)
            if conn is None:
                if self.read_only:
                    conn = self._adopt_reader(connect_read_only(self.db_path))
                else:
                    conn = sqlite3.connect(self.db_path, timeout=10.0, check_same_thread=False, isolation_level=None)
                    conn.row_factory = sqlite3.Row
                    conn.execute("PRAGMA query_only=ON")
                    self._adopt_reader(conn)
            yield conn
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the inspection log {self.db_path}: {exc}") from exc

    def _tuples(self, sql: str, params: tuple | list, make: Callable[[Any], Any]) -> list:
        """Rows as named tuples, made straight from SQLite's tuples (reports read ~100,000 of them)."""
        with self._reading() as conn:
            cursor = conn.cursor()
            cursor.row_factory = None
            return list(map(make, cursor.execute(sql, params)))

    @contextmanager
    def write(self) -> Iterator[SqliteTransaction]:
        """One write transaction: all of it is committed, or none. Database errors become StoreError."""
        if self._conn is None:
            raise StoreError(f"{self.db_path} is open read-only")
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"could not write to the inspection log {self.db_path}: {exc}") from exc
            try:
                yield SqliteTransaction(conn)
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"could not write to the inspection log {self.db_path}: {exc}") from exc
                raise

    # -- writing -------------------------------------------------------------

    def record(self, rec: InspectionRecord, frame: np.ndarray | None = None,
               annotated: np.ndarray | None = None) -> StoredInspection:
        """Save the frames, then log the inspection; returns its id.

        Frames that cannot be saved (disk full, folder gone) are noted on the
        row and returned as warnings: the inspection itself is still logged.
        Raises StoreError only if the database write fails.
        """
        if self._conn is None:
            raise StoreError(f"{self.db_path} is open read-only")
        warnings: list[str] = list(rec.notes)
        if self._rows("SELECT 1 FROM inspections WHERE uid = ?", (rec.uid,)):
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
            with self.write() as tx:
                tx.append_audit("station", "store.orphans_removed", new={"files": [self._relative(p) for p in removed]},
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
            found |= {r[0] for r in self._rows(f"SELECT uid FROM inspections WHERE uid IN ({','.join('?' * len(chunk))})", chunk)}
        return found

    def resolve(self, relative: str | None) -> Path | None:
        """The file a row's image_path/annotated_path names."""
        if not relative:
            return None
        p = Path(relative)
        return p if p.is_absolute() else self.root / p

    # -- reading -------------------------------------------------------------

    def count(self) -> int:
        return int(self._rows("SELECT COUNT(*) FROM inspections")[0][0])

    def gallery_page(self, flt: GalleryFilter, sort: str = "newest", page: int = 0, page_size: int = 48) -> list[GalleryItem]:
        """One page of inspections matching `flt` (no detections)."""
        if sort not in _SORT_SQL:
            raise ValueError(f"sort must be one of {', '.join(GALLERY_SORTS)}")
        where, params = _gallery_where(flt)
        rows = self._rows(f"SELECT {_GALLERY_COLUMNS} FROM inspections i{where} ORDER BY {_SORT_SQL[sort]} LIMIT ? OFFSET ?",
                          [*params, int(page_size), int(page) * int(page_size)])
        return [GalleryItem(*r) for r in rows]

    def gallery_count(self, flt: GalleryFilter) -> int:
        where, params = _gallery_where(flt)
        return int(self._rows(f"SELECT COUNT(*) FROM inspections i{where}", params)[0][0])

    def gallery_ids(self, flt: GalleryFilter) -> list[int]:
        where, params = _gallery_where(flt)
        return [r[0] for r in self._rows(f"SELECT i.id FROM inspections i{where} ORDER BY i.id", params)]

    def operators(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT DISTINCT operator FROM inspections WHERE operator != '' ORDER BY operator")]

    def labels(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT DISTINCT label FROM detections ORDER BY label")]

    # -- what `audit verify` reads ---------------------------------------------------------------

    def audit_chain(self) -> Iterator[dict[str, Any]]:
        with self._reading() as conn:
            yield from audit_chain_rows(conn)

    def inspection_chain(self) -> Iterator[dict[str, Any]]:
        with self._reading() as conn:
            yield from inspection_chain_rows(conn)

    def reviews(self) -> list[ReviewRow]:
        rows = self._rows("SELECT inspection_id, qa_verdict, reviewer, reviewed_at, audit_id, id FROM reviews ORDER BY id")
        return [ReviewRow(*r) for r in rows]

    def current_reviews(self) -> list[ReviewRow]:
        return [ReviewRow(*r) for r in self._rows(
            "SELECT inspection_id, qa_verdict, reviewer, reviewed_at, audit_id FROM current_reviews")]

    def users(self) -> list[UserRow]:
        return [_user(r) for r in self._rows(f"SELECT {_USER_COLUMNS} FROM users ORDER BY id")]

    def missing_guards(self) -> list[str]:
        with self._reading() as conn:
            return _missing_guards(conn, guard_triggers())

    # -- reports ---------------------------------------------------------------------------------

    def report_inspections(self, lo: str, hi: str, station: str | None = None) -> list[ReportInspection]:
        return self._tuples(*_for_station(REPORT_INSPECTIONS, lo, hi, station), ReportInspection._make)

    def report_list(self, lo: str, hi: str, station: str | None = None) -> list[ReportListRow]:
        v4 = REPORT_LIST_V4 if self.schema_version >= 4 else REPORT_LIST_BEFORE_V4
        return self._tuples(*_for_station(REPORT_LIST.format(v4=v4), lo, hi, station), ReportListRow._make)

    def report_class_stats(self, lo: str, hi: str, station: str | None = None) -> ClassStats:
        out: ClassStats = {}
        with self._reading() as conn:
            cursor = conn.cursor()
            cursor.row_factory = None
            for inspection_id, label, failing, best in cursor.execute(*_for_station(REPORT_CLASS_STATS, lo, hi, station)):
                out.setdefault(inspection_id, {})[label] = (int(failing), best)
        return out

    def report_scores(self, lo: str, hi: str, station: str | None = None) -> list[ShownScore]:
        return self._tuples(*_for_station(REPORT_SCORES, lo, hi, station), ShownScore._make)

    def report_reviews(self, lo: str, hi: str, station: str | None = None) -> list[QaReview]:
        source = _reviews_source(self.schema_version)
        if source is None:
            return []
        return self._tuples(*_for_station(REPORT_REVIEWS.format(reviews=source), lo, hi, station), QaReview._make)

    # -- result outputs: the log itself is the outbox ------------------------------------------

    def logged_after(self, after_id: int, limit: int = 100) -> list[dict[str, Any]]:
        """Inspections with id > `after_id`, oldest first, each as `get()` gives it (at most `limit`).

        Result outputs read the immutable log in id order instead of a copy of
        it: an inspection is there only once it is durably committed, and the
        inspection's uid is the receiver's idempotency key.
        """
        ids = [r[0] for r in self._rows("SELECT id FROM inspections WHERE id > ? ORDER BY id LIMIT ?",
                                        (int(after_id), int(limit)))]
        return [row for row in (self.get(i) for i in ids) if row is not None]

    def output_cursor(self, sink: str) -> int | None:
        """The last inspection id delivered to `sink` (None: the sink was never set up here)."""
        rows = self._rows("SELECT delivered_id FROM output_cursors WHERE sink = ?", (sink,))
        return int(rows[0][0]) if rows else None

    def start_output(self, sink: str) -> int:
        """Set up a new sink's cursor at the newest inspection (it gets what is logged from now on); returns it."""
        with self.write() as tx:
            tx._conn.execute("INSERT OR IGNORE INTO output_cursors (sink, delivered_id, updated_at)"
                             " VALUES (?, (SELECT COALESCE(MAX(id), 0) FROM inspections), ?)",
                             (sink, iso_utc(datetime.now(timezone.utc))))
            return int(tx._conn.execute("SELECT delivered_id FROM output_cursors WHERE sink = ?", (sink,)).fetchone()[0])

    def mark_delivered(self, sink: str, delivered_id: int) -> None:
        """Every inspection up to `delivered_id` has reached `sink` (the cursor never moves back)."""
        with self.write() as tx:
            tx._conn.execute("UPDATE output_cursors SET delivered_id = MAX(delivered_id, ?), updated_at = ? WHERE sink = ?",
                             (int(delivered_id), iso_utc(datetime.now(timezone.utc)), sink))

    # -- replication to the plant database: the log is the outbox here too ------------------------

    def replication_cursors(self, prefix: str) -> dict[str, int]:
        """The cursors kept beside the result outputs' as `PREFIX:KEY`, by KEY: each replicated table's and
        "pictures" (0 where none was saved yet), and whatever else the replicator saved under `prefix`."""
        saved = {r[0][len(prefix) + 1:]: int(r[1]) for r in self._rows(
            "SELECT sink, delivered_id FROM output_cursors WHERE substr(sink, 1, ?) = ?", (len(prefix) + 1, prefix + ":"))}
        return {**{t: 0 for t in (*REPLICATED_TABLES, "pictures")}, **saved}

    def advance_cursors(self, prefix: str, cursors: dict[str, int]) -> None:
        """Move the cursors forward (never back), all in one transaction."""
        self._write_cursors(prefix, cursors, "MAX(delivered_id, excluded.delivered_id)")

    def reset_cursors(self, prefix: str, cursors: dict[str, int]) -> None:
        """Set the cursors, back as well as forward, all in one transaction: only for a replicator that found its
        plant database holding less of this log than they say (restored from a backup, or a new database)."""
        self._write_cursors(prefix, cursors, "excluded.delivered_id")

    def _write_cursors(self, prefix: str, cursors: dict[str, int], new_value: str) -> None:
        now = iso_utc(datetime.now(timezone.utc))
        with self.write() as tx:
            tx._conn.executemany("INSERT INTO output_cursors (sink, delivered_id, updated_at) VALUES (?, ?, ?)"
                                 f" ON CONFLICT (sink) DO UPDATE SET delivered_id = {new_value},"
                                 " updated_at = excluded.updated_at",
                                 [(f"{prefix}:{table}", int(last), now) for table, last in cursors.items()])

    def history_mark(self, table: str, row_id: int) -> str | None:
        """What identifies row `row_id` of a replicated table, as the plant database reports its copy of it
        (plant_station_heads): an audit record's hash, an inspection's uid, else the id of the row's audit record.
        None when this log has no such row."""
        if table not in REPLICATED_TABLES:
            raise ValueError(f"not a replicated table: {table!r}")
        column = {"audit": "COALESCE(hash, '')", "inspections": "uid"}.get(table, "CAST(audit_id AS TEXT)")
        rows = self._rows(f"SELECT {column} FROM {table} WHERE id = ?", (int(row_id),))
        return str(rows[0][0]) if rows else None

    def replication_batch(self, after: dict[str, int], limit: int) -> ReplicationBatch:
        """The rows after each table's cursor (at most `limit` per table), from one snapshot, as hashed (ReplicationBatch)."""
        limit = int(limit)
        with self._reading() as conn:
            conn.execute("BEGIN")  # one snapshot: the users seen agree with the audit records read
            try:
                audit_names = (*FIELDS, "hash")
                audit = [dict(zip(audit_names, r)) for r in conn.execute(
                    f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE id > ? ORDER BY id LIMIT ?", (after.get("audit", 0), limit))]
                inspections = _chain_range(conn, after.get("inspections", 0), limit)
                audit_upto = audit[-1]["id"] if audit else after.get("audit", 0)
                inspection_upto = inspections[-1]["id"] if inspections else after.get("inspections", 0)
                batch = ReplicationBatch(audit=audit, inspections=inspections)
                for table, columns in _REPLICATED_COLUMNS.items():
                    rows = conn.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE id > ? ORDER BY id LIMIT ?",
                                        (after.get(table, 0), limit))
                    kept = getattr(batch, table)
                    for r in rows:
                        row = dict(zip(columns, r))
                        # Never ahead of its audit record and inspection: stop at the first that would be.
                        if row["audit_id"] > audit_upto or row.get("inspection_id", 0) > inspection_upto:
                            break
                        kept.append(row)
                if len(audit) < limit:
                    batch.users = [_user(r) for r in conn.execute(f"SELECT {_USER_COLUMNS} FROM users ORDER BY id")]
            finally:
                conn.execute("COMMIT")
        return batch

    def output_backlog(self, sink: str) -> tuple[int, str | None]:
        """(inspections not yet delivered to `sink`, created_at of the oldest of them or None)."""
        cursor = self.output_cursor(sink)
        if cursor is None:
            return 0, None
        row = self._rows("SELECT COUNT(*), MIN(created_at) FROM inspections WHERE id > ?", (cursor,))[0]
        return int(row[0]), row[1]
