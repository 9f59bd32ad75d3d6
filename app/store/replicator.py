"""Store-and-forward to the plant database: a station's own log, shipped in order, resuming after any outage or crash.

    replicator = Replicator(station.store, "postgresql://line3@db.plant/inspections", "line-3",
                            password=password_from(file="/etc/inspection/plant.pw"), picture_store="/mnt/plant-pictures")
    replicator.start()
    ...                       # after each logged inspection:
    replicator.notify()       # never blocks: the station never waits for the plant
    replicator.status()       # OutputStatus("plant", rows behind, age of the oldest, connected, last error, shipped)
    replicator.stop(drain=True, timeout=10)

The station's SQLite log is the outbox, as for the result outputs (app.outputs.worker): a thread
reads it in id order after a cursor per table (`plant:audit`, `plant:inspections`, ... in the
log's output_cursors), ships the rows in one PostgreSQL transaction (app.store.postgres.ingest:
audit records, inspections with their detections and regions, QA reviews and box corrections,
recipe versions, and the users when they changed), and moves the cursors only after the plant
committed. A crash between the two sends the batch again; the plant keys every row (uid for
inspections, origin and id for the rest) and skips what it has, so each row arrives exactly once,
in order. While the plant database is unreachable nothing is lost: the rows wait in the log, the
backlog grows (status), and shipping resumes by itself, with back-off, when it comes back.

Pictures follow the rows on their own cursor (`plant:pictures`): each is copied into the plant
picture store atomically (temporary file, fsync, checked against the SHA-256 the station logged,
rename) and noted in the plant's `pictures` table. A store that cannot be reached holds up only
the pictures, never the rows.

The station's name at its first replication is its origin in the plant database for good (kept in
the log as `plant:origin:NAME`): renaming a station later does not start a second copy of its history.

The cursors say what the plant database had, not what it has: on every connect, before shipping, the
replicator asks the plant for the last row it holds of each table of this station (plant_station_heads)
and compares it with its own log. A plant database restored from a backup, or a new one at the same
URL, holds less: the cursors go back to what it holds and the rest is sent again. A plant database
holding a row this log does not have, or a different one under the same id (a new log under a name in
use, a log restored from an older copy), holds another history of this station: adding this log's rows
to it would merge two histories under the same ids, so nothing is sent (HistoryMismatch in `status()`)
and the rows wait in the log.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg

from app.outputs.worker import OutputStatus
from app.store.postgres import (
    SCHEMA_VERSION,
    claim_station,
    conninfo,
    ingest,
    password_from,
    picture_store_path,
    plant_id,
    record_picture,
    schema_version,
    shown_url,
    station_heads,
)
from app.store.rows import REPLICATED_TABLES, StoreError
from app.store.sqlite import InspectionStore

log = logging.getLogger(__name__)

PREFIX = "plant"  # the cursors' prefix in the log's output_cursors
NAME = "plant database"  # as the status bar and `status` name it
_CHUNK = 1 << 20


class HistoryMismatch(StoreError):
    """The plant database holds another history under this station's name than its log: nothing is shipped."""


_ROW_NAMES = {"inspections": "inspection", "audit": "audit record", "reviews": "QA review",
              "review_boxes": "box correction", "recipes": "recipe version"}


class PictureMismatch(OSError):
    """A station's picture no longer has the SHA-256 logged with it: it is not copied."""


def copy_picture(source: Path, store: Path, relative: str, sha256: str | None) -> tuple[str, str, int]:
    """Copy a station's picture into the plant picture store atomically; returns (store path, SHA-256, bytes).

    A copy already there with the right checksum is kept. The bytes are checked against `sha256` (the
    station's) before the rename: a picture changed since it was logged is refused (PictureMismatch).
    """
    rel = picture_store_path(relative)
    dest = store / rel
    if dest.is_file():
        digest, size = _sha256(dest)
        if sha256 is None or digest == sha256:
            return rel.as_posix(), digest, size
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    h, size = hashlib.sha256(), 0
    try:
        with open(source, "rb") as src, open(temp, "wb") as out:
            while chunk := src.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if sha256 is not None and h.hexdigest() != sha256:
            raise PictureMismatch(f"{source} does not match the SHA-256 logged with it: changed after it was saved")
        os.replace(temp, dest)
    finally:
        temp.unlink(missing_ok=True)
    return rel.as_posix(), h.hexdigest(), size


