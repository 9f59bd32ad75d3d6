"""QA review, audit trail, users and roles, and the export back to training (no Qt)."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from conftest import run_app

from app.review import ReviewService, export_training_set
from app.store import GalleryFilter, InspectionRecord, InspectionStore
from app.users import PermissionDenied, User, UserDirectory, hash_secret, verify_secret
from app.verdict import FAIL, PASS
from detector import Detection
from detector.regions import Roi

QA = User("quinn", "qa")
T0 = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc)


def log(store, i, verdict, dets, operator="ana", part="SN-%03d", shown=None, fails=None):
    frame = np.full((120, 160, 3), 100 + i, np.uint8)
    rec = InspectionRecord(
        station="line 1", source="test", frame_size=(160, 120), roi=Roi(10, 10, 140, 100), model_id="m@1",
        model_version="v1", threshold=0.3, rule_json="{}", verdict=verdict, detections=dets,
        shown=shown if shown is not None else [k for k, d in enumerate(dets) if d.score >= 0.3],
        failing=fails if fails is not None else [k for k, d in enumerate(dets) if d.score >= 0.3],
        operator=operator, part_id=part % i, created_at=T0 + timedelta(hours=i),
    )
    return store.record(rec, frame, frame).id


@pytest.fixture
def store(tmp_path):
    s = InspectionStore(tmp_path / "data" / "inspections.sqlite")
    log(s, 0, FAIL, [Detection("scratch", 0.8, (20, 20, 30, 90)), Detection("pit", 0.2, (60, 60, 70, 70))])
    log(s, 1, PASS, [])
    log(s, 2, FAIL, [Detection("pit", 0.45, (50, 40, 80, 70))], operator="bob")
    log(s, 3, PASS, [Detection("scratch", 0.15, (5, 5, 9, 50))], part="=HACK%d")
    yield s
    s.close()


def test_gallery_filters_sorting_and_paging(store):
    assert store.gallery_count(GalleryFilter()) == 4
    assert [r.verdict for r in store.gallery_page(GalleryFilter(), "oldest")] == [FAIL, PASS, FAIL, PASS]
    assert store.gallery_count(GalleryFilter(verdict=FAIL)) == 2
    assert store.gallery_count(GalleryFilter(label="scratch")) == 1  # only shown detections count
    assert store.gallery_count(GalleryFilter(label="pit", min_score=0.4, max_score=0.5)) == 1
    assert store.gallery_count(GalleryFilter(operator="bob")) == 1
    assert store.gallery_count(GalleryFilter(part_id="HACK")) == 1
    assert store.gallery_count(GalleryFilter(part_id="%")) == 0  # LIKE wildcards are literal
    assert store.gallery_count(GalleryFilter(start=T0 + timedelta(hours=1), end=T0 + timedelta(hours=3))) == 2
    assert [r.max_score for r in store.gallery_page(GalleryFilter(), "highest score")][:2] == [0.8, 0.45]
    page = store.gallery_page(GalleryFilter(), "newest", page=1, page_size=3)
    assert len(page) == 1 and page[0].part_id == "SN-000"
    assert store.gallery_ids(GalleryFilter(verdict=PASS)) == [2, 4]
    assert store.operators() == ["ana", "bob"] and store.labels() == ["pit", "scratch"]
    with pytest.raises(ValueError, match="sort must be one of newest, oldest"):
        store.gallery_page(GalleryFilter(), "cheapest")


def test_review_override_and_box_changes_are_audited_and_never_overwrite(store):
    service = ReviewService(store, QA)
    first = store.gallery_page(GalleryFilter(), "oldest")[0].id
    dets = store.inspection(first).detections
    scratch = next(d for d in dets if d.label == "scratch")
    with pytest.raises(ValueError, match="reason"):
        service.set_verdict(first, PASS, "  ")
    service.mark_false_positive(first, scratch.id, "reflection, not a scratch")
    service.set_verdict(first, PASS, "only a reflection")
    service.add_missed(first, "pit", (100, 30, 130, 60), "pit cluster missed")
    service.set_verdict(first, FAIL, "on second look the pits fail it")

    state = service.state(first)
    assert state.inspection.verdict == FAIL  # the station's verdict is untouched
    assert state.qa_verdict == FAIL and state.false_positive_ids == {scratch.id}
    assert [(m.label, m.box) for m in state.missed] == [("pit", (100.0, 30.0, 130.0, 60.0))]
    actions = [(h.action, h.user) for h in state.history]
    assert actions == [("review.false_positive", "quinn"), ("review.override", "quinn"), ("review.missed", "quinn"),
                       ("review.confirm", "quinn")]
    override = state.history[1]
    assert json.loads(override.old_value)["verdict"] == FAIL and json.loads(override.new_value) == {"verdict": PASS}
    assert override.reason == "only a reflection" and override.at.endswith("Z")
    assert store.gallery_count(GalleryFilter(reviewed=True)) == 1
    assert store.gallery_count(GalleryFilter(reviewed=False)) == 3

    conn = sqlite3.connect(store.db_path)  # even straight SQL cannot rewrite history
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit SET reason = 'nothing happened'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit")


def test_roles_gate_actions():
    assert User("o", "operator").can("inspect") and not User("o", "operator").can("review")
    assert User("s", "supervisor").can("reports") and not User("s", "supervisor").can("settings")
    with pytest.raises(PermissionDenied):
        User("o", "operator").require("review")


def test_users_pins_are_salted_hashes_and_changes_audited(store):
    users = UserDirectory(store)
    with pytest.raises(ValueError, match="first user must be an admin"):
        users.add("ana", "operator", "123456", by=User("x", "operator"))
    admin = users.add("root", "admin", "987654", by=User("anyone", "operator"))
    users.add("ana", "operator", "123456", by=admin)
    with pytest.raises(PermissionDenied):
        users.add("eve", "admin", "000000", by=User("ana", "operator"))
    with pytest.raises(ValueError, match="exists"):
        users.add("ANA", "qa", "123456", by=admin)
    assert users.authenticate("ana", "123456") == User("ana", "operator")
    assert users.authenticate("ana", "123457") is None and users.authenticate("nobody", "123456") is None
    users.set_role("ana", "qa", by=admin)
    users.set_active("ana", False, by=admin)
    assert users.authenticate("ana", "123456") is None
    stored = [u.secret_hash for u in store.users()]
    assert all(h.startswith("scrypt$") and "123456" not in h and "987654" not in h for h in stored)
    assert hash_secret("123456") != hash_secret("123456")  # salted
    assert verify_secret("123456", hash_secret("123456")) and not verify_secret("123456", "garbage")
    actions = [a.action for a in store.audit_records()]
    assert actions == ["user.add", "user.add", "user.signin_failed", "user.role", "user.disable"]


def test_users_command(tmp_path):
    db = str(tmp_path / "log.sqlite")
    r = run_app("users", "add", "root", "--role", "admin", "--db", db, "--pin-stdin", stdin="246813\n")
    assert r.returncode == 0, r.stderr
    r = run_app("users", "add", "ana", "--role", "qa", "--db", db, "--pin-stdin", stdin="111111\n")
    assert r.returncode == 2 and "--as ADMIN" in r.stderr
    r = run_app("users", "add", "ana", "--role", "qa", "--db", db, "--as", "root", "--pin-stdin", stdin="111111\n000000\n")
    assert r.returncode == 2 and "wrong user name or PIN" in r.stderr
    r = run_app("users", "add", "ana", "--role", "qa", "--db", db, "--as", "root", "--pin-stdin", stdin="111111\n246813\n")
    assert r.returncode == 0, r.stderr
    r = run_app("users", "list", "--db", db)
    assert [line.split("\t")[:2] for line in r.stdout.splitlines()] == [["ana", "qa"], ["root", "admin"]]


def test_every_qa_action_marks_the_inspection_reviewed_with_a_current_verdict(store):
    service = ReviewService(store, QA)
    ids = [r.id for r in store.gallery_page(GalleryFilter(), "oldest")]
    scratch = next(d for d in store.inspection(ids[0]).detections if d.label == "scratch")
    service.mark_false_positive(ids[0], scratch.id, "reflection")  # a box correction alone
    service.add_missed(ids[1], "pit", (100, 30, 130, 60), "pit the model missed")
    service.set_verdict(ids[2], PASS, "cosmetic")
    service.add_missed(ids[2], "scratch", (1, 1, 40, 5), "faint scratch, still cosmetic")
    # Reviewed, each with QA's current word: the verdict in force is kept by a box correction
    # (the station's, or QA's latest); only confirm/override changes it.
    assert store.gallery_count(GalleryFilter(reviewed=True)) == 3
    current = {r.inspection_id: (r.qa_verdict, r.reviewer) for r in store.current_reviews()}
    assert current == {ids[0]: (FAIL, "quinn"), ids[1]: (PASS, "quinn"), ids[2]: (PASS, "quinn")}
    assert [r.qa_verdict for r in store.gallery_page(GalleryFilter(), "oldest")] == [FAIL, PASS, PASS, None]
    assert store.gallery_count(GalleryFilter(qa_verdict=PASS)) == 2
    assert json.loads(service.state(ids[0]).history[0].new_value) == {"false_positive": True, "verdict": FAIL}
    # History is appended, never rewritten: one reviews row per QA action.
    assert len(store.reviews()) == 4
    service.set_verdict(ids[0], PASS, "only the reflection")
    assert service.state(ids[0]).qa_verdict == PASS and store.gallery_count(GalleryFilter(qa_verdict=FAIL)) == 0


def test_reviewed_inspections_export_as_a_training_set_the_detector_reads(store, tmp_path):
    service = ReviewService(store, QA)
    ids = [r.id for r in store.gallery_page(GalleryFilter(), "oldest")]
    scratch = next(d for d in store.inspection(ids[0]).detections if d.label == "scratch")
    service.mark_false_positive(ids[0], scratch.id, "reflection")
    service.add_missed(ids[0], "pit", (100, 30, 130, 60), "missed")
    service.set_verdict(ids[0], FAIL, "pits")
    service.set_verdict(ids[1], PASS, "clean")
    summary = export_training_set(store, tmp_path / "export")
    assert summary["images"] == 2 and summary["boxes"] == 1 and summary["classes"] == ["pit"]
    coco = json.loads((tmp_path / "export" / "annotations.json").read_text())
    (ann,) = coco["annotations"]
    assert ann["bbox"] == [90, 20, 30, 30]  # shifted into the 10,10 inspection region
    assert {im["width"] for im in coco["images"]} == {140}

    from detector.data.pipeline import load_source

    info = load_source(tmp_path / "export" / "annotations.json")
    assert len(info.images) == 2 and sum(len(i.boxes) for i in info.images) == 1
    r = run_app("export-training-set", "--db", str(store.db_path), "--out", str(tmp_path / "cli_export"))
    assert r.returncode == 0 and "exported 2 reviewed pictures with 1 boxes" in r.stdout, r.stderr
