"""The audit trail's hash chain and the log's database-level guards, attacked with plain sqlite3 connections."""

from __future__ import annotations

import json
import sqlite3

import pytest
from conftest import run_app
from test_review import log

from app.audit import GENESIS, inspection_hash, record_hash, verify
from app.review import ReviewService
from app.store import MIGRATIONS, SCHEMA_VERSION, InspectionStore, guard_triggers
from app.users import User, UserDirectory
from app.verdict import FAIL, PASS
from detector import Detection

ADMIN_PIN = "864213"


@pytest.fixture
def db(tmp_path):
    """A log with 3 inspections and 6 audit records (user changes, QA reviews, a box correction)."""
    path = tmp_path / "data" / "inspections.sqlite"
    with InspectionStore(path) as store:
        first = log(store, 0, FAIL, [Detection("scratch", 0.8, (20, 20, 30, 90)), Detection("pit", 0.2, (60, 60, 70, 70))])
        log(store, 1, PASS, [])
        third = log(store, 2, FAIL, [Detection("pit", 0.45, (50, 40, 80, 70))])
        users = UserDirectory(store)
        root = users.add("root", "admin", ADMIN_PIN, by=User("anyone", "admin"))
        users.add("quinn", "qa", "135790", by=root)
        qa = ReviewService(store, User("quinn", "qa"))
        qa.set_verdict(first, PASS, "reflection")
        qa.set_verdict(first, FAIL, "second look")
        qa.mark_false_positive(third, store.inspection(third).detections[0].id, "dust")
        users.set_role("quinn", "supervisor", by=root)
    return path


def plain(path) -> sqlite3.Connection:
    """A connection that does not use our code (no pragmas, autocommit)."""
    return sqlite3.connect(path, isolation_level=None)


def verify_read_only(path):
    """`verify` over the log opened read-only, as `audit verify` opens it."""
    with InspectionStore(path, read_only=True) as log:
        return verify(log)


def run_verify(path, *extra):
    r = run_app("audit", "verify", "--db", str(path), *extra)
    return r.returncode, r.stdout + r.stderr


def audit_rows(path) -> list[dict]:
    conn = plain(path)
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute("SELECT * FROM audit ORDER BY id")]
    conn.close()
    return rows


def test_intact_chain_verifies_and_names_its_head(db):
    rows = audit_rows(db)
    assert len(rows) == 6 and rows[0]["prev_hash"] == GENESIS
    assert all(r["hash"] == record_hash(r) for r in rows)
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(rows, rows[1:]))
    conn = plain(db)
    inspections = [r[0] for r in conn.execute("SELECT hash FROM inspections ORDER BY id")]
    assert len(set(inspections)) == 3 and conn.execute("SELECT prev_hash FROM inspections WHERE id = 2").fetchone()[0] == inspections[0]
    conn.close()
    code, out = run_verify(db)
    assert code == 0, out
    head = rows[-1]["hash"]
    assert out.strip() == (f"intact: audit trail 6 audit records, head #6 {head};"
                           f" inspection log 3 inspections, head #3 {inspections[-1]}")
    code, out = run_verify(db, "--expect-head", head[:16], "--expect-head", inspections[1], "--pictures")
    assert code == 0 and f"expected head {head[:16]} is audit record #6" in out and "is inspection #2" in out, out
    code, out = run_verify(db, "--expect-head", "nothex")
    assert code == 2 and "at least 12 hex digits" in out


