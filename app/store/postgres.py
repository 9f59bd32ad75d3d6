"""The plant database: every station's inspection log in one PostgreSQL (psycopg 3).

    log = PlantLog("postgresql://alice@db.plant/inspections", password=..., picture_store="/mnt/plant-pictures")
    log.gallery_page(GalleryFilter(station="line-3", verdict="FAIL"))     # the InspectionLog protocol
    ReviewService(log, log.whoami()).set_verdict(...)                      # QA in plant mode: the plant's own chain
    verify_plant(log)                                                      # app.audit.verify on every origin's chains

Stations write their own SQLite log first and a replicator (app.store.replicator) ships it here
with `claim_station` and `ingest`: rows exactly as the station stored and hashed them, idempotent
by key (a resent batch changes nothing). Schema: ordered migrations in app/store/pg_schema/ (a
`schema_version` table), privileges in resources/sql/roles.sql, applied after every migration.

Ids. An origin is a station, or the plant itself ("plant", number 0: QA reviews made in plant
mode). Every row keeps the ids its origin gave it (what its hash covers) and gets a plant-wide id,
derived, never looked up: origin number * 10^10 + the id at the origin. `PlantLog` answers in
plant-wide ids (the gallery's, reports'); `OriginLog` (log.origin(name)) answers in one origin's own
ids, which is what `app.audit.verify` checks: each origin has its own two hash chains.

Who is who. Users in plant mode are PostgreSQL logins: the login's group role gives its station
role (plant_qa: qa; plant_report: supervisor; the schema's owner: admin), and QA's name in the
audit trail is the login's (the database refuses any other, resources/sql/roles.sql). PIN hashes
stay on the stations.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePath
from typing import Any, NoReturn
from urllib.parse import urlsplit

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from app.audit import DETECTION_FIELDS_V2, FIELDS, GENESIS, INSPECTION_FIELDS_V2, REGION_FIELDS, record_hash
from app.paths import resource
from app.store.rows import (
    GALLERY_SORTS,
    AuditRecord,
    ClassStats,
    DetectionRow,
    GalleryFilter,
    GalleryItem,
    InspectionRecord,
    InspectionRow,
    QaReview,
    ReplicationBatch,
    ReportDefects,
    ReportGroup,
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

ORIGIN_SPAN = 10**10  # plant-wide id = origin number * ORIGIN_SPAN + the id at the origin
PLANT = "plant"  # the plant's own origin (number 0)
ROLES = {"plant_station": "station", "plant_qa": "qa", "plant_report": "supervisor"}
SCHEMA_DIR = Path(__file__).with_name("pg_schema")
ROLES_SQL = "sql/roles.sql"
_MIGRATION_LOCK = 7_311_001  # advisory lock keys: schema migration, the plant's own chain
_PLANT_CHAIN_LOCK = 7_311_002
SCORE_STEP = 0.001  # trends get the shown scores to this (binned in the database: 90 days of a plant are millions)
_LOG_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
# The tables whose history is append-only, and the triggers that keep it so (missing_guards).
GUARDED = ("inspections", "detections", "inspection_regions", "audit", "reviews", "review_boxes", "recipes",
           "user_versions", "pictures")


# -- connecting ------------------------------------------------------------------------------------


def shown_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def password_from(file: str | Path | None = None, env: str | None = None) -> str | None:
    """The plant database password: the first line of `file`, else the environment variable `env`; None: neither.

    The file must not be readable by others (chmod 600), as libpq insists for its own password file.
    """
    if file:
        path = Path(file).expanduser()
        try:
            mode = path.stat().st_mode
            if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ValueError(f"the password file {path} is readable by others: chmod 600 {path}")
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read the password file {path}: {exc.strerror or exc}") from exc
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise ValueError(f"the password file {path} is empty")
        return lines[0]
    if env:
        value = os.environ.get(env)
        if not value:
            raise ValueError(f"the environment variable {env} (the plant database password) is not set")
        return value
    return None


def conninfo(url: str, password: str | None = None, **options: Any) -> str:
    """libpq connection string from a postgresql:// URL (sslmode and the other parameters pass through)."""
    if not re.match(r"postgres(ql)?://", str(url).strip()):
        raise ValueError(f"plant database URL {shown_url(str(url))!r} must start with postgresql://")
    extra = {k: v for k, v in options.items() if v is not None}
    if password is not None:
        extra["password"] = password
    try:
        return psycopg.conninfo.make_conninfo(str(url).strip(), **extra)
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"plant database URL {shown_url(str(url))!r}: {exc}") from None


def connect(info: str, *, autocommit: bool = True, what: str = "the plant database") -> psycopg.Connection:
    try:
        return psycopg.connect(info, autocommit=autocommit)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to {what}: {_message(exc)}") from exc


def _message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- schema ----------------------------------------------------------------------------------------


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, SQL) of each migration, in order (files NNNN_name.sql)."""
    out = []
    for path in sorted(SCHEMA_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql")):
        out.append((int(path.name[:4]), path.stem[5:], path.read_text(encoding="utf-8")))
    if [v for v, _, _ in out] != list(range(1, len(out) + 1)):
        raise RuntimeError(f"plant schema migrations in {SCHEMA_DIR} must be numbered 0001, 0002, ... without gaps")
    return out


SCHEMA_VERSION = len(migrations())


def schema_version(conn: psycopg.Connection) -> int:
    """The plant schema's version (0: an empty database)."""
    if conn.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None:
        return 0
    return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])


def migrate(conn: psycopg.Connection, target: int | None = None) -> int:
    """Migrate the plant schema up to `target` (default: the newest; an older one only for tests of the migrations),
    then apply resources/sql/roles.sql; returns the version.

    One transaction per call under an advisory lock: two programs migrating at once take turns.
    StoreError for a database newer than this program or a login that may not migrate it.
    """
    steps = migrations()
    target = len(steps) if target is None else int(target)
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            current = schema_version(conn)
            if current > len(steps):
                raise StoreError(f"the plant database has schema {current}, newer than this program's {len(steps)}: update it")
            if current == 0:
                conn.execute("CREATE TABLE schema_version (version integer PRIMARY KEY, name text NOT NULL,"
                             " applied_at timestamptz NOT NULL DEFAULT now())")
            for version, name, script in steps[current:target]:
                conn.execute(script)
                conn.execute("INSERT INTO schema_version (version, name) VALUES (%s, %s)", (version, name))
            if target == len(steps) and target > current:  # the privileges are those of the newest schema
                conn.execute(resource(ROLES_SQL).read_text(encoding="utf-8"))
            return max(current, target)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise StoreError(f"this login may not migrate the plant database ({_message(exc)}): open it once with the"
                         " login that owns the database (roles: resources/sql/roles.sql needs CREATEROLE)") from exc
    except psycopg.Error as exc:
        raise StoreError(f"could not migrate the plant database: {_message(exc)}") from exc


# -- typed values as the stations hashed them ----------------------------------------------------


