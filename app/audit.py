"""The audit trail's hash chain: append records, and prove later that none was changed, removed or inserted.

Each audit record stores `hash`, the SHA-256 of its canonical content (every
column but `hash`, as canonical JSON), and `prev_hash`, the hash of the record
before it (64 zeros for the first). Changing a record breaks its own hash;
re-hashing it breaks the next record's link; removing or inserting one breaks a
link or the id sequence. What no chain kept in the same file can show: someone
with write access rewriting every record from some point on consistently, or
removing the newest records. Against that, `python -m app audit verify` prints
the head (the last record's hash); note it somewhere else and check it later
with `--expect-head`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import chain, pairwise
from pathlib import Path
from typing import Any

from app.store import iso_utc

GENESIS = "0" * 64
# The hashed content, in this order; `hash` itself is the only column left out.
FIELDS = ("id", "at", "user", "action", "inspection_id", "old_value", "new_value", "reason", "prev_hash")
_COLUMNS = ", ".join(FIELDS) + ", hash"
# Actions the trail records about the log itself, worth a line in every verify report.
NOTICE_ACTIONS = ("db.guards_restored",)


def record_hash(row: Mapping[str, Any]) -> str:
    """SHA-256 of one record's canonical content (prev_hash included)."""
    content = {k: row[k] for k in FIELDS}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _json(value) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)


def audit(conn: sqlite3.Connection, user: str, action: str, *, inspection_id: int | None = None,
          old=None, new=None, reason: str = "", at: datetime | None = None) -> int:
    """Append one record to the chain, inside the caller's write transaction; returns its id."""
    if not conn.in_transaction:
        # The link to the last record must be read and written under one write lock.
        raise RuntimeError("audit records are appended inside a write transaction (store.transaction())")
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
    conn.execute(f"INSERT INTO audit ({_COLUMNS}) VALUES ({','.join('?' * (len(FIELDS) + 1))})",
                 [row[k] for k in (*FIELDS, "hash")])
    return row["id"]


def chain_existing(conn: sqlite3.Connection) -> int:
    """Hash records written before the chain existed (schema v3 migration), in id order."""
    prev, n = GENESIS, 0
    for r in conn.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY id").fetchall():
        row = dict(zip((*FIELDS, "hash"), r))
        row["prev_hash"] = prev
        prev = record_hash(row)
        conn.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?", (row["prev_hash"], prev, row["id"]))
        n += 1
    return n


@dataclass
class ChainReport:
    count: int = 0
    head_id: int | None = None
    head_hash: str | None = None
    problem: str | None = None  # the first break found, naming the record
    record_id: int | None = None  # the record it names
    anchor_id: int | None = None  # the record --expect-head matched
    missing_guards: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None and not self.missing_guards

    def summary(self) -> str:
        head = f"head #{self.head_id} {self.head_hash}" if self.head_id is not None else "no records yet"
        anchored = (f"; the expected head is record #{self.anchor_id}, {self.count - self.anchor_id} records added since"
                    if self.anchor_id is not None else "")
        return f"{self.count} records, {head}{anchored}"


def _renumbered_from(row: dict) -> int | None:
    """The id a record had when it was hashed, if only its id changed (records shifted around it)."""
    for shift in (1, -1, 2, -2, 3, -3):
        if record_hash({**row, "id": row["id"] - shift}) == row["hash"]:
            return row["id"] - shift
    return None


def _break(p: dict | None, r: dict, n: dict | None) -> tuple[str, int] | None:
    """What is wrong at record r, given the record p before it and n after it: (message, record named)."""
    rid = r["id"]
    expected_id = p["id"] + 1 if p else 1
    if rid > expected_id:
        gone = f"#{expected_id}" if rid == expected_id + 1 else f"#{expected_id}-#{rid - 1}"
        return f"record {gone} was removed (the ids jump to #{rid})", expected_id
    if r["hash"] is None:
        return f"record #{rid} was inserted outside the station (it has no hash)", rid
    if record_hash(r) != r["hash"]:
        was = _renumbered_from(r)
        if was is not None:
            how = "inserted" if was < rid else "removed"
            return f"record #{rid} was renumbered (it was #{was}): a record was {how} before it", rid
        return f"record #{rid} was changed after it was written (its content no longer matches its hash)", rid
    expected_prev = p["hash"] if p else GENESIS
    if r["prev_hash"] != expected_prev:
        if n is not None and n["prev_hash"] == expected_prev:
            return f"record #{rid} was inserted (record #{n['id']} is chained to the one before it)", rid
        if p is None:
            return f"record #{rid} does not start the chain: records before it were removed, or it was inserted", rid
        return (f"record #{p['id']} was changed and re-hashed, or #{rid} was inserted"
                f" (#{rid} is chained to a record that is no longer there)", p["id"])
    return None


def verify_chain(conn: sqlite3.Connection, expect_head: str | None = None) -> ChainReport:
    """Walk the whole chain (any connection, read-only is enough) and report the first break."""
    from app.store import guard_triggers

    report = ChainReport()
    present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    report.missing_guards = sorted(set(guard_triggers()) - present)
    anchor = (expect_head or "").strip().lower() or None
    if anchor is not None and (len(anchor) < 12 or any(c not in "0123456789abcdef" for c in anchor)):
        raise ValueError(f"--expect-head must be a hash noted from `audit verify` (at least 12 hex digits), got {expect_head!r}")
    rows = (dict(zip((*FIELDS, "hash"), r)) for r in conn.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY id"))
    p = None
    for r, n in pairwise(chain(rows, [None])):
        report.count += 1
        report.head_id, report.head_hash = r["id"], r["hash"]
        if report.problem is None:
            found = _break(p, r, n)
            if found is not None:
                report.problem, report.record_id = found
        if anchor is not None and report.anchor_id is None and (r["hash"] or "").startswith(anchor):
            report.anchor_id = r["id"]
        if r["action"] in NOTICE_ACTIONS:
            report.notices.append(f"record #{r['id']} ({r['at']}): {r['action']} {r['new_value']}")
        p = r
    if report.count == 0 and report.problem is None and anchor is not None:
        report.problem = "the audit trail is empty, but a head was expected: every record was removed"
    elif anchor is not None and report.anchor_id is None and report.problem is None:
        report.problem = (f"the expected head {anchor} is not in the chain: the records up to it were rewritten,"
                          " or the newest records were removed")
    return report


def open_read_only(db_path: str | Path) -> sqlite3.Connection:
    """The log opened read-only: checking it must never change the evidence."""
    path = Path(db_path)
    if not path.is_file():
        raise FileNotFoundError(f"no inspection database at {path}")
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=10.0)
    conn.execute("PRAGMA query_only=ON")
    return conn
