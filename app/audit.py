"""Tamper evidence for the inspection log: hash chains, and the check that walks them.

Two append-only tables carry a hash chain: `audit` (every human action: QA
reviews, user and setting changes, sign-in failures) and `inspections` (the
station's word: each row with its detections and the SHA-256 of its saved
pictures). Each row stores `hash`, the SHA-256 of its canonical content (a
fixed list of fields as canonical JSON, `prev_hash` included), and
`prev_hash`, the hash of the row before it (64 zeros for the first).
Changing a row breaks its own hash; re-hashing it breaks the next row's link;
removing or inserting one breaks a link. QA's reviews and box corrections,
and the users' roles, are checked against the audit records that created
them.

What no chain kept in the same file can show: someone with write access
rewriting a chain consistently from some row on, or removing the newest rows.
Against that, `python -m app audit verify` prints both heads (the last row's
hash); note them somewhere else and check them later with --expect-head.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import chain, pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.store.base import InspectionLog

GENESIS = "0" * 64
# The hashed content, in this order; `hash` itself is the only column left out.
FIELDS = ("id", "at", "user", "action", "inspection_id", "old_value", "new_value", "reason", "prev_hash")
INSPECTION_FIELDS = ("id", "uid", "created_at", "station", "operator", "part_id", "source", "frame_w", "frame_h",
                     "roi_x", "roi_y", "roi_w", "roi_h", "model_id", "model_version", "threshold", "rule_json", "verdict",
                     "n_detections", "max_score", "inference_ms", "image_path", "annotated_path", "note",
                     "image_sha256", "annotated_sha256", "prev_hash")
DETECTION_FIELDS = ("id", "label", "score", "x1", "y1", "x2", "y2", "shown", "fails")
# hash_version 2 (schema v4 on): also what triggered it, the recipe, and each region's own verdict.
INSPECTION_FIELDS_V2 = (*INSPECTION_FIELDS[:-1], "trigger", "job_id", "recipe", "recipe_version", "hash_version",
                        "prev_hash")
DETECTION_FIELDS_V2 = (*DETECTION_FIELDS, "region")
REGION_FIELDS = ("id", "name", "x", "y", "w", "h", "threshold", "rule_json", "verdict")
HASH_VERSION = 2
# Actions the trail records about the log itself, worth a line in every verify report.
NOTICE_ACTIONS = ("db.guards_restored", "store.orphans_removed")
REVIEW_ACTIONS = ("review.confirm", "review.override", "review.false_positive", "review.missed")


def _digest(content: Mapping[str, Any]) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def record_hash(row: Mapping[str, Any]) -> str:
    """SHA-256 of one audit record's canonical content (prev_hash included)."""
    return _digest({k: row[k] for k in FIELDS})


def inspection_hash(row: Mapping[str, Any]) -> str:
    """SHA-256 of one inspection's canonical content: its fields and its detections (row["detections"], in id order);
    from hash_version 2 on also its regions (row["regions"], in id order)."""
    if row.get("hash_version", 1) >= 2:
        content = {k: row[k] for k in INSPECTION_FIELDS_V2}
        content["detections"] = [[d[k] for k in DETECTION_FIELDS_V2] for d in row["detections"]]
        content["regions"] = [[r[k] for k in REGION_FIELDS] for r in row["regions"]]
        return _digest(content)
    content = {k: row[k] for k in INSPECTION_FIELDS}
    content["detections"] = [[d[k] for k in DETECTION_FIELDS] for d in row["detections"]]
    return _digest(content)


# -- verifying -------------------------------------------------------------------------


@dataclass
class ChainReport:
    noun: str  # "audit record", "inspection"
    count: int = 0
    head_id: int | None = None
    head_hash: str | None = None
    problem: str | None = None  # the first break found, naming the row
    record_id: int | None = None  # the row it names

    def summary(self) -> str:
        head = f"head #{self.head_id} {self.head_hash}" if self.head_id is not None else "empty"
        return f"{self.count} {self.noun}s, {head}"


@dataclass
class VerifyReport:
    audit: ChainReport
    inspections: ChainReport
    problems: list[str] = field(default_factory=list)  # cross-checks, pictures, anchors
    missing_guards: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    anchors: list[str] = field(default_factory=list)  # where each expected head was found
    found_heads: list[str] = field(default_factory=list)  # the expected heads found in a chain (as given, lower case)
    unfound_heads: list[str] = field(default_factory=list)  # ... and those found in neither

    @property
    def ok(self) -> bool:
        return not (self.audit.problem or self.inspections.problem or self.problems or self.missing_guards)

    def summary(self) -> str:
        return f"audit trail {self.audit.summary()}; inspection log {self.inspections.summary()}"