def _log_time(value: Any, what: str) -> str:
    """A time as the log writes it; anything else could not be stored and given back exactly as hashed."""
    if not isinstance(value, str) or not _LOG_TIME.fullmatch(value):
        raise StoreError(f"{what}: time {value!r} is not the log's ISO 8601 UTC text (YYYY-MM-DDTHH:MM:SS.mmmZ)")
    return value


def plant_id(origin_no: int, local_id: int | None) -> int | None:
    return None if local_id is None else int(origin_no) * ORIGIN_SPAN + int(local_id)


# Column types of the rows a station ships (unnest needs them), in insert order.
_INSPECTION_COLUMNS = {
    "id": "bigint", "station": "text", "local_id": "bigint", "uid": "text", "created_at": "timestamptz",
    "operator": "text", "part_id": "text", "source": "text", "frame_w": "integer", "frame_h": "integer",
    "roi_x": "integer", "roi_y": "integer", "roi_w": "integer", "roi_h": "integer", "model_id": "text",
    "model_version": "text", "threshold": "double precision", "rule_json": "text", "verdict": "text",
    "n_detections": "integer", "max_score": "double precision", "inference_ms": "double precision", "image_path": "text",
    "annotated_path": "text", "note": "text", "image_sha256": "text", "annotated_sha256": "text", "trigger": "text",
    "job_id": "text", "recipe": "text", "recipe_version": "integer", "hash_version": "integer", "prev_hash": "text",
    "hash": "text",
}
_DETECTION_COLUMNS = {
    "inspection_id": "bigint", "local_id": "bigint", "created_at": "timestamptz", "label": "text",
    "score": "double precision", "x1": "double precision", "y1": "double precision", "x2": "double precision",
    "y2": "double precision", "shown": "smallint", "fails": "smallint", "region": "text",
}
_REGION_COLUMNS = {
    "inspection_id": "bigint", "local_id": "bigint", "created_at": "timestamptz", "name": "text", "x": "integer",
    "y": "integer", "w": "integer", "h": "integer", "threshold": "double precision", "rule_json": "text", "verdict": "text",
}
_AUDIT_COLUMNS = {
    "id": "bigint", "station": "text", "local_id": "bigint", "at": "timestamptz", "user_name": "text", "action": "text",
    "inspection_id": "bigint", "plant_inspection_id": "bigint", "old_value": "text", "new_value": "text", "reason": "text",
    "prev_hash": "text", "hash": "text",
}
_REVIEW_COLUMNS = {
    "id": "bigint", "station": "text", "local_id": "bigint", "inspection_id": "bigint", "plant_inspection_id": "bigint",
    "qa_verdict": "text", "reviewer": "text", "reviewed_at": "timestamptz", "audit_id": "bigint", "plant_audit_id": "bigint",
}
_REVIEW_BOX_COLUMNS = {
    "id": "bigint", "station": "text", "local_id": "bigint", "inspection_id": "bigint", "plant_inspection_id": "bigint",
    "detection_id": "bigint", "kind": "text", "label": "text", "x1": "double precision", "y1": "double precision",
    "x2": "double precision", "y2": "double precision", "audit_id": "bigint", "plant_audit_id": "bigint",
}
_RECIPE_COLUMNS = {
    "id": "bigint", "station": "text", "local_id": "bigint", "name": "text", "version": "integer", "external_id": "text",
    "definition": "text", "deleted": "smallint", "created_at": "timestamptz", "created_by": "text", "audit_id": "bigint",
    "plant_audit_id": "bigint",
}


def _insert_many(conn: psycopg.Connection, table: str, columns: dict[str, str], rows: list[dict[str, Any]]) -> None:
    """All rows in one statement (unnest of one array per column); rows already there are left as they are."""
    if not rows:
        return
    query = sql.SQL("INSERT INTO {} ({}) SELECT * FROM unnest({}) ON CONFLICT DO NOTHING").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(t)) for t in columns.values()))
    conn.execute(query, [[r[c] for r in rows] for c in columns])


# -- what a station's replicator calls ----------------------------------------------------------


def claim_station(conn: psycopg.Connection, name: str) -> int:
    """The station's number, registering `name` for this login on its first connect.

    StoreError if another login claimed the name (each station PC has its own login) or it is the plant's own.
    """
    name = str(name).strip()
    if not name:
        raise StoreError("the station needs a name to replicate to the plant database")
    with conn.transaction():
        found = conn.execute("SELECT no, kind, login, current_user FROM stations WHERE name = %s", (name,)).fetchone()
        if found is None:
            conn.execute("INSERT INTO stations (name) VALUES (%s) ON CONFLICT DO NOTHING", (name,))
            found = conn.execute("SELECT no, kind, login, current_user FROM stations WHERE name = %s", (name,)).fetchone()
    no, kind, login, me = found
    if kind != "station":
        raise StoreError(f"{name!r} is the plant's own name in the plant database: give the station another name")
    if login != me:
        raise StoreError(f"the station name {name!r} belongs to the login {login!r} in the plant database, not to {me!r}:"
                         " each station has its own login")
    return int(no)


def station_heads(conn: psycopg.Connection, no: int) -> dict[str, tuple[int, str]]:
    """What the plant holds of station number `no` (one this login claimed): per history table, the id at the station
    of its last row and what identifies that row (pg_schema/0004_station_heads.sql); 'pictures': the last inspection
    with a copied picture. A table the plant holds nothing of is absent."""
    rows = conn.execute("SELECT kind, local_id, mark FROM plant_station_heads(%s)", (int(no),)).fetchall()
    return {kind: (int(local_id), mark) for kind, local_id, mark in rows}


def ensure_months(conn: psycopg.Connection, times: Iterable[str]) -> None:
    """Make the month partitions these (log text) times fall into, where missing."""
    for month in sorted({t[:7] for t in times}):
        conn.execute("SELECT plant_ensure_month(%s::timestamptz)", (f"{month}-01T00:00:00Z",))


