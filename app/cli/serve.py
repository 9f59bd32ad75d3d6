"""`python -m app serve`: the station as a service on a line PC, without a window and without Qt.

    python -m app serve [--config F] [--source S] [--recipe NAME] [--db FILE] [--sink URL]... [--trigger manual|continuous]
                        [--modbus HOST:PORT] [--opcua opc.tcp://HOST:PORT [--opcua-allow-anonymous]]

The same `Station` as the window. `--trigger manual` (default) waits for
triggers from the line (OPC UA, Modbus); `--trigger continuous` inspects every
frame the model keeps up with, and on a finite source (a picture folder, a video)
every frame exactly once, then exits when the results are delivered. Logs go to
stdout (the journal, under systemd). SIGTERM or Ctrl+C finishes the inspection
in flight, drains the result outputs and exits 0.

Exit codes: 0 done; 2 the station could not start (bad option, source, recipe,
model, log); 3 stopped with results still waiting for an output (they are
delivered after the next start).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from app.line import LineDevices
from app.settings import load_settings_for_command

log = logging.getLogger("serve")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run the station as a service (no window): the line triggers, outputs deliver",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="station settings file (default: the user's)")
    p.add_argument("--source", help="camera index, stream URL, video file, picture file or folder (this run only)")
    p.add_argument("--recipe", help="recipe to start with, by name or line id (default: the active one)")
    p.add_argument("--db", type=Path, help="inspection database (this run only; default: the settings' data folder)")
    p.add_argument("--model", help="model file for every recipe (this run only)")
    p.add_argument("--sink", action="append", default=[], metavar="URL",
                   help="result output besides the settings': mqtt://HOST:PORT/PREFIX or http(s)://... (repeatable)")
    p.add_argument("--modbus", metavar="HOST:PORT", help="serve the line as a Modbus TCP device, e.g. 0.0.0.0:5020 "
                   "(default: the settings'; docs/modbus.md has the register map)")
    p.add_argument("--opcua", metavar="URL", help="serve the line as an OPC UA Machine Vision server, e.g. "
                   "opc.tcp://0.0.0.0:4840 (default: the settings'; docs/opcua.md)")
    p.add_argument("--opcua-allow-anonymous", action="store_true", default=None,
                   help="also an unsecured, anonymous OPC UA endpoint (lab tests only)")
    p.add_argument("--trigger", choices=("manual", "continuous"), default="manual",
                   help="manual: wait for the line's triggers; continuous: inspect every frame (default: %(default)s)")
    p.add_argument("--drain-timeout", type=float, default=60.0, metavar="S",
                   help="at the end, wait this long for the outputs to deliver every result (default: %(default)s)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.station import InspectionDone, InspectionFailed, SourceEnded, StateChanged, Station, StationError

    logging.basicConfig(level=args.log_level, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("asyncua", "pymodbus"):  # their INFO is a line per imported node / connection
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    settings = load_settings_for_command(args.config)
    continuous = args.trigger == "continuous"
    station = Station(settings, config_path=args.config, overrides={"source": args.source, "model_path": args.model},
                      db_path=args.db, recipe=args.recipe, sinks=args.sink, lossless=continuous, loop_video=False)
    stop = threading.Event()
    ended = threading.Event()

    def on_event(event) -> None:
        if isinstance(event, InspectionDone):
            r = event.result
            found = ", ".join(f"{r.detections[i].label} {r.detections[i].score:.2f}" for i in r.verdict.failing)
            log.info("#%s %s %s [%s] %s%s%s", r.inspection_id, r.verdict.verdict, r.source, event.job.trigger,
                     f"job {event.job.job_id} " if event.job.job_id else "", found or "no failing defects",
                     f" NOT LOGGED: {r.error}" if r.error else "")
        elif isinstance(event, InspectionFailed):
            log.error("not inspected: %s", event.message)
        elif isinstance(event, StateChanged):  # ready <-> busy at every part: worth a line only when debugging
            level = logging.DEBUG if event.state.value in ("ready", "busy") and not event.detail else logging.INFO
            log.log(level, "state %s%s", event.state.value, f": {event.detail}" if event.detail else "")
        elif isinstance(event, SourceEnded):
            log.info("source ended: %s", event.reason)
            ended.set()

    station.subscribe(on_event)
    try:
        station.start()
    except StationError as exc:
        log.error("%s", exc)
        return 2
    for problem in station.problems:
        log.warning("%s", problem.replace("\n", " "))
    if station.store is None or station.detector is None:
        log.error("cannot inspect: %s", station.detail)
        station.stop(drain=False, timeout=1.0)
        return 2
    if station.feed is None:
        log.error("no source: give --source or set one in the settings")
        station.stop(drain=False, timeout=1.0)
        return 2

    line = LineDevices(station, modbus=args.modbus if args.modbus is not None else settings.modbus,
                       modbus_unit_id=settings.modbus_unit_id, opcua=args.opcua if args.opcua is not None else settings.opcua,
                       opcua_allow_anonymous=bool(args.opcua_allow_anonymous or settings.opcua_allow_anonymous))
    try:
        line.start()
    except (ValueError, OSError) as exc:
        log.error("%s", exc)
        station.stop(drain=False, timeout=1.0)
        return 2
    for warning in line.warnings:
        log.warning("%s", warning)

    def on_signal(signum, _frame) -> None:
        log.info("%s: finishing the inspection in flight, then delivering the outputs", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    recipe = station.recipe
    log.info("station %s serving: source %s, recipe %s v%s, trigger %s, log %s", settings.station_name,
             station.feed.source.name, recipe.name, recipe.version, args.trigger, station.db_path)
    if continuous:
        station.set_continuous(True)
    while not stop.wait(0.2):
        if continuous and ended.is_set():
            break
    station.set_continuous(False, "stopping")
    line.stop()  # the line hears "stopped" and sends no more triggers; the one in flight finishes
    drained = station.stop(drain=True, timeout=args.drain_timeout)
    log.info("stopped" + ("" if drained else " with results still waiting for an output"))
    return 0 if drained else 3