def _renumbered_from(row: dict, hash_of: Callable[[dict], str]) -> int | None:
    """The id a row had when it was hashed, if only its id changed (rows shifted around it)."""
    for shift in (1, -1, 2, -2, 3, -3):
        if hash_of({**row, "id": row["id"] - shift}) == row["hash"]:
            return row["id"] - shift
    return None


def _break(p: dict | None, r: dict, n: dict | None, hash_of: Callable[[dict], str], noun: str) -> tuple[str, int] | None:
    """What is wrong at row r, given the row p before it and n after it: (message, id of the row named)."""
    rid = r["id"]
    if r["hash"] is None:
        return f"{noun} #{rid} was inserted outside the station (it has no hash)", rid
    if hash_of(r) != r["hash"]:
        was = _renumbered_from(r, hash_of)
        if was is not None:
            how = "inserted" if was < rid else "removed"
            return f"{noun} #{rid} was renumbered (it was #{was}): a row was {how} before it", rid
        return f"{noun} #{rid} was changed after it was written (its content no longer matches its hash)", rid
    expected_prev = p["hash"] if p else GENESIS
    if r["prev_hash"] == expected_prev:
        return None
    if p is not None and rid > p["id"] + 1:
        gone = f"#{p['id'] + 1}" if rid == p["id"] + 2 else f"#{p['id'] + 1}-#{rid - 1}"
        return f"{noun} {gone} was removed (#{rid} is chained to a row that is no longer there)", p["id"] + 1
    if n is not None and n["prev_hash"] == expected_prev:
        return f"{noun} #{rid} was inserted (#{n['id']} is chained to the row before it)", rid
    if p is None:
        return f"{noun} #{rid} does not start the chain: rows before it were removed, or it was inserted", rid
    return (f"{noun} #{p['id']} was changed and re-hashed, or #{rid} was inserted"
            f" (#{rid} is chained to a row that is no longer there)", p["id"])


def _walk(rows: Iterable[dict], hash_of: Callable[[dict], str], noun: str, visit: Callable[[dict], None]) -> ChainReport:
    report = ChainReport(noun)
    p = None
    for r, n in pairwise(chain(rows, [None])):
        report.count += 1
        report.head_id, report.head_hash = r["id"], r["hash"]
        if report.problem is None:
            found = _break(p, r, n, hash_of, noun)
            if found is not None:
                report.problem, report.record_id = found
        visit(r)
        p = r
    return report


def _new(row: dict) -> dict:
    try:
        value = json.loads(row["new_value"] or "null")
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _check_reviews(log: InspectionLog, by_id: dict[int, dict], problems: list[str]) -> None:
    """QA's rows say what the audit records that created them say, and none is missing."""
    cited: set[int] = set()
    for r in log.reviews():
        rid, insp, verdict, reviewer, audit_id = r.id, r.inspection_id, r.qa_verdict, r.reviewer, r.audit_id
        a = by_id.get(audit_id)
        if a is None or a["action"] not in REVIEW_ACTIONS or a["inspection_id"] != insp or a["user"] != reviewer:
            problems.append(f"QA review row #{rid} (inspection #{insp}: {verdict} by {reviewer}) does not match audit"
                            f" record #{audit_id}: added or changed outside the station")
        elif _new(a).get("verdict", verdict) != verdict:
            problems.append(f"QA review row #{rid} says {verdict} for inspection #{insp}, its audit record #{audit_id}"
                            f" says {_new(a)['verdict']}: changed outside the station")
        elif audit_id in cited:
            problems.append(f"QA review row #{rid} repeats audit record #{audit_id}: added outside the station")
        cited.add(audit_id)
    # QA's current word is the latest verdict the audit trail records for the inspection.
    latest: dict[int, dict] = {}
    for a in by_id.values():
        if a["action"] in REVIEW_ACTIONS and "verdict" in _new(a):
            latest[a["inspection_id"]] = a
    current = {r.inspection_id: (r.qa_verdict, r.audit_id) for r in log.current_reviews()}
    for insp, a in sorted(latest.items()):
        if current.get(insp, (None, None))[1] != a["id"]:
            problems.append(f"inspection #{insp}: QA's current verdict is not the one of its latest review (audit record"
                            f" #{a['id']}, {_new(a)['verdict']}): a QA review row was removed or added outside the station")
    boxes = {b.audit_id: b for b in log.review_boxes()}
    for a in by_id.values():
        if a["action"] in ("review.false_positive", "review.missed") and a["id"] not in boxes:
            problems.append(f"the box correction of audit record #{a['id']} (inspection #{a['inspection_id']}) was removed")
    for b in boxes.values():
        audit_id, bid, insp, kind, det, label, box = b.audit_id, b.id, b.inspection_id, b.kind, b.detection_id, b.label, list(b.box)
        a = by_id.get(audit_id)
        want = {"false_positive": "review.false_positive", "missed": "review.missed"}.get(kind)
        same = a is not None and a["action"] == want and a["inspection_id"] == insp
        if same and kind == "missed":
            same = _new(a).get("label") == label and _new(a).get("box") == box
        if same and kind == "false_positive":
            try:
                same = json.loads(a["old_value"] or "{}").get("detection_id") == det
            except (TypeError, ValueError, AttributeError):
                same = False
        if not same:
            problems.append(f"QA box correction #{bid} (inspection #{insp}, {kind}) does not match audit record"
                            f" #{audit_id}: added or changed outside the station")


