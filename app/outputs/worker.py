"""Delivers the inspection log to the result outputs: one thread per output, in id order, at least once.

The log is the outbox: an inspection is there only once it is committed. Each
output has a cursor in the log (the last id it acknowledged). Its thread reads
what lies after the cursor, delivers one result at a time, and moves the cursor;
a result that fails is tried again, with back-off, until it is acknowledged, so
the ones after it wait and order is kept. After a crash or a restart delivery
resumes from the cursor: results since the last saved cursor position may come
again (the uid is the receiver's idempotency key), none is lost.

Inspections never wait for outputs: `notify()` only sets a flag. The cursor is
saved at most every `save_every_s` while busy (each save is a synchronous
commit that would otherwise compete with the inspections' own) and at once when
an output catches up or stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from app.outputs import DeliveryError, Output, StateOutput
from app.outputs.payload import result_payload
from app.store import InspectionLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputStatus:
    name: str
    backlog_rows: int  # logged inspections not yet acknowledged by this output
    oldest_age_s: float | None  # age of the oldest of them (None: no backlog)
    connected: bool | None  # receiver reachable (None: not tried yet)
    last_error: str | None  # why the last try failed (None once a result went through)
    delivered: int = 0  # results acknowledged since this worker started


class _Lane:
    """One output and its thread's state."""

    def __init__(self, output: Output):
        self.output = output
        self.new = threading.Event()  # an inspection was logged
        self.ready = threading.Event()  # the output can deliver again (e.g. reconnected)
        self.thread: threading.Thread | None = None
        self.start = 0  # its cursor when the worker started
        self.last_error: str | None = None
        self.delivered = 0
        self.drained = False