def _sha256(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _age_s(created_at: str | None) -> float | None:
    if not created_at:
        return None
    then = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    return max(0.0, (datetime.now(timezone.utc) - then).total_seconds())


class Replicator:
    """Ships a station's log to the plant database from its own thread (module docstring).

    `log`: the station's open InspectionStore. `url`: postgresql://LOGIN@HOST[:PORT]/DB[?sslmode=...] (no
    password: `password`, e.g. from app.store.postgres.password_from). `station`: the station's name.
    `picture_store`: the plant picture folder (None: pictures stay on the station). `warn_after_s`: a backlog
    older than this makes `warning()` say so (None: never). ValueError for a URL it cannot use.
    """

    name = NAME

    def __init__(self, log: InspectionStore, url: str, station: str, *, password: str | None = None,
                 picture_store: str | Path | None = None, batch: int = 500, poll_s: float = 1.0, retry_min_s: float = 0.5,
                 retry_max_s: float = 30.0, connect_timeout: float = 5.0, warn_after_s: float | None = None,
                 save_every_s: float = 0.5):
        if not str(station).strip():
            raise ValueError("the station needs a name to replicate to the plant database")
        self.log = log
        self.url = shown_url(url)
        self._info = conninfo(url, password, connect_timeout=max(1, int(connect_timeout)),
                              application_name=f"inspection station {station}"[:63])
        self.station = str(station).strip()
        self.picture_store = Path(picture_store) if picture_store else None
        self.batch, self.poll_s = max(1, int(batch)), float(poll_s)
        self.retry_min_s, self.retry_max_s = float(retry_min_s), float(retry_max_s)
        self.warn_after_s = warn_after_s
        # The cursors are saved at most this often while busy (each save is a synchronous commit beside the
        # inspections' own), and at once when the plant has caught up or the replicator stops: a crash resends
        # at most this much, which the plant skips.
        self.save_every_s = float(save_every_s)
        self._saved: dict[str, int] = {}
        self._last_save = 0.0
        self.origin = self.station
        self.no: int | None = None
        self.shipped = 0  # inspections the plant committed since start
        self.last_error: str | None = None
        self.picture_error: str | None = None
        self._conn: psycopg.Connection | None = None
        self._cursors: dict[str, int] = {}
        self._users_sent: tuple | None = None
        self._new = threading.Event()
        self._draining = threading.Event()
        self._halt = threading.Event()
        self._drained = False
        self._pictures_due = 0.0
        self._thread: threading.Thread | None = None

    # -- what the station calls ---------------------------------------------------------------

    def start(self) -> Replicator:
        """Read the cursors (a station replicating for the first time starts at its first row) and start the thread."""
        saved = self.log.replication_cursors(PREFIX)
        origins = [k[len("origin:"):] for k in saved if k.startswith("origin:")]
        if origins:
            self.origin = origins[0]
            if self.origin != self.station:
                log.info("plant database: this station replicates as %r (its name when it first did), now named %r",
                         self.origin, self.station)
        self._cursors = {k: saved[k] for k in (*REPLICATED_TABLES, "pictures")}
        self._save_cursors(force=True)  # the backlog counts from here on
        self._thread = threading.Thread(target=self._run, name="plant replicator", daemon=True)
        self._thread.start()
        return self

    def notify(self) -> None:
        """An inspection was just logged: ship it now rather than at the next poll. Never blocks."""
        self._new.set()

    @property
    def connected(self) -> bool | None:
        return None if self.no is None and self.last_error is None else self._conn is not None

    def status(self) -> OutputStatus:
        """Inspections not yet in the plant database, the age of the oldest of them, connection, last error, shipped."""
        rows, oldest = self.log.output_backlog(f"{PREFIX}:inspections")  # as saved: up to `save_every_s` behind
        error = self.last_error or (f"pictures: {self.picture_error}" if self.picture_error else None)
        return OutputStatus(NAME, rows, _age_s(oldest) if rows else None, self.connected, error, self.shipped)

    def warning(self) -> str | None:
        """A line for the status bar when the backlog is older than `warn_after_s` (None: all is well)."""
        s = self.status()
        if self.warn_after_s is None or s.oldest_age_s is None or s.oldest_age_s < self.warn_after_s:
            return None
        why = f": {s.last_error}" if s.last_error else ""
        return (f"plant database {self.url}: {s.backlog_rows} inspections not replicated, the oldest for"
                f" {s.oldest_age_s / 60:.0f} min{why}")

    def stop(self, drain: bool = True, timeout: float = 10.0) -> bool:
        """Stop shipping; True if everything logged reached the plant (pictures included, where there is a store).

        `drain`: first wait (at most `timeout` s) until the plant has caught up with the log. What is left
        waits in the log and goes after the next start.
        """
        deadline = time.monotonic() + max(0.0, float(timeout))
        if self._thread is None:
            return False
        if drain:
            self._draining.set()
            self._new.set()
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self._halt.set()
        self._new.set()
        conn = self._conn
        if conn is not None and self._thread.is_alive():
            try:
                conn.cancel_safe(timeout=2.0)  # a statement in flight ends now; its transaction is rolled back
            except (psycopg.Error, OSError):
                pass
        self._thread.join(max(1.0, deadline - time.monotonic()))
        self._close()
        return self._drained

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._halt.is_set():
            try:
                if self._conn is None:
                    self._open()
                self._new.clear()  # before reading: an inspection logged after this wakes the wait below
                moved = self._ship_rows()
                moved += self._ship_pictures()
                if failures:
                    log.info("plant database %s: replicating again", self.url)
                failures, self.last_error = 0, None
                self._save_cursors(force=not moved)
                if moved:
                    continue
                if self._draining.is_set() and self._caught_up():
                    self._drained = True
                    return
                self._new.wait(self.poll_s)
            except (psycopg.Error, StoreError, OSError) as exc:
                failures += 1
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if message != self.last_error:
                    log.warning("plant database %s: %s (the rows wait in the station's log)", self.url, message)
                self.last_error = message
                self._close()
                self._halt.wait(min(self.retry_max_s, self.retry_min_s * 2 ** min(failures - 1, 30)))
        self._close()
        try:
            self._save_cursors(force=True)
        except (StoreError, OSError) as exc:
            log.error("plant database: could not save how far the station has replicated (it resends from there): %s", exc)

    def _save_cursors(self, force: bool = False) -> None:
        """Save the cursors in the station's log if they moved (at most every `save_every_s`, unless `force`)."""
        moved = {k: v for k, v in self._cursors.items() if self._saved.get(k) != v}
        if moved and (force or time.monotonic() - self._last_save >= self.save_every_s):
            self.log.advance_cursors(PREFIX, moved)
            self._saved.update(moved)
            self._last_save = time.monotonic()

    def _open(self) -> None:
        conn = psycopg.connect(self._info, autocommit=True)
        try:
            version = schema_version(conn)
            if version != SCHEMA_VERSION:
                raise StoreError(f"the plant database has schema {version}, this station needs {SCHEMA_VERSION}"
                                 " (its owner migrates it by opening it in plant mode)")
            self.no = claim_station(conn, self.origin)
            self._hold_to_plant(station_heads(conn, self.no))
        except BaseException:
            conn.close()
            raise
        self.log.advance_cursors(PREFIX, {f"origin:{self.origin}": self.no})
        self._conn = conn

    def _hold_to_plant(self, heads: dict[str, tuple[int, str]]) -> None:
        """Set the cursors to what the plant holds of this station (`heads`: station_heads), after checking that
        what it holds is this log's (module docstring). HistoryMismatch, with the cursors unchanged, if not."""
        cursors = dict(self._cursors)
        for table in sorted(REPLICATED_TABLES, key=lambda t: t != "inspections"):
            held, mark = heads.get(table, (0, ""))
            if held:
                mine = self.log.history_mark(table, held)
                if mine != mark:
                    raise HistoryMismatch(
                        f"the plant database holds another history under the station name {self.origin!r}: its"
                        f" {_ROW_NAMES[table]} #{held} {'is not in' if mine is None else 'differs from the one in'} this"
                        " station's log (a new log under a name in use, or a log restored from an older copy). Nothing"
                        " is sent; the rows wait in the log. A new station needs a name of its own (docs/plant.md)")
            cursors[table] = held
        if cursors["inspections"] < self._cursors["inspections"]:  # rows lost at the plant: their pictures' notes too
            cursors["pictures"] = min(cursors["pictures"], heads.get("pictures", (0, ""))[0])
        cursors["pictures"] = min(cursors["pictures"], cursors["inspections"])
        behind = {t: (self._cursors[t], c) for t, c in cursors.items() if c < self._cursors[t]}
        if behind:
            self._users_sent = None  # the users as last sent may be lost with the rest: send them again
            log.warning("plant database %s holds less of this station than it was sent (restored from a backup, or a"
                        " new database): sending again from %s", self.url,
                        ", ".join(f"{t} #{c} (had #{was})" for t, (was, c) in behind.items()))
        if cursors != self._cursors:
            self.log.reset_cursors(PREFIX, cursors)
            self._cursors = cursors
            self._saved.update(cursors)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except (psycopg.Error, OSError):
                pass

    def _ship_rows(self) -> int:
        """One batch: read from the log, commit at the plant, then move the cursors. Returns the rows shipped."""
        batch = self.log.replication_batch(self._cursors, self.batch)
        users_key = None
        if batch.users is not None:
            users_key = tuple((u.id, u.name, u.role, bool(u.active)) for u in batch.users)
            if users_key == self._users_sent:
                batch.users = None
        if not batch.rows() and batch.users is None:
            return 0
        with self._conn.transaction():
            ingest(self._conn, self.no, self.origin, batch)
        # Only now, after the plant's commit: a crash before the cursors are saved resends rows the plant then skips.
        self._cursors.update(batch.last_ids())
        if users_key is not None:
            self._users_sent = users_key
        self.shipped += len(batch.inspections)
        return batch.rows() + (batch.users is not None)

    def _ship_pictures(self) -> int:
        """Copy the pictures of shipped inspections into the store; a store out of reach holds up only the pictures."""
        after, upto = self._cursors["pictures"], self._cursors["inspections"]
        if after >= upto or time.monotonic() < self._pictures_due:
            return 0
        if self.picture_store is None:
            self._cursors["pictures"] = upto
            return 0
        rows = [r for r in self.log.logged_after(after, min(self.batch, 50)) if r["id"] <= upto]
        copied: list[tuple[Any, ...]] = []
        last = after
        try:
            for row in rows:
                for kind, column, digest in (("image", "image_path", "image_sha256"),
                                             ("annotated", "annotated_path", "annotated_sha256")):
                    source = self.log.resolve(row.get(column))
                    if source is None:
                        continue
                    if not source.is_file():
                        log.warning("inspection #%s: its %s %s is gone from the station; not copied", row["id"], kind, source)
                        continue
                    try:
                        path, sha, size = copy_picture(source, self.picture_store, row[column], row.get(digest))
                    except PictureMismatch as exc:
                        log.error("inspection #%s: %s", row["id"], exc)
                        continue
                    copied.append((plant_id(self.no, row["id"]), kind, path, sha, size))
                last = row["id"]
        except OSError as exc:
            self.picture_error = f"cannot copy to the picture store {self.picture_store}: {exc.strerror or exc}"
            self._pictures_due = time.monotonic() + self.retry_max_s / 2
            log.warning("plant database: %s", self.picture_error)
        else:
            self.picture_error = None
        if last == after:
            return 0
        with self._conn.transaction():
            for args in copied:
                record_picture(self._conn, *args)
        self._cursors["pictures"] = last
        return len(copied) or 1

    def _caught_up(self) -> bool:
        rows, _ = self.log.output_backlog(f"{PREFIX}:inspections")
        return rows == 0 and (self.picture_store is None or self._cursors["pictures"] >= self._cursors["inspections"])


def replicator_from_settings(log: InspectionStore, settings: Any) -> Replicator | None:
    """The station's replicator as its settings configure it (app.settings: plant_db_*), not started; None when no
    plant database is set. ValueError naming the setting that is wrong (password file, variable, URL)."""
    url = getattr(settings, "plant_db_url", "")
    if not url:
        return None
    password = password_from(file=settings.plant_db_password_file or None, env=settings.plant_db_password_env or None)
    warn = settings.plant_backlog_warn_minutes * 60 if settings.plant_backlog_warn_minutes > 0 else None
    return Replicator(log, url, settings.station_name, password=password, picture_store=settings.plant_picture_store or None,
                      warn_after_s=warn)
