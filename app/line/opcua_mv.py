"""The station as an OPC UA Machine Vision server (OPC 40100-1): the PLC starts jobs, the station answers with results.

One `VisionSystemType` instance (the OPC Foundation's information model, see
app.line.opcua.nodeset) is a view of the `Station`, like the window: it observes
the station's events and asks it to do things (`trigger`, `select_recipe`,
`set_continuous`); it decides nothing about inspections itself.

    server = OpcUaVisionServer(station, "opc.tcp://0.0.0.0:4840").start()   # listening when it returns
    ...
    server.stop()

State machine (docs/opcua.md has the full table): Preoperational at start-up and
after Reset; `SelectModeAutomatic` enters Operational (automatic mode,
Initialized) when the station is ready (model, log and source); PrepareRecipe
(a station recipe by its external id) -> Ready; StartSingleJob -> SingleExecution
-> Ready when the result is out; StartContinuous -> ContinuousExecution until
Stop/Abort or the source ends. The station in error or disconnected drives Error
(with an ErrorEventType event) from Preoperational or Operational; it stays there
until Reset. Halt -> Halted until Reset. A method called in a state that does not
allow it answers Bad_InvalidState.

Events (each to the vision system and, through HasNotifier, the Server object):
StateChanged on every transition, Error, JobStarted, AcquisitionDone once the
frame is taken (the PLC may move the part), ResultReady with the whole result,
Ready, RecipePrepared, and VisionInformation for each refused method call.

Threads: the server runs its own asyncio loop on its own thread; station events
are handed to it and handled in order, one at a time with the method calls
(`_lock`), so node values and events always follow the state machine's order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from asyncua import Server, ua

from app.line.opcua.nodeset import (
    AUTOMATIC_MODE_TYPE,
    VISION_STATE_MACHINE_TYPE,
    EventSender,
    VisionNodes,
    load_model,
    state_ids,
)
from app.line.opcua.results import (
    Facts,
    Handles,
    JobInfo,
    Memory,
    ResultQuery,
    event_fields,
    facts_from_failure,
    facts_from_result,
    facts_from_row,
    find,
    internal_recipe_id,
    result_value,
    utc,
)
from app.line.opcua.security import CALLER, LineUser, SessionAwareServer, StationUserManager, application_uri, ensure_certificate
from app.line.opcua.trust import ClientTrustList
from app.recipes import Recipe
from app.station import (
    ContinuousChanged,
    EngineeringChanged,
    InspectionDone,
    InspectionFailed,
    InspectionStarted,
    Job,
    State,
    StateChanged,
    StationError,
)
from app.store import StoreError
from app.users import PermissionDenied

log = logging.getLogger("line.opcua")

PREOPERATIONAL, HALTED, ERROR, OPERATIONAL = "Preoperational", "Halted", "Error", "Operational"
INITIALIZED, READY, SINGLE, CONTINUOUS = "Initialized", "Ready", "SingleExecution", "ContinuousExecution"
MAX_LIST = 1000  # results or recipes in one list answer when the client asks for "no limit"
# SystemState (OPC 40100-1 12.23, SEMI E10): the station's current use.
PRD, SBY, ENG, SDT, UDT = 1, 2, 3, 4, 5
_HANDLED = (StateChanged, InspectionStarted, InspectionDone, InspectionFailed, ContinuousChanged, EngineeringChanged)


class OpcUaError(RuntimeError):
    """The OPC UA server could not start (the message says why)."""


class Refused(Exception):
    """A method call refused with an OPC UA status code (and why, for the log and the information event)."""

    def __init__(self, code: int, why: str, argument: int | None = None):
        super().__init__(why)
        self.code, self.why, self.argument = code, why, argument


@dataclass(frozen=True)
class _Method:
    path: str  # below the vision system
    handler: Callable[..., Awaitable[list[ua.Variant]]]
    inputs: int
    audited: bool  # changes something: each call (or refusal) gets an audit record


class OpcUaVisionServer:
    """The station's OPC UA Machine Vision server. `start()` returns once it listens; `stop()` ends it.

    `endpoint`: where to listen (opc.tcp://host:port[/path]). By default the only
    endpoint is Basic256Sha256 Sign&Encrypt with user name and PIN (the station's
    users), for client applications whose certificate an admin trusts
    (app.line.opcua.trust); `allow_anonymous` adds an unsecured endpoint where
    anyone may connect without signing in (lab tests only: `insecure` and
    `warning` say so for the screen). `cert_dir`: where the server certificate
    and the trust list (`pki/`) live (default: the station's data folder,
    `<data>/opcua`).
    """

    def __init__(self, station, endpoint: str = "opc.tcp://0.0.0.0:4840", allow_anonymous: bool = False,
                 cert_dir: Path | None = None):
        url = urlparse(endpoint)
        if url.scheme != "opc.tcp" or not url.hostname:
            raise ValueError(f"OPC UA endpoint must look like opc.tcp://host:port, got {endpoint!r}")
        try:
            port = url.port
        except ValueError:
            port = None
        if not port:
            raise ValueError(f"OPC UA endpoint {endpoint!r} needs a port between 1 and 65535 (e.g. opc.tcp://0.0.0.0:4840)")
        self.station = station
        self.endpoint = endpoint
        self.allow_anonymous = allow_anonymous
        self.cert_dir = Path(cert_dir) if cert_dir else station.opcua_folder
        self.memory = Memory()
        self.handles = Handles()
        self._state, self._mode = PREOPERATIONAL, None
        self._prepared: Recipe | None = None
        self._job: JobInfo | None = None  # the single job in SingleExecution
        self._continuous_job: JobInfo | None = None  # the last continuous run (its late results carry its JobId)
        self._system_state_shown: tuple[int, str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._events: asyncio.Queue | None = None
        self._lock: asyncio.Lock | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.server: Server | None = None
        self.nodes: VisionNodes | None = None
        self.cert_path: Path | None = None

    # -- what the window and serve show ---------------------------------------------------------

    @property
    def insecure(self) -> bool:
        """An unsecured endpoint without sign-in is open (lab use only)."""
        return self.allow_anonymous

    @property
    def warning(self) -> str:
        if not self.allow_anonymous:
            return ""
        return (f"OPC UA: an UNSECURED endpoint is open at {self.endpoint}: anyone on the network may start jobs and "
                "select recipes without signing in. For lab tests only (turn off --opcua-allow-anonymous).")

    @property
    def state(self) -> str:
        """The VisionStateMachine's state: Preoperational, Halted, Error or Operational."""
        return self._state

    @property
    def mode(self) -> str | None:
        """The automatic mode's state while Operational (Initialized, Ready, SingleExecution, ContinuousExecution)."""
        return self._mode

    # -- life cycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> OpcUaVisionServer:
        """Build the address space and listen; returns when clients can connect. Raises OpcUaError if it cannot."""
        if self._thread is not None:
            raise OpcUaError("the OPC UA server is started already")
        self._check_port()
        self._thread = threading.Thread(target=self._run, name="opcua server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise OpcUaError(f"the OPC UA server did not start within {timeout:.0f} s")
        if self._failure is not None:
            self._thread.join(5)
            self._thread = None
            raise OpcUaError(f"OPC UA server not started on {self.endpoint}: {self._failure}") from self._failure
        return self

    def _check_port(self) -> None:
        """Say at once when the port is taken, before seconds of building the address space."""
        url = urlparse(self.endpoint)
        try:
            family, kind, proto, _, address = socket.getaddrinfo(url.hostname, url.port, type=socket.SOCK_STREAM)[0]
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
                probe.bind(address)
        except OSError as exc:
            raise OpcUaError(f"OPC UA server not started on {self.endpoint}: {exc}") from exc

    def stop(self, timeout: float = 10.0) -> None:
        """Close every session and stop listening (the station goes on)."""
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001  (said by start(), or logged after it returned)
            if not self._ready.is_set():
                self._failure = exc
                self._ready.set()
            else:
                log.exception("OPC UA server failed")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop, self._events, self._lock = asyncio.Event(), asyncio.Queue(), asyncio.Lock()
        await self._build()
        self._unsubscribe = self.station.subscribe(self._observe)
        try:
            await self.server.start()
        except BaseException:
            self._unsubscribe()
            raise
        consumer = asyncio.create_task(self._consume())
        async with self._lock:
            await self._publish_all()
            await self._follow_station(self.station.state, self.station.detail)
        self._ready.set()
        log.info("OPC UA Machine Vision server listening on %s%s", self.endpoint,
                 " (and an UNSECURED anonymous endpoint)" if self.allow_anonymous else "")
        try:
            await self._stop.wait()
        finally:
            self._unsubscribe()
            consumer.cancel()
            await self.server.stop()

    async def _build(self) -> None:
        name = self.station.settings.station_name
        users = StationUserManager(self.station, self.allow_anonymous, ClientTrustList(self.cert_dir))
        server = Server(iserver=SessionAwareServer(user_manager=users))
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"{name} (metal-inspection-station)")
        app_uri = application_uri()
        await server.set_application_uri(app_uri)
        cert = await asyncio.to_thread(ensure_certificate, self.cert_dir, app_uri, name)
        self.cert_path = cert.cert_path
        await server.load_certificate(str(cert.cert_path))
        await server.load_private_key(str(cert.key_path))
        policies = [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
        tokens: list[type] = [ua.UserNameIdentityToken]
        if self.allow_anonymous:
            policies.append(ua.SecurityPolicyType.NoSecurity)
            tokens.append(ua.AnonymousIdentityToken)
        server.set_security_policy(policies)
        server.set_identity_tokens(tokens)
        self.server = server
        self.nodes = await load_model(server, name)
        self._sender = EventSender(server, self.nodes, name)
        await self._sender.start()
        self._type_nodes = {**await state_ids(server, self.nodes.mv_id(VISION_STATE_MACHINE_TYPE)),
                            **await state_ids(server, self.nodes.mv_id(AUTOMATIC_MODE_TYPE))}
        await self._bind_methods()

    # -- station events -> the loop -------------------------------------------------------------

    def _observe(self, event) -> None:
        """Called on the station's threads: hand what matters over to the loop, stamped with the time it happened."""
        if isinstance(event, _HANDLED) and self._loop is not None:
            self._loop.call_soon_threadsafe(self._events.put_nowait, (event, datetime.now(timezone.utc)))

    async def _consume(self) -> None:
        while True:
            event, at = await self._events.get()
            try:
                async with self._lock:
                    await self._handle(event, at)
            except Exception:  # noqa: BLE001  (one bad event must not stop the server)
                log.exception("OPC UA server: %s not handled", type(event).__name__)

    async def _handle(self, event, at: datetime) -> None:
        if isinstance(event, InspectionStarted):
            info = self._job_for(event.job)
            await self._sender.send("AcquisitionDone", "the frame is taken: the part may move", 100,
                                    {"JobId": _ext(ua.JobIdDataType(Id=info.job_id if info else event.job.job_id))}, at)
        elif isinstance(event, InspectionDone):
            info = self._job_for(event.job)
            job = info or JobInfo(event.job.job_id, part_id=event.job.part_id)
            detector = self.station.detector
            facts = facts_from_result(event.result, job, at, detector.model_id if detector else "",
                                      detector.metadata.created if detector else "")
            self.memory.remember_result(event.result.uid, event.result.inspection_id, job.job_id)
            await self._send_result(facts)
            await self._job_finished(info)
        elif isinstance(event, InspectionFailed):
            info = self._job_for(event.job)
            job = info or JobInfo(event.job.job_id, part_id=event.job.part_id)
            recipe, detector = self.station.recipe, self.station.detector
            facts = facts_from_failure(uuid.uuid4().hex, event.message, job, at, recipe.name if recipe else "",
                                       recipe.version if recipe else 0, recipe.line_id if recipe else "",
                                       detector.model_id if detector else "", detector.metadata.created if detector else "")
            await self._send_result(facts)
            await self._job_finished(info)
        elif isinstance(event, StateChanged):
            await self._follow_station(event.state, event.detail)
        elif isinstance(event, ContinuousChanged):
            if event.on and self._mode != CONTINUOUS:
                self._continuous_job = None  # started at the station, not by the line: its results are no job's
            if not event.on and self._mode == CONTINUOUS:
                await self._go(OPERATIONAL, READY, "ContinuousExecutionToReadyAuto")
                await self._ready_event(self._continuous_job)
        await self._publish_system_state()

    def _job_for(self, job: Job) -> JobInfo | None:
        if job.trigger == "line" and job.job_id:
            if self._job is not None and self._job.job_id == job.job_id:
                return self._job
            return self.memory.job_of("", job.job_id)
        if job.trigger == "continuous":
            return self._continuous_job
        return None

    async def _send_result(self, facts: Facts) -> None:
        await self._sender.send("ResultReady", f"result {facts.uid}: {facts.verdict}", 100, event_fields(facts), facts.created)

    async def _job_finished(self, info: JobInfo | None) -> None:
        if info is not None and info is self._job:
            self._job = None
            if self._mode == SINGLE:
                await self._go(OPERATIONAL, READY, "SingleExecutionToReadyAuto")
                await self._ready_event(info)

    async def _follow_station(self, state: State, detail: str) -> None:
        """The station's own state drives Error (it cannot inspect) and Halted (it stops)."""
        if state in (State.ERROR, State.DISCONNECTED) and self._state in (PREOPERATIONAL, OPERATIONAL):
            self._stop_work("the station is in error")
            old = self._state
            await self._go(ERROR, None, f"{old}ToErrorAuto")
            why = detail or state.value
            await self._sender.send("Error", f"the station cannot inspect: {why}", 700, self._transition_fields(
                f"{old}ToErrorAuto", old, ERROR))
        elif state == State.STOPPED and self._state != HALTED:
            self._stop_work("the station stops")
            await self._go(HALTED, None, f"{self._state}ToHaltedAuto")

    def _stop_work(self, reason: str) -> None:
        self._job = None
        if self._mode == CONTINUOUS or self.station.continuous:
            self.station.set_continuous(False, f"line (OPC UA): {reason}")

    # -- the state machine's nodes and events ---------------------------------------------------

    async def _go(self, state: str, mode: str | None, transition: str) -> None:
        old = (self._state, self._mode)
        self._state, self._mode = state, mode
        await self._publish_states()
        before, after = old[1] or old[0], mode or state
        if old[0] != state and old[1] and not mode:
            before = old[0]  # leaving Operational: the top-level transition
        await self._sender.send("StateChanged", f"{before} -> {after}", 100,
                                self._transition_fields(transition, before, after))

    def _transition_fields(self, transition: str, before: str, after: str) -> dict[str, ua.Variant]:
        fields = {"Transition": ua.Variant(ua.LocalizedText(transition), ua.VariantType.LocalizedText),
                  "FromState": ua.Variant(ua.LocalizedText(before), ua.VariantType.LocalizedText),
                  "ToState": ua.Variant(ua.LocalizedText(after), ua.VariantType.LocalizedText),
                  "FromState/Id": ua.Variant(self._state_node(before), ua.VariantType.NodeId),
                  "ToState/Id": ua.Variant(self._state_node(after), ua.VariantType.NodeId)}
        if transition in self._type_nodes:
            fields["Transition/Id"] = ua.Variant(self._type_nodes[transition], ua.VariantType.NodeId)
        return fields

    def _state_node(self, name: str) -> ua.NodeId:
        """Top-level states are in the instance; the automatic mode's exist on its type only (OPC 10000-16)."""
        if name in (PREOPERATIONAL, HALTED, ERROR, OPERATIONAL):
            return self.nodes.child(f"VisionStateMachine.{name}")
        return self._type_nodes[name]

    async def _publish_all(self) -> None:
        await self._publish_states()
        await self._publish_system_state()

    async def _publish_states(self) -> None:
        write = self.server.write_attribute_value
        top = "VisionStateMachine.CurrentState"
        await write(self.nodes.child(top), _value(ua.LocalizedText(self._state), ua.VariantType.LocalizedText))
        await write(self.nodes.child(f"{top}.Id"), _value(self._state_node(self._state), ua.VariantType.NodeId))
        sub = "VisionStateMachine.AutomaticModeStateMachine.CurrentState"
        if self._mode is None:
            inactive = ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadStateNotActive))
            await write(self.nodes.child(sub), inactive)
            await write(self.nodes.child(f"{sub}.Id"), inactive)
        else:
            await write(self.nodes.child(sub), _value(ua.LocalizedText(self._mode), ua.VariantType.LocalizedText))
            await write(self.nodes.child(f"{sub}.Id"), _value(self._state_node(self._mode), ua.VariantType.NodeId))

    def system_state(self) -> tuple[int, str]:
        """SystemState: PRD while a job runs, SBY when ready, ENG while an admin edits, SDT halted, UDT in error."""
        if self._state == ERROR:
            return UDT, "unscheduled downtime: the station is in error"
        if self._state == HALTED:
            return SDT, "halted by the line"
        if self._mode in (SINGLE, CONTINUOUS) or self.station.state == State.BUSY:
            return PRD, "inspecting"
        if self.station.engineering:
            return ENG, "an admin is editing the settings or recipes"
        return SBY, "ready" if self._mode == READY else "standby"

    async def _publish_system_state(self) -> None:
        code, text = self.system_state()
        if (code, text) == self._system_state_shown:
            return  # most station events change nothing here: no write, no data change for subscribers
        self._system_state_shown = (code, text)
        value = ua.SystemStateDescriptionDataType(State=ua.SystemStateDataType(code), StateDescription=text)
        await self.server.write_attribute_value(self.nodes.child("SystemState"), _value(value, ua.VariantType.ExtensionObject))

    async def _ready_event(self, info: JobInfo | None) -> None:
        await self._sender.send("Ready", "ready for the next job", 100,
                                {"JobId": _ext(ua.JobIdDataType(Id=info.job_id if info else ""))})

    # -- methods --------------------------------------------------------------------------------

    async def _bind_methods(self) -> None:
        sm, auto = "VisionStateMachine", "VisionStateMachine.AutomaticModeStateMachine"
        methods = [
            _Method(f"{sm}.SelectModeAutomatic", self._select_mode_automatic, 0, True),
            _Method(f"{sm}.Halt", self._halt, 2, True),
            _Method(f"{sm}.Reset", self._reset, 2, True),
            _Method(f"{sm}.ConfirmAll", self._confirm_all, 1, True),
            _Method(f"{auto}.StartSingleJob", self._start_single_job, 5, True),
            _Method(f"{auto}.StartContinuous", self._start_continuous, 5, True),
            _Method(f"{auto}.Stop", self._stop_job, 2, True),
            _Method(f"{auto}.Abort", self._abort_job, 2, True),
            _Method("RecipeManagement.PrepareRecipe", self._prepare_recipe, 2, True),
            _Method("RecipeManagement.UnprepareRecipe", self._unprepare_recipe, 2, True),
            _Method("RecipeManagement.GetRecipeListFiltered", self._recipe_list, 6, False),
            _Method("RecipeManagement.ReleaseRecipeHandle", self._release_handle, 1, False),
            _Method("ResultManagement.GetResultById", self._result_by_id, 2, False),
            _Method("ResultManagement.GetResultComponentsById", self._result_components, 2, False),
            _Method("ResultManagement.GetResultListFiltered", self._result_list, 12, False),
            _Method("ResultManagement.ReleaseResultHandle", self._release_handle, 1, False),
        ]
        for m in methods:
            self.server.link_method(self.server.get_node(self.nodes.child(m.path)), self._caller(m))
        await self._add_time_query()

    async def _add_time_query(self) -> None:
        """GetResultListByTime: 40100-1 v1.0's GetResultListFiltered has no time filter; this station adds one."""
        own, mv = self.nodes.own, self.nodes.mv
        parent = self.server.get_node(self.nodes.child("ResultManagement"))

        def arg(name: str, dtype: ua.NodeId, rank: int = -1, text: str = "") -> ua.Argument:
            return ua.Argument(Name=name, DataType=dtype, ValueRank=rank, ArrayDimensions=[] if rank < 0 else [0],
                               Description=ua.LocalizedText(text))

        inputs = [arg("From", ua.NodeId(ua.ObjectIds.UtcTime), text="results created at or after this time (UTC)"),
                  arg("To", ua.NodeId(ua.ObjectIds.UtcTime), text="... and before this time (UTC)"),
                  arg("ResultState", ua.NodeId(3009, mv), text="0 any, 1 completed, -1 PASS, -2 FAIL"),
                  arg("PartId", ua.NodeId(ua.ObjectIds.String), text="empty: any part"),
                  arg("MaxResults", ua.NodeId(ua.ObjectIds.UInt32)), arg("StartIndex", ua.NodeId(ua.ObjectIds.UInt32))]
        outputs = [arg("IsComplete", ua.NodeId(ua.ObjectIds.Boolean)), arg("ResultCount", ua.NodeId(ua.ObjectIds.UInt32)),
                   arg("ResultHandle", ua.NodeId(3018, mv)), arg("ResultList", ua.NodeId(3006, mv), rank=1),
                   arg("Error", ua.NodeId(ua.ObjectIds.Int32))]
        method = _Method("ResultManagement.GetResultListByTime", self._result_list_by_time, 6, False)
        await parent.add_method(self.nodes.child(method.path), ua.QualifiedName("GetResultListByTime", own),
                                self._caller(method), inputs, outputs)

    def _caller(self, m: _Method):
        name = m.path.rsplit(".", 1)[-1]

        async def call(parent: ua.NodeId, *variants: ua.Variant):
            args = [v.Value if isinstance(v, ua.Variant) else v for v in variants]
            user = CALLER.get()
            if user is None:  # the server's own session (never a client's): nothing to do
                return ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)
            if len(args) != m.inputs:
                code = ua.StatusCodes.BadArgumentsMissing if len(args) < m.inputs else ua.StatusCodes.BadTooManyArguments
                return await self._refused(name, user, args, Refused(code, f"{m.inputs} arguments expected, got {len(args)}"),
                                           m.audited)
            try:
                outputs = await m.handler(user, *args)
            except Refused as exc:
                return await self._refused(name, user, args, exc, m.audited)
            except Exception as exc:  # noqa: BLE001  (a bug must answer the call, not hang it)
                log.exception("OPC UA %s failed", name)
                return await self._refused(name, user, args, Refused(ua.StatusCodes.BadInternalError, str(exc)), m.audited)
            if m.audited:
                await self._audit(user, name, args, "Good")
            return outputs

        return call

    async def _refused(self, name: str, user: LineUser, args, exc: Refused, audited: bool) -> ua.CallMethodResult:
        status = ua.StatusCode(exc.code)
        log.info("OPC UA %s by %s refused: %s (%s)", name, user.audit_name, status.name, exc.why)
        if audited:
            await self._audit(user, name, args, status.name, exc.why)
        # OPC 40100-1 11.5: a failed call is told to every client, naming the method and its arguments.
        await self._sender.send("VisionInformation", f"{name}({_describe(args)}) by {user.audit_name} refused: "
                                f"{status.name}: {exc.why}", 300)
        result = ua.CallMethodResult(StatusCode=status)
        if exc.argument is not None:
            result.InputArgumentResults = [ua.StatusCode(exc.code if i == exc.argument else ua.StatusCodes.Good)
                                           for i in range(len(args))]
        return result

    async def _audit(self, user: LineUser, name: str, args, status: str, why: str = "") -> None:
        store = self.station.store
        if store is None:
            return
        new = {"arguments": _plain(args), "status": status, "state_after": self._mode or self._state}
        if why:
            new["why"] = why

        def write() -> None:
            with store.write() as tx:
                tx.append_audit(user.audit_name, f"line.opcua.{name}", new=new)
        try:
            await asyncio.to_thread(write)
        except StoreError as exc:
            log.warning("OPC UA %s by %s not audited: %s", name, user.audit_name, exc)

    def _require(self, user: LineUser, permission: str) -> None:
        """The station user may do `permission` (the lab endpoint's anonymous user may do what the line may)."""
        if user.station_user is None:
            return
        try:
            self.station.require(user.station_user, permission)
        except PermissionDenied as exc:
            raise Refused(ua.StatusCodes.BadUserAccessDenied, str(exc)) from None

    def _expect(self, *states: str) -> None:
        current = self._mode or self._state
        if current not in states:
            raise Refused(ua.StatusCodes.BadInvalidState, f"not allowed in state {current} (only in {', '.join(states)})")

    # VisionStateMachine

    async def _select_mode_automatic(self, user: LineUser) -> list[ua.Variant]:
        self._require(user, "inspect")
        async with self._lock:
            self._expect(PREOPERATIONAL)
            if self.station.state not in (State.READY, State.BUSY):
                raise Refused(ua.StatusCodes.BadInvalidState,
                              f"the station is not ready: {self.station.detail or self.station.state.value}")
            await self._go(OPERATIONAL, INITIALIZED, "PreoperationalToInitialized")
            await self._publish_system_state()
        return [_int(0)]

    async def _halt(self, user: LineUser, cause, description) -> list[ua.Variant]:
        self._require(user, "inspect")
        async with self._lock:
            self._expect(PREOPERATIONAL, OPERATIONAL, INITIALIZED, READY, SINGLE, CONTINUOUS, ERROR)
            self._stop_work("halted")
            self._prepared = None
            await self._go(HALTED, None, f"{self._state}ToHalted")
            await self._publish_system_state()
        return [_int(0)]

    async def _reset(self, user: LineUser, cause, description) -> list[ua.Variant]:
        self._require(user, "inspect")
        async with self._lock:
            self._stop_work("reset")
            self._prepared = None
            if (self._state, self._mode) != (PREOPERATIONAL, None):
                await self._go(PREOPERATIONAL, None, f"{self._state}ToPreoperational")
            await self._follow_station(self.station.state, self.station.detail)  # still failing: straight back to Error
            await self._publish_system_state()
        return [_int(0)]

    async def _confirm_all(self, user: LineUser, comment) -> list[ua.Variant]:
        self._require(user, "inspect")
        return []  # errors are events, not conditions: nothing is waiting for a confirmation (audited all the same)

    # Automatic mode

    async def _start_single_job(self, user: LineUser, meas, part, recipe, product, parameters) -> list[ua.Variant]:
        self._require(user, "inspect")
        async with self._lock:
            info = self._new_job(meas, part, recipe, product, parameters)
            self._job = info
            job = Job("line", job_id=info.job_id, part_id=info.part_id, operator=user.audit_name,
                      recipe=self._prepared.name)
            if not self.station.trigger(job):
                self._job = None
                raise Refused(ua.StatusCodes.BadInvalidState, "the station is busy (an inspection or continuous mode "
                              "started at the station) or stopping")
            self.memory.remember_job(info)
            await self._go(OPERATIONAL, SINGLE, "ReadyToSingleExecution")
            await self._sender.send("JobStarted", f"job {info.job_id} started", 100,
                                    {"JobId": _ext(ua.JobIdDataType(Id=info.job_id))})
            await self._publish_system_state()
        return [_ext(ua.JobIdDataType(Id=info.job_id)), _int(0)]

    async def _start_continuous(self, user: LineUser, meas, part, recipe, product, parameters) -> list[ua.Variant]:
        self._require(user, "inspect")
        async with self._lock:
            info = self._new_job(meas, part, recipe, product, parameters)
            active = self.station.recipe
            if active is None or active.name != self._prepared.name:
                try:
                    await asyncio.to_thread(self.station.select_recipe, self._prepared.name, None, "line")
                except StationError as exc:
                    raise Refused(ua.StatusCodes.BadInvalidState, str(exc)) from None
            self.memory.remember_job(info)
            self._continuous_job = info
            self.station.set_continuous(True, f"line (OPC UA): job {info.job_id}")
            if not self.station.continuous:
                raise Refused(ua.StatusCodes.BadInvalidState, "the station did not start continuous mode")
            await self._go(OPERATIONAL, CONTINUOUS, "ReadyToContinuousExecution")
            await self._sender.send("JobStarted", f"continuous job {info.job_id} started", 100,
                                    {"JobId": _ext(ua.JobIdDataType(Id=info.job_id))})
            await self._publish_system_state()
        return [_ext(ua.JobIdDataType(Id=info.job_id)), _int(0)]

    def _new_job(self, meas, part, recipe, product, parameters) -> JobInfo:
        """Check a start call's state and arguments (OPC 40100-1 8.3.7.1); the job it asks for."""
        self._expect(READY)
        meas_id, part_id = _id(meas, "MeasId", 0), _id(part, "PartId", 1)
        recipe_id, product_id = _id(recipe, "RecipeId", 2), _id(product, "ProductId", 3)
        prepared = self._prepared
        if recipe_id and recipe_id.casefold() not in (prepared.line_id.casefold(), prepared.name.casefold()):
            raise Refused(ua.StatusCodes.BadInvalidArgument, f"recipe {recipe_id!r} is not prepared "
                          f"(prepared: {prepared.line_id!r})", 2)
        if product_id:
            raise Refused(ua.StatusCodes.BadInvalidArgument, "this station has no products: give the RecipeId", 3)
        if parameters:
            raise Refused(ua.StatusCodes.BadInvalidArgument, "the station's recipes take no job parameters", 4)
        return JobInfo(uuid.uuid4().hex, meas_id, part_id, product_id)

    async def _stop_job(self, user: LineUser, cause, description) -> list[ua.Variant]:
        return await self._end_job(user, "Stop")

    async def _abort_job(self, user: LineUser, cause, description) -> list[ua.Variant]:
        return await self._end_job(user, "Abort")

    async def _end_job(self, user: LineUser, how: str) -> list[ua.Variant]:
        """Stop/Abort: back to Ready at once. An inspection in flight still ends and its result is still sent."""
        self._require(user, "inspect")
        async with self._lock:
            self._expect(SINGLE, CONTINUOUS)
            if self._mode == CONTINUOUS:
                info = self._continuous_job
                self.station.set_continuous(False, f"line (OPC UA): {how}")
                await self._go(OPERATIONAL, READY, f"ContinuousExecutionToReady{how}")
            else:
                info, self._job = self._job, None
                await self._go(OPERATIONAL, READY, f"SingleExecutionToReady{how}")
            await self._ready_event(info)
            await self._publish_system_state()
        return [_int(0)]

    # RecipeManagement

    def _recipe_by_ids(self, external, internal) -> Recipe:
        book = self.station.recipes
        if book is None:
            raise Refused(ua.StatusCodes.BadResourceUnavailable, "the inspection log, where recipes live, is unavailable")
        ext, name = _id(external, "ExternalId", 0), _id(internal, "InternalIdIn", 1)
        if not ext and not name:
            raise Refused(ua.StatusCodes.BadInvalidArgument, "give the recipe's ExternalId (or its InternalId)", 0)
        recipe = book.get(ext or name)
        if recipe is None:
            raise Refused(ua.StatusCodes.BadInvalidArgument, f"no recipe {ext or name!r}", 0 if ext else 1)
        if ext and name and recipe.name.casefold() != name.casefold():
            raise Refused(ua.StatusCodes.BadInvalidArgument, f"ExternalId {ext!r} is recipe {recipe.name!r}, not {name!r}", 1)
        return recipe

    async def _prepare_recipe(self, user: LineUser, external, internal) -> list[ua.Variant]:
        self._require(user, "inspect")
        async with self._lock:
            self._expect(INITIALIZED, READY)
            recipe = self._recipe_by_ids(external, internal)
            by = user.station_user
            try:
                recipe = await asyncio.to_thread(self.station.select_recipe, recipe.name, by, "line")
            except PermissionDenied as exc:
                raise Refused(ua.StatusCodes.BadUserAccessDenied, str(exc)) from None
            except StationError as exc:
                raise Refused(ua.StatusCodes.BadInvalidState, str(exc)) from None
            self._prepared = recipe
            internal_id = internal_recipe_id(recipe.name, recipe.version)
            if self._mode == INITIALIZED:
                await self._go(OPERATIONAL, READY, "InitializedToReadyRecipe")
            await self._sender.send("RecipePrepared", f"recipe {recipe.name} v{recipe.version} prepared", 100,
                                    {"InternalId": _ext(internal_id),
                                     "ExternalId": _ext(ua.RecipeIdExternalDataType(Id=recipe.line_id))})
            await self._publish_system_state()
        return [_ext(internal_id), ua.Variant(True, ua.VariantType.Boolean), _int(0)]

    async def _unprepare_recipe(self, user: LineUser, external, internal) -> list[ua.Variant]:
        self._require(user, "inspect")
        async with self._lock:
            self._expect(READY)
            recipe = self._recipe_by_ids(external, internal)
            if recipe.name != self._prepared.name:
                raise Refused(ua.StatusCodes.BadInvalidArgument, f"recipe {recipe.name!r} is not the prepared one "
                              f"({self._prepared.name!r})", 0)
            self._prepared = None
            await self._go(OPERATIONAL, INITIALIZED, "ReadyToInitializedRecipe")
            await self._publish_system_state()
        return [_ext(internal_recipe_id(recipe.name, recipe.version)), _int(0)]

    async def _recipe_list(self, user: LineUser, external, product, prepared, max_results, start_index, timeout):
        book = self.station.recipes
        if book is None:
            raise Refused(ua.StatusCodes.BadResourceUnavailable, "the inspection log, where recipes live, is unavailable")
        ext = _id(external, "ExternalId", 0)
        if _id(product, "ProductId", 1):
            recipes = []  # no products on this station
        else:
            recipes = await asyncio.to_thread(book.list)
        if ext:
            recipes = [r for r in recipes if r.line_id.casefold() == ext.casefold()]
        wanted = int(getattr(prepared, "value", prepared) or 0)  # TriStateBoolean: 0 false, 1 true, 2 don't care
        if wanted in (0, 1):
            name = self._prepared.name if self._prepared is not None and self._mode else None
            recipes = [r for r in recipes if (r.name == name) == bool(wanted)]
        page, complete = _page(recipes, int(start_index or 0), int(max_results or 0))
        ids = [internal_recipe_id(r.name, r.version) for r in page]
        return [ua.Variant(complete, ua.VariantType.Boolean), ua.Variant(len(recipes), ua.VariantType.UInt32),
                ua.Variant(self.handles.new("recipes"), ua.VariantType.UInt32), ua.Variant(ids, ua.VariantType.ExtensionObject),
                _int(0)]

    async def _release_handle(self, user: LineUser, handle) -> list[ua.Variant]:
        if not isinstance(handle, int) or not self.handles.release(handle):
            raise Refused(ua.StatusCodes.BadInvalidArgument, f"no open handle {handle!r}", 0)
        return [_int(0)]

    # ResultManagement

    async def _facts_by_uid(self, result_id) -> Facts:
        uid = _id(result_id, "ResultId", 0)
        store = self.station.store
        inspection_id = self.memory.inspection_id(uid)
        if inspection_id is None and store is not None:  # any result in the log, not only this server's
            inspection_id = await asyncio.to_thread(store.inspection_id_by_uid, uid)
        if inspection_id is None or store is None:
            raise Refused(ua.StatusCodes.BadNotFound, f"no result {uid!r} in the inspection log", 0)
        row = await asyncio.to_thread(store.get, inspection_id)
        if row is None or row["uid"] != uid:
            raise Refused(ua.StatusCodes.BadNotFound, f"result {uid!r} is not in the inspection log", 0)
        return self._row_facts(row)

    def _row_facts(self, row: dict, external_ids: dict[str, str] | None = None) -> Facts:
        if external_ids is None:
            external_ids = self._external_ids()
        return facts_from_row(row, self.memory.job_of(row["uid"], row.get("job_id") or ""),
                              external_ids.get((row.get("recipe") or "").casefold(), ""))

    def _external_ids(self) -> dict[str, str]:
        book = self.station.recipes
        return {r.name.casefold(): r.line_id for r in book.list()} if book is not None else {}

    async def _result_by_id(self, user: LineUser, result_id, timeout) -> list[ua.Variant]:
        facts = await self._facts_by_uid(result_id)
        return [ua.Variant(self.handles.new(facts.uid), ua.VariantType.UInt32), _ext(result_value(facts)), _int(0)]

    async def _result_components(self, user: LineUser, result_id, timeout) -> list[ua.Variant]:
        facts = await self._facts_by_uid(result_id)
        v = result_value(facts)
        boolean, ext = ua.VariantType.Boolean, ua.VariantType.ExtensionObject
        return [ua.Variant(False, boolean), ua.Variant(self.handles.new(facts.uid), ua.VariantType.UInt32),
                ua.Variant(v.IsPartial, boolean), ua.Variant(v.IsSimulated, boolean), _int(v.ResultState),
                ua.Variant(v.MeasId, ext), ua.Variant(v.PartId, ext), ua.Variant(v.ExternalRecipeId, ext),
                ua.Variant(v.InternalRecipeId, ext), ua.Variant(v.ProductId, ext), ua.Variant(v.ExternalConfigurationId, ext),
                ua.Variant(v.InternalConfigurationId, ext), ua.Variant(v.JobId, ext),
                ua.Variant(v.CreationTime, ua.VariantType.DateTime), ua.Variant(v.ProcessingTimes, ext),
                ua.Variant(v.ResultContent, ua.VariantType.Variant), _int(0)]

    async def _result_list(self, user: LineUser, state, meas, part, ext_recipe, int_recipe, ext_config, int_config,
                           product, job, max_results, start_index, timeout) -> list[ua.Variant]:
        recipe, version = _id(int_recipe, "InternalRecipeId", 4), _version(int_recipe)
        ext = _id(ext_recipe, "ExternalRecipeId", 3)
        if ext:
            book = self.station.recipes
            found = book.get(ext) if book is not None else None
            if found is None or (recipe and found.name.casefold() != recipe.casefold()):
                return self._list_answer([], 0, 0)
            recipe = found.name
        if _id(ext_config, "ExternalConfigurationId", 5):
            return self._list_answer([], 0, 0)  # no external configurations on this station
        query = ResultQuery(state=int(state or 0), part_id=_id(part, "PartId", 2), job_id=_id(job, "JobId", 8),
                            meas_id=_id(meas, "MeasId", 1), product_id=_id(product, "ProductId", 7), recipe=recipe,
                            recipe_version=version)
        return await self._query(query, _id(int_config, "InternalConfigurationId", 6), start_index, max_results)

    async def _result_list_by_time(self, user: LineUser, start, end, state, part, max_results, start_index):
        if not isinstance(start, datetime) or not isinstance(end, datetime):
            raise Refused(ua.StatusCodes.BadTypeMismatch, "From and To must be UtcTime", 0)
        if not isinstance(part, str | None):
            raise Refused(ua.StatusCodes.BadTypeMismatch, "PartId must be a String", 3)
        query = ResultQuery(state=int(state or 0), part_id=part or "", start=utc(start), end=utc(end))
        return await self._query(query, "", start_index, max_results)

    async def _query(self, query: ResultQuery, model_id: str, start_index, max_results) -> list[ua.Variant]:
        store = self.station.store
        if store is None:
            raise Refused(ua.StatusCodes.BadResourceUnavailable, "the inspection log is unavailable")
        start, limit = int(start_index or 0), int(max_results or 0) or MAX_LIST
        limit = min(limit, MAX_LIST)

        def read() -> tuple[list[Facts], int]:
            ids, total = find(store, self.memory, query, 0, 0) if model_id else find(store, self.memory, query, start, limit)
            rows = [r for r in (store.get(i) for i in ids) if r is not None]
            if model_id:  # the configuration is the model: filter on the rows, then page
                rows = [r for r in rows if r.get("model_id") == model_id]
                total, rows = len(rows), rows[start:start + limit]
            for r in rows:
                self.memory.remember_result(r["uid"], r["id"], "")
            external_ids = self._external_ids()
            return [self._row_facts(r, external_ids) for r in rows], total

        facts, total = await asyncio.to_thread(read)
        return self._list_answer([result_value(f) for f in facts], total, start)

    def _list_answer(self, results: list, total: int, start: int) -> list[ua.Variant]:
        complete = start + len(results) >= total
        return [ua.Variant(complete, ua.VariantType.Boolean), ua.Variant(total, ua.VariantType.UInt32),
                ua.Variant(self.handles.new("results"), ua.VariantType.UInt32),
                ua.Variant(results, ua.VariantType.ExtensionObject), _int(0)]


