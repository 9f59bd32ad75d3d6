"""The inspection log behind an interface: the SQLite log implements the protocols, callers hold no SQL,
read-only opening never changes the evidence, a change and its audit record are one transaction."""

from __future__ import annotations

import hashlib
import inspect
import re
import threading
from datetime import date, timezone
from pathlib import Path

import pytest
from test_audit_chain import _v2_log
from test_review import log

from app.audit import verify
from app.reports import ReportError, daily_summary, per_inspection
from app.store import (
    DetectionRow,
    GalleryFilter,
    InspectionLog,
    InspectionRecord,
    InspectionStore,
    LogTransaction,
    RegionRecord,
    RegionRow,
    SqliteTransaction,
    StoreError,
)
from app.verdict import FAIL, PASS
from detector import Detection
from detector.regions import Roi

REPO = Path(__file__).resolve().parents[1]
# Modules that use the log: none of them may hold SQL or a connection of its own.
CALLERS = ["app/review.py", "app/users.py", "app/audit.py", "app/reports.py", "app/settings_audit.py",
           "app/training_export.py", "app/ui/gallery.py", "app/ui/trends.py", "app/cli/audit.py", "app/cli/users.py",
           "app/cli/export_csv.py", "app/cli/export_training_set.py",
           "app/ui/plant_window.py"]
SQL = re.compile(r"\bimport sqlite3\b|sqlite3\.|\bSELECT\b|\bINSERT\s+INTO\b|\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b|"
                 r"\bPRAGMA\b|\.query\(|\.transaction\(|\.execute\(")


def _members(protocol: type) -> dict[str, inspect.Signature]:
    out = {}
    for klass in protocol.__mro__:
        if klass.__module__ == "app.store.base":
            for name, value in vars(klass).items():
                if callable(value) and (not name.startswith("_") or name in ("__enter__", "__exit__")):
                    out.setdefault(name, inspect.signature(value))
    return out


@pytest.mark.parametrize("protocol, implementation", [(InspectionLog, InspectionStore), (LogTransaction, SqliteTransaction)])
def test_the_sqlite_log_implements_the_interface(protocol, implementation):
    members = _members(protocol)
    assert len(members) > (30 if protocol is InspectionLog else 20)
    for name, wanted in members.items():
        assert hasattr(implementation, name), f"{implementation.__name__} lacks {name}"
        got = inspect.signature(getattr(implementation, name))
        assert list(got.parameters) == list(wanted.parameters), f"{implementation.__name__}.{name}{got} is not {name}{wanted}"
    for attribute in ("read_only", "schema_version"):
        assert attribute in protocol.__annotations__ or protocol is LogTransaction


@pytest.mark.parametrize("path", CALLERS)
def test_callers_hold_no_sql_and_no_connection(path):
    source = (REPO / path).read_text(encoding="utf-8")
    assert not SQL.findall(source), f"{path}: {sorted(set(SQL.findall(source)))}"


def test_rows_come_back_typed(tmp_path):
    with InspectionStore(tmp_path / "inspections.sqlite") as store:
        dets = [Detection("scratch", 0.8, (20, 20, 30, 90)), Detection("pit", 0.2, (60, 60, 70, 70))]
        rec = InspectionRecord(
            station="line 1", source="test", frame_size=(160, 120), roi=Roi(0, 0, 160, 120), model_id="m@1",
            model_version="v1", threshold=0.3, rule_json="{}", verdict=FAIL, detections=dets, shown=[0], failing=[0],
            recipe="cap", recipe_version=2, regions=[RegionRecord("top", Roi(0, 0, 160, 60), 0.3, "{}", FAIL),
                                                      RegionRecord("bottom", Roi(0, 60, 160, 60), 0.3, "{}", PASS)],
            detection_regions=["top", "bottom"], trigger="line", job_id="J-7")
        stored = store.record(rec)
        row = store.inspection(stored.id)
        assert (row.uid, row.verdict, row.recipe, row.recipe_version, row.trigger, row.job_id) == \
            (rec.uid, FAIL, "cap", 2, "line", "J-7")
        assert row.roi == Roi(0, 0, 160, 120) and row.hash and row.hash_version == 2
        assert [(d.label, d.shown, d.fails, d.region, d.box) for d in row.detections] == [
            ("scratch", True, True, "top", (20.0, 20.0, 30.0, 90.0)), ("pit", False, False, "bottom", (60.0, 60.0, 70.0, 70.0))]
        assert all(isinstance(d, DetectionRow) for d in row.detections)
        assert row.regions == (RegionRow("top", 0, 0, 160, 60, 0.3, "{}", FAIL), RegionRow("bottom", 0, 60, 160, 60, 0.3, "{}", PASS))
        assert row.regions[1].roi == Roi(0, 60, 160, 60)
        assert store.detection(stored.id, row.detections[0].id) == row.detections[0]
        assert store.detection(stored.id + 1, row.detections[0].id) is None  # another inspection's detection
        item, = store.gallery_page(GalleryFilter())
        assert (item.id, item.verdict, item.max_score, item.qa_verdict) == (stored.id, FAIL, 0.8, None)
        assert store.inspection(99) is None and store.get(99) is None


