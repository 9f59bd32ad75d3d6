"""`python -m app opcua-clients ...`: which OPC UA client applications (PLCs, SCADA) may connect, from a terminal.

    python -m app opcua-clients list                          # trusted, then refused: SHA-256, status, name, URI, validity
    python -m app opcua-clients trust SHA256 --as ADMIN       # the first 8 or more hex digits are enough
    python -m app opcua-clients distrust SHA256 --as ADMIN

For stations run without a window (`python -m app serve`); the window has File -> OPC UA client
certificates. A client refused for its certificate is listed after its first try (docs/opcua.md,
"Security"). Each change is an audit record signed by the admin (PIN asked, or read from stdin with
--pin-stdin) and counts at the client's next sign-in.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from app.line.opcua.trust import ClientTrustList, change_trust, opcua_folder
from app.settings import load_settings_for_command
from app.store import InspectionStore, StoreError
from app.users import PermissionDenied, UserDirectory


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("opcua-clients", help="list, trust and distrust OPC UA client certificates",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["list", "trust", "distrust"])
    p.add_argument("sha256", nargs="?", help="for trust / distrust: the certificate's SHA-256 (or its first digits)")
    p.add_argument("--as", dest="signer", metavar="ADMIN", help="admin who signs the change (asked for their PIN)")
    p.add_argument("--db", type=Path, help="inspection database (default: the station's, from the settings)")
    p.add_argument("--config", type=Path, help="station settings file (default: the user's)")
    p.add_argument("--pin-stdin", action="store_true", help="read the admin's PIN from stdin")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings_for_command(args.config)
    db = args.db or settings.db_path
    trust = ClientTrustList(opcua_folder(db))
    if args.action == "list":
        for c in trust.certificates():
            status = ("trusted" if c.trusted else "refused") + (" (expired)" if c.expired else "")
            print(f"{c.fingerprint}\t{status}\t{c.name}\t{c.application_uri}\tvalid until {c.not_after:%Y-%m-%d}")
        return 0
    try:
        if not args.sha256:
            raise ValueError(f"'{args.action}' needs the certificate's SHA-256 (see `list`)")
        if not args.signer:
            raise PermissionDenied("sign the change with --as ADMIN")
        entry = trust.find(args.sha256)
        with InspectionStore(db) as store:
            users = UserDirectory(store, min_pin_length=settings.min_pin_length)
            pin = sys.stdin.readline().strip() if args.pin_stdin else getpass.getpass(f"PIN for {args.signer}: ")
            user = users.authenticate(args.signer, pin)
            if user is None:
                raise PermissionDenied(f"wrong user name or PIN for {args.signer}")
            users.require(user, "settings")
            done = change_trust(trust, store, entry.fingerprint, args.action == "trust", user.name)
    except (KeyError, ValueError, PermissionDenied, StoreError, OSError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)  # KeyError's str quotes
        return 2
    print(f"{done.name} ({done.fingerprint[:16]}...) is {'now trusted' if done.trusted else 'no longer trusted'}")
    return 0