def _value(value: Any, vtype: ua.VariantType) -> ua.DataValue:
    return ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=datetime.now(timezone.utc))


def _ext(value: Any) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.ExtensionObject)


def _int(value: int) -> ua.Variant:
    return ua.Variant(int(value), ua.VariantType.Int32)


def _id(value: Any, name: str, index: int) -> str:
    """The Id of an id structure argument (MeasIdDataType, RecipeIdExternalDataType...); "" when empty or null."""
    if value is None:
        return ""
    if isinstance(value, ua.ExtensionObject):  # a structure this server does not know
        raise Refused(ua.StatusCodes.BadTypeMismatch, f"{name}: unknown structure type {value.TypeId}", index)
    ident = getattr(value, "Id", None)
    if ident is None and not hasattr(value, "Id"):
        raise Refused(ua.StatusCodes.BadTypeMismatch, f"{name} must be an id structure, got {type(value).__name__}", index)
    return str(ident or "").strip()


def _version(value: Any) -> str:
    return str(getattr(value, "Version", "") or "").strip()


def _page(items: list, start: int, limit: int) -> tuple[list, bool]:
    limit = min(limit or MAX_LIST, MAX_LIST)
    page = items[start:start + limit]
    return page, start + len(page) >= len(items)


def _plain(args) -> list:
    """Method arguments as plain JSON values for the audit trail: an id structure as its Id, arrays by length."""
    out = []
    for a in args:
        if a is None or isinstance(a, bool | int | float | str):
            out.append(a)
        elif hasattr(a, "Id"):
            out.append(str(a.Id or ""))
        elif isinstance(a, ua.LocalizedText):
            out.append(a.Text or "")
        elif isinstance(a, list):
            out.append(f"[{len(a)} values]")
        else:
            out.append(str(a))
    return out


def _describe(args) -> str:
    return ", ".join(json.dumps(a, default=str) for a in _plain(args))
