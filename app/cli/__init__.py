"""Command line of the station: every argument parser lives in this package (`app.cli.<command>`).

    python -m app [--source S] [--config F] [--screenshot OUT.png [--inspect]]   the station window
    python -m app --plant [postgresql://LOGIN@HOST/DB]                            plant mode: all stations, no camera
    python -m app serve [--source S] [--recipe NAME] [--sink URL]...             the station as a service, no window
    python -m app status                                                           state, recipe, counts, output backlog
    python -m app inspect --source DIR_OR_VIDEO --db PATH [--recipe NAME]        headless inspection
    python -m app export-csv --db PATH --from DATE --to DATE --out FILE [--per-inspection]   CSV reports
    python -m app users add NAME --role ROLE [--as ADMIN]                         local users and roles
    python -m app opcua-clients list | trust SHA256 --as ADMIN                  OPC UA client applications
    python -m app export-training-set --db PATH --out DIR                         QA-reviewed pictures -> COCO
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.cli import audit, export_csv, export_training_set, inspect, opcua_clients, serve, status, users

COMMANDS = {"inspect": inspect, "serve": serve, "status": status, "users": users,
            "export-training-set": export_training_set, "export-csv": export_csv, "audit": audit,
            "opcua-clients": opcua_clients}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        parser = argparse.ArgumentParser(prog="python -m app")
        sub = parser.add_subparsers(dest="command", required=True)
        for module in COMMANDS.values():
            module.register(sub)
        args = parser.parse_args(argv)
        return args.func(args)
    return gui_main(argv)


def gui_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m app",
        description="The inspection station window. Sub-commands: "
        + ", ".join(f"`python -m app {c} --help`" for c in COMMANDS) + ".",
    )
    p.add_argument("--config", type=Path, help="station settings file (default: the user's)")
    p.add_argument("--source", help="camera index, stream URL, video file, image file or folder (this run only)")
    p.add_argument("--model", help="model file (this run only)")
    p.add_argument("--data-dir", help="folder for the inspection database and saved frames (this run only)")
    p.add_argument("--db", type=Path, help="inspection database to open (this run only; pictures are kept beside it)")
    p.add_argument("--screenshot", type=Path, metavar="OUT.png",
                   help="open the window, save a screenshot of it and exit")
    p.add_argument("--inspect", action="store_true", help="with --screenshot: inspect the first frame first")
    p.add_argument("--plant", nargs="?", const="", metavar="URL",
                   help="plant mode: gallery, review, reports and trends of every station from the plant database"
                        " postgresql://LOGIN@HOST/DB (no URL: the settings' plant_db_url); no camera")
    return p


def gui_main(argv: list[str]) -> int:
    args = gui_parser().parse_args(argv)
    from app.ui.run import run_plant, run_station  # Qt only when a window is wanted

    return run_plant(args) if args.plant is not None else run_station(args)