def ingest(conn: psycopg.Connection, no: int, station: str, batch: ReplicationBatch) -> None:
    """Insert a station's batch, in the caller's transaction; rows the plant has already are skipped (idempotent).

    Ids: plant-wide ones derived from the station number `no`; each row keeps the ids the station gave it.
    """
    audit = [{**{k: r[k] for k in FIELDS if k not in ("id", "user", "at")}, "hash": r["hash"],
              "id": plant_id(no, r["id"]), "station": station, "local_id": r["id"],
              "at": _log_time(r["at"], f"audit record #{r['id']}"), "user_name": r["user"],
              "plant_inspection_id": plant_id(no, r["inspection_id"])} for r in batch.audit]
    inspections, detections, regions = [], [], []
    for r in batch.inspections:
        created = _log_time(r["created_at"], f"inspection #{r['id']}")
        pid = plant_id(no, r["id"])
        inspections.append({**{k: r[k] for k in _INSPECTION_COLUMNS if k in r}, "id": pid, "local_id": r["id"],
                            "created_at": created})
        detections += [{**d, "inspection_id": pid, "local_id": d["id"], "created_at": created} for d in r["detections"]]
        regions += [{**g, "inspection_id": pid, "local_id": g["id"], "created_at": created} for g in r["regions"]]
    ensure_months(conn, [r["created_at"] for r in inspections])
    _insert_many(conn, "audit", _AUDIT_COLUMNS, audit)
    _insert_many(conn, "inspections", _INSPECTION_COLUMNS, inspections)
    _insert_many(conn, "detections", _DETECTION_COLUMNS, detections)
    _insert_many(conn, "inspection_regions", _REGION_COLUMNS, regions)
    keys = {"station": station}
    _insert_many(conn, "reviews", _REVIEW_COLUMNS, [
        {**r, **keys, "id": plant_id(no, r["id"]), "local_id": r["id"], "plant_inspection_id": plant_id(no, r["inspection_id"]),
         "reviewed_at": _log_time(r["reviewed_at"], f"review #{r['id']}"), "plant_audit_id": plant_id(no, r["audit_id"])}
        for r in batch.reviews])
    _insert_many(conn, "review_boxes", _REVIEW_BOX_COLUMNS, [
        {**r, **keys, "id": plant_id(no, r["id"]), "local_id": r["id"], "plant_inspection_id": plant_id(no, r["inspection_id"]),
         "plant_audit_id": plant_id(no, r["audit_id"])} for r in batch.review_boxes])
    _insert_many(conn, "recipes", _RECIPE_COLUMNS, [
        {**r, **keys, "id": plant_id(no, r["id"]), "local_id": r["id"], "plant_audit_id": plant_id(no, r["audit_id"]),
         "created_at": _log_time(r["created_at"], f"recipe version #{r['id']}")} for r in batch.recipes])
    if batch.users:
        users = batch.users
        conn.execute(
            "INSERT INTO user_versions (station, local_id, name, role, active, created_at)"
            " SELECT %s, u.local_id, u.name, u.role, u.active, u.created_at"
            " FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::boolean[], %s::timestamptz[])"
            " AS u (local_id, name, role, active, created_at)"
            " WHERE NOT EXISTS (SELECT 1 FROM (SELECT v.name, v.role, v.active FROM user_versions v"
            "   WHERE v.station = %s AND v.local_id = u.local_id ORDER BY v.id DESC LIMIT 1) last"
            "   WHERE last.name = u.name AND last.role = u.role AND last.active = u.active)",
            (station, [u.id for u in users], [u.name for u in users], [u.role for u in users], [bool(u.active) for u in users],
             [_log_time(u.created_at, f"user {u.name}") for u in users], station))


def record_picture(conn: psycopg.Connection, inspection_id: int, kind: str, path: str, sha256: str, size: int) -> None:
    """Note a picture copied to the plant picture store (once; a second note of the same picture is ignored)."""
    conn.execute("INSERT INTO pictures (inspection_id, kind, path, sha256, bytes) VALUES (%s, %s, %s, %s, %s)"
                 " ON CONFLICT DO NOTHING", (inspection_id, kind, path, sha256, size))


def picture_store_path(relative: str) -> PurePath:
    """Where a station's picture (its logged image_path) lies in the plant picture store: images/DAY/FILE."""
    p = PurePath(relative.replace("\\", "/"))
    if len(p.parts) < 2:
        raise ValueError(f"not a picture path of the log: {relative!r}")
    return PurePath("images", p.parent.name, p.name)


# -- reading ---------------------------------------------------------------------------------------

_SORT_SQL = {
    "newest": "i.created_at DESC, i.id DESC",
    "oldest": "i.created_at ASC, i.id ASC",
    "highest score": "i.max_score DESC, i.id DESC",
    "part id": "i.part_id ASC, i.id DESC",
}
assert tuple(_SORT_SQL) == GALLERY_SORTS
_QA_VERDICT = ("(SELECT r.qa_verdict FROM reviews r WHERE r.plant_inspection_id = i.id"
               " ORDER BY r.reviewed_at DESC, r.id DESC LIMIT 1)")
_GALLERY_COLUMNS = ("i.id, iso_utc(i.created_at), i.station, i.operator, i.part_id, i.verdict, i.max_score, i.annotated_path,"
                    f" i.image_path, {_QA_VERDICT}")
_ROW_COLUMNS = ", ".join(k for k in _INSPECTION_COLUMNS if k not in ("id", "created_at"))
_DETECTIONS_OF = ("SELECT local_id AS id, label, score, x1, y1, x2, y2, shown, fails, region FROM detections"
                  " WHERE inspection_id = %s AND created_at = %s")
_AUDIT_SELECT = ("SELECT {id}, iso_utc(at), user_name, action, {inspection}, old_value, new_value, reason, prev_hash, hash"
                 " FROM audit")
_PLANT_AUDIT = _AUDIT_SELECT.format(id="id", inspection="plant_inspection_id")
_REVIEW_BOX_SELECT = ("SELECT id, plant_inspection_id, detection_id, kind, label, x1, y1, x2, y2, plant_audit_id"
                      " FROM review_boxes")
_RANGE = "i.created_at >= %s::timestamptz AND i.created_at < %s::timestamptz"


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _gallery_where(flt: GalleryFilter) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if flt.start is not None:
        clauses.append("i.created_at >= %s")
        params.append(flt.start)
    if flt.end is not None:
        clauses.append("i.created_at < %s")
        params.append(flt.end)
    for column, value in (("verdict", flt.verdict), ("operator", flt.operator), ("station", flt.station)):
        if value:
            clauses.append(f"i.{column} = %s")
            params.append(value)
    if flt.part_id:
        clauses.append("i.part_id ILIKE %s")  # as the station's SQLite LIKE: case-insensitive
        params.append(_like(flt.part_id))
    if flt.reviewed is not None:
        clauses.append(("" if flt.reviewed else "NOT ") + "EXISTS (SELECT 1 FROM reviews r WHERE r.plant_inspection_id = i.id)")
    if flt.qa_verdict:
        clauses.append(f"{_QA_VERDICT} = %s")
        params.append(flt.qa_verdict)
    det = ["d.inspection_id = i.id", "d.created_at = i.created_at", "d.shown = 1"]
    det_params: list[Any] = []
    if flt.label:
        det.append("d.label = %s")
        det_params.append(flt.label)
    if flt.min_score is not None:
        det.append("d.score >= %s")
        det_params.append(float(flt.min_score))
    if flt.max_score is not None:
        det.append("d.score <= %s")
        det_params.append(float(flt.max_score))
    if det_params:
        clauses.append(f"EXISTS (SELECT 1 FROM detections d WHERE {' AND '.join(det)})")
        params += det_params
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _report_range(lo: str, hi: str, station: str | None) -> tuple[str, list[Any]]:
    if station is None:
        return _RANGE, [lo, hi]
    return _RANGE + " AND i.station = %s", [lo, hi, station]


