"""The station as a Modbus TCP device: a PLC triggers inspections and reads the verdict from registers.

    device = ModbusDevice(station, "0.0.0.0", 5020).start()   # listening when start() returns
    ...
    device.stop()

The register map and the handshake (trigger -> busy -> results + result valid
-> PLC clears trigger -> result valid clears) are documented, with a timing
diagram and every error code, in docs/modbus.md; the constants below are that
map. Addresses are the 0-based protocol addresses (PLC notation 00001, 10001,
30001, 40001 is address + 1).

The server (pymodbus) runs on its own thread and asyncio loop. The register
image lives here, behind one lock: the station's threads write results into it,
and every Modbus request reads or changes it under the same lock, so a PLC never
sees result valid before the result registers it belongs to, and a read of the
input registers is always one consistent snapshot. A new trigger is taken only
after the previous handshake completed (result valid acknowledged).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from enum import IntEnum

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from app.recipes import Recipe
from app.station import InspectionDone, InspectionFailed, Job, RecipeChanged, State, StateChanged, Station, StationError
from app.verdict import FAIL, PASS

log = logging.getLogger("modbus")

# -- the register map (docs/modbus.md) --------------------------------------------------------

ALL_INTERFACES = "0.0.0.0"  # the host of an address given without one (":502"): a line PC listens on every network

# Coils (FC1 read, FC5/FC15 write)
COIL_TRIGGER = 0  # PLC: 1 = part in place, inspect; 0 = result taken (acknowledge)
COIL_ERROR_RESET = 1  # PLC writes 1 to clear the error code; reads back 0

# Discrete inputs (FC2)
DI_READY, DI_BUSY, DI_RESULT_VALID, DI_ERROR = 0, 1, 2, 3

# Input registers (FC4); IR_STATUS repeats the discrete inputs as bits 0-3, so one read gets everything
IR_STATUS = 0
IR_ERROR = 1  # ErrorCode below
IR_STATE = 2  # STATE_CODES
IR_JOB = 3  # number of the last accepted trigger (1..65535, wraps to 1; 0: none yet)
IR_RESULT_JOB = 4  # the job the result registers below belong to (0: none)
IR_VERDICT = 5  # VERDICT_NONE / PASS / FAIL
IR_CYCLE_MS = 6  # trigger accepted -> result written, ms
IR_MODEL_MS = 7  # the model's own time, ms
IR_INSPECTION_ID = 8  # 2 registers, high word first: the inspection's id in the log (0: not logged)
IR_RECIPE = 10  # the active recipe's number (0: its line id is not a number)
IR_CLASSES = 11  # how many classes the active model has (registers used from IR_CLASS_DEFECTS)
IR_DEFECTS = 12  # defects at or above the decision threshold, all classes
IR_FAILING = 13  # of those, the ones that fail the part
IR_CLASS_DEFECTS = 14  # one register per model class, in the model's class order
MAX_CLASSES = 16
INPUT_REGISTERS = IR_CLASS_DEFECTS + MAX_CLASSES

# Holding registers (FC3 read, FC6/FC16 write)
HR_RECIPE = 0  # recipe number: a recipe whose line id is this number; 0: keep the active recipe
HR_PART_ID = 1  # part id, ASCII, 2 characters per register, first one in the high byte; NUL pads
PART_ID_REGISTERS = 16
HOLDING_REGISTERS = HR_PART_ID + PART_ID_REGISTERS

VERDICT_NONE, VERDICT_PASS, VERDICT_FAIL = 0, 1, 2
STATE_CODES = {State.STARTING: 0, State.READY: 1, State.BUSY: 2, State.ERROR: 3, State.DISCONNECTED: 4, State.STOPPED: 5}
MAX_JOB = 0xFFFF
_VERDICTS = {PASS: VERDICT_PASS, FAIL: VERDICT_FAIL}


class ErrorCode(IntEnum):
    """IR_ERROR. Set by a refused or failed request; cleared by the error-reset coil or the next accepted trigger."""

    NONE = 0
    BUSY = 1  # trigger while an inspection runs (this handshake's, another trigger's, or continuous mode)
    NOT_ACKNOWLEDGED = 2  # trigger while result valid is still set: the PLC has not cleared the trigger after the result
    UNKNOWN_RECIPE = 3  # no recipe has that number (the write is refused with exception 03 too)
    NOT_READY = 4  # the station is in error (no model, no log), disconnected (no source), starting or stopped
    INSPECTION_FAILED = 5  # the station could not judge the frame; nothing logged, no result
    NO_RESULT = 6  # no result within the job timeout
    BAD_PART_ID = 7  # the part id registers hold something other than printable ASCII
    NOT_LOGGED = 8  # the result is valid, but the inspection log could not be written


ERROR_TEXT = {
    ErrorCode.NONE: "no error",
    ErrorCode.BUSY: "trigger while an inspection is running",
    ErrorCode.NOT_ACKNOWLEDGED: "trigger while the previous result is still valid (clear the trigger first)",
    ErrorCode.UNKNOWN_RECIPE: "no recipe has that number",
    ErrorCode.NOT_READY: "the station is not ready (error, disconnected, starting or stopped)",
    ErrorCode.INSPECTION_FAILED: "the station could not judge the frame",
    ErrorCode.NO_RESULT: "no result within the job timeout",
    ErrorCode.BAD_PART_ID: "the part id is not printable ASCII",
    ErrorCode.NOT_LOGGED: "the result could not be written to the inspection log",
}

_COIL_FCS, _DI_FCS, _IR_FCS = (1, 5, 15), (2,), (4,)  # the rest (3, 6, 16, 22, 23) are holding registers
_WRITE_FCS = (5, 6, 15, 16, 22, 23)


def parse_address(text: str, default_port: int = 5020) -> tuple[str, int]:
    """"HOST:PORT" (or "HOST", or ":PORT") as given to `serve --modbus`; ValueError naming the problem."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        host, port_text = port_text, str(default_port)
    host = host.strip("[]") or ALL_INTERFACES
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"Modbus address {text!r}: the port must be a number, e.g. 0.0.0.0:5020") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"Modbus address {text!r}: the port must be within 0..65535")
    return host, port


