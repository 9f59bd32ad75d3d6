"""`python -m app export-training-set`: reviewed inspections -> a COCO data set for the detector.

    python -m app export-training-set --db PATH --out DIR [--from DATE] [--to DATE]
    python -m detector dataset --source DIR/annotations.json --out runs/line_data ...

Prints how many reviewed inspections were exported and each one skipped with
the reason; exits 1 when none was exported (e.g. nothing reviewed in the range).
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime, time, timedelta
from pathlib import Path

from app.settings import load_settings_for_command
from app.store import GalleryFilter, InspectionStore, StoreError
from app.training_export import export_reviewed


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export-training-set", help="export QA-reviewed inspections as a COCO training set",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", type=Path, help="inspection database (default: the station's, from the settings)")
    p.add_argument("--config", type=Path, help="station settings file (default: the user's)")
    p.add_argument("--out", type=Path, required=True, help="folder to write annotations.json + images/ into")
    p.add_argument("--from", dest="start", type=date.fromisoformat, help="first day (YYYY-MM-DD, local time)")
    p.add_argument("--to", dest="end", type=date.fromisoformat, help="last day, inclusive")
    p.add_argument("--whole-frame", action="store_true", help="keep whole frames instead of the inspection region")
    p.set_defaults(func=run)


def _local_midnight(d: date) -> datetime:
    return datetime.combine(d, time()).astimezone()


def run(args: argparse.Namespace) -> int:
    settings = load_settings_for_command(args.config)
    db = args.db or settings.db_path
    if not Path(db).is_file():
        print(f"error: no inspection database at {db}", file=sys.stderr)
        return 2
    flt = GalleryFilter(
        start=_local_midnight(args.start) if args.start else None,
        end=_local_midnight(args.end + timedelta(days=1)) if args.end else None,
    )
    try:
        with InspectionStore(db) as store:
            result = export_reviewed(store, args.out, flt, crop_to_region=not args.whole_frame)
    except (StoreError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lines = result.lines()
    if not result.exported:  # a scheduled job must not take an empty set for a result
        print("error: " + "\n".join(lines), file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0