def test_read_only_never_migrates_or_writes(tmp_path):
    """A log of an older schema is read as it is (reports included) and left byte for byte as it was."""
    path = tmp_path / "old.sqlite"
    _v2_log(path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with InspectionStore(path, read_only=True) as old:
        assert old.read_only and old.schema_version == 2
        with pytest.raises(StoreError, match="read-only"):
            with old.write():
                pass
        # v2 kept QA's word in the reviews table itself: inspection 1, re-reviewed FAIL; a box correction was no review then.
        table = daily_summary(old, date(2026, 11, 1), date(2026, 11, 3), tz=timezone.utc)
        assert [r[:4] + r[6:10] for r in table.rows] == [
            [date(2026, 11, 1), "line 1", 1, 0, 1, 0, 1, 0], [date(2026, 11, 2), "line 1", 1, 0, 0, 0, 0, 0],
            [date(2026, 11, 3), "line 1", 1, 1, 0, 0, 0, 0]]
        reviewed = per_inspection(old, date(2026, 11, 1), date(2026, 11, 1), tz=timezone.utc).rows[0]
        assert reviewed[-4:] == ["FAIL", "quinn", "2026-11-01T10:00:00.000Z", "no"]  # the v2 upsert kept the first time
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.sqlite"]  # no journal left behind either
    with pytest.raises(StoreError, match="no inspection database at"):
        InspectionStore(tmp_path / "none.sqlite", read_only=True)
    assert not (tmp_path / "none.sqlite").exists()
    (tmp_path / "notes.sqlite").write_bytes(b"")
    with pytest.raises(ReportError, match="is not an inspection database"):
        daily_summary(tmp_path / "notes.sqlite", date(2026, 11, 1), date(2026, 11, 3))


def test_reads_do_not_wait_for_a_write_in_progress(tmp_path):
    """A report or a gallery page on the GUI thread while the writer holds its lock (an inspection being logged)."""
    with InspectionStore(tmp_path / "inspections.sqlite") as store:
        first = log(store, 0, FAIL, [Detection("scratch", 0.8, (20, 20, 30, 90))])
        holding, release = threading.Event(), threading.Event()

        def writer():
            with store.write() as tx:
                tx.append_audit("station", "test.hold", reason="holds the write lock")
                holding.set()
                release.wait(10)

        thread = threading.Thread(target=writer)
        thread.start()
        assert holding.wait(10)
        results = {}
        reader = threading.Thread(target=lambda: results.update(
            summary=daily_summary(store, date(2026, 11, 1), date(2026, 11, 3), tz=timezone.utc),
            count=store.gallery_count(GalleryFilter()), audit=store.audit_records()))
        reader.start()
        reader.join(5)
        finished = not reader.is_alive()
        release.set()
        thread.join(10)
        reader.join(10)
        assert finished, "the reads waited for the write transaction"
        assert results["count"] == 1 and results["summary"].rows[0][2:5] == [1, 0, 1]
        assert results["audit"] == []  # not committed yet when read
        assert [a.action for a in store.audit_records()] == ["test.hold"]
        assert store.inspection(first).verdict == FAIL


def test_a_change_and_its_audit_record_are_one_transaction(tmp_path):
    db = tmp_path / "inspections.sqlite"
    with InspectionStore(db) as store:
        definition = '{"regions": []}'
        with pytest.raises(PermissionError):
            with store.write() as tx:
                tx.save_recipe_version(name="cap", external_id="7", definition_json=definition, deleted=False, user="root",
                                       audit_action="recipe.save", old=None, new={"name": "cap"}, reason="new part")
                raise PermissionError("checked after the write: nothing of it stays")
        assert store.recipe_versions() == [] and store.audit_records() == []
        for _ in range(2):
            with store.write() as tx:
                version = tx.save_recipe_version(name="cap", external_id="7", definition_json=definition, deleted=False,
                                                 user="root", audit_action="recipe.save", old=None, new={"name": "cap"},
                                                 reason="new part")
        assert version == 2
        records = store.audit_records(action="recipe.save")
        assert [(v["version"], v["audit_id"], v["created_by"]) for v in store.recipe_versions("cap")] == \
            [(1, records[0].id, "root"), (2, records[1].id, "root")]
        # A database error inside a write: rolled back, and said as a StoreError naming the log.
        with pytest.raises(StoreError, match=f"could not write to the inspection log {db}"):
            with store.write() as tx:
                tx.append_audit("quinn", "review.confirm", inspection_id=99, reason="no such inspection")
        assert len(store.audit_records()) == 2
    with InspectionStore(db, read_only=True) as log_:
        assert verify(log_).ok
