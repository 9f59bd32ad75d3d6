"""`python -m app export-csv`: the supervisor's CSV reports from the command line, so they can be scheduled.

    python -m app export-csv --db PATH --from 2026-11-01 --to 2026-11-30 --out nov.csv [--per-inspection]

The daily summary by default (per day, station and shift when the settings
name shifts), or one row per inspection. See app/reports.py for how days,
shifts and time zones are counted.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from app.reports import ReportError, export_csv, parse_date, resolve_tz
from app.settings import load_settings_for_command


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export-csv",
        help="write the daily defect summary or the per-inspection list of a date range as CSV",
        description="Write the daily defect summary (inspected, passed, failed, defect rate, failing defects per class; "
        "per station, and per shift when the settings name shifts) or, with --per-inspection, one row per inspection, "
        "for the inclusive date range --from..--to. UTF-8 with a header row, ISO 8601 dates, dot decimals; "
        "text typed by users is written so that spreadsheets never run it as a formula.",
    )
    p.add_argument("--db", type=Path, help="inspection database (default: the station's, from the settings)")
    p.add_argument("--from", dest="first", required=True, metavar="DATE",
                   help="first day, YYYY-MM-DD (or 'today', 'yesterday'), inclusive")
    p.add_argument("--to", dest="last", required=True, metavar="DATE",
                   help="last day, YYYY-MM-DD (or 'today', 'yesterday'), inclusive")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="CSV file to write (replaced atomically)")
    p.add_argument("--per-inspection", action="store_true", help="one row per inspection instead of the daily summary")
    zone = p.add_mutually_exclusive_group()
    zone.add_argument("--utc", action="store_true", help="count days in UTC instead of the station's local time")
    zone.add_argument("--tz", metavar="ZONE", help="count days in this time zone, e.g. Europe/Berlin (default: the system's)")
    p.add_argument("--config", type=Path, help="station settings file, for the shifts and the default database (default: the user's)")
    p.add_argument("--no-shifts", action="store_true", help="ignore the shifts of the settings: per day and station only")
    p.add_argument("--bom", action="store_true", help="start the file with a UTF-8 byte order mark, for opening in Excel")
    p.set_defaults(func=run)


def _day(text: str, tz) -> date:
    today = datetime.now(timezone.utc).astimezone(tz).date()
    word = text.strip().lower()
    if word == "today":
        return today
    if word == "yesterday":
        return today - timedelta(days=1)
    return parse_date(text)


def run(args: argparse.Namespace) -> int:
    settings = load_settings_for_command(args.config)
    db = args.db or settings.db_path
    shifts = () if args.no_shifts else settings.shifts
    try:
        tz = resolve_tz(args.tz, args.utc)
        first, last = _day(args.first, tz), _day(args.last, tz)
        if first > last:
            raise ReportError(f"--from {first} is after --to {last}")
        if not Path(db).is_file():
            raise ReportError(f"no inspection database at {db}")
        if not args.out.parent.is_dir():
            raise ReportError(f"the folder for --out does not exist: {args.out.parent}")
        start = time.perf_counter()
        n = export_csv(db, first, last, args.out, per_inspection_rows=args.per_inspection, tz=tz, shifts=shifts, bom=args.bom)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    what = "inspections" if args.per_inspection else "summary rows" + (" (per shift)" if shifts else "")
    print(f"wrote {n} {what} for {first}..{last} to {args.out} in {elapsed:.2f} s")
    return 0
