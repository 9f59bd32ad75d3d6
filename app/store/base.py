"""The inspection log as the rest of the station sees it: a repository interface with typed rows.

The gallery, QA reviews, users, the audit trail, reports, result outputs and
recipes use these methods, never SQL and never a connection of their own.
`InspectionStore` (app.store.sqlite) is the embedded SQLite log every station
writes first; a plant-wide PostgreSQL log implements the same protocols.

What an implementation keeps to itself: its SQL dialect, schema migrations,
how it protects history (SQLite: triggers; a server: grants and triggers) and
how it locks. What every implementation keeps the same:
- Rows come back typed (app.store.rows); times are the log's ISO 8601 UTC text.
- History is append-only: inspections, detections, regions, QA reviews, review
  boxes, recipe versions and audit records are inserted, never changed.
- Two hash chains (app.audit): audit records and inspections each carry
  `prev_hash` and `hash`. A log that makes the rows hashes them with
  app.audit's functions, in id order, under one write lock; `audit_chain()` and
  `inspection_chain()` give them back exactly as hashed, so `app.audit.verify`
  checks any implementation. Rows replicated from a station arrive hashed
  already and are keyed by their uid.
- Everything a change needs (the acting user's current record, the state it
  changes, the audit record) happens in one `write()` transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from app.store.rows import (
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
    UserRow,
)


class LogReader(Protocol):
    """Reads answered both by the log and, under its write lock, by a transaction."""

    def inspection(self, inspection_id: int) -> InspectionRow | None:
        """One inspection with its detections (best first) and regions."""

    def inspection_id_by_uid(self, uid: str) -> int | None:
        """The id of the inspection with this uid (results are known to the line and outputs by uid)."""

    def detection(self, inspection_id: int, detection_id: int) -> DetectionRow | None:
        """A detection of that inspection (None if it has no such detection)."""

    def current_review(self, inspection_id: int) -> ReviewRow | None:
        """QA's current word on the inspection (its latest review), None if never reviewed."""

    def review_boxes(self, inspection_id: int | None = None) -> list[ReviewBoxRow]:
        """QA's box corrections (of one inspection, or all), oldest first."""

    def audit_records(self, *, action: str | None = None, inspection_id: int | None = None,
                      newest_first: bool = False) -> list[AuditRecord]:
        """Audit records, all or of one action and/or inspection, in id order (or newest first)."""

    def audit_has(self, action: str) -> bool:
        """Whether any audit record of this action exists."""

    def user(self, name: str) -> UserRow | None:
        """The user of that name, case-insensitively, active or not."""

    def any_user(self, active_only: bool = False) -> bool:
        """Whether the users table has any user (any active one)."""

    def active_admins(self) -> int: ...

    def recipe_versions(self, name: str | None = None) -> list[dict[str, Any]]:
        """Saved recipe versions (all, or one recipe's), oldest first."""

    def current_recipes(self) -> list[dict[str, Any]]:
        """The newest version of each recipe that is not deleted, by name."""


class LogTransaction(LogReader, Protocol):
    """One write transaction: all of it is committed, or none. Obtained from `InspectionLog.write()`."""

    def append_audit(self, user: str, action: str, *, inspection_id: int | None = None, old: Any = None,
                     new: Any = None, reason: str = "", at: datetime | None = None) -> int:
        """Append one record to the audit chain (old/new as JSON); returns its id."""

    def add_review(self, inspection_id: int, verdict: str, reviewer: str, at: datetime, audit_id: int) -> None: ...

    def add_review_box(self, inspection_id: int, kind: str, label: str, box: tuple[float, float, float, float],
                       audit_id: int, detection_id: int | None = None) -> None: ...

    def add_user(self, name: str, role: str, secret_hash: str, created_at: datetime) -> None:
        """ValueError if a user of that name (case-insensitively) exists."""

    def set_user_role(self, name: str, role: str) -> None: ...

    def set_user_active(self, name: str, active: bool) -> None: ...

    def set_user_secret(self, name: str, secret_hash: str) -> None:
        """A new PIN hash; also clears the failed attempts and any sign-in lock."""

    def count_failed_sign_in(self, name: str) -> int:
        """One more wrong PIN; returns the wrong PINs since the last good one."""

    def lock_user(self, name: str, until: datetime) -> None:
        """Refuse sign-in until `until`; the count of wrong PINs starts again."""

    def save_recipe_version(self, *, name: str, external_id: str, definition_json: str, deleted: bool, user: str,
                            audit_action: str, old: Any, new: Any, reason: str) -> int:
        """Append the audit record and the next version of recipe `name`; returns the version number."""


