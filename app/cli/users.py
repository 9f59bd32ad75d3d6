"""`python -m app users ...`: manage the station's local users from a terminal.

    python -m app users add NAME --role admin            # the very first user: no login needed
    python -m app users add NAME --role qa --as ADMIN    # later: an admin signs the change
    python -m app users list | set-role NAME ROLE --as ADMIN | disable NAME --as ADMIN | pin NAME [--as ADMIN]

PINs are read from the terminal (or one per line from stdin with --pin-stdin:
the new user's PIN first, then the signing admin's). A PIN has at least 6
digits (`min_pin_length` in the settings); 5 wrong PINs lock that user for 5
minutes (`pin NAME --as ADMIN` sets a new PIN and lifts the lock). Once any
user was ever created, every change needs an admin's signature, even if all
users are disabled now; the last active admin cannot be disabled or demoted.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import datetime, timezone
from pathlib import Path

from app.settings import load_settings_for_command
from app.store import InspectionStore, StoreError, iso_utc
from app.users import ROLES, SETUP_USER, PermissionDenied, User, UserDirectory


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("users", help="add, list and change the station's users and roles",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["add", "list", "set-role", "disable", "enable", "pin"])
    p.add_argument("name", nargs="?", help="user name")
    p.add_argument("role_arg", nargs="?", metavar="ROLE", help="for set-role: the new role")
    p.add_argument("--role", choices=ROLES, help="for add: the user's role")
    p.add_argument("--as", dest="signer", metavar="ADMIN", help="admin who signs the change (asked for their PIN)")
    p.add_argument("--db", type=Path, help="inspection database (default: the station's, from the settings)")
    p.add_argument("--config", type=Path, help="station settings file (default: the user's)")
    p.add_argument("--pin-stdin", action="store_true", help="read PINs from stdin, one per line")
    p.set_defaults(func=run)


def _pin_reader(from_stdin: bool):
    lines = iter(sys.stdin.read().splitlines()) if from_stdin else None

    def read(prompt: str) -> str:
        if lines is not None:
            return next(lines, "")
        return getpass.getpass(prompt)

    return read


def run(args: argparse.Namespace) -> int:
    settings = load_settings_for_command(args.config)
    try:
        store = InspectionStore(args.db or settings.db_path)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    read_pin = _pin_reader(args.pin_stdin)
    with store:
        users = UserDirectory(store, min_pin_length=settings.min_pin_length)
        try:
            if args.action == "list":
                now = iso_utc(datetime.now(timezone.utc))
                for u in users.list():
                    state = "active" if u["active"] else "disabled"
                    locked = f"\tlocked until {u['locked_until']}" if (u["locked_until"] or "") > now else ""
                    print(f"{u['name']}\t{u['role']}\t{state}\t{u['created_at']}{locked}")
                return 0
            if not args.name:
                raise ValueError(f"'{args.action}' needs a user name")
            new_pin = None
            if args.action in ("add", "pin"):
                new_pin = read_pin(f"PIN for {args.name}: ")
                if not args.pin_stdin and getpass.getpass("again: ") != new_pin:
                    raise ValueError("the two PINs differ")
            signer = _signer(users, args, read_pin)
            if args.action == "add":
                if not args.role:
                    raise ValueError("add needs --role (" + ", ".join(ROLES) + ")")
                users.add(args.name, args.role, new_pin, by=signer)
            elif args.action == "set-role":
                users.set_role(args.name, args.role_arg or "", by=signer)
            elif args.action in ("disable", "enable"):
                users.set_active(args.name, args.action == "enable", by=signer)
            elif args.action == "pin":
                users.set_secret(args.name, new_pin, by=signer)
        except (ValueError, PermissionDenied) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(f"done: {args.action} {args.name}")
    return 0


def _signer(users: UserDirectory, args, read_pin) -> User:
    if users.is_open():
        return SETUP_USER
    if not args.signer:
        raise PermissionDenied("users exist already: sign the change with --as ADMIN")
    user = users.authenticate(args.signer, read_pin(f"PIN for {args.signer}: "))
    if user is None:
        raise PermissionDenied(f"wrong user name or PIN for {args.signer}")
    return user