@pytest.mark.parametrize("statement", [
    "REPLACE INTO audit (id, at, user, action, reason) VALUES (2, '2026-01-01T00:00:00.000Z', 'root', 'user.add', 'x')",
    "INSERT OR REPLACE INTO audit SELECT id, at, 'mallory', action, inspection_id, old_value, new_value, reason, prev_hash, hash"
    " FROM audit WHERE id = 4",
    "INSERT OR REPLACE INTO inspections SELECT * FROM inspections WHERE id = 1",
    "REPLACE INTO inspections (uid, created_at, station, frame_w, frame_h, roi_x, roi_y, roi_w, roi_h, model_id, model_version,"
    " threshold, rule_json, verdict, n_detections) SELECT uid, created_at, station, 1, 1, 0, 0, 1, 1, 'm', 'v', 0.99, '{}', 'PASS', 0"
    " FROM inspections WHERE id = 1",  # same uid, new id: REPLACE would delete the logged FAIL
    "REPLACE INTO detections (id, inspection_id, label, score, x1, y1, x2, y2, shown, fails)"
    " SELECT id, inspection_id, label, 0.01, x1, y1, x2, y2, 0, 0 FROM detections",
    "INSERT OR REPLACE INTO reviews SELECT id, inspection_id, 'FAIL', reviewer, reviewed_at, audit_id FROM reviews",
    "INSERT INTO reviews (id, inspection_id, qa_verdict, reviewer, reviewed_at, audit_id) SELECT id, inspection_id, 'FAIL',"
    " reviewer, reviewed_at, audit_id FROM reviews WHERE id = 1 ON CONFLICT (id) DO UPDATE SET qa_verdict = excluded.qa_verdict",
])
@pytest.mark.parametrize("recursive_triggers", ["OFF", "ON"])
def test_replace_is_refused_for_any_connection(db, statement, recursive_triggers):
    conn = plain(db)
    conn.execute(f"PRAGMA recursive_triggers = {recursive_triggers}")
    before = [list(conn.execute(f"SELECT * FROM {t} ORDER BY id")) for t in ("audit", "inspections", "detections", "reviews")]
    with pytest.raises(sqlite3.DatabaseError, match="REPLACE refused|append-only|immutable"):
        conn.execute(statement)
    after = [list(conn.execute(f"SELECT * FROM {t} ORDER BY id")) for t in ("audit", "inspections", "detections", "reviews")]
    assert after == before
    conn.close()


@pytest.mark.parametrize("statement", [
    "UPDATE inspections SET verdict = 'PASS'",
    "UPDATE inspections SET operator = 'someone else' WHERE id = 1",
    "DELETE FROM inspections WHERE id = 1",
    "UPDATE detections SET score = 0.01",
    "DELETE FROM detections",
    "UPDATE reviews SET qa_verdict = 'PASS'",
    "DELETE FROM reviews",
    "UPDATE audit SET reason = 'nothing happened'",
    "DELETE FROM audit WHERE id = 5",
    "DELETE FROM users",
])
def test_the_log_is_immutable_for_any_connection(db, statement):
    conn = plain(db)
    with pytest.raises(sqlite3.DatabaseError, match="immutable|append-only|never deleted"):
        conn.execute(statement)
    conn.close()