class OutputWorker:
    """Delivers every logged inspection to each output; starts its threads at once.

    `outputs`: from `open_output`, each with a distinct name. A new output starts at
    the newest logged inspection; one seen before resumes from its cursor.
    """

    def __init__(self, store: InspectionLog, outputs: Iterable[Output], station_name: str, *, poll_s: float = 1.0,
                 retry_min_s: float = 0.2, retry_max_s: float = 30.0, save_every_s: float = 0.2, batch: int = 100):
        self.store = store
        self.station = station_name
        self.poll_s, self.retry_min_s, self.retry_max_s = float(poll_s), float(retry_min_s), float(retry_max_s)
        self.save_every_s, self.batch = float(save_every_s), int(batch)
        self._lanes = [_Lane(o) for o in outputs]
        names = [lane.output.name for lane in self._lanes]
        if len(set(names)) != len(names):
            raise ValueError(f"result outputs must differ: {', '.join(sorted({n for n in names if names.count(n) > 1}))} given twice")
        self._draining = threading.Event()
        self._halt = threading.Event()
        opened: list[Output] = []
        try:
            for lane in self._lanes:
                lane.output.open(station_name, lane.ready.set)
                opened.append(lane.output)
        except BaseException:
            for output in opened:
                output.close()
            raise
        for lane in self._lanes:
            # Here, not in the thread: a new output's history starts now, not when its thread first runs.
            cursor = store.output_cursor(lane.output.name)
            lane.start = cursor if cursor is not None else store.start_output(lane.output.name)
            lane.thread = threading.Thread(target=self._run, args=(lane,), name=f"output {lane.output.name}", daemon=True)
            lane.thread.start()

    # -- what the station calls --------------------------------------------------------------

    def notify(self) -> None:
        """An inspection was just logged: deliver it now rather than at the next poll. Never blocks."""
        for lane in self._lanes:
            lane.new.set()

    def set_state(self, state: str) -> None:
        """Forward the station's state (ready, busy, error, disconnected ...) to the outputs that publish it."""
        if not isinstance(state, str) or not state.strip():
            raise ValueError(f"station state must be a non-empty string, got {state!r}")
        for lane in self._lanes:
            if isinstance(lane.output, StateOutput):
                lane.output.set_state(state)

    def status(self) -> list[OutputStatus]:
        """Each output's backlog, the age of its oldest undelivered result, connection and last error."""
        now = datetime.now(timezone.utc)
        out = []
        for lane in self._lanes:
            rows, oldest = self.store.output_backlog(lane.output.name)
            age = None
            if rows and oldest:
                age = max(0.0, (now - datetime.fromisoformat(oldest.replace("Z", "+00:00"))).total_seconds())
            out.append(OutputStatus(lane.output.name, rows, age, lane.output.connected, lane.last_error, lane.delivered))
        return out

    def stop(self, drain: bool = True, timeout: float = 10.0) -> bool:
        """Stop delivering and close the outputs; True if every logged inspection was delivered.

        `drain`: first wait (at most `timeout` seconds) until each output has caught up
        with the log; inspections logged meanwhile are delivered too. Whatever is left
        stays in the log and goes out after the next start.
        """
        deadline = time.monotonic() + max(0.0, float(timeout))
        if drain:
            self._draining.set()
            self.notify()
            for lane in self._lanes:
                lane.thread.join(max(0.0, deadline - time.monotonic()))
        self._halt.set()
        for lane in self._lanes:
            lane.new.set()
            lane.ready.set()
            lane.output.close()  # interrupts a delivery in progress
        for lane in self._lanes:
            lane.thread.join(max(1.0, deadline - time.monotonic()))
        return all(lane.drained for lane in self._lanes)

    # -- one thread per output -------------------------------------------------------------------

    def _run(self, lane: _Lane) -> None:
        name = lane.output.name
        cursor = saved = lane.start
        failures = 0
        while not self._halt.is_set():
            try:
                lane.new.clear()  # before reading: an inspection logged after this wakes the wait below
                rows = self.store.logged_after(cursor, self.batch)
                if not rows:
                    if saved != cursor:
                        self.store.mark_delivered(name, cursor)
                        saved = cursor
                    if self._draining.is_set():
                        lane.drained = True
                        return
                    lane.new.wait(self.poll_s)
                    continue
                last_save = time.monotonic()
                for row in rows:
                    if not self._deliver(lane, row):
                        break
                    cursor = row["id"]
                    if time.monotonic() - last_save >= self.save_every_s:
                        self.store.mark_delivered(name, cursor)
                        saved, last_save = cursor, time.monotonic()
                failures = 0
            except Exception as exc:  # the log itself failed (disk, lock): keep trying, never die quietly
                failures += 1
                lane.last_error = f"reading the inspection log: {exc}"
                if failures == 1:
                    log.exception("output %s: %s", name, lane.last_error)
                self._halt.wait(self._backoff(failures))
        if saved != cursor:
            try:
                self.store.mark_delivered(name, cursor)
            except Exception:
                log.exception("output %s: could not save its position in the log (it resends from %s)", name, saved)

    def _deliver(self, lane: _Lane, row: dict) -> bool:
        """Deliver one result, trying again until it is acknowledged; False if the worker stops first."""
        payload = result_payload(row)
        failures = 0
        while not self._halt.is_set():
            lane.ready.clear()
            try:
                lane.output.deliver(payload)
            except Exception as exc:
                failures += 1
                message = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
                if message != lane.last_error:
                    level = logging.ERROR if getattr(exc, "refused", False) or not isinstance(exc, DeliveryError) else logging.WARNING
                    log.log(level, "output %s: inspection %s not delivered: %s", lane.output.name, row["uid"], message)
                lane.last_error = message
                wait = self._backoff(failures)
                retry_after = getattr(exc, "retry_after", None)
                if retry_after is not None:
                    wait = min(self.retry_max_s, max(wait, retry_after))
                lane.ready.wait(wait)  # cut short when the output says it can deliver again, or on stop
                continue
            if failures:
                log.info("output %s: delivering again after %d failed tries", lane.output.name, failures)
            lane.last_error = None
            lane.delivered += 1
            return True
        return False

    def _backoff(self, failures: int) -> float:
        return min(self.retry_max_s, self.retry_min_s * 2 ** min(failures - 1, 30))
