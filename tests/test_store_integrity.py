"""Log and pictures stay consistent; a data folder the station cannot write is named, with the reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_review import log

from app.store import GalleryFilter, InspectionStore, StoreError
from app.verdict import FAIL, PASS
from detector import Detection

REPO = Path(__file__).resolve().parents[1]


def pictures(store: InspectionStore) -> list[Path]:
    return sorted(p for p in store.image_dir.rglob("*") if p.is_file() and not p.name.startswith("."))


def test_pictures_of_an_inspection_that_could_not_be_logged_are_removed(tmp_path):
    store = InspectionStore(tmp_path / "data" / "inspections.sqlite")
    # The database cannot grow any more: what a full disk does to SQLite ("database or disk is full"),
    # set on the store's own writer connection (the pragma holds per connection).
    writer = store._conn
    writer.execute("PRAGMA max_page_count = " + str(writer.execute("PRAGMA page_count").fetchone()[0]))
    logged, error = 0, None
    for i in range(200):
        try:
            log(store, i, FAIL, [Detection("scratch", 0.8, (20, 20, 30, 90))] * 5)
            logged += 1
        except StoreError as exc:
            error = str(exc)
            break
    assert error is not None and "full" in error, error
    rows = [store.inspection(i) for i in store.gallery_ids(GalleryFilter())]
    assert len(rows) == logged
    assert pictures(store) == sorted(store.root / p for r in rows for p in (r.image_path, r.annotated_path))
    store.close()


def test_a_logged_uid_is_never_overwritten(tmp_path):
    from dataclasses import replace

    from app.store import InspectionRecord
    from detector.regions import Roi

    store = InspectionStore(tmp_path / "inspections.sqlite")
    rec = InspectionRecord(station="s", source="t", frame_size=(16, 8), roi=Roi(0, 0, 16, 8), model_id="m", model_version="v",
                           threshold=0.3, rule_json="{}", verdict=FAIL, detections=[], shown=[], failing=[])
    first = store.record(rec, np.zeros((8, 16), np.uint8))
    with pytest.raises(StoreError, match="logged already"):
        store.record(replace(rec, verdict=PASS), np.full((8, 16), 255, np.uint8))
    assert first.image_path.is_file() and int(np.asarray(__import__("cv2").imread(str(first.image_path), 0)).max()) == 0
    store.close()


def _orphan(folder: Path, uid: str, age_s: float, names=("{uid}.png", "{uid}_annotated.jpg")) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        p = folder / name.format(uid=uid)
        p.write_bytes(b"picture")
        t = time.time() - age_s
        os.utime(p, (t, t))
        out.append(p)
    return out


def test_orphan_pictures_are_swept_at_start(tmp_path):
    db = tmp_path / "data" / "inspections.sqlite"
    with InspectionStore(db) as store:
        kept = log(store, 0, FAIL, [])
        logged = pictures(store)
    day = logged[0].parent
    old = _orphan(day, "a" * 32, age_s=3600)  # killed between saving the pictures and committing the row
    old += _orphan(day, "b" * 32, age_s=3600, names=(".{uid}.png.x1y2.tmp",))  # an interrupted write
    young = _orphan(day, "c" * 32, age_s=5)  # maybe another process committing right now
    other = day / "notes.txt"
    other.write_text("not ours")
    with InspectionStore(db) as store:
        assert not any(p.exists() for p in old)
        assert all(p.exists() for p in young + logged + [other])
        (record,) = store.audit_records(action="store.orphans_removed")
        assert record.user == "station"
        assert sorted(json.loads(record.new_value)["files"]) == sorted(p.relative_to(db.parent).as_posix() for p in old)
        assert store.inspection(kept).verdict == FAIL
    # Later, once old enough, the young pair goes too (its folder changed since the last sweep).
    for p in young:
        os.utime(p, (time.time() - 3600,) * 2)
    os.utime(day, None)
    with InspectionStore(db) as store:
        assert not any(p.exists() for p in young) and all(p.exists() for p in logged)


def test_a_data_folder_under_a_file_is_named(tmp_path):
    blocker = tmp_path / "shared-drive"
    blocker.write_text("a file where the data folder should be")
    with pytest.raises(StoreError, match=f"cannot create the data folder {blocker / 'station'}.*a part of that path is a file"):
        InspectionStore(blocker / "station" / "inspections.sqlite")
    with pytest.raises(StoreError, match=f"cannot use {blocker} as the data folder: it is a file"):
        InspectionStore(blocker / "inspections.sqlite")
    (tmp_path / "db-folder").mkdir()
    with pytest.raises(StoreError, match="is a folder, not an inspection database"):
        InspectionStore(tmp_path / "db-folder")


OPEN_STORE = """
import sys
from app.store import InspectionStore, StoreError
try:
    InspectionStore(sys.argv[1])
except StoreError as exc:
    print(exc)
    sys.exit(3)
"""


def _read_only_mount_works(folder: Path) -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe = subprocess.run([unshare, "-rm", "sh", "-c", f"mount --bind -o ro '{folder}' '{folder}' && ! touch '{folder}/x'"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.parametrize("existing", [True, False])
def test_a_read_only_data_folder_is_named_with_the_reason(tmp_path, existing):
    """A real read-only file system (a read-only bind mount in a private mount namespace): root cannot write there either."""
    data = tmp_path / "data"
    data.mkdir()
    if existing:
        InspectionStore(data / "inspections.sqlite").close()
    if not _read_only_mount_works(data):
        pytest.skip("cannot make a read-only mount here (no `unshare -rm`: user namespaces disabled)")
    r = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount --bind -o ro '{data}' '{data}' && exec \"$0\" -c \"$1\" \"$2\"",
                        sys.executable, OPEN_STORE, str(data / "inspections.sqlite")],
                       cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 3, r.stdout + r.stderr
    assert f"the data folder {data} is not writable (Read-only file system)" in r.stdout, r.stdout


def test_a_folder_without_write_permission_is_named(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions (the read-only mount test covers root)")
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o555)
    try:
        with pytest.raises(StoreError, match=f"the data folder {data} is not writable \\(Permission denied\\)"):
            InspectionStore(data / "inspections.sqlite")
    finally:
        data.chmod(0o755)


def test_values_of_any_numeric_type_are_hashed_as_they_are_stored(tmp_path):
    """numpy scores, integer thresholds and boxes: the chain verifies what SQLite gives back."""
    from app.audit import verify
    from app.store import InspectionRecord
    from detector.regions import Roi

    db = tmp_path / "inspections.sqlite"
    with InspectionStore(db) as store:
        det = Detection("pit", np.float32(0.7), tuple(np.int64(v) for v in (1, 2, 9, 8)))
        rec = InspectionRecord(station="s", source="t", frame_size=(np.int64(16), 8), roi=Roi(0, 0, 16, 8), model_id="m",
                               model_version="v", threshold=1, rule_json="{}", verdict=FAIL, detections=[det], shown=[0],
                               failing=[0], inference_ms=5)
        store.record(rec, np.zeros((8, 16), np.uint8))
    with InspectionStore(db, read_only=True) as log:
        report = verify(log, pictures_root=db.parent)
    assert report.ok and report.inspections.count == 1, report
