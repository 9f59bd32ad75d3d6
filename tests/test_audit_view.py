"""The audit trail in words (no Qt): when in local time, who, what, old → new rounded, reason."""

from __future__ import annotations

import json
from dataclasses import asdict, astuple
from zoneinfo import ZoneInfo

import pytest
from test_reports import reviewer
from test_review import log

from app.audit_view import AuditRow, describe_audit
from app.review import ReviewService
from app.store import InspectionStore
from app.users import UserDirectory
from app.verdict import FAIL, PASS
from detector import Detection

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def store(tmp_path):
    s = InspectionStore(tmp_path / "inspections.sqlite")
    yield s
    s.close()


def test_review_actions_read_as_words(store):
    inspection = log(store, 0, FAIL, [Detection("scratch", 0.8712, (12.0, 40.004, 80.0, 200.456))])
    qa = reviewer(store)
    service = ReviewService(store, qa)
    scratch = store.inspection(inspection).detections[0].id
    service.mark_false_positive(inspection, scratch, "reflection of the lamp")
    service.set_verdict(inspection, PASS, "no real defect")
    service.add_missed(inspection, "pit", (100.126, 30, 130, 60.5), "pit cluster missed")
    service.set_verdict(inspection, PASS, "checked again")
    service.set_verdict(inspection, FAIL, "the pits fail it after all")
    history = [asdict(h) for h in service.state(inspection).history]
    rows = [describe_audit(h, tz=BERLIN) for h in history]
    assert [(r.who, r.what, r.change, r.reason) for r in rows] == [
        (qa.name, "false positive marked", "scratch 0.87 → false positive", "reflection of the lamp"),
        (qa.name, "verdict overridden", "FAIL → PASS", "no real defect"),
        (qa.name, "missed defect added", "pit at (100.13, 30, 130, 60.5)", "pit cluster missed"),
        (qa.name, "verdict overridden", "PASS", "checked again"),  # kept: the verdict alone
        (qa.name, "verdict confirmed", "PASS → FAIL", "the pits fail it after all"),  # the station's FAIL again
    ]
    # Local time to the second, in the zone asked for (the station's own by default).
    at = history[0]["at"]
    assert rows[0].when == describe_audit({"at": at}, tz=BERLIN).when
    assert len(rows[0].when) == 19 and "T" not in rows[0].when and "Z" not in rows[0].when
    assert describe_audit({**history[0], "at": "2026-11-02T10:00:00.987Z"}, tz=BERLIN).when == "2026-11-02 11:00:00"
    assert describe_audit({**history[0], "at": "2026-07-02T10:00:00.000Z"}, tz=BERLIN).when == "2026-07-02 12:00:00"
    assert not any("{" in text for r in rows for text in (r.change, r.what))  # no raw JSON


def test_user_and_settings_changes_and_unknown_records(store):
    admin = reviewer(store, "root")
    users = UserDirectory(store)
    users.add("ana", "operator", "246810", by=admin)
    users.set_role("ana", "qa", by=admin)
    users.set_active("ana", False, by=admin)
    rows = [describe_audit(asdict(r)) for r in store.audit_records()]
    assert [(r.what, r.change) for r in rows][-3:] == [
        ("user added", "name ana, role operator"), ("role changed", "ana: role operator → qa"), ("user disabled", "name ana")]

    rule = {"at": "2026-11-02T10:00:00Z", "user": "root", "action": "settings.rule", "reason": "",
            "old_value": json.dumps({"unit": "px", "classes": {"scratch": {"min_score": 0.3, "min_size": 0.0}}}),
            "new_value": json.dumps({"unit": "px", "classes": {"scratch": {"min_score": 0.456, "min_size": 20.0}}})}
    assert describe_audit(rule).change == "classes.scratch.min_score 0.3 → 0.46; classes.scratch.min_size 0 → 20"
    model = {**rule, "action": "settings.model", "old_value": '"a/model.onnx"', "new_value": '"b/model.int8.onnx"'}
    assert describe_audit(model) == AuditRow(describe_audit(rule).when, "root", "model changed",
                                             "a/model.onnx → b/model.int8.onnx", "")
    # Columns a newer log adds (a hash chain) are ignored; an unknown action reads as words; bad JSON as text.
    newer = {**rule, "action": "user.took_a_break", "hash": "ab" * 32, "prev_hash": "cd" * 32, "old_value": None,
             "new_value": "{not json", "reason": "coffee"}
    assert astuple(describe_audit(newer))[1:] == ("root", "user took a break", "{not json", "coffee")
    assert describe_audit({}) == AuditRow("", "", "", "", "")
