"""`python -m app audit verify`: prove that the log was not changed, removed from or added to.

    python -m app audit verify [--db FILE] [--config F] [--expect-head HASH ...] [--pictures]

Walks the hash chains of the audit trail and of the inspections (read-only),
checks QA's reviews and box corrections and the users' roles against the audit
records that made them, and names the first row that was changed, removed or
inserted. Exit code 1 when anything is broken (or the database's protective
triggers are missing), 0 with a one-line summary (row counts and both head
hashes) when all is intact, 2 when the log cannot be read.

A chain kept in the same file cannot show someone with write access rewriting
it consistently from some row on, or removing the newest rows. Note the head
hashes printed here somewhere else (a supervisor's notebook, a ticket, an
e-mail) and later pass them as --expect-head: the check then also fails unless
those rows are still in the chains, unchanged, with everything before them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.audit import verify
from app.settings import load_settings_for_command
from app.store import InspectionStore, StoreError

SHOWN_PROBLEMS = 20


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("audit", help="verify the hash chains of the audit trail and the inspection log",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["verify"])
    p.add_argument("--db", type=Path, help="inspection database (default: the station's, from the settings)")
    p.add_argument("--config", type=Path, help="station settings file (default: the user's)")
    p.add_argument("--expect-head", metavar="HASH", action="append", default=[],
                   help="a head hash noted from an earlier `audit verify` (12 or more hex digits): it must still be"
                        " in the chain; give it once per hash")
    p.add_argument("--pictures", action="store_true",
                   help="also read every saved picture and check it against the hash logged with its inspection (slow)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    db = args.db
    if db is None:
        settings = load_settings_for_command(args.config)
        db = settings.db_path
    try:
        log = InspectionStore(db, read_only=True)  # checking the evidence must never change (or migrate) it
    except StoreError as exc:
        print(f"error: cannot read {db}: {exc}", file=sys.stderr)
        return 2
    try:
        if log.schema_version < 3:
            print(f"error: {db} has no hash chain yet (schema {log.schema_version}): the station adds it when it next opens"
                  " this log", file=sys.stderr)
            return 2
        report = verify(log, args.expect_head, Path(db).parent if args.pictures else None)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"error: {db} is not a readable inspection database: {exc}", file=sys.stderr)
        return 2
    finally:
        log.close()
    for line in report.notices + report.anchors:
        print(f"note: {line}")
    broken = [c.problem for c in (report.audit, report.inspections) if c.problem] + report.problems
    if report.missing_guards:
        broken.append(f"protective triggers missing: {', '.join(report.missing_guards)} (removed by someone with write"
                      " access; the station puts them back, and audits it, when it next opens the log)")
    for problem in broken[:SHOWN_PROBLEMS]:
        print(f"BROKEN: {problem}")
    if len(broken) > SHOWN_PROBLEMS:
        print(f"BROKEN: ... and {len(broken) - SHOWN_PROBLEMS} more")
    if broken:
        print(f"{db} is NOT intact: {report.summary()}")
        return 1
    print(f"intact: {report.summary()}")
    return 0