def encode_part_id(text: str) -> list[int]:
    """The part id registers for `text` (what a PLC writes): 2 ASCII characters each, NUL padded."""
    data = text.encode("ascii")
    if len(data) > 2 * PART_ID_REGISTERS:
        raise ValueError(f"a part id has at most {2 * PART_ID_REGISTERS} characters, got {len(text)}")
    data = data.ljust(2 * PART_ID_REGISTERS, b"\0")
    return [data[i] << 8 | data[i + 1] for i in range(0, len(data), 2)]


def decode_part_id(registers: list[int]) -> str:
    """The part id in the registers: up to the first NUL, printable ASCII, outer spaces removed (ValueError if not)."""
    data = b"".join(r.to_bytes(2, "big") for r in registers).split(b"\0", 1)[0]
    if any(not 0x20 <= b <= 0x7E for b in data):
        raise ValueError(f"part id {data!r} is not printable ASCII")
    return data.decode("ascii").strip()


def recipe_number(recipe: Recipe | None) -> int:
    """A recipe's number for the PLC: its line id when that is a number 1..65535, else 0."""
    text = recipe.external_id.strip() if recipe is not None else ""
    return int(text) if text.isdigit() and 0 < int(text) <= 0xFFFF else 0


def _word(bits: list[bool]) -> int:
    return sum(1 << i for i, on in enumerate(bits) if on)


def _clamp(value: float) -> int:
    return max(0, min(0xFFFF, round(value)))