class InspectionLog(LogReader, Protocol):
    """The inspection log of one station (or, in plant mode, of all of them)."""

    read_only: bool
    schema_version: int

    def close(self) -> None: ...

    def __enter__(self) -> InspectionLog: ...

    def __exit__(self, *exc: object) -> None: ...

    def write(self) -> AbstractContextManager[LogTransaction]:
        """A write transaction (StoreError on a log opened read-only)."""

    # -- the station's results ---------------------------------------------------------------

    def record(self, rec: InspectionRecord, frame: Any = None, annotated: Any = None) -> StoredInspection:
        """Save the pictures, then log the inspection (hashed into the chain); returns its id."""

    def count(self) -> int: ...

    def get(self, inspection_id: int) -> dict[str, Any] | None:
        """One inspection as a dict of its stored columns, "detections" (best first) and "regions" (in order)."""

    def resolve(self, relative: str | None) -> Path | None:
        """The picture file a row's image_path/annotated_path names here."""

    # -- QA gallery ----------------------------------------------------------------------------

    def gallery_page(self, flt: GalleryFilter, sort: str = "newest", page: int = 0,
                     page_size: int = 48) -> list[GalleryItem]:
        """One page of the inspections matching `flt` (ValueError for a sort not in GALLERY_SORTS)."""

    def gallery_count(self, flt: GalleryFilter) -> int: ...

    def gallery_ids(self, flt: GalleryFilter) -> list[int]:
        """Ids of every inspection matching `flt`, oldest id first."""

    def operators(self) -> list[str]:
        """Operators named in the log, sorted (for filter choices)."""

    def labels(self) -> list[str]:
        """Classes detected in the log, sorted."""

    # -- what `audit verify` walks and cross-checks ---------------------------------------------------

    def audit_chain(self) -> Iterator[dict[str, Any]]:
        """Every audit record in id order, as hashed (app.audit.FIELDS and "hash")."""

    def inspection_chain(self) -> Iterator[dict[str, Any]]:
        """Every inspection in id order, as hashed: its fields, "hash", "detections" and "regions" in id order."""

    def reviews(self) -> list[ReviewRow]:
        """Every QA review row, in id order."""

    def current_reviews(self) -> list[ReviewRow]:
        """QA's current word on each reviewed inspection, as reports and the gallery read it."""

    def users(self) -> list[UserRow]:
        """Every user, in the order they were added."""

    def missing_guards(self) -> list[str]:
        """Protections of the append-only history found missing (names), sorted."""

    # -- supervisor reports: rows of inspections created in [lo, hi) (log time text) ---------------------

    # `station`: only that station's inspections (a plant log holds many stations; None: all).

    def report_inspections(self, lo: str, hi: str, station: str | None = None) -> list[ReportInspection]:
        """Oldest first."""

    def report_list(self, lo: str, hi: str, station: str | None = None) -> list[ReportListRow]:
        """Oldest first."""

    def report_class_stats(self, lo: str, hi: str, station: str | None = None) -> ClassStats: ...

    def report_scores(self, lo: str, hi: str, station: str | None = None) -> list[ShownScore]:
        """Scores of the shown detections."""

    def report_reviews(self, lo: str, hi: str, station: str | None = None) -> list[QaReview]:
        """QA's current word on the reviewed ones (none in a log from before QA review)."""

    # -- result outputs: the log itself is the outbox ------------------------------------------

    def logged_after(self, after_id: int, limit: int = 100) -> list[dict[str, Any]]: ...

    def output_cursor(self, sink: str) -> int | None: ...

    def start_output(self, sink: str) -> int: ...

    def mark_delivered(self, sink: str, delivered_id: int) -> None: ...

    def output_backlog(self, sink: str) -> tuple[int, str | None]: ...


class GroupedReports(Protocol):
    """A log that counts report days itself (the plant database: a month of 50 stations is millions of rows).

    `app.reports` uses it when the log has it and the report's time zone has a name the database knows;
    the counts equal what app.reports counts from the report_* rows.
    """

    def report_groups(self, lo: str, hi: str, zone: str, shifts: tuple[tuple[str, int], ...],
                      station: str | None = None) -> tuple[list[ReportGroup], list[ReportDefects], set[str]]:
        """Per (report day, station, shift) of the inspections created in [lo, hi): the counts, and the failing
        defects per class (groups with some); and every class detected in the range. `zone`: an IANA name or a
        fixed offset "+05:45"; `shifts`: (name, start minute) sorted by start, empty for calendar days."""

    def report_score_counts(self, lo: str, hi: str, station: str | None = None) -> list[tuple[str, float, int]]:
        """The shown detections' scores in [lo, hi), binned: (class, the bin's middle, how many). Every histogram
        whose bin edges fall on the bins' edges counts as it would from the scores themselves."""


class ReplicationSource(Protocol):
    """A station's log as the plant replicator reads it (the SQLite log; the plant database has no upstream)."""

    def replication_batch(self, after: dict[str, int], limit: int) -> ReplicationBatch:
        """The rows after each table's cursor (at most `limit` per table), from one consistent snapshot."""

    def replication_cursors(self, prefix: str) -> dict[str, int]:
        """Each replicated table's cursor under `prefix` (0 where none was saved), and other keys saved there."""

    def advance_cursors(self, prefix: str, cursors: dict[str, int]) -> None:
        """Move the cursors forward (never back), all in one transaction."""