class _Reads:
    """The reads a plant log and its transactions share (plant-wide ids), over the connection `_reading` gives."""

    login: str
    role: str

    @contextmanager
    def _reading(self) -> Iterator[psycopg.Connection]:
        raise NotImplementedError
        yield

    def _rows(self, query: str, params: Iterable[Any] | dict[str, Any] = ()) -> list[tuple]:
        with self._reading() as conn:
            return conn.execute(query, params if isinstance(params, dict) else list(params)).fetchall()

    def get(self, inspection_id: int) -> dict[str, Any] | None:
        with self._reading() as conn:
            cur = conn.cursor(row_factory=dict_row)
            row = cur.execute(f"SELECT id, iso_utc(created_at) AS created_at, created_at AS ts, {_ROW_COLUMNS}"
                              " FROM inspections WHERE id = %s", (int(inspection_id),)).fetchone()
            if row is None:
                return None
            ts = row.pop("ts")
            row["detections"] = cur.execute(_DETECTIONS_OF + " ORDER BY score DESC, local_id", (row["id"], ts)).fetchall()
            row["regions"] = cur.execute("SELECT name, x, y, w, h, threshold, rule_json, verdict FROM inspection_regions"
                                         " WHERE inspection_id = %s AND created_at = %s ORDER BY local_id",
                                         (row["id"], ts)).fetchall()
        return row

    def inspection(self, inspection_id: int) -> InspectionRow | None:
        row = self.get(inspection_id)
        return None if row is None else InspectionRow.from_mapping(row)

    def inspection_id_by_uid(self, uid: str) -> int | None:
        rows = self._rows("SELECT id FROM inspections WHERE uid = %s", (str(uid),))
        return int(rows[0][0]) if rows else None

    def detection(self, inspection_id: int, detection_id: int) -> DetectionRow | None:
        rows = self._rows(_DETECTIONS_OF.replace("created_at = %s", "local_id = %s"), (int(inspection_id), int(detection_id)))
        return DetectionRow(*rows[0][:7], bool(rows[0][7]), bool(rows[0][8]), rows[0][9]) if rows else None

    def current_review(self, inspection_id: int) -> ReviewRow | None:
        rows = self._rows("SELECT plant_inspection_id, qa_verdict, reviewer, iso_utc(reviewed_at), plant_audit_id FROM reviews"
                          " WHERE plant_inspection_id = %s ORDER BY reviewed_at DESC, id DESC LIMIT 1", (int(inspection_id),))
        return ReviewRow(*rows[0]) if rows else None

    def review_boxes(self, inspection_id: int | None = None) -> list[ReviewBoxRow]:
        if inspection_id is None:
            return [ReviewBoxRow(*r) for r in self._rows(_REVIEW_BOX_SELECT + " ORDER BY id")]
        return [ReviewBoxRow(*r) for r in self._rows(_REVIEW_BOX_SELECT + " WHERE plant_inspection_id = %s ORDER BY arrival",
                                                     (int(inspection_id),))]

    def audit_records(self, *, action: str | None = None, inspection_id: int | None = None,
                      newest_first: bool = False) -> list[AuditRecord]:
        clauses, params = [], []
        if action is not None:
            clauses.append("action = %s")
            params.append(action)
        if inspection_id is not None:
            clauses.append("plant_inspection_id = %s")
            params.append(int(inspection_id))
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        # Across origins, time orders the records (each origin's ids order its own).
        order = " ORDER BY at DESC, id DESC" if newest_first else " ORDER BY at, id"
        return [AuditRecord(*r) for r in self._rows(_PLANT_AUDIT + where + order, params)]

    def audit_has(self, action: str) -> bool:
        return bool(self._rows("SELECT 1 FROM audit WHERE action = %s LIMIT 1", (action,)))

    # Users in plant mode are logins (module docstring): the one signed in is the only user here.
    def user(self, name: str) -> UserRow | None:
        if name.strip().casefold() != self.login.casefold():
            return None
        return UserRow(0, self.login, self.role, True, "", "")

    def any_user(self, active_only: bool = False) -> bool:
        return True  # never "open": whoever may connect is a login the database knows

    def active_admins(self) -> int:
        return int(self.role == "admin")

    def recipe_versions(self, name: str | None = None) -> list[dict[str, Any]]:
        where, params = ("", []) if name is None else (" WHERE lower(name) = lower(%s)", [name])
        with self._reading() as conn:
            return conn.cursor(row_factory=dict_row).execute(
                "SELECT id, station, name, version, external_id, definition, deleted, iso_utc(created_at) AS created_at,"
                f" created_by, plant_audit_id AS audit_id FROM recipes{where} ORDER BY station, name, version", params).fetchall()

    def current_recipes(self) -> list[dict[str, Any]]:
        """The newest version of each station's recipes that is not deleted."""
        return [r for r in self._latest_recipes() if not r["deleted"]]

    def _latest_recipes(self) -> list[dict[str, Any]]:
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for r in self.recipe_versions():
            latest[(r["station"], r["name"].casefold())] = r
        return list(latest.values())


class PlantTransaction(_Reads):
    """One write transaction on the plant database (plant mode: QA's reviews and the plant's own audit chain)."""

    def __init__(self, conn: psycopg.Connection, log: PlantLog):
        self._conn = conn
        self.login, self.role = log.login, log.role

    @contextmanager
    def _reading(self) -> Iterator[psycopg.Connection]:
        yield self._conn

    def _next_local(self, table: str) -> int:
        """The next id of the plant's own rows in `table`, under the plant chain's lock (held to the commit)."""
        self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PLANT_CHAIN_LOCK,))
        query = sql.SQL("SELECT COALESCE(MAX(local_id), 0) + 1 FROM {} WHERE station = %s").format(sql.Identifier(table))
        return int(self._conn.execute(query, (PLANT,)).fetchone()[0])

    def append_audit(self, user: str, action: str, *, inspection_id: int | None = None, old: Any = None, new: Any = None,
                     reason: str = "", at: datetime | None = None) -> int:
        """Append to the plant's own chain (origin "plant", hashed as a station hashes its records); returns its id."""
        self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PLANT_CHAIN_LOCK,))
        last = self._conn.execute("SELECT local_id, hash FROM audit WHERE station = %s ORDER BY local_id DESC LIMIT 1",
                                  (PLANT,)).fetchone()
        row = {
            "id": int(last[0]) + 1 if last else 1,
            "at": iso_utc(at or datetime.now(timezone.utc)),
            "user": str(user),
            "action": str(action),
            "inspection_id": None if inspection_id is None else int(inspection_id),
            "old_value": None if old is None else json.dumps(old, sort_keys=True, ensure_ascii=False),
            "new_value": None if new is None else json.dumps(new, sort_keys=True, ensure_ascii=False),
            "reason": str(reason),
            "prev_hash": last[1] if last else GENESIS,
        }
        row["hash"] = record_hash(row)
        _insert_many(self._conn, "audit", _AUDIT_COLUMNS, [{
            **row, "station": PLANT, "local_id": row["id"], "user_name": row["user"], "plant_inspection_id": row["inspection_id"]}])
        return row["id"]

    def add_review(self, inspection_id: int, verdict: str, reviewer: str, at: datetime, audit_id: int) -> None:
        local = self._next_local("reviews")
        self._conn.execute(
            "INSERT INTO reviews (id, station, local_id, inspection_id, plant_inspection_id, qa_verdict, reviewer, reviewed_at,"
            " audit_id, plant_audit_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::timestamptz, %s, %s)",
            (local, PLANT, local, int(inspection_id), int(inspection_id), verdict, reviewer, iso_utc(at), audit_id, audit_id))

    def add_review_box(self, inspection_id: int, kind: str, label: str, box: tuple[float, float, float, float],
                       audit_id: int, detection_id: int | None = None) -> None:
        local = self._next_local("review_boxes")
        x1, y1, x2, y2 = (float(v) for v in box)
        self._conn.execute(
            "INSERT INTO review_boxes (id, station, local_id, inspection_id, plant_inspection_id, detection_id, kind, label,"
            " x1, y1, x2, y2, audit_id, plant_audit_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (local, PLANT, local, int(inspection_id), int(inspection_id), detection_id, kind, label, x1, y1, x2, y2,
             audit_id, audit_id))

    # Users of the plant database are its logins (module docstring): none are added or changed through it.

    def add_user(self, name: str, role: str, secret_hash: str, created_at: datetime) -> None:
        _users_are_logins()

    def set_user_role(self, name: str, role: str) -> None:
        _users_are_logins()

    def set_user_active(self, name: str, active: bool) -> None:
        _users_are_logins()

    def set_user_secret(self, name: str, secret_hash: str) -> None:
        _users_are_logins()

    def count_failed_sign_in(self, name: str) -> int:
        _users_are_logins()

    def lock_user(self, name: str, until: datetime) -> None:
        _users_are_logins()

    def save_recipe_version(self, *, name: str, external_id: str, definition_json: str, deleted: bool, user: str,
                            audit_action: str, old: Any, new: Any, reason: str) -> int:
        raise StoreError("recipes are made at the stations; the plant database keeps the versions they replicate")