class ModbusDevice:
    """See the module docstring. `unit_id` 1..247: requests to other unit ids get exception 0x0B; 0 answers every id.

    `job_timeout`: seconds after which an accepted trigger without a result is given up (ErrorCode.NO_RESULT).
    """

    def __init__(self, station: Station, host: str = ALL_INTERFACES, port: int = 5020, unit_id: int = 1,
                 job_timeout: float = 60.0):
        if not 0 <= unit_id <= 247:
            raise ValueError(f"Modbus unit id must be within 0..247, got {unit_id}")
        if not 0 <= port <= 65535:
            raise ValueError(f"Modbus port must be within 0..65535, got {port}")
        if job_timeout <= 0:
            raise ValueError(f"job timeout must be > 0 s, got {job_timeout}")
        self.station = station
        self.host, self.port, self.unit_id = host, port, unit_id
        self.job_timeout = job_timeout
        self._lock = threading.Lock()
        # The register image (see the map above); written only under _lock.
        self._trigger = False
        self._job: Job | None = None  # accepted, waiting for the station's result
        self._pending = False  # result written; result valid follows once the station can take the next trigger
        self._pending_error = ErrorCode.NONE  # shown with result valid, not before
        self._valid = False  # result valid
        self._error = ErrorCode.NONE
        self._job_no = 0
        self._accepted_at = 0.0
        self._results = [0] * (INPUT_REGISTERS - IR_RESULT_JOB)  # IR_RESULT_JOB .. the end, except IR_RECIPE/IR_CLASSES
        self._classes: tuple[str, ...] = ()
        self._holding = [0] * HOLDING_REGISTERS
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._thread: threading.Thread | None = None
        self._unsubscribe = None

    # -- life cycle -----------------------------------------------------------------------------

    def start(self) -> ModbusDevice:
        """Listen (on its own thread); returns once listening. OSError if the address cannot be used."""
        if self._thread is not None:
            raise RuntimeError("the Modbus device is started already")
        self._classes = self._class_names()
        self._holding[HR_RECIPE] = recipe_number(self.station.recipe)
        self._unsubscribe = self.station.subscribe(self._on_event)
        listening = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(listening, failure), name="modbus device", daemon=True)
        self._thread.start()
        listening.wait()
        if failure:
            self._thread.join()
            self._thread = None
            self._unsubscribe()
            raise OSError(f"Modbus TCP: cannot listen on {self.host}:{self.port}: {failure[0]}") from failure[0]
        log.info("Modbus TCP device listening on %s:%d, unit id %s", self.host, self.port, self.unit_id or "any")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening and close every PLC connection; a job in flight still finishes in the station."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.shutdown(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = self._loop = self._server = None

    def _run(self, listening: threading.Event, failure: list) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._listen())
        except (OSError, RuntimeError) as exc:
            failure.append(exc)
            loop.close()
            listening.set()
            return
        self._loop = loop
        listening.set()
        try:
            loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

    async def _listen(self) -> None:
        devices = [self._sim_device(self.unit_id, self._access)]
        if self.unit_id:
            devices.append(self._sim_device(0, self._other_unit))  # id 0: every unit id not named
        self._server = ModbusTcpServer(devices, address=(self.host, self.port))
        await self._server.serve_forever(background=True)  # RuntimeError when it cannot listen
        self.port = self._server.transport.sockets[0].getsockname()[1]  # the one bound when asked for port 0

    @staticmethod
    def _sim_device(unit: int, action) -> SimDevice:
        """Blocks the size of the map (16 coils and 16 inputs: bits come in 16s); `action` serves every request."""
        def bits() -> list[SimData]:
            return [SimData(0, values=[False] * 16, datatype=DataType.BITS)]

        def registers(count: int) -> list[SimData]:
            return [SimData(0, count=count, values=0, datatype=DataType.REGISTERS)]

        return SimDevice(unit, simdata=(bits(), bits(), registers(HOLDING_REGISTERS), registers(INPUT_REGISTERS)),
                         action=action)

    @staticmethod
    async def _other_unit(*_args) -> ExcCodes:
        return ExcCodes.GATEWAY_NO_RESPONSE

    # -- Modbus requests (on the device's loop) -------------------------------------------------

    async def _access(self, fc: int, _start: int, address: int, _count: int, registers: list[int],
                      values: list[int] | list[bool] | None) -> ExcCodes | None:
        """Every request: a write changes the image (or is refused); a read copies the image into `registers`."""
        if values is not None and fc in _WRITE_FCS:
            return await (self._write_coils(address, values) if fc in _COIL_FCS else self._write_holding(address, values))
        with self._lock:
            self._settle()
            if fc in _COIL_FCS:  # bits are served 16 to a register, the first in bit 0
                image = [_word([self._trigger])]
            elif fc in _DI_FCS:
                image = [_word(self._flags())]
            elif fc in _IR_FCS:
                image = self._input_registers()
            else:
                image = list(self._holding)
        registers[:len(image)] = image
        return None

    async def _write_coils(self, address: int, values) -> ExcCodes | None:
        if address + len(values) > COIL_ERROR_RESET + 1:
            return ExcCodes.ILLEGAL_ADDRESS
        for coil, value in enumerate(values, start=address):
            if coil == COIL_TRIGGER:
                self._set_trigger(bool(value))
            elif value:
                with self._lock:
                    self._error = ErrorCode.NONE
        return None

    async def _write_holding(self, address: int, values) -> ExcCodes | None:
        if address + len(values) > HOLDING_REGISTERS:
            return ExcCodes.ILLEGAL_ADDRESS
        if address == HR_RECIPE:
            number = int(values[0])
            recipe = self._recipe(number) if number else None
            if number and recipe is None:
                self._fail(ErrorCode.UNKNOWN_RECIPE, f"recipe number {number}")
                return ExcCodes.ILLEGAL_VALUE
            if recipe is not None and recipe_number(self.station.recipe) != number:
                # Selected now, so the screen shows it; while an inspection runs, the next job carries it instead.
                await asyncio.get_running_loop().run_in_executor(None, self._select, recipe)
        with self._lock:
            self._holding[address:address + len(values)] = [int(v) for v in values]
        return None

    def _select(self, recipe: Recipe) -> None:
        try:
            self.station.select_recipe(recipe.name, trigger="line")
        except StationError as exc:
            log.info("recipe %s not selected now (%s); the next job carries it", recipe.name, exc)

    def _recipe(self, number: int) -> Recipe | None:
        book = self.station.recipes
        return next((r for r in book.list() if recipe_number(r) == number), None) if book is not None else None

    def _set_trigger(self, on: bool) -> None:
        with self._lock:
            self._settle()
            rising = on and not self._trigger
            self._trigger = on
            if not on:
                self._valid = False  # the PLC has taken the result (or had none): the handshake is complete
                return
            if not rising:
                return  # a PLC writing its coil again every cycle: no new part
            before = self._job_no, self._results
            job = self._accept()
            if job is None:
                return
        # Outside the lock: the station reports its state change to _on_event on this thread.
        if self.station.trigger(job):
            self._loop.call_later(self.job_timeout, self._expire, job)
            return
        with self._lock:
            if self._job is job:  # another trigger or continuous mode came first: as if refused above
                self._job = None
                self._job_no, self._results = before
                self._refuse(ErrorCode.BUSY)

    def _accept(self) -> Job | None:
        """A new part (under the lock): the job to start, or None with the error code set."""
        station = self.station
        if self._valid or self._pending:
            return self._refuse(ErrorCode.NOT_ACKNOWLEDGED)
        if self._job is not None or station.busy or station.continuous or station.state == State.BUSY:
            return self._refuse(ErrorCode.BUSY)
        if station.state != State.READY:
            return self._refuse(ErrorCode.NOT_READY, f"{station.state.value} {station.detail}".strip())
        try:
            part_id = decode_part_id(self._holding[HR_PART_ID:])
        except ValueError as exc:
            return self._refuse(ErrorCode.BAD_PART_ID, str(exc))
        number, recipe = self._holding[HR_RECIPE], None
        if number and recipe_number(station.recipe) != number:
            recipe = self._recipe(number)
            if recipe is None:  # deleted since it was selected
                return self._refuse(ErrorCode.UNKNOWN_RECIPE, f"recipe number {number}")
        self._job_no = self._job_no % MAX_JOB + 1
        self._job = Job("line", job_id=str(self._job_no), part_id=part_id, recipe=recipe.name if recipe else None)
        self._error = ErrorCode.NONE
        self._results = [0] * len(self._results)
        self._accepted_at = time.perf_counter()
        return self._job

    def _refuse(self, code: ErrorCode, detail: str = "") -> None:
        self._error = code
        log.warning("Modbus trigger refused: %s%s", ERROR_TEXT[code], f" ({detail})" if detail else "")
        return None

    def _fail(self, code: ErrorCode, detail: str) -> None:
        with self._lock:
            self._error = code
        log.warning("Modbus: %s (%s)", ERROR_TEXT[code], detail)

    def _expire(self, job: Job) -> None:
        with self._lock:
            if self._job is not job:
                return
            self._job = None
            self._error = ErrorCode.NO_RESULT
        log.warning("Modbus job %s: %s (%.0f s)", job.job_id, ERROR_TEXT[ErrorCode.NO_RESULT], self.job_timeout)

    # -- the image ------------------------------------------------------------------------------

    def _settle(self) -> None:
        """Result valid once the station is no longer busy with it (under the lock), so the next trigger is taken."""
        if self._pending and not self.station.busy:
            self._publish()

    def _publish(self) -> None:
        self._pending, self._valid = False, True
        if self._pending_error:
            self._error, self._pending_error = self._pending_error, ErrorCode.NONE

    def _flags(self) -> list[bool]:
        station = self.station
        busy = self._job is not None or self._pending
        ready = (station.state == State.READY and not station.continuous and not station.busy and not busy
                 and not self._valid)
        return [ready, busy, self._valid, self._error != ErrorCode.NONE]

    def _input_registers(self) -> list[int]:
        regs = [_word(self._flags()), int(self._error), STATE_CODES.get(self.station.state, 0),
                self._job_no, *self._results]
        regs[IR_RECIPE] = recipe_number(self.station.recipe)
        regs[IR_CLASSES] = min(len(self._classes), MAX_CLASSES)
        return regs

    def _class_names(self) -> tuple[str, ...]:
        if self.station.recipe is None:  # not started: asking for its model would load one
            return ()
        detector = self.station.detector
        return tuple(detector.metadata.class_names) if detector is not None else ()

    # -- the station's events (on its threads) --------------------------------------------------

    def _on_event(self, event) -> None:
        if isinstance(event, InspectionDone) and event.job is self._job:
            self._done(event)
        elif isinstance(event, InspectionFailed) and event.job is self._job:
            with self._lock:
                if self._job is event.job:
                    self._job = None
                    self._error = ErrorCode.INSPECTION_FAILED
            log.warning("Modbus job %s: %s: %s", event.job.job_id, ERROR_TEXT[ErrorCode.INSPECTION_FAILED], event.message)
        elif isinstance(event, StateChanged) and event.state != State.BUSY:
            with self._lock:  # the station has finished: a pending result becomes valid
                if self._pending:
                    self._publish()
        elif isinstance(event, RecipeChanged):
            classes = self._class_names()
            with self._lock:
                self._classes = classes

    def _done(self, event: InspectionDone) -> None:
        result = event.result
        classes = self._class_names()
        per_class = [0] * MAX_CLASSES
        for i in result.verdict.shown:
            label = result.detections[i].label
            if label in classes[:MAX_CLASSES]:
                per_class[classes.index(label)] += 1
        inspection_id = result.inspection_id or 0
        with self._lock:
            if self._job is not event.job:
                return  # given up already (NO_RESULT)
            results = [int(event.job.job_id), _VERDICTS.get(result.verdict.verdict, VERDICT_NONE),
                       _clamp((time.perf_counter() - self._accepted_at) * 1000.0), _clamp(result.inference_ms),
                       inspection_id >> 16 & 0xFFFF, inspection_id & 0xFFFF, 0, 0,
                       len(result.verdict.shown), len(result.verdict.failing), *per_class]
            self._results = results  # IR_RECIPE and IR_CLASSES (the zeros) are filled in when read
            self._classes = classes
            self._job = None
            self._pending = True  # result valid follows in _settle / on the station's next state
            if result.inspection_id is None:
                self._pending_error = ErrorCode.NOT_LOGGED
        if result.inspection_id is None:
            log.warning("Modbus job %s: %s: %s", event.job.job_id, ERROR_TEXT[ErrorCode.NOT_LOGGED], result.error)
