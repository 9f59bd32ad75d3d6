"""The inspection log: the interface the station codes against (`InspectionLog`, typed rows) and its SQLite implementation.

    from app.store import InspectionStore          # the embedded SQLite log of a data folder
    with InspectionStore(path) as log:             # InspectionStore(path, read_only=True): never migrated or written
        log.gallery_page(GalleryFilter(verdict="FAIL"))
        with log.write() as tx:                    # one transaction: the change and its audit record
            tx.append_audit(user, "settings.change", old=..., new=...)
"""

from app.store.base import InspectionLog, LogReader, LogTransaction
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
    RegionRecord,
    RegionRow,
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
from app.store.schema import MIGRATIONS, SCHEMA_VERSION, guard_triggers
from app.store.sqlite import ORPHAN_MIN_AGE_S, InspectionStore, SqliteTransaction, connect

__all__ = [
    "GALLERY_SORTS", "MIGRATIONS", "ORPHAN_MIN_AGE_S", "SCHEMA_VERSION", "AuditRecord", "ClassStats", "DetectionRow",
    "GalleryFilter", "GalleryItem", "InspectionLog", "InspectionRecord", "InspectionRow", "InspectionStore", "LogReader",
    "LogTransaction", "QaReview", "RegionRecord", "RegionRow", "ReportInspection", "ReportListRow", "ReviewBoxRow", "ReviewRow",
    "ShownScore", "SqliteTransaction", "StoreError", "StoredInspection", "UserRow", "connect", "guard_triggers", "iso_utc",
]