def _check_users(log: InspectionLog, by_id: dict[int, dict], problems: list[str]) -> None:
    """Each user's role and state are what the audit trail's user changes add up to."""
    expected: dict[str, list] = {}
    for a in by_id.values():
        new, name = _new(a), None
        if a["action"] == "user.add":
            name = str(new.get("name", "")).lower()
            expected[name] = [new.get("role"), 1]
        elif a["action"] in ("user.role", "user.enable", "user.disable"):
            name = str(new.get("name", "")).lower()
            if name in expected:
                if a["action"] == "user.role":
                    expected[name][0] = new.get("role")
                else:
                    expected[name][1] = int(a["action"] == "user.enable")
    for u in log.users():
        name, role, active = u.name, u.role, int(u.active)
        want = expected.get(name.lower())
        if want is None:
            problems.append(f"user {name} was added outside the station (no audit record adds them)")
        elif [role, active] != want:
            problems.append(f"user {name} is {role}, {'active' if active else 'disabled'} in the users table, but the audit"
                            f" trail says {want[0]}, {'active' if want[1] else 'disabled'}: changed outside the station")


def _check_picture(row: dict, root: Path, problems: list[str]) -> None:
    for column, digest in (("image_path", "image_sha256"), ("annotated_path", "annotated_sha256")):
        if not row[column] or not row[digest]:
            continue
        path = Path(row[column]) if Path(row[column]).is_absolute() else root / row[column]
        try:
            data = path.read_bytes()
        except OSError as exc:
            problems.append(f"picture of inspection #{row['id']} is missing: {path} ({exc.strerror or exc})")
            continue
        if hashlib.sha256(data).hexdigest() != row[digest]:
            problems.append(f"picture of inspection #{row['id']} was changed after it was saved: {path}")


def verify(log: InspectionLog, expect_heads: Iterable[str] = (), pictures_root: Path | None = None, *,
           unfound_heads_are_problems: bool = True) -> VerifyReport:
    """Walk both chains and cross-check QA's rows and the users (any log; opened read-only is enough).

    `expect_heads`: hashes noted from an earlier verify; each must still be in one of the chains (unless
    `unfound_heads_are_problems` is False: the plant database's heads are each in one of its origins').
    `pictures_root`: the data folder; when given, every saved picture is read and checked against its hash.
    """
    anchors = []
    for head in expect_heads:
        h = head.strip().lower()
        if len(h) < 12 or any(c not in "0123456789abcdef" for c in h):
            raise ValueError(f"--expect-head must be a hash noted from `audit verify` (at least 12 hex digits), got {head!r}")
        anchors.append(h)
    found: dict[str, str] = {}

    def anchor(noun: str, r: dict) -> None:
        for h in anchors:
            if h not in found and (r["hash"] or "").startswith(h):
                found[h] = f"{noun} #{r['id']}"

    by_id: dict[int, dict] = {}
    notices: list[str] = []

    def visit_audit(r: dict) -> None:
        if r["action"] in REVIEW_ACTIONS or r["action"].startswith("user."):  # kept for the cross-checks, nothing else
            by_id[r["id"]] = {k: r[k] for k in ("id", "action", "inspection_id", "user", "old_value", "new_value")}
        anchor("audit record", r)
        if r["action"] in NOTICE_ACTIONS:
            notices.append(f"audit record #{r['id']} ({r['at']}): {r['action']} {r['new_value']}")

    problems: list[str] = []

    def visit_inspection(r: dict) -> None:
        anchor("inspection", r)
        if pictures_root is not None:
            _check_picture(r, pictures_root, problems)

    report = VerifyReport(_walk(log.audit_chain(), record_hash, "audit record", visit_audit),
                          _walk(log.inspection_chain(), inspection_hash, "inspection", visit_inspection))
    report.missing_guards = log.missing_guards()
    report.notices = notices
    _check_reviews(log, by_id, problems)
    _check_users(log, by_id, problems)
    for h in anchors:
        if h in found:
            report.anchors.append(f"expected head {h} is {found[h]}")
            report.found_heads.append(h)
            continue
        report.unfound_heads.append(h)
        if unfound_heads_are_problems:
            problems.append(f"the expected head {h} is not in either chain: the rows up to it were rewritten,"
                            " or the newest rows were removed")
    report.problems = problems
    return report