def test_drop_trigger_and_update_is_caught_and_the_station_restores_the_guards(db):
    conn = plain(db)
    conn.execute("DROP TRIGGER audit_append_only_update")
    conn.execute("UPDATE audit SET reason = 'clean part', new_value = ? WHERE id = 4", (json.dumps({"verdict": "PASS"}),))
    conn.close()
    code, out = run_verify(db)
    assert code == 1, out
    assert "BROKEN: audit record #4 was changed after it was written" in out
    assert "protective triggers missing" in out and "audit_append_only_update" in out

    InspectionStore(db).close()  # the station opens the log: the guard is back, and the trail says so
    assert "audit_append_only_update" in {r[0] for r in plain(db).execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    code, out = run_verify(db)
    assert code == 1 and "audit record #4 was changed" in out and "protective triggers missing" not in out, out
    assert "note: audit record #7" in out and "db.guards_restored" in out and "audit_append_only_update" in out


def test_a_changed_and_rehashed_record_breaks_the_next_link(db):
    conn = plain(db)
    conn.row_factory = sqlite3.Row
    conn.execute("DROP TRIGGER audit_append_only_update")
    row = dict(conn.execute("SELECT * FROM audit WHERE id = 2").fetchone())
    row["new_value"] = json.dumps({"name": "quinn", "role": "admin"})
    conn.execute("UPDATE audit SET new_value = ?, hash = ? WHERE id = 2", (row["new_value"], record_hash(row)))
    conn.close()
    report = verify_read_only(db).audit
    assert report.record_id == 2 and "#2 was changed and re-hashed" in report.problem
    code, out = run_verify(db)
    assert code == 1 and "audit record #2 was changed and re-hashed" in out


def test_a_removed_record_is_caught(db):
    conn = plain(db)
    conn.execute("DROP TRIGGER audit_append_only_delete")
    conn.execute("DELETE FROM audit WHERE id = 3")
    conn.close()
    code, out = run_verify(db)
    assert code == 1 and "audit record #3 was removed" in out, out


def test_an_inserted_record_is_caught(db, tmp_path):
    # Appended by hand: no hash.
    conn = plain(db)
    conn.execute("INSERT INTO audit (at, user, action, inspection_id, reason) VALUES"
                 " ('2026-11-02T10:00:00.000Z', 'quinn', 'review.confirm', 1, 'looks fine')")
    conn.close()
    code, out = run_verify(db)
    assert code == 1 and "audit record #7 was inserted outside the station" in out, out


def test_a_record_inserted_in_the_middle_and_hashed_is_caught(db):
    conn = plain(db)
    conn.row_factory = sqlite3.Row
    for name in ("audit_append_only_update", "audit_no_replace"):
        conn.execute(f"DROP TRIGGER {name}")
    for i in (6, 5, 4, 3):  # make room at #3
        conn.execute("UPDATE audit SET id = id + 1 WHERE id = ?", (i,))
    prev = conn.execute("SELECT hash FROM audit WHERE id = 2").fetchone()[0]
    forged = {"id": 3, "at": "2026-11-02T09:00:00.000Z", "user": "root", "action": "user.role", "inspection_id": None,
              "old_value": None, "new_value": json.dumps({"name": "mallory", "role": "admin"}), "reason": "", "prev_hash": prev}
    forged["hash"] = record_hash(forged)
    conn.execute("INSERT INTO audit (id, at, user, action, inspection_id, old_value, new_value, reason, prev_hash, hash)"
                 " VALUES (:id, :at, :user, :action, :inspection_id, :old_value, :new_value, :reason, :prev_hash, :hash)", forged)
    conn.close()
    code, out = run_verify(db)
    assert code == 1 and "audit record #4 was renumbered (it was #3): a row was inserted before it" in out, out


def test_removing_the_newest_records_is_caught_against_a_noted_head(db):
    head = audit_rows(db)[-1]["hash"]
    conn = plain(db)
    conn.execute("DROP TRIGGER audit_append_only_delete")
    conn.execute("DELETE FROM audit WHERE id = 6")
    conn.close()
    report = verify_read_only(db).audit  # what is left is a shorter, intact chain ...
    assert report.problem is None and report.count == 5
    code, out = run_verify(db, "--expect-head", head)  # ... which the noted head exposes
    assert code == 1 and f"the expected head {head} is not in either chain" in out, out


def test_verify_refuses_what_it_cannot_read(tmp_path):
    code, out = run_verify(tmp_path / "missing.sqlite")
    assert code == 2 and "no inspection database" in out
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    code, out = run_verify(tmp_path / "junk.sqlite")
    assert code == 2 and "error:" in out and "Traceback" not in out


def _v2_log(path) -> None:
    """A log as the previous release wrote it: schema v2, with a re-reviewed inspection and a box-only review."""
    conn = plain(path)
    for script in MIGRATIONS[:2]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 2")
    for i, verdict in ((1, "FAIL"), (2, "FAIL"), (3, "PASS")):
        conn.execute("INSERT INTO inspections (id, uid, created_at, station, frame_w, frame_h, roi_x, roi_y, roi_w, roi_h,"
                     " model_id, model_version, threshold, rule_json, verdict, n_detections) VALUES"
                     " (?, ?, ?, 'line 1', 10, 10, 0, 0, 10, 10, 'm', 'v', 0.3, '{}', ?, 1)",
                     (i, f"uid{i}", f"2026-11-0{i}T08:00:00.000Z", verdict))
        conn.execute("INSERT INTO detections (id, inspection_id, label, score, x1, y1, x2, y2, shown, fails)"
                     " VALUES (?, ?, 'pit', 0.6, 1, 1, 5, 5, 1, 1)", (i, i))
    audit = "INSERT INTO audit (at, user, action, inspection_id, old_value, new_value, reason) VALUES (?,?,?,?,?,?,?)"
    conn.execute(audit, ("2026-11-01T09:00:00.000Z", "setup", "user.add", None, None, '{"name": "root"}', ""))
    a2 = conn.execute(audit, ("2026-11-01T10:00:00.000Z", "quinn", "review.override", 1, None, '{"verdict": "PASS"}', "ok")).lastrowid
    a3 = conn.execute(audit, ("2026-11-01T11:00:00.000Z", "quinn", "review.confirm", 1, None, '{"verdict": "FAIL"}', "no")).lastrowid
    a4 = conn.execute(audit, ("2026-11-02T10:00:00.000Z", "quinn", "review.false_positive", 2,
                              '{"detection_id": 2, "label": "pit", "score": 0.6}', '{"false_positive": true}', "dust")).lastrowid
    upsert = ("INSERT INTO reviews (inspection_id, qa_verdict, reviewer, reviewed_at, audit_id) VALUES (?,?,?,?,?)"
              " ON CONFLICT (inspection_id) DO UPDATE SET qa_verdict = excluded.qa_verdict, audit_id = excluded.audit_id")
    conn.execute(upsert, (1, "PASS", "quinn", "2026-11-01T10:00:00.000Z", a2))
    conn.execute(upsert, (1, "FAIL", "quinn", "2026-11-01T11:00:00.000Z", a3))
    conn.execute("INSERT INTO review_boxes (inspection_id, detection_id, kind, label, x1, y1, x2, y2, audit_id)"
                 " VALUES (2, 2, 'false_positive', 'pit', 1, 1, 5, 5, ?)", (a4,))
    conn.close()


def test_an_existing_v2_log_migrates_with_its_records_chained(tmp_path):
    path = tmp_path / "old.sqlite"
    _v2_log(path)
    with InspectionStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 4
        assert plain(path).execute("PRAGMA user_version").fetchone()[0] == 4
        current = {r.inspection_id: (r.qa_verdict, r.audit_id) for r in store.current_reviews()}
        # The re-reviewed one keeps QA's latest word; the box-only one now counts as reviewed, station verdict kept.
        assert current == {1: ("FAIL", 3), 2: ("FAIL", 4)}
        assert {r[0] for r in plain(path).execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")} == set(guard_triggers())
        assert store.missing_guards() == []
    rows = audit_rows(path)
    assert [r["id"] for r in rows] == [1, 2, 3, 4] and all(r["hash"] == record_hash(r) for r in rows)
    code, out = run_verify(path)
    assert code == 0 and "4 audit records" in out and "3 inspections" in out, out


def test_verify_on_a_log_from_before_the_chain_says_so(tmp_path):
    path = tmp_path / "old.sqlite"
    _v2_log(path)
    code, out = run_verify(path)
    assert code == 2 and "no hash chain yet (schema 2)" in out
    assert plain(path).execute("PRAGMA user_version").fetchone()[0] == 2  # verifying never migrates the evidence


def test_a_changed_or_removed_inspection_is_caught(db):
    conn = plain(db)
    conn.execute("DROP TRIGGER inspections_no_update")
    conn.execute("UPDATE inspections SET verdict = 'PASS' WHERE id = 3")  # the logged FAIL becomes a PASS
    conn.close()
    code, out = run_verify(db)
    assert code == 1 and "BROKEN: inspection #3 was changed after it was written" in out, out

    conn = plain(db)
    conn.execute("UPDATE inspections SET verdict = 'FAIL' WHERE id = 3")
    conn.execute("DROP TRIGGER detections_no_update")
    conn.execute("UPDATE detections SET score = 0.05, shown = 0, fails = 0 WHERE inspection_id = 1 AND label = 'scratch'")
    conn.close()
    code, out = run_verify(db)
    assert code == 1 and "BROKEN: inspection #1 was changed after it was written" in out, out

    conn = plain(db)
    conn.execute("UPDATE detections SET score = 0.8, shown = 1, fails = 1 WHERE inspection_id = 1 AND label = 'scratch'")
    conn.execute("DROP TRIGGER inspections_no_delete")
    conn.execute("DELETE FROM inspections WHERE id = 2")
    conn.close()
    code, out = run_verify(db)
    assert code == 1 and "BROKEN: inspection #2 was removed" in out, out


def test_a_rehashed_inspection_breaks_the_next_link(db):
    conn = plain(db)
    conn.row_factory = sqlite3.Row
    conn.execute("DROP TRIGGER inspections_no_update")
    row = dict(conn.execute("SELECT * FROM inspections WHERE id = 1").fetchone())
    row["detections"] = [dict(d) for d in conn.execute("SELECT * FROM detections WHERE inspection_id = 1 ORDER BY id")]
    row["regions"] = [dict(r) for r in conn.execute("SELECT * FROM inspection_regions WHERE inspection_id = 1 ORDER BY id")]
    row["verdict"] = "PASS"
    conn.execute("UPDATE inspections SET verdict = 'PASS', hash = ? WHERE id = 1", (inspection_hash(row),))
    conn.close()
    code, out = run_verify(db)
    assert code == 1 and "BROKEN: inspection #1 was changed and re-hashed, or #2 was inserted" in out, out


def test_qa_rows_and_users_changed_outside_the_station_are_caught(db):
    conn = plain(db)
    conn.execute("DROP TRIGGER reviews_no_update")
    conn.execute("UPDATE reviews SET qa_verdict = 'PASS' WHERE id = 2")
    conn.close()
    code, out = run_verify(db)
    assert code == 1 and "QA review row #2 says PASS for inspection #1, its audit record #4 says FAIL" in out, out

    conn = plain(db)
    conn.execute("UPDATE reviews SET qa_verdict = 'FAIL' WHERE id = 2")
    conn.execute("DROP TRIGGER reviews_no_delete")
    conn.execute("DELETE FROM reviews WHERE id = 2")  # QA's latest word gone: the earlier PASS would count again
    conn.close()
    code, out = run_verify(db)
    assert code == 1 and "inspection #1: QA's current verdict is not the one of its latest review (audit record #4, FAIL)" in out

    conn = plain(db)
    conn.execute("INSERT INTO reviews (id, inspection_id, qa_verdict, reviewer, reviewed_at, audit_id)"
                 " VALUES (2, 1, 'FAIL', 'quinn', '2026-11-02T10:00:00.000Z', 4)")
    conn.execute("DROP TRIGGER review_boxes_no_delete")
    conn.execute("DELETE FROM review_boxes")
    conn.execute("UPDATE users SET role = 'admin' WHERE name = 'quinn'")
    conn.close()
    code, out = run_verify(db)
    assert code == 1 and "the box correction of audit record #5 (inspection #3) was removed" in out, out
    assert "user quinn is admin, active in the users table, but the audit trail says supervisor, active" in out
    assert "QA's current verdict" not in out


def test_pictures_changed_after_they_were_saved_are_caught(db):
    code, out = run_verify(db, "--pictures")
    assert code == 0, out
    with InspectionStore(db) as store:
        picture = store.resolve(store.inspection(1).annotated_path)
    picture.write_bytes(picture.read_bytes()[:-10] + b"0123456789")
    code, out = run_verify(db)  # the chains alone do not read the pictures
    assert code == 0, out
    code, out = run_verify(db, "--pictures")
    assert code == 1 and f"picture of inspection #1 was changed after it was saved: {picture}" in out, out
    picture.unlink()
    code, out = run_verify(db, "--pictures")
    assert code == 1 and "picture of inspection #1 is missing" in out, out
