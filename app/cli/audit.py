"""`python -m app audit verify`: prove that the log was not changed, removed from or added to.

    python -m app audit verify [--db FILE] [--config F] [--expect-head HASH ...] [--pictures]
    python -m app audit verify --plant [URL] [--password-file F | --password-env NAME] [--expect-head HASH ...] [--pictures]

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

--plant checks the plant database (PostgreSQL, docs/plant.md) instead: every
origin's chains as it hashed them, the plant's own (QA reviews made in plant
mode) first, then each station's, one summary line (or its problems) each.
URL: postgresql://LOGIN@HOST[:PORT]/DB, by default the settings' plant_db_url;
the password comes from --password-file / --password-env (same meaning as the
settings' plant_db_password_file / plant_db_password_env), else from the
settings' (or libpq's ~/.pgpass). Any plant login that may read the database
will do (a plant_report one is enough); nothing is written or migrated.
--pictures checks the copies in the settings' plant_picture_store. An expected
head may be any origin's. Exit 1 when any origin is broken, 0 when all are
intact, 2 when the database cannot be reached or read.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from app.audit import VerifyReport, verify
from app.settings import load_settings_for_command
from app.store import InspectionStore, StoreError

SHOWN_PROBLEMS = 20


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("audit", help="verify the hash chains of the audit trail and the inspection log",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["verify"])
    where = p.add_mutually_exclusive_group()
    where.add_argument("--db", type=Path, help="inspection database (default: the station's, from the settings)")
    where.add_argument("--plant", nargs="?", const="", metavar="URL",
                       help="check the plant database instead: every station's chains and the plant's own;"
                            " postgresql://LOGIN@HOST/DB (no URL: the settings' plant_db_url)")
    p.add_argument("--password-file", metavar="F",
                   help="with --plant: the login's password is the first line of this file (chmod 600)"
                        " (default: the settings' plant_db_password_file)")
    p.add_argument("--password-env", metavar="NAME",
                   help="with --plant: the login's password is in this environment variable"
                        " (default: the settings' plant_db_password_env)")
    p.add_argument("--config", type=Path, help="station settings file (default: the user's)")
    p.add_argument("--expect-head", metavar="HASH", action="append", default=[],
                   help="a head hash noted from an earlier `audit verify` (12 or more hex digits): it must still be"
                        " in the chain; give it once per hash")
    p.add_argument("--pictures", action="store_true",
                   help="also read every saved picture and check it against the hash logged with its inspection (slow;"
                        " with --plant: the copies in the settings' plant_picture_store)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.plant is not None:
        return run_plant(args)
    if args.password_file or args.password_env:
        print("error: --password-file and --password-env are for --plant", file=sys.stderr)
        return 2
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
    broken = _print_report(report)
    if broken:
        print(f"{db} is NOT intact: {report.summary()}")
        return 1
    print(f"intact: {report.summary()}")
    return 0


def _print_report(report: VerifyReport, label: str = "", guards: bool = True) -> bool:
    """Print a report's notes and problems (each line after `label`); whether anything is broken."""
    for line in report.notices + report.anchors:
        print(f"note: {label}{line}")
    broken = [c.problem for c in (report.audit, report.inspections) if c.problem] + report.problems
    if guards and report.missing_guards:
        broken.append(f"protective triggers missing: {', '.join(report.missing_guards)} (removed by someone with write"
                      " access; the station puts them back, and audits it, when it next opens the log)")
    for problem in broken[:SHOWN_PROBLEMS]:
        print(f"BROKEN: {label}{problem}")
    if len(broken) > SHOWN_PROBLEMS:
        print(f"BROKEN: {label}... and {len(broken) - SHOWN_PROBLEMS} more")
    return bool(broken)


def run_plant(args: argparse.Namespace) -> int:
    """`audit verify --plant [URL]`: each origin of the plant database, the plant's own chain first."""
    from app.store.postgres import PLANT, open_plant, verify_plant

    settings = load_settings_for_command(args.config)
    if args.password_file or args.password_env:  # the options replace the settings' way to the password
        settings = replace(settings, plant_db_password_file=args.password_file or "",
                           plant_db_password_env=args.password_env or "")
    try:
        log = open_plant(args.plant, settings, migrate=False)  # checking the evidence must never change it
    except (StoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.pictures and log.picture_store is None:
            print("error: --pictures with --plant needs the plant picture store: set plant_picture_store in the settings",
                  file=sys.stderr)
            return 2
        reports = verify_plant(log, args.expect_head, log.picture_store if args.pictures else None)
    except (StoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        log.close()
    broken = []
    for name, report in reports.items():
        label = "plant's own chain" if name == PLANT else f"station {name}"
        if _print_report(report, f"{label}: ", guards=False):
            broken.append(label)
            print(f"{label}: NOT intact: {report.summary()}")
        else:
            print(f"{label}: intact: {report.summary()}")
    missing_guards = reports[PLANT].missing_guards  # one set of triggers for every origin: said once
    if missing_guards:
        print(f"BROKEN: protective triggers missing in the plant database: {', '.join(missing_guards)} (dropped or"
              " disabled by its owner or a superuser)")
        broken.append("its protective triggers")
    if broken:
        print(f"the plant database {log.url} is NOT intact: {', '.join(broken)}")
        return 1
    print(f"intact: the plant database {log.url}: all {len(reports)} origins")
    return 0
