"""The station itself, without a window: one place decides when an inspection runs and what state it is in.

A `Station` built from the settings owns the frame source and its live feed,
the models, the inspection log, the recipes and the active recipe, the
triggers (operator, continuous, line) and the result outputs. It tells
observers what happens through small typed events (a new frame, an
inspection started or done, the state, the recipe, the source); observers are
called on the station's own threads and must hand the event over to theirs
(the window queues them to the Qt thread). The window (`app.ui`), the service
(`python -m app serve`) and the line integrations are all views of it.

One inspection runs at a time, on the station's worker thread: a trigger that
arrives while it is busy is refused (returns False), never queued, so a
verdict always belongs to the frame taken when its trigger was accepted.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from app.inspection import InspectionResult, Inspector
from app.line.opcua.trust import ClientCertificate, ClientTrustList, change_trust, opcua_folder
from app.paths import default_config_path
from app.recipes import Recipe, RecipeBook
from app.settings import StationSettings, save_settings
from app.settings_audit import check_outside_changes, record_written
from app.sources import (
    ENDED,
    FAILED,
    NOT_FOUND,
    RECONNECTING,
    FeedFrame,
    FrameSource,
    ImageFilesSource,
    LiveFeed,
    SourceError,
    open_source,
)
from app.store import InspectionStore, StoreError, iso_utc
from app.users import PermissionDenied, User, UserDirectory
from detector import Detector
from detector.files import atomic_write_bytes

log = logging.getLogger("station")

TRIGGERS = ("operator", "continuous", "line")
STATUS_REFRESH_S = 5.0
REFUSED_CLIENT_SHOWN_S = 600.0  # how long the screen says an OPC UA client was refused for its certificate
# The settings the plant replicator is made from: changing any restarts it (Station.apply_settings). The station
# name too: a new station PC whose log the plant refuses under the old PC's name (app.store.replicator.HistoryMismatch)
# replicates as soon as an admin gives it a name of its own.
PLANT_SETTINGS = ("plant_db_url", "plant_db_password_file", "plant_db_password_env", "plant_picture_store",
                  "plant_backlog_warn_minutes", "station_name")


class State(str, Enum):
    STARTING = "starting"
    READY = "ready"  # model, log and source ready: a trigger will be inspected
    BUSY = "busy"  # an inspection is running
    ERROR = "error"  # no model or no log: nothing can be inspected or logged
    DISCONNECTED = "disconnected"  # the source is lost (reconnecting), never opened, or failed
    STOPPED = "stopped"


@dataclass(frozen=True)
class Job:
    """One inspection asked for: who or what triggered it and what it carried."""

    trigger: str = "operator"  # operator, continuous or line
    job_id: str = ""  # the id the trigger carried (a PLC's job id), logged with the result
    part_id: str = ""
    operator: str = ""  # who is logged; the station fills in the signed-in user where there is one
    recipe: str | None = None  # the line may name the recipe with the job (name or external id)
    frame: FeedFrame | None = None  # the frame to inspect (the one on the operator's screen); None: the newest


# -- events ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StateChanged:
    state: State
    detail: str = ""


@dataclass(frozen=True)
class FrameArrived:
    frame: FeedFrame


@dataclass(frozen=True)
class InspectionStarted:
    job: Job
    frame: FeedFrame


@dataclass(frozen=True)
class InspectionDone:
    """Judged; `result.inspection_id` is None and `result.error` says why when the log could not be written."""

    job: Job
    frame: FeedFrame
    result: InspectionResult


@dataclass(frozen=True)
class InspectionFailed:
    """Not judged (a frame the model cannot take, a region outside the frame, a recipe whose thresholds were
    set for another model): nothing logged."""

    job: Job
    message: str


@dataclass(frozen=True)
class RecipeChanged:
    recipe: Recipe
    by: str = ""


@dataclass(frozen=True)
class SourceChanged:
    source: FrameSource


@dataclass(frozen=True)
class SourceEnded:
    """A finite source has no more frames (a folder inspected to its end, a recording played out)."""

    reason: str


@dataclass(frozen=True)
class ContinuousChanged:
    on: bool
    reason: str = ""


@dataclass(frozen=True)
class EngineeringChanged:
    """An admin started or finished editing settings or recipes (the line sees the station in engineering)."""

    on: bool
    by: str = ""


Event = (StateChanged | FrameArrived | InspectionStarted | InspectionDone | InspectionFailed | RecipeChanged
         | SourceChanged | SourceEnded | ContinuousChanged | EngineeringChanged)
Observer = Callable[[Event], None]


@dataclass(frozen=True)
class StationStatus:
    state: State
    detail: str
    recipe: str
    recipe_version: int
    source: str
    continuous: bool
    outputs: list  # app.outputs OutputStatus, one per output


class StationError(RuntimeError):
    """The station cannot do what was asked (message says why, for the user)."""


class Station:
    """See the module docstring. Build, `subscribe()`, `start()`; `stop()` at the end."""

    def __init__(self, settings: StationSettings, *, config_path: Path | None = None, overrides: dict | None = None,
                 db_path: Path | None = None, recipe: str | None = None, detector: Detector | None = None,
                 sinks: Sequence[str] = (), lossless: bool = False, loop_video: bool = True,
                 status_interval: float = 0.05):
        """`settings`: as read from the file (what is saved back); `overrides`: this run's command-line
        values (source, model_path, data_dir), never saved; `db_path`: a log to use instead of the data
        folder's; `recipe`: select this recipe at start; `detector`: a loaded model to use for the
        default model path (tests, benchmarks); `sinks`: result output URLs besides the settings';
        `lossless`/`loop_video`: how recordings are read (see LiveFeed)."""
        self._base = settings
        self._overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        self._db_override = Path(db_path) if db_path else None
        self.config_path = Path(config_path) if config_path else default_config_path()
        self._start_recipe = recipe
        self._preloaded = detector
        self._sinks = list(sinks)
        self.lossless, self.loop_video = lossless, loop_video
        self.status_interval = status_interval
        self.problems: list[str] = []  # said once at start (settings edited by hand, model not loaded, ...)

        self.store: InspectionStore | None = None
        self.users: UserDirectory | None = None
        self.recipes: RecipeBook | None = None
        self.recipe: Recipe | None = None
        self.outputs = None  # app.outputs.OutputWorker when sinks are configured
        self.replicator = None  # app.store.replicator.Replicator when a plant database is configured
        self.feed: LiveFeed | None = None
        self._detectors: dict[str, Detector] = {}
        self._model_errors: dict[str, str] = {}

        self._observers: list[Observer] = []
        self._lock = threading.RLock()
        self._refused_clients: dict[str, tuple[str, float]] = {}  # OPC UA: fingerprint -> (name, when refused)
        self._wake = threading.Condition(threading.Lock())
        self._pending: Job | None = None
        self._busy = False
        self._continuous = False
        self._stopping = threading.Event()
        self._state, self._detail = State.STARTING, ""
        self._worker: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._last_frame_seq = -1
        self._last_inspected_seq = -1
        self._engineering = 0  # editors open (settings, recipes)
        self._stepped_from = -1  # continuous mode on a folder: the frame it last stepped on from

    # -- settings: the file's, plus this run's command-line overrides ---------------------------

    @property
    def settings(self) -> StationSettings:
        return replace(self._base, **self._overrides) if self._overrides else self._base

    @property
    def saved_settings(self) -> StationSettings:
        """What the settings file holds (no command-line overrides)."""
        return self._base

    @property
    def db_path(self) -> Path:
        return self._db_override or self.settings.db_path

    @property
    def status_path(self) -> Path:
        """Where the running station writes its state for `python -m app status`."""
        return status_file(self.db_path)

    @property
    def opcua_folder(self) -> Path:
        """Where the OPC UA server keeps its certificate and the trust list of client applications."""
        return opcua_folder(self.db_path)

    def opcua_clients(self) -> list[ClientCertificate]:
        """The OPC UA client certificates the station trusts, then those it refused (app.line.opcua.trust)."""
        return ClientTrustList(self.opcua_folder).certificates()

    def set_opcua_client_trusted(self, digest: str, trusted: bool, by: User) -> ClientCertificate:
        """An admin trusts (or stops trusting) the OPC UA client certificate with SHA-256 `digest`: effective at the
        client's next sign-in, and audited (app.line.opcua.trust.change_trust). KeyError if unknown."""
        self.require(by, "settings")
        if self.store is None:
            raise StationError("the inspection log is unavailable: a trust change could not be audited")
        entry = change_trust(ClientTrustList(self.opcua_folder), self.store, digest, trusted, by.name)
        if trusted:
            self.note_opcua_client(entry, refused=False)
        return entry

    def update_settings(self, **changes) -> None:
        """Change settings and save them; a changed field no longer follows its command-line override."""
        self._base = replace(self._base, **changes)
        for key in changes:
            self._overrides.pop(key, None)
        self.save_settings()

    def save_settings(self, by: User | None = None) -> None:
        """Write the settings file (never the command-line overrides) and note it in the audit trail."""
        try:
            path = save_settings(self._base, self.config_path)
        except OSError as exc:
            raise StationError(f"settings not saved: {exc}") from exc
        if self.store is not None:
            try:
                record_written(self.store, path, by.name if by else "station")
            except StoreError as exc:
                raise StationError(f"settings saved but not recorded in the audit trail: {exc}") from exc

    def apply_settings(self, new: StationSettings, by: User) -> None:
        """An admin's new settings: checked against the user's current record, audited, saved, applied."""
        self.require(by, "settings")
        old = self.settings
        self._audit_settings(old, new, by)
        # Fields left at their command-line value keep the file's value; changed ones are saved.
        keep = {k: getattr(self._base, k) for k, v in self._overrides.items() if getattr(new, k) == v}
        self._overrides = {k: v for k, v in self._overrides.items() if k in keep}
        self._base = replace(new, **keep)
        self.save_settings(by)
        new = self.settings
        reopen = new.data_dir != old.data_dir and self._db_override is None
        replicate_anew = reopen or any(getattr(new, k) != getattr(old, k) for k in PLANT_SETTINGS)
        outputs_anew = reopen or new.sinks != old.sinks
        # Both read the log they deliver from: stopped before it is closed, started on the new one. What they
        # had not delivered stays in the log (their cursors are in it) and goes out when it is opened again.
        if replicate_anew:
            self._stop_replication()
        if outputs_anew:
            self._stop_outputs()
        if reopen:
            self._open_store()
        if replicate_anew:
            self._start_replication()  # problems (a password file that cannot be read, ...) go to self.problems
        if outputs_anew:
            self._start_outputs()
            if self.outputs is not None:
                self.outputs.set_state(self._state.value)  # new connections: the retained state again
        if new.model_path != old.model_path:
            self._detectors.clear()
            self._model_errors.clear()
        if self.store is not None:
            self.store.min_free_bytes = int(new.min_free_mb * 1e6)
        if new.source and (new.source != old.source or new.cameras != old.cameras):
            self.open_source(new.source)  # a camera's settings are applied when it is opened
        self._update_state()

    def _audit_settings(self, old: StationSettings, new: StationSettings, by: User) -> None:
        if self.store is None:
            return
        before, after = old.to_dict(), new.to_dict()
        records = []
        if before.get("model_path") != after.get("model_path"):
            records.append(("settings.model", old.model_path, new.model_path))
        changed = sorted(k for k in after if k != "model_path" and before.get(k) != after[k])
        if changed:
            records.append(("settings.change", {k: before.get(k) for k in changed}, {k: after[k] for k in changed}))
        with self.store.write() as tx:
            for action, old_value, new_value in records:
                tx.append_audit(by.name, action, old=old_value, new=new_value)

    # -- users ----------------------------------------------------------------------------------

    def require(self, user: User, permission: str) -> User:
        """The user as the database knows them now, if they may do `permission` (PermissionDenied if not)."""
        if self.users is None:
            raise PermissionDenied("the inspection log is unavailable, and users live in it")
        return self.users.require(user, permission)

    # -- observers ------------------------------------------------------------------------------

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Call `observer(event)` for every event from now on (on the station's threads); returns an unsubscribe."""
        with self._lock:
            self._observers.append(observer)

        def unsubscribe() -> None:
            with self._lock:
                if observer in self._observers:
                    self._observers.remove(observer)
        return unsubscribe

    def _emit(self, event: Event) -> None:
        with self._lock:
            observers = list(self._observers)
        for observer in observers:
            try:
                observer(event)
            except Exception:  # noqa: BLE001  (one broken observer must not stop the station)
                log.exception("observer %r failed on %s", observer, type(event).__name__)

    # -- life cycle -----------------------------------------------------------------------------

    def start(self, open_configured_source: bool = True) -> Station:
        """Open the log and the recipes, load the model, open the source, start the outputs and the worker."""
        self._open_store()
        self._select_start_recipe()
        self._model_for(self.recipe)  # load now: a bad model file is said at start, not at the first part
        self._start_outputs()
        self._start_replication()
        if open_configured_source and self.settings.source:
            try:
                self.open_source(self.settings.source)
            except StationError as exc:
                self.problems.append(str(exc))
        self._worker = threading.Thread(target=self._work, name="station worker", daemon=True)
        self._worker.start()
        self._watcher = threading.Thread(target=self._watch, name="station watcher", daemon=True)
        self._watcher.start()
        self._update_state()
        return self

    def stop(self, drain: bool = True, timeout: float = 30.0) -> bool:
        """Finish the inspection in flight, stop continuous mode, drain the outputs (if asked), close everything.

        Returns whether every logged result was delivered to every output (True without outputs); what is not
        waits in the log and goes out after the next start.
        """
        self.set_continuous(False, "station stopping")
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)
        if self._watcher is not None:
            self._watcher.join(2.0)
        if self.feed is not None:
            self.feed.stop(timeout=2.0)
        self._set_state(State.STOPPED, "")
        delivered = True
        if self.outputs is not None:
            self.outputs.set_state("offline")
            delivered = self.outputs.stop(drain=drain, timeout=timeout)
            for status in self.outputs.status():
                if status.backlog_rows:
                    log.warning("%s: %d results not delivered yet; they wait in the log for the next start",
                                status.name, status.backlog_rows)
        if self.replicator is not None:
            delivered &= self.replicator.stop(drain=drain, timeout=timeout)
        self._write_status()
        if self.store is not None:
            self.store.close()
            self.store = None
        return delivered

    def _open_store(self) -> None:
        if self.store is not None:
            self.store.close()
        self.store = self.users = self.recipes = None
        try:
            self.store = InspectionStore(self.db_path, min_free_bytes=int(self.settings.min_free_mb * 1e6))
        except StoreError as exc:
            self.problems.append(f"Inspection log unavailable: {exc}\nInspections are NOT logged until this is fixed.")
            return
        self.users = UserDirectory(self.store, min_pin_length=self.settings.min_pin_length)
        self.recipes = RecipeBook(self.store, self.users)
        try:
            lines = check_outside_changes(self.store, self.config_path)
        except StoreError as exc:
            self.problems.append(f"Could not check the settings file against the audit trail: {exc}")
            lines = []
        if lines:
            self.problems.append(f"The settings file {self.config_path} was changed outside the station since it last "
                                 "saved it (recorded in the audit trail):\n  " + "\n  ".join(lines))

    def _select_start_recipe(self) -> None:
        from app.recipes import DEFAULT_RECIPE, WHOLE_FRAME, Region

        if self.recipes is None:
            s = self.settings
            # No log: the station can still judge (nothing is logged), by the settings' rule.
            self.recipe = Recipe(DEFAULT_RECIPE, (Region(WHOLE_FRAME if s.roi is None else "region", s.roi),), s.rule,
                                 s.threshold, s.model_path)
            return
        s = self.settings
        if not self.recipes.store.recipe_versions():  # the settings' threshold, as applied with today's model
            self.recipes.ensure_default(s.roi, s.rule, s.threshold, s.model_path,
                                        self.weights_for(Recipe(DEFAULT_RECIPE, model_path=s.model_path)))
        wanted = self._start_recipe or s.recipe
        recipe = self.recipes.get(wanted) if wanted else None
        if recipe is None:
            available = self.recipes.list()
            if self._start_recipe:
                raise StationError(f"no recipe named {self._start_recipe!r}; there are: "
                                   + ", ".join(r.name for r in available))
            if wanted:
                self.problems.append(f"The active recipe {wanted!r} does not exist any more; using {available[0].name!r}.")
            recipe = available[0]
        self.recipe = recipe

    def _start_replication(self) -> None:
        """Store-and-forward to the plant database when the settings name one (the station logs locally first)."""
        if self.store is None:
            return
        from app.store.replicator import replicator_from_settings

        try:
            self.replicator = replicator_from_settings(self.store, self.settings)
            if self.replicator is not None:
                self.replicator.start()
        except ValueError as exc:
            self.replicator = None
            self.problems.append(f"Plant database replication not started: {exc}")

    def _stop_replication(self, timeout: float = 10.0) -> None:
        """Stop the replicator without waiting for the plant to catch up: what it has not shipped waits in the log."""
        replicator, self.replicator = self.replicator, None
        if replicator is not None:
            replicator.stop(drain=False, timeout=timeout)

    def _stop_outputs(self, timeout: float = 5.0) -> None:
        """Stop the outputs without waiting for their receivers: what they have not delivered waits in the log."""
        outputs, self.outputs = self.outputs, None
        if outputs is not None:
            outputs.stop(drain=False, timeout=timeout)

    def _start_outputs(self) -> None:
        urls = list(dict.fromkeys([*self.settings.sinks, *self._sinks]))
        if not urls or self.store is None:
            return
        from app.outputs import open_output
        from app.outputs.worker import OutputWorker

        try:
            outputs = [open_output(url) for url in urls]
            self.outputs = OutputWorker(self.store, outputs, self.settings.station_name)
        except ValueError as exc:
            self.problems.append(f"Result outputs not started: {exc}")

    # -- models ---------------------------------------------------------------------------------

    def _model_path(self, recipe: Recipe | None) -> str | None:
        """This run's --model, else the recipe's, else the settings' (None: the shipped default)."""
        if "model_path" in self._overrides:
            return self._overrides["model_path"]
        return (recipe.model_path if recipe is not None else None) or self._base.model_path

    def _model_for(self, recipe: Recipe | None) -> Detector | None:
        path = self._model_path(recipe)
        key = str(path or "")
        if key in self._detectors:
            return self._detectors[key]
        if key in self._model_errors:
            return None
        if self._preloaded is not None and (path is None or Path(path) == self._preloaded.model_path):
            detector: Detector | None = self._preloaded
        else:
            try:
                detector = Detector(path)
            except (ValueError, FileNotFoundError, OSError) as exc:
                self._model_errors[key] = str(exc)
                self.problems.append(f"Model not loaded: {exc}\nFix the model file of recipe "
                                     f"{recipe.name if recipe else ''!r} (Settings / Recipes).")
                return None
        self._detectors[key] = detector
        return detector

    @property
    def detector(self) -> Detector | None:
        """The model of the active recipe (None: it could not be loaded, see `problems`)."""
        return self._model_for(self.recipe)

    @property
    def model_error(self) -> str:
        return self._model_errors.get(str(self._model_path(self.recipe) or ""), "")

    # -- recipes --------------------------------------------------------------------------------

    def select_recipe(self, name: str, by: User | None = None, trigger: str = "operator") -> Recipe:
        """Make a recipe active (by name or the line's external id).

        The line (`trigger="line"`) and the command line may always; a user only
        if they may change settings or the admin lets operators choose.
        """
        if self.recipes is None:
            raise StationError("the inspection log is unavailable, and recipes live in it")
        recipe = self.recipes.get(name)
        if recipe is None:
            raise StationError(f"no recipe named {name!r}")
        who = trigger
        if by is not None:
            user = self.require(by, "inspect")
            if not (user.can("settings") or self.settings.operator_may_select_recipe):
                raise PermissionDenied(f"{user.name} ({user.role}) may not change the recipe: an admin has not allowed it")
            who = user.name
        with self._lock:
            if self._busy:
                raise StationError("an inspection is running: change the recipe after it")
        return self._activate(recipe, who, trigger, by)

    def _activate(self, recipe: Recipe, who: str, trigger: str, by: User | None = None) -> Recipe:
        with self._lock:
            old = self.recipe
            self.recipe = recipe
        if old is None or (old.name, old.version) != (recipe.name, recipe.version):
            with self.store.write() as tx:
                tx.append_audit(who, "recipe.select", old=None if old is None else {"name": old.name, "version": old.version},
                                new={"name": recipe.name, "version": recipe.version}, reason=f"by {trigger}")
            if recipe.name != self._base.recipe:
                self._base = replace(self._base, recipe=recipe.name)
                try:
                    self.save_settings(by)
                except StationError as exc:
                    log.warning("%s", exc)
        self._model_for(recipe)
        self._emit(RecipeChanged(recipe, who))
        self._update_state()
        return recipe

    def weights_for(self, recipe: Recipe) -> str | None:
        """The weights (Detector.weights_id) `recipe` runs with; None when its model cannot be loaded."""
        detector = self._model_for(recipe)
        return None if detector is None else detector.weights_id

    def bind_thresholds(self, recipe: Recipe) -> Recipe:
        """`recipe` with its explicit thresholds confirmed for the model it runs with (as it was, when that
        model cannot be loaded: nothing is judged then)."""
        weights = self.weights_for(recipe)
        return recipe if weights is None else recipe.bound_to(weights)

    def save_recipe(self, recipe: Recipe, by: User, reason: str = "") -> Recipe:
        """Save a new version (admins), its thresholds bound to its model; the active recipe follows its new
        version at once."""
        if self.recipes is None:
            raise StationError("the inspection log is unavailable, and recipes live in it")
        saved = self.recipes.save(self.bind_thresholds(recipe), by, reason)
        if self.recipe is not None and self.recipe.name.casefold() == saved.name.casefold():
            with self._lock:
                self.recipe = saved
            self._model_for(saved)
            self._emit(RecipeChanged(saved, by.name))
            self._update_state()
        return saved

    def refresh_recipe(self) -> None:
        """Pick up a new version of the active recipe saved elsewhere (e.g. the recipe editor)."""
        if self.recipes is None or self.recipe is None:
            return
        current = self.recipes.get(self.recipe.name)
        if current is not None and current.version != self.recipe.version:
            with self._lock:
                self.recipe = current
            self._emit(RecipeChanged(current, "recipe editor"))
            self._update_state()

    # -- the source -----------------------------------------------------------------------------

    def open_source(self, spec: str | FrameSource, remember: bool = False) -> FrameSource:
        """Switch to another source (the previous feed stops); `remember`: save it as the settings' source."""
        if isinstance(spec, str):
            try:
                source = open_source(spec, loop_video=self.loop_video and not self.lossless,
                                     max_megapixels=self.settings.max_megapixels, bit_depth=self.settings.bit_depth,
                                     cameras=self.settings.camera_settings)
            except SourceError as exc:
                raise StationError(f"cannot open {spec}: {exc}") from exc
        else:
            source = spec
        old = self.feed
        self.feed = LiveFeed(source, reconnect_seconds=self.settings.reconnect_seconds, lossless=self.lossless).start()
        if old is not None:
            old.stop(timeout=0.5)
        self._last_frame_seq = self._last_inspected_seq = -1
        if remember and isinstance(spec, str):
            self.update_settings(source=spec)
        self._emit(SourceChanged(source))
        self._update_state()
        return source

    def close_source(self) -> None:
        if self.feed is not None:
            self.feed.stop(timeout=0.5)
            self.feed = None
        self._update_state()

    def step(self, delta: int) -> bool:
        """Next/previous picture of a folder; False at either end (it does not wrap) or for other sources."""
        feed = self.feed
        if feed is None or not isinstance(feed.source, ImageFilesSource) or not feed.source.files:
            return False
        target = feed.source.index + delta
        if not 0 <= target < len(feed.source.files):
            return False
        feed.step(delta)
        return True

    # -- triggering -----------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def engineering(self) -> bool:
        """An admin is editing settings or recipes (OPC 40100-1's SystemState ENG)."""
        return bool(self._engineering)

    def set_engineering(self, on: bool, by: str = "") -> None:
        """Say that an admin opened (True) or closed (False) the settings or recipe editor."""
        with self._lock:
            self._engineering += 1 if on else -1
            self._engineering = max(0, self._engineering)
        self._emit(EngineeringChanged(self.engineering, by))

    @property
    def continuous(self) -> bool:
        return self._continuous

    def trigger(self, job: Job) -> bool:
        """Inspect once. False (nothing queued) while busy, stopping, or in continuous mode (which triggers itself)."""
        if job.trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {', '.join(TRIGGERS)}, got {job.trigger!r}")
        with self._wake:
            if self._busy or self._pending is not None or self._stopping.is_set() or self._continuous:
                return False
            self._pending = job
            self._busy = True
            self._wake.notify_all()
        self._update_state()
        return True

    def set_continuous(self, on: bool, reason: str = "") -> None:
        """Inspect every frame the model can keep up with (every picture of a folder once, then stop)."""
        with self._wake:
            if on == self._continuous:
                return
            self._continuous = on
            self._wake.notify_all()
        self._emit(ContinuousChanged(on, reason))

    def inspect_frame(self, frame: FeedFrame, job: Job, recipe: Recipe | None = None) -> InspectionResult:
        """Judge and log one frame now, on the caller's thread (the worker and `python -m app inspect` use it).

        `recipe`: judge by this one instead of the active recipe (`inspect --roi`: an adjusted copy).
        Raises StationError when nothing can be judged (no model), ValueError for a frame the model
        cannot take; a log that cannot be written comes back in `result.error`.
        """
        recipe = recipe or self.recipe
        if job.recipe and (recipe is None or job.recipe.casefold() not in (recipe.name.casefold(), recipe.line_id.casefold())):
            wanted = self.recipes.get(job.recipe) if self.recipes is not None else None
            if wanted is None:
                raise StationError(f"no recipe named {job.recipe!r}")
            recipe = self._activate(wanted, job.trigger, job.trigger)
        if recipe is None:
            raise StationError("no recipe is active")
        detector = self._model_for(recipe)
        if detector is None:
            raise StationError(f"no model loaded: {self.model_error}")
        inspector = Inspector(detector, self.store, self.settings.station_name, self.settings.keep_pictures)
        result = inspector.inspect(frame.frame, recipe, source=frame.label, operator=job.operator, part_id=job.part_id,
                                   trigger=job.trigger, job_id=job.job_id, frame_warnings=frame.warnings or None)
        if result.inspection_id is not None and self.outputs is not None:
            self.outputs.notify()
        if result.inspection_id is not None and self.replicator is not None:
            self.replicator.notify()
        return result

    def _work(self) -> None:
        while not self._stopping.is_set():
            with self._wake:
                while self._pending is None and not self._continuous and not self._stopping.is_set():
                    self._wake.wait(0.5)
                job, self._pending = self._pending, None
                continuous = self._continuous
            if self._stopping.is_set() and job is None:
                break
            if job is not None:
                if self.detector is None:
                    self._finish()
                    self._emit(InspectionFailed(job, f"no model loaded: {self.model_error}"))
                    continue
                try:
                    frame = job.frame or self._frame_for_trigger()
                except StationError as exc:
                    self._finish()
                    self._emit(InspectionFailed(job, str(exc)))
                    continue
                if frame is None:
                    self._finish()
                    self._emit(InspectionFailed(job, "no picture to inspect yet: open a camera, video or pictures"))
                    continue
                self._run_job(job, frame)
            elif continuous:
                self._continuous_step()

    def _frame_for_trigger(self) -> FeedFrame | None:
        """The frame a trigger inspects: a camera in software-trigger mode takes one now (exactly that frame is
        inspected); any other source gives its newest frame."""
        feed = self.feed
        if feed is None:
            return None
        source = feed.source
        if not getattr(source, "software_trigger", False):
            return feed.latest()
        before = feed.latest()
        try:
            source.fire_trigger()
        except SourceError as exc:
            raise StationError(f"the camera did not take the trigger: {exc}") from exc
        frame = feed.wait_newer(before.seq if before is not None else -1, timeout=getattr(source, "trigger_timeout", 2.0))
        if frame is None:
            raise StationError(f"{source.name} delivered no frame after the software trigger")
        return frame

    def _continuous_step(self) -> None:
        feed = self.feed
        if feed is None:
            self.set_continuous(False, "no source")
            return
        if feed.is_pictures:
            # A folder moves on only here, on the worker: the picture shown is inspected, so step once to the next.
            latest = feed.latest()
            if latest is not None and latest.seq <= self._last_inspected_seq and self._stepped_from != latest.seq:
                if feed.at_end:
                    self.set_continuous(False, "every picture of the folder is inspected")
                    self._emit(SourceEnded("every picture of the folder is inspected"))
                    return
                self._stepped_from = latest.seq
                feed.step(1)
        frame = feed.wait_newer(self._last_inspected_seq, timeout=0.2)
        if frame is None:
            if feed.state in (ENDED, FAILED):
                self.set_continuous(False, "the source has no more frames")
                self._emit(SourceEnded("the recording has no more frames" if feed.state == ENDED else feed.error))
            return
        if frame.wrapped:  # a folder went round: every picture has had its turn
            self.set_continuous(False, "every picture of the folder is inspected")
            self._emit(SourceEnded("every picture of the folder is inspected"))
            return
        with self._wake:
            if not self._continuous or self._stopping.is_set():
                return
            self._busy = True
        self._update_state()
        done = self._run_job(Job("continuous"), frame)
        if feed.lossless:
            feed.ack(frame.seq)
        if not done:
            self.set_continuous(False, "an inspection failed")

    def _run_job(self, job: Job, frame: FeedFrame) -> bool:
        self._last_inspected_seq = max(self._last_inspected_seq, frame.seq)
        self._emit(InspectionStarted(job, frame))
        try:
            result = self.inspect_frame(frame, job)
        except (ValueError, StationError) as exc:
            self._finish()
            self._emit(InspectionFailed(job, str(exc)))
            return False
        except Exception as exc:  # never let a model failure take the station down
            log.exception("inspection failed")
            self._finish()
            self._emit(InspectionFailed(job, f"inspection failed: {type(exc).__name__}: {exc}"))
            return False
        # Ready for the next part before anyone hears of this result: a PLC that triggers the moment it sees
        # the result must not be refused as busy, however slow another observer is.
        self._finish()
        self._emit(InspectionDone(job, frame, result))
        return True

    def _finish(self) -> None:
        with self._wake:
            self._busy = False
        self._update_state()

    # -- state ----------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def detail(self) -> str:
        return self._detail

    def _update_state(self) -> None:
        feed = self.feed
        if self._stopping.is_set():
            return
        if self.store is None:
            state, detail = State.ERROR, "the inspection log is unavailable"
        elif self.detector is None:
            state, detail = State.ERROR, f"no model: {self.model_error}"
        elif problem := (self.recipe.threshold_model_problem(self.detector.weights_id) if self.recipe else ""):
            state, detail = State.ERROR, problem
        elif self._busy:
            state, detail = State.BUSY, ""
        elif feed is None:
            state, detail = State.DISCONNECTED, "no source"
        elif feed.state in (RECONNECTING, NOT_FOUND, FAILED):
            state, detail = State.DISCONNECTED, feed.error or feed.state
        elif feed.latest() is None and not getattr(feed.source, "waits_for_trigger", False):
            state, detail = State.DISCONNECTED, "waiting for the first frame"  # a trigger now would find no picture
        else:
            state, detail = State.READY, ""
        self._set_state(state, detail)

    def _set_state(self, state: State, detail: str) -> None:
        with self._lock:
            if (state, detail) == (self._state, self._detail):
                return
            self._state, self._detail = state, detail
        if self.outputs is not None:
            self.outputs.set_state(state.value)
        self._write_status()
        self._emit(StateChanged(state, detail))

    def _watch(self) -> None:
        """New frames and source state changes, turned into events (a few ms behind the feed); the status file
        for `python -m app status` refreshed every few seconds (a camera's health counters move all the time)."""
        next_status = time.monotonic() + STATUS_REFRESH_S
        while not self._stopping.is_set():
            if time.monotonic() >= next_status:
                self._write_status()
                next_status = time.monotonic() + STATUS_REFRESH_S
            feed = self.feed
            if feed is not None:
                frame = feed.wait_newer(self._last_frame_seq, timeout=self.status_interval)
                if frame is not None and feed is self.feed:
                    self._last_frame_seq = frame.seq
                    self._emit(FrameArrived(frame))
            else:
                self._stopping.wait(self.status_interval)
            self._update_state()

    def status(self) -> StationStatus:
        recipe = self.recipe
        return StationStatus(self._state, self._detail, recipe.name if recipe else "", recipe.version if recipe else 0,
                             self.feed.source.name if self.feed is not None else "", self._continuous, self.output_status())

    def output_status(self) -> list:
        """Each result output's and the plant database's backlog (app.outputs.worker.OutputStatus each)."""
        out = list(self.outputs.status()) if self.outputs is not None else []
        if self.replicator is not None:
            out.append(self.replicator.status())
        return out

    def warnings(self) -> list[str]:
        """What the operator should see now (e.g. the plant database has been behind for too long, a PLC was refused)."""
        warning = self.replicator.warning() if self.replicator is not None else None
        return ([warning] if warning else []) + self._refused_client_warning()

    def note_opcua_client(self, entry: ClientCertificate, refused: bool) -> None:
        """The OPC UA server refused this client for its certificate (said on screen for a while), or let it in
        (no longer said); trusting it here also ends the notice."""
        with self._lock:
            if refused:
                self._refused_clients[entry.fingerprint] = (entry.name, time.monotonic())
            else:
                self._refused_clients.pop(entry.fingerprint, None)

    def _refused_client_warning(self) -> list[str]:
        with self._lock:  # the window asks twice a second: no file is read here
            now = time.monotonic()
            self._refused_clients = {fp: v for fp, v in self._refused_clients.items()
                                     if now - v[1] < REFUSED_CLIENT_SHOWN_S}
            names = sorted({name for name, _ in self._refused_clients.values()})
        return [f"OPC UA: {', '.join(names)} refused, certificate not trusted (an admin trusts it in File ▸ OPC UA"
                " client certificates)"] if names else []

    def _write_status(self) -> None:
        """The state for `python -m app status`, in a small file beside the log (written atomically)."""
        recipe = self.recipe
        health = getattr(self.feed.source, "health", None) if self.feed is not None else None
        try:
            camera = health() if health is not None else None
        except Exception as exc:  # noqa: BLE001  (a camera that is going away must not stop the status file)
            camera = {"error": str(exc)}
        data = {"pid": os.getpid(), "state": self._state.value, "detail": self._detail, "camera": camera,
                "station": self.settings.station_name, "recipe": recipe.name if recipe else "",
                "recipe_version": recipe.version if recipe else 0,
                "source": self.feed.source.name if self.feed is not None else "", "continuous": self._continuous,
                "db": str(self.db_path), "updated_at": iso_utc(datetime.now(timezone.utc))}
        try:
            self.status_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.status_path, json.dumps(data, indent=1).encode("utf-8"))
        except OSError as exc:
            log.warning("status file %s not written: %s", self.status_path, exc)


def status_file(db_path: Path) -> Path:
    return Path(db_path).with_name(Path(db_path).stem + ".status.json")


def read_status(db_path: Path) -> dict[str, Any] | None:
    """What a station using this log last said about itself, with "running" (its process is alive)."""
    path = status_file(db_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    pid = data.get("pid")
    running = False
    if isinstance(pid, int) and data.get("state") != State.STOPPED.value:
        try:
            os.kill(pid, 0)
            running = True
        except ProcessLookupError:
            running = False
        except PermissionError:
            running = True
    data["running"] = running
    return data

