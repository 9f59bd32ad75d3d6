"""`python -m app status`: what the station is doing, as a supervisor or a monitoring script asks it.

    python -m app status [--config F] [--db FILE] [--json]

The running station (window or `serve`) writes its state beside its log; this
reads that, today's counts from the log (opened read-only) and each result
output's backlog. Exit code 0 when a station is running and ready or busy,
1 when it is in error, disconnected or not running, 2 when there is no log.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, time, timedelta, timezone
from pathlib import Path

from app.line.opcua.trust import ClientTrustList, opcua_folder
from app.settings import load_settings_for_command


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("status", help="the station's state, active recipe, today's counts and output backlog",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="station settings file (default: the user's)")
    p.add_argument("--db", type=Path, help="inspection database (default: the settings' data folder)")
    p.add_argument("--json", action="store_true", help="print one JSON object (for monitoring scripts)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.outputs import open_output
    from app.station import read_status
    from app.store import InspectionStore, StoreError, iso_utc

    settings = load_settings_for_command(args.config)
    db = args.db or settings.db_path
    if not Path(db).is_file():
        print(f"error: no inspection database at {db}", file=sys.stderr)
        return 2
    status = read_status(db) or {}
    midnight = datetime.combine(datetime.now().astimezone().date(), time()).astimezone()
    lo, hi = iso_utc(midnight), iso_utc(midnight + timedelta(days=1))
    try:
        with InspectionStore(db, read_only=True) as store:
            rows = store.report_inspections(lo, hi)
            outputs = []
            if settings.plant_db_url:  # the plant database: its own cursor beside the outputs'
                backlog, oldest = store.output_backlog("plant:inspections")
                outputs.append({"output": "plant database", "backlog": backlog, "oldest_age_s": _age(oldest)})
            for url in dict.fromkeys([*settings.sinks]):
                try:
                    name = open_output(url).name
                except ValueError as exc:
                    outputs.append({"output": url, "error": str(exc)})
                    continue
                backlog, oldest = store.output_backlog(name)
                outputs.append({"output": name, "backlog": backlog, "oldest_age_s": _age(oldest)})
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    today = {"inspected": len(rows), "pass": sum(r.verdict == "PASS" for r in rows), "fail": sum(r.verdict == "FAIL" for r in rows)}
    # OPC UA clients refused for their certificate so far and not trusted since: a PLC waiting for an admin.
    refused = [c.name for c in ClientTrustList(opcua_folder(db)).certificates() if not c.trusted]
    running = bool(status.get("running"))
    state = status.get("state", "unknown") if running else "not running"
    report = {"station": status.get("station", settings.station_name), "state": state, "detail": status.get("detail", ""),
              "recipe": status.get("recipe", settings.recipe or "default"), "recipe_version": status.get("recipe_version"),
              "source": status.get("source", ""), "updated_at": status.get("updated_at"), "db": str(db),
              "today": today, "outputs": outputs, "camera": status.get("camera") if running else None,
              "opcua_clients_refused": refused}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"station {report['station']}: {state}" + (f" ({report['detail']})" if report["detail"] else "")
              + (f", since {report['updated_at']}" if report["updated_at"] else ""))
        print(f"recipe {report['recipe']}" + (f" v{report['recipe_version']}" if report["recipe_version"] else "")
              + (f", source {report['source']}" if report["source"] else ""))
        print(f"today: {today['inspected']} inspected, {today['pass']} PASS, {today['fail']} FAIL")
        if report["camera"]:
            from app.sources_genicam import health_text

            camera = report["camera"]
            print(f"camera: {camera['error']}" if "error" in camera else health_text(camera))
        for o in outputs:
            if "error" in o:
                print(f"output {o['output']}: {o['error']}")
            else:
                print(f"output {o['output']}: " + (f"{o['backlog']} results waiting, oldest {o['oldest_age_s']:.0f} s"
                                                   if o["backlog"] else "all delivered"))
        if refused:
            print(f"OPC UA clients refused, certificate not trusted: {', '.join(refused)} (python -m app opcua-clients list)")
        print(f"log {db}")
    return 0 if running and state in ("ready", "busy") else 1


def _age(oldest: str | None) -> float | None:
    """Seconds since a log time (None: nothing waiting)."""
    if not oldest:
        return None
    return round((datetime.now(timezone.utc) - datetime.fromisoformat(oldest.replace("Z", "+00:00"))).total_seconds(), 1)
