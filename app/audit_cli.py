"""`python -m app audit verify`: prove that the audit trail was not changed, removed from or added to.

    python -m app audit verify [--db FILE] [--config F] [--expect-head HASH]

Walks the hash chain of the audit trail (read-only) and names the first record
that was changed, removed or inserted; exit code 1 when the chain is broken or
the database's protective triggers are missing, 0 with a one-line summary
(record count and head hash) when it is intact, 2 when the log cannot be read.

A chain kept in the same file cannot show someone with write access rewriting
it consistently from some record on, or removing the newest records. Note the
head hash printed here somewhere else (a supervisor's notebook, a ticket, an
e-mail) and later pass it as --expect-head: the check then also fails unless
that record is still in the chain, unchanged, with everything before it.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

from app.audit import open_read_only, verify_chain
from app.settings import load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("audit", help="verify the audit trail's hash chain",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["verify"])
    p.add_argument("--db", type=Path, help="inspection database (default: the station's, from the settings)")
    p.add_argument("--config", type=Path, help="station settings file (default: the user's)")
    p.add_argument("--expect-head", metavar="HASH",
                   help="a head hash noted from an earlier `audit verify` (12 or more hex digits): it must still be in the chain")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    db = args.db
    if db is None:
        settings, _ = load_settings(args.config)
        db = settings.db_path
    try:
        conn = open_read_only(db)
    except (OSError, sqlite3.Error) as exc:
        print(f"error: cannot read {db}: {exc}", file=sys.stderr)
        return 2
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version < 3:
            print(f"error: {db} has no hash chain yet (schema {version}): the station adds it when it next opens this log",
                  file=sys.stderr)
            return 2
        report = verify_chain(conn, args.expect_head)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        print(f"error: {db} is not a readable inspection database: {exc}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    for notice in report.notices:
        print(f"note: {notice}")
    if report.missing_guards:
        print(f"BROKEN: protective triggers missing from {db}: {', '.join(report.missing_guards)}"
              " (removed by someone with write access; the station restores them and audits it when it next opens the log)")
    if report.problem:
        print(f"BROKEN: {report.problem}")
    if not report.ok:
        print(f"audit trail of {db} is NOT intact: {report.summary()}")
        return 1
    print(f"audit trail intact: {report.summary()}")
    return 0