def _users_are_logins() -> NoReturn:
    raise StoreError("users of the plant database are PostgreSQL logins in the roles plant_qa and plant_report"
                     " (resources/sql/roles.sql): a database administrator adds them")


class PlantLog(_Reads):
    """The plant database as an InspectionLog of all stations (app.store.base), in plant-wide ids; thread-safe.

    `url`: postgresql://USER@HOST[:PORT]/DB[?sslmode=...]; `password`: from `password_from` (or None: libpq's
    own ~/.pgpass / PGPASSWORD). `picture_store`: the folder the stations' pictures are copied to (None: no
    pictures here). `migrate`: bring an older schema up to date when the login may (its owner).
    """

    def __init__(self, url: str, *, password: str | None = None, picture_store: str | Path | None = None,
                 migrate: bool = True, pool_size: int = 4, connect_timeout: float = 10.0):
        from psycopg_pool import ConnectionPool

        self.url = shown_url(url)
        self._info = conninfo(url, password, connect_timeout=max(1, int(connect_timeout)),
                              application_name="inspection plant")
        self.picture_store = Path(picture_store) if picture_store else None
        with connect(self._info, what=f"the plant database {self.url}") as conn:
            try:
                version = schema_version(conn)
                if version < SCHEMA_VERSION and migrate:
                    try:
                        version = globals()["migrate"](conn)
                    except StoreError as exc:
                        raise StoreError(f"the plant database {self.url} has schema {version}, this program needs"
                                         f" {SCHEMA_VERSION}: open it once with the login that owns it ({exc})") from exc
                if version > SCHEMA_VERSION:
                    raise StoreError(f"the plant database {self.url} has schema {version}, newer than this program's"
                                     f" {SCHEMA_VERSION}: update this program")
                if version != SCHEMA_VERSION:
                    raise StoreError(f"the plant database {self.url} has schema {version}, this program needs"
                                     f" {SCHEMA_VERSION}: open it once with the login that owns it to migrate it")
                self.login, self.role = _whoami(conn)
            except psycopg.Error as exc:
                raise StoreError(f"cannot read the plant database {self.url}: {_message(exc)}") from exc
        self.schema_version = version
        self.read_only = self.role not in ("qa", "admin")
        self._pool = ConnectionPool(self._info, min_size=1, max_size=max(1, int(pool_size)), kwargs={"autocommit": True},
                                    check=ConnectionPool.check_connection, open=True, timeout=float(connect_timeout),
                                    name="plant")
        self._stations_lock = threading.Lock()

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> PlantLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _reading(self) -> Iterator[psycopg.Connection]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise StoreError(f"cannot reach the plant database {self.url}: {_message(exc)}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"plant database {self.url}: {_message(exc)}") from exc
        except TimeoutError as exc:  # the pool got no connection in time: the server is down or unreachable
            raise StoreError(f"cannot reach the plant database {self.url}: {exc}") from exc

    @contextmanager
    def write(self) -> Iterator[PlantTransaction]:
        """One transaction: all of it is committed, or none. StoreError when the login may not write (report role)."""
        if self.read_only:
            raise StoreError(f"{self.login} ({self.role}) may only read the plant database")
        with self._reading() as conn, conn.transaction():
            yield PlantTransaction(conn, self)

    def whoami(self):
        """The signed-in user: this login with the role its database role gives it (app.users.User)."""
        from app.users import User

        return User(self.login, self.role)

    # -- what a plant log does not do ------------------------------------------------------------

    def record(self, rec: InspectionRecord, frame: Any = None, annotated: Any = None) -> StoredInspection:
        raise StoreError("the plant database takes inspections from the stations' replicators, not directly")

    # Result outputs run on the stations, from their own logs.

    def logged_after(self, after_id: int, limit: int = 100) -> list[dict[str, Any]]:
        _no_outputs()

    def output_cursor(self, sink: str) -> int | None:
        _no_outputs()

    def start_output(self, sink: str) -> int:
        _no_outputs()

    def mark_delivered(self, sink: str, delivered_id: int) -> None:
        _no_outputs()

    def output_backlog(self, sink: str) -> tuple[int, str | None]:
        _no_outputs()

    # Each origin has its own chains, in its own ids: OriginLog walks them.

    def audit_chain(self) -> Iterator[dict[str, Any]]:
        _one_chain_per_origin()

    def inspection_chain(self) -> Iterator[dict[str, Any]]:
        _one_chain_per_origin()

    # -- reading ---------------------------------------------------------------------------------

    def count(self) -> int:
        return int(self._rows("SELECT COUNT(*) FROM inspections")[0][0])

    def stations(self) -> list[str]:
        """The stations that replicate here, by name (the plant's own origin left out)."""
        return [r[0] for r in self._rows("SELECT name FROM stations WHERE kind = 'station' ORDER BY name")]

    def station_numbers(self) -> dict[int, str]:
        return {int(r[0]): r[1] for r in self._rows("SELECT no, name FROM stations")}

    def origin(self, name: str) -> OriginLog:
        """One origin's rows in its own ids (what app.audit.verify checks); StoreError for an unknown one."""
        rows = self._rows("SELECT no FROM stations WHERE name = %s", (name,))
        if not rows:
            raise StoreError(f"no station named {name!r} in the plant database {self.url}")
        return OriginLog(self, name, int(rows[0][0]))

    def resolve(self, relative: str | None) -> Path | None:
        """The plant picture store's copy of a station's picture (None: no store here, or no picture)."""
        if not relative or self.picture_store is None:
            return None
        try:
            return self.picture_store / picture_store_path(relative)
        except ValueError:
            return None

    def gallery_page(self, flt: GalleryFilter, sort: str = "newest", page: int = 0, page_size: int = 48) -> list[GalleryItem]:
        if sort not in _SORT_SQL:
            raise ValueError(f"sort must be one of {', '.join(GALLERY_SORTS)}")
        where, params = _gallery_where(flt)
        rows = self._rows(f"SELECT {_GALLERY_COLUMNS} FROM inspections i{where} ORDER BY {_SORT_SQL[sort]} LIMIT %s OFFSET %s",
                          [*params, int(page_size), int(page) * int(page_size)])
        return [GalleryItem(*r) for r in rows]

    def gallery_count(self, flt: GalleryFilter) -> int:
        where, params = _gallery_where(flt)
        return int(self._rows(f"SELECT COUNT(*) FROM inspections i{where}", params)[0][0])

    def gallery_ids(self, flt: GalleryFilter) -> list[int]:
        where, params = _gallery_where(flt)
        return [r[0] for r in self._rows(f"SELECT i.id FROM inspections i{where} ORDER BY i.id", params)]

    def operators(self) -> list[str]:
        return self._distinct("inspections", "operator", "operator <> ''")

    def labels(self) -> list[str]:
        return self._distinct("detections", "label", "true")

    def _distinct(self, table: str, column: str, where: str, params: dict[str, Any] | None = None) -> list[str]:
        """Distinct values of an indexed column by skip scan: one index probe per value, not a pass over millions of rows."""
        return [r[0] for r in self._rows(
            f"WITH RECURSIVE v (x) AS (SELECT min({column}) FROM {table} WHERE {where}"
            f" UNION ALL SELECT (SELECT min({column}) FROM {table} WHERE {where} AND {column} > v.x) FROM v WHERE v.x IS NOT NULL)"
            " SELECT x FROM v WHERE x IS NOT NULL", params or {})]

    def reviews(self) -> list[ReviewRow]:
        return [ReviewRow(*r) for r in self._rows(
            "SELECT plant_inspection_id, qa_verdict, reviewer, iso_utc(reviewed_at), plant_audit_id, id FROM reviews ORDER BY id")]

    def current_reviews(self) -> list[ReviewRow]:
        return [ReviewRow(*r) for r in self._rows(
            "SELECT plant_inspection_id, qa_verdict, reviewer, iso_utc(reviewed_at), plant_audit_id FROM current_reviews")]

    def users(self) -> list[UserRow]:
        me = self.user(self.login)
        return [me] if me else []

    def missing_guards(self) -> list[str]:
        """The append-only triggers dropped or disabled (names), sorted."""
        present = {r[0] for r in self._rows(
            "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relname = ANY(%s)"
            " AND t.tgparentid = 0 AND t.tgenabled <> 'D'", (list(GUARDED),))}  # a disabled guard is no guard
        wanted = {f"{t}_append_only" for t in GUARDED} | {f"{t}_no_truncate" for t in GUARDED}
        return sorted(wanted - present)

    # -- reports ------------------------------------------------------------------------------------

    def report_inspections(self, lo: str, hi: str, station: str | None = None) -> list[ReportInspection]:
        where, params = _report_range(lo, hi, station)
        return [ReportInspection._make(r) for r in self._rows(
            f"SELECT i.id, iso_utc(i.created_at), i.station, i.verdict FROM inspections i WHERE {where}"
            " ORDER BY i.created_at, i.id", params)]

    def report_list(self, lo: str, hi: str, station: str | None = None) -> list[ReportListRow]:
        where, params = _report_range(lo, hi, station)
        regions = ("(SELECT string_agg(g.name || '=' || g.verdict, '; ' ORDER BY g.local_id) FROM inspection_regions g"
                   " WHERE g.inspection_id = i.id AND g.created_at = i.created_at)")
        return [ReportListRow._make(r) for r in self._rows(
            "SELECT i.id, iso_utc(i.created_at), i.station, i.verdict, i.operator, i.part_id, i.source, i.model_id,"
            " i.model_version, i.threshold, i.n_detections, i.image_path, i.note, i.recipe, i.recipe_version, i.trigger,"
            f" i.job_id, {regions} FROM inspections i WHERE {where} ORDER BY i.created_at, i.id", params)]

    def _detections_in(self, lo: str, hi: str, station: str | None) -> tuple[str, list[Any]]:
        """Detections of the inspections in [lo, hi) (of one station): they carry their inspection's time."""
        where, params = "d.created_at >= %s::timestamptz AND d.created_at < %s::timestamptz", [lo, hi]
        if station is not None:
            where += " AND d.inspection_id IN (SELECT i.id FROM inspections i WHERE " + _RANGE + " AND i.station = %s)"
            params += [lo, hi, station]
        return where, params

    def report_class_stats(self, lo: str, hi: str, station: str | None = None) -> ClassStats:
        where, params = self._detections_in(lo, hi, station)
        out: ClassStats = {}
        for inspection_id, label, failing, best in self._rows(
                "SELECT d.inspection_id, d.label, SUM(d.fails), MAX(CASE WHEN d.shown = 1 THEN d.score END)"
                f" FROM detections d WHERE {where} GROUP BY d.inspection_id, d.label", params):
            out.setdefault(inspection_id, {})[label] = (int(failing), best)
        return out

    def report_scores(self, lo: str, hi: str, station: str | None = None) -> list[ShownScore]:
        where, params = self._detections_in(lo, hi, station)
        return [ShownScore._make(r) for r in self._rows(f"SELECT d.label, d.score FROM detections d WHERE {where}"
                                                        " AND d.shown = 1", params)]

    def report_reviews(self, lo: str, hi: str, station: str | None = None) -> list[QaReview]:
        where, params = _report_range(lo, hi, station)
        return [QaReview._make(r) for r in self._rows(
            "SELECT r.plant_inspection_id, r.qa_verdict, r.reviewer, iso_utc(r.reviewed_at), a.reason FROM current_reviews r"
            " JOIN inspections i ON i.id = r.plant_inspection_id LEFT JOIN audit a ON a.id = r.plant_audit_id"
            f" WHERE {where}", params)]

    def report_groups(self, lo: str, hi: str, zone: str, shifts: tuple[tuple[str, int], ...],
                      station: str | None = None) -> tuple[list[ReportGroup], list[ReportDefects], set[str]]:
        """Report days counted in the database (app.store.base.GroupedReports): local days with AT TIME ZONE.

        Rows are first counted per station and UTC time bucket (`bucket_minutes`: no report day or shift starts
        inside a bucket), from an index alone, and only the buckets are turned into local days and shifts. The
        failing detections are few: they join their inspections cheaply. The classes come by skip scan.
        """
        offset = re.fullmatch(r"[+-]\d\d:\d\d", zone) is not None
        zone_sql = "%(zone)s::interval" if offset else "%(zone)s"

        def local(t: str) -> str:
            return f"({t} AT TIME ZONE {zone_sql})"

        def day(t: str) -> str:
            return f"({local(t)} - %(day_start)s::interval)::date"

        def shift(t: str) -> str:  # the last shift that started at or before the local time; before the first: the day before's last
            if not shifts:
                return "''"
            whens = " ".join(f"WHEN {local(t)}::time >= %(t{i})s::time THEN %(s{i})s" for i in reversed(range(len(shifts))))
            return f"CASE {whens} ELSE %(s{len(shifts) - 1})s END"

        params: dict[str, Any] = {
            "lo": lo, "hi": hi, "zone": zone, "day_start": f"{shifts[0][1] if shifts else 0} minutes", "station": station,
            "bucket": f"{bucket_minutes(zone, shifts, lo, hi)} minutes",
            **{f"s{i}": name for i, (name, _) in enumerate(shifts)},
            **{f"t{i}": f"{m // 60:02d}:{m % 60:02d}" for i, (_, m) in enumerate(shifts)}}
        in_range = "i.created_at >= %(lo)s::timestamptz AND i.created_at < %(hi)s::timestamptz" + (
            " AND i.station = %(station)s" if station is not None else "")
        bucket = "date_bin(%(bucket)s::interval, i.created_at, '2000-01-01T00:00:00Z')"
        groups = self._rows(
            f"WITH b AS (SELECT i.station, {bucket} AS t, COUNT(*) AS n, COUNT(*) FILTER (WHERE i.verdict = 'PASS') AS passed,"
            f"   COUNT(*) FILTER (WHERE i.verdict = 'FAIL') AS failed FROM inspections i WHERE {in_range} GROUP BY 1, 2),"
            f" q AS (SELECT i.station, {bucket} AS t, COUNT(*) AS reviewed, COUNT(*) FILTER (WHERE r.qa_verdict = 'PASS') AS"
            "   qa_passed, COUNT(*) FILTER (WHERE r.qa_verdict = 'FAIL') AS qa_failed, COUNT(*) FILTER (WHERE r.qa_verdict <>"
            "   i.verdict) AS overridden FROM current_reviews r JOIN inspections i ON i.id = r.plant_inspection_id"
            f"   WHERE {in_range} GROUP BY 1, 2)"
            f" SELECT {day('b.t')}, b.station, {shift('b.t')}, SUM(b.n)::bigint, SUM(b.passed)::bigint, SUM(b.failed)::bigint,"
            " COALESCE(SUM(q.reviewed), 0)::bigint, COALESCE(SUM(q.qa_passed), 0)::bigint, COALESCE(SUM(q.qa_failed), 0)::bigint,"
            " COALESCE(SUM(q.overridden), 0)::bigint FROM b LEFT JOIN q ON q.station = b.station AND q.t = b.t GROUP BY 1, 2, 3",
            params)
        # Detections carry their inspection's time: the same range picks the same month partitions on both sides.
        d_range = "d.created_at >= %(lo)s::timestamptz AND d.created_at < %(hi)s::timestamptz"
        defects = self._rows(
            f"SELECT {day('b.t')}, b.station, {shift('b.t')}, b.label, SUM(b.n)::bigint FROM (SELECT i.station, {bucket} AS t,"
            "   d.label, SUM(d.fails) AS n FROM detections d JOIN inspections i ON i.id = d.inspection_id"
            f"   AND i.created_at = d.created_at WHERE d.fails > 0 AND {d_range} AND {in_range} GROUP BY 1, 2, 3) b"
            " GROUP BY 1, 2, 3, 4", params)
        if station is None:
            labels = self._distinct("detections", "label", d_range.replace("d.", ""), params)
        else:
            labels = [r[0] for r in self._rows("SELECT DISTINCT d.label FROM detections d JOIN inspections i"
                                               f" ON i.id = d.inspection_id AND i.created_at = d.created_at WHERE {d_range}"
                                               f" AND {in_range}", params)]
        return ([ReportGroup._make(r) for r in groups], [ReportDefects(r[0], r[1], r[2], r[3], int(r[4])) for r in defects],
                set(labels))

    def report_score_counts(self, lo: str, hi: str, station: str | None = None) -> list[tuple[str, float, int]]:
        """The shown detections' scores to SCORE_STEP (app.store.base.GroupedReports): (class, score, how many)."""
        where, params = self._detections_in(lo, hi, station)
        bins = round(1 / SCORE_STEP)
        return [(label, (k + 0.5) * SCORE_STEP, int(n)) for label, k, n in self._rows(
            f"SELECT d.label, LEAST(GREATEST(floor(d.score * {bins}), 0), {bins - 1})::integer, COUNT(*) FROM detections d"
            f" WHERE {where} AND d.shown = 1 GROUP BY 1, 2 ORDER BY 1, 2", params)]


def bucket_minutes(zone: str, shifts: tuple[tuple[str, int], ...], lo: str, hi: str) -> int:
    """The longest UTC time bucket (a divisor of 60 minutes) that no report day, shift or UTC offset change starts
    inside, for this zone (IANA name or "+HH:MM") and these shift starts over [lo, hi)."""
    from math import gcd
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    minutes = 60
    for _, start in shifts:
        minutes = gcd(minutes, start)
    if re.fullmatch(r"[+-]\d\d:\d\d", zone):
        return gcd(minutes, int(zone[1:3]) * 60 + int(zone[4:]))
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        return 1  # a zone only the server knows: minute buckets are right everywhere
    t, end = (datetime.fromisoformat(x.replace("Z", "+00:00")) for x in (lo, hi))
    step = timedelta(hours=6)
    before = t.astimezone(tz).utcoffset()
    minutes = gcd(minutes, int(before.total_seconds() // 60))
    while t < end:  # each change of the offset: the new offset, and the UTC minute it changed at
        nxt = min(t + step, end)
        after = nxt.astimezone(tz).utcoffset()
        if after != before:
            a, b = t, nxt
            while b - a > timedelta(minutes=1):
                mid = a + (b - a) / 2
                a, b = (mid, b) if mid.astimezone(tz).utcoffset() == before else (a, mid)
            minutes = gcd(gcd(minutes, int(after.total_seconds() // 60)), b.minute)
            before = after
        t = nxt
    return max(1, minutes)


def _no_outputs() -> NoReturn:
    raise StoreError("result outputs run on the stations, from their own logs, not on the plant database")


def _one_chain_per_origin() -> NoReturn:
    raise StoreError("the plant database holds one pair of hash chains per station: verify each with verify_plant(log)"
                     " or app.audit.verify(log.origin(name))")


def _whoami(conn: psycopg.Connection) -> tuple[str, str]:
    """This login and its role in the station's terms: admin (owns the schema), qa, supervisor (report) or station."""
    login, owner = conn.execute("SELECT session_user, pg_has_role(session_user, (SELECT tableowner FROM pg_tables"
                                " WHERE tablename = 'inspections' AND schemaname = current_schema()), 'MEMBER')").fetchone()
    if owner:
        return login, "admin"
    for group, role in (("plant_qa", "qa"), ("plant_report", "supervisor"), ("plant_station", "station")):
        if conn.execute("SELECT pg_has_role(session_user, %s, 'MEMBER')", (group,)).fetchone()[0]:
            return login, role
    raise StoreError(f"the login {login!r} is in none of the roles plant_qa, plant_report, plant_station of the plant"
                     " database (resources/sql/roles.sql)")


class OriginLog:
    """One origin's rows of the plant database in its own ids, as it hashed them: what `app.audit.verify` reads.

    An origin is a station (its replicated log) or "plant" (QA reviews made in plant mode, whose records name
    inspections by their plant-wide ids).
    """

    read_only = True

    def __init__(self, log: PlantLog, name: str, no: int):
        self._log, self.name, self.no = log, name, int(no)
        self.schema_version = log.schema_version
        self._lo, self._hi = self.no * ORIGIN_SPAN, (self.no + 1) * ORIGIN_SPAN - 1

    def _rows(self, query: str, params: Iterable[Any] = ()) -> list[tuple]:
        return self._log._rows(query, params)

    def _stream(self, query: str, params: Iterable[Any]) -> Iterator[tuple]:
        """Rows of a server-side cursor, a few thousand at a time (an origin's chain can be millions of rows)."""
        with self._log._reading() as conn, conn.transaction():
            with conn.cursor(name=f"origin_{id(self)}_{threading.get_ident()}") as cur:
                cur.itersize = 5000
                yield from cur.execute(query, list(params))

    def audit_chain(self) -> Iterator[dict[str, Any]]:
        names = (*FIELDS, "hash")
        for r in self._stream(_AUDIT_SELECT.format(id="local_id", inspection="inspection_id")
                              + " WHERE station = %s ORDER BY local_id", (self.name,)):
            yield dict(zip(names, r))

    def inspection_chain(self) -> Iterator[dict[str, Any]]:
        names = (*INSPECTION_FIELDS_V2, "hash")
        columns = ", ".join("local_id" if n == "id" else "iso_utc(created_at)" if n == "created_at" else n for n in names)
        span = (self._lo, self._hi)
        with self._log._reading() as conn, conn.transaction():
            def cursor(query: str, tag: str):
                cur = conn.cursor(name=f"chain_{tag}_{id(self)}")
                cur.itersize = 5000
                return iter(cur.execute(query, span))

            rows = cursor(f"SELECT {columns} FROM inspections WHERE id BETWEEN %s AND %s ORDER BY id", "i")
            dets = cursor(f"SELECT inspection_id, {', '.join('local_id' if c == 'id' else c for c in DETECTION_FIELDS_V2)}"
                          " FROM detections WHERE inspection_id BETWEEN %s AND %s ORDER BY inspection_id, local_id", "d")
            regions = cursor(f"SELECT inspection_id, {', '.join('local_id' if c == 'id' else c for c in REGION_FIELDS)}"
                             " FROM inspection_regions WHERE inspection_id BETWEEN %s AND %s ORDER BY inspection_id, local_id",
                             "g")
            pending, pending_region = next(dets, None), next(regions, None)
            for r in rows:
                row = dict(zip(names, r))
                pid = self._lo + row["id"]
                row["detections"], row["regions"] = [], []
                while pending is not None and pending[0] <= pid:
                    if pending[0] == pid:
                        row["detections"].append(dict(zip(DETECTION_FIELDS_V2, pending[1:])))
                    pending = next(dets, None)
                while pending_region is not None and pending_region[0] <= pid:
                    if pending_region[0] == pid:
                        row["regions"].append(dict(zip(REGION_FIELDS, pending_region[1:])))
                    pending_region = next(regions, None)
                yield row

    def reviews(self) -> list[ReviewRow]:
        return [ReviewRow(*r) for r in self._rows(
            "SELECT inspection_id, qa_verdict, reviewer, iso_utc(reviewed_at), audit_id, local_id FROM reviews"
            " WHERE station = %s ORDER BY local_id", (self.name,))]

    def current_reviews(self) -> list[ReviewRow]:
        return [ReviewRow(*r) for r in self._rows(
            "SELECT DISTINCT ON (inspection_id) inspection_id, qa_verdict, reviewer, iso_utc(reviewed_at), audit_id"
            " FROM reviews WHERE station = %s ORDER BY inspection_id, local_id DESC", (self.name,))]

    def review_boxes(self, inspection_id: int | None = None) -> list[ReviewBoxRow]:
        where, params = " WHERE station = %s", [self.name]
        if inspection_id is not None:
            where, params = where + " AND inspection_id = %s", [*params, int(inspection_id)]
        return [ReviewBoxRow(*r) for r in self._rows(
            f"SELECT local_id, inspection_id, detection_id, kind, label, x1, y1, x2, y2, audit_id FROM review_boxes{where}"
            " ORDER BY local_id", params)]

    def users(self) -> list[UserRow]:
        """The station's users as last replicated (PIN hashes stay on the station); none for the plant's own origin."""
        return [UserRow(r[0], r[1], r[2], r[3], r[4], "") for r in self._rows(
            "SELECT DISTINCT ON (local_id) local_id, name, role, active, iso_utc(created_at) FROM user_versions"
            " WHERE station = %s ORDER BY local_id, id DESC", (self.name,))]

    def missing_guards(self) -> list[str]:
        return self._log.missing_guards()

    def count(self) -> int:
        return int(self._rows("SELECT COUNT(*) FROM inspections WHERE id BETWEEN %s AND %s", (self._lo, self._hi))[0][0])


def open_plant(url: str | None, settings: Any, *, migrate: bool = True, connect_timeout: float = 10.0) -> PlantLog:
    """The plant database of `url` (None or "": the settings' plant_db_url), with the settings' password file or
    variable and picture store (plant mode, `audit verify --plant`). `migrate`: as PlantLog's (False: never change
    the database, an older schema is refused). StoreError / ValueError say what is wrong."""
    url = url or settings.plant_db_url
    if not url:
        raise ValueError("no plant database: give --plant postgresql://LOGIN@HOST/DB, or set plant_db_url in the settings")
    password = password_from(file=settings.plant_db_password_file or None, env=settings.plant_db_password_env or None)
    return PlantLog(url, password=password, picture_store=settings.plant_picture_store or None, migrate=migrate,
                    connect_timeout=connect_timeout)


def verify_plant(log: PlantLog, expect_heads: Iterable[str] = (), pictures_root: Path | None = None) -> dict[str, Any]:
    """app.audit.verify on each origin of the plant database: {origin name: VerifyReport}, the plant's own first.

    `expect_heads`: hashes noted from an earlier check, each of some origin's chain: one found in any origin is
    found; one in none is a problem of the plant's own report (which origin lost it cannot be told).
    """
    from app.audit import verify

    heads = list(expect_heads)
    names = [PLANT, *log.stations()]
    reports = {name: verify(log.origin(name), heads, pictures_root, unfound_heads_are_problems=False) for name in names}
    found = {h for r in reports.values() for h in r.found_heads}
    for h in dict.fromkeys(h for r in reports.values() for h in r.unfound_heads):
        if h not in found:
            reports[PLANT].problems.append(f"the expected head {h} is in no chain of the plant database (neither the"
                                           " plant's own nor any station's): the rows up to it were rewritten, or the"
                                           " newest rows were removed")
    return reports
