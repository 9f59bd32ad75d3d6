"""Local users, roles and what each role may do. PINs are kept only as salted scrypt hashes.

Roles: operators inspect; QA also reviews; supervisors export reports and see
trends; admins may do everything, including rules, models and users. A
station on which no user was ever created is open (first-run set-up): anyone
may act, as SETUP_USER. Once a user exists, every action re-reads the acting
user's record (`UserDirectory.require`): a disabled user or a changed role
takes effect at once, whatever `User` object the caller holds.

Sign-in: PINs have at least `min_pin_length` characters (6 by default); after 5
wrong PINs the user is locked for 5 minutes (kept in the database, so a restart
does not reset it), and `authenticate` raises `AccountLocked` saying until when.
Every failure and every lock is audited.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from app.store import InspectionLog, LogReader, UserRow, iso_utc

ROLES = ("operator", "qa", "supervisor", "admin")
PERMISSIONS: dict[str, frozenset[str]] = {
    "operator": frozenset({"inspect"}),
    "qa": frozenset({"inspect", "gallery", "review"}),
    "supervisor": frozenset({"inspect", "gallery", "reports"}),
    "admin": frozenset({"inspect", "gallery", "review", "reports", "settings", "users"}),
}
# scrypt cost: 64 MiB and about 0.2 s per check on one core of the station PC
# (benchmarks/bench_pin_cost.py), so trying all 10^6 six-digit PINs against a stolen
# copy of the database takes days per core. Stored hashes carry their own parameters:
# older, cheaper ones still verify and are upgraded at the next good sign-in.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**16, 8, 1
# Room for one check at the cost above (128 * r * n bytes) and a refusal of absurd
# parameters in a tampered hash, which would otherwise exhaust memory.
SCRYPT_MAXMEM = 256 * 2**20
MIN_PIN_LENGTH = 6
MAX_ATTEMPTS = 5
LOCK_TIME = timedelta(minutes=5)


class PermissionDenied(PermissionError):
    pass


class AccountLocked(PermissionDenied):
    """Too many wrong PINs: sign-in is refused, even with the right PIN, until `until` (UTC)."""

    def __init__(self, name: str, until: datetime, attempts: int = MAX_ATTEMPTS):
        self.name, self.until = name, until
        local = until.astimezone()
        super().__init__(f"{name} is locked after {attempts} wrong PINs until {local:%H:%M:%S}"
                         f" ({local:%Y-%m-%d}); try again then, or ask an admin to set a new PIN")


@dataclass(frozen=True)
class User:
    name: str
    role: str

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())

    def require(self, permission: str) -> None:
        """The role check alone; `UserDirectory.require` also checks the user's current record."""
        if not self.can(permission):
            raise PermissionDenied(f"{self.name} ({self.role}) may not {permission}")


# Stands for whoever uses a station on which no user was ever created.
SETUP_USER = User("setup (no users yet)", "admin")


def hash_secret(secret: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """A salted scrypt hash carrying its parameters: scrypt$n$r$p$salt$digest."""
    if not secret:
        raise ValueError("the PIN is empty")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(secret.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=SCRYPT_MAXMEM, dklen=len(bytes.fromhex(digest)))
    except (ValueError, TypeError, OverflowError, MemoryError):
        return False
    return hmac.compare_digest(got, bytes.fromhex(digest))


def needs_rehash(stored: str) -> bool:
    """A hash made with other (older) scrypt parameters than today's."""
    return stored.split("$")[1:4] != [str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P)]


@functools.cache
def _dummy_hash() -> str:
    return hash_secret("timing-equaliser")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class UserDirectory:
    """Users in the station's inspection log; every change is audited in the same transaction.

    `clock` returns the current time (aware, UTC): injectable so that tests can
    let a lock expire without waiting.
    """

    def __init__(self, store: InspectionLog, *, min_pin_length: int = MIN_PIN_LENGTH, max_attempts: int = MAX_ATTEMPTS,
                 lock_time: timedelta = LOCK_TIME, clock: Callable[[], datetime] | None = None):
        if min_pin_length < 1 or max_attempts < 1:
            raise ValueError("min_pin_length and max_attempts must be at least 1")
        self.store = store
        self.min_pin_length = int(min_pin_length)
        self.max_attempts = int(max_attempts)
        self.lock_time = lock_time
        self.clock = clock or (lambda: datetime.now(timezone.utc))

    # -- who may act ----------------------------------------------------------------------

    def is_open(self) -> bool:
        """No user was ever created: the station is open (first-run set-up), anyone may act."""
        return self._is_open(self.store)

    def any_users(self) -> bool:
        """A user was ever created, even if all are disabled now (the station is not open). Same as `not is_open()`."""
        return not self.is_open()

    def any_active(self) -> bool:
        return self.store.any_user(active_only=True)

    def current(self, name: str) -> User | None:
        """The active user of that name with their current role; None if unknown or disabled."""
        row = self.store.user(name.strip())
        return User(row.name, row.role) if row is not None and row.active else None

    def require(self, user: User, permission: str, tx: LogReader | None = None) -> User:
        """The acting user as the database knows them now, if they may do `permission`.

        Raises PermissionDenied when the user is unknown or disabled, or when their
        current role (not the one on the `User` object) lacks the permission. On a
        station where no user was ever created, anyone may do anything. Pass the
        transaction of `store.write()` so the check and the change are one transaction.
        """
        return self._require(tx if tx is not None else self.store, user, permission)

    def _require(self, r: LogReader, user: User, permission: str) -> User:
        row = r.user(user.name.strip())
        if row is None and self._is_open(r):
            return user
        if row is None or not row.active:
            raise PermissionDenied(f"{user.name} is not an active user of this station (disabled, or never added)")
        current = User(row.name, row.role)
        current.require(permission)
        return current

    @staticmethod
    def _is_open(r: LogReader) -> bool:
        # Users are never deleted (a trigger refuses it), and the audit trail remembers every
        # user ever added: emptying the users table by hand does not reopen the station.
        return not r.any_user() and not r.audit_has("user.add")

    # -- managing users -------------------------------------------------------------------

    def list(self) -> list[dict]:
        """Every user by name: name, role, active, created_at, locked_until."""
        return [{"name": u.name, "role": u.role, "active": u.active, "created_at": u.created_at, "locked_until": u.locked_until}
                for u in sorted(self.store.users(), key=lambda u: u.name.casefold())]

    def check_pin(self, secret: str) -> None:
        if len(secret or "") < self.min_pin_length:
            raise ValueError(f"the PIN must have at least {self.min_pin_length} digits")

    def add(self, name: str, role: str, secret: str, by: User) -> User:
        """Add a user. While no user was ever created, anyone may add the first one, an admin."""
        name = _valid_name(name)
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        self.check_pin(secret)
        if self.is_open() and role != "admin":
            raise ValueError("the first user must be an admin (someone has to be able to manage users)")
        hashed = hash_secret(secret)
        with self.store.write() as tx:
            if self._is_open(tx):
                if role != "admin":
                    raise ValueError("the first user must be an admin (someone has to be able to manage users)")
                signer = by.name
            else:
                signer = self._require(tx, by, "users").name
            tx.add_user(name, role, hashed, self.clock())
            tx.append_audit(signer, "user.add", new={"name": name, "role": role})
        return User(name, role)

    def set_role(self, name: str, role: str, by: User) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        with self.store.write() as tx:
            signer = self._require(tx, by, "users")
            row = self._row(tx, name)
            if role != "admin":
                self._keep_an_admin(tx, row, "demoted")
            tx.set_user_role(row.name, role)
            tx.append_audit(signer.name, "user.role", old={"name": row.name, "role": row.role},
                            new={"name": row.name, "role": role})

    def set_active(self, name: str, active: bool, by: User) -> None:
        with self.store.write() as tx:
            signer = self._require(tx, by, "users")
            row = self._row(tx, name)
            if not active:
                self._keep_an_admin(tx, row, "disabled")
            tx.set_user_active(row.name, active)
            tx.append_audit(signer.name, "user.enable" if active else "user.disable", new={"name": row.name})

    def set_secret(self, name: str, secret: str, by: User) -> None:
        """A new PIN (own, or anyone's by an admin); it also lifts a sign-in lock."""
        self.check_pin(secret)
        hashed = hash_secret(secret)
        with self.store.write() as tx:
            own = by.name.strip().lower() == name.strip().lower()
            signer = self._require(tx, by, "inspect" if own else "users")
            row = self._row(tx, name)
            tx.set_user_secret(row.name, hashed)
            tx.append_audit(signer.name, "user.secret", new={"name": row.name})

    @staticmethod
    def _keep_an_admin(r: LogReader, row: UserRow, change: str) -> None:
        if row.role == "admin" and row.active and r.active_admins() <= 1:
            raise ValueError(f"{row.name} is the last active admin and cannot be {change}: make another user admin first")

    @staticmethod
    def _row(r: LogReader, name: str) -> UserRow:
        row = r.user(name.strip())
        if row is None:
            raise ValueError(f"no user named {name!r}")
        return row

    # -- signing in -----------------------------------------------------------------------

    def authenticate(self, name: str, secret: str) -> User | None:
        """The user if the PIN is right; None if the name is unknown or disabled or the PIN wrong.

        Raises AccountLocked (a PermissionDenied) while the user is locked, right PIN
        or not, and on the wrong PIN that locks them.
        """
        row = self.store.user(name.strip())
        if row is None or not row.active:
            verify_secret(secret, _dummy_hash())  # same cost whether or not the user exists
            return None
        until = _parse_time(row.locked_until)
        if until is not None and until > self.clock():
            raise AccountLocked(row.name, until, self.max_attempts)
        if verify_secret(secret, row.secret_hash):
            if row.failed_attempts or row.locked_until or needs_rehash(row.secret_hash):
                upgraded = hash_secret(secret) if needs_rehash(row.secret_hash) else row.secret_hash
                with self.store.write() as tx:
                    tx.set_user_secret(row.name, upgraded)  # also clears the failed attempts and the lock
            return User(row.name, row.role)
        self._failed(row.name)
        return None

    def _failed(self, name: str) -> None:
        until = None
        with self.store.write() as tx:
            attempts = tx.count_failed_sign_in(name)
            tx.append_audit(name, "user.signin_failed", new={"name": name, "failed_attempts": attempts}, reason="wrong PIN")
            if attempts >= self.max_attempts:
                until = self.clock() + self.lock_time
                tx.lock_user(name, until)
                tx.append_audit(name, "user.locked", new={"name": name, "until": iso_utc(until), "failed_attempts": attempts},
                                reason=f"{attempts} wrong PINs")
        if until is not None:
            raise AccountLocked(name, until, self.max_attempts)


def _valid_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ValueError("user name is empty")
    if len(name) > 64 or any(unicodedata.category(c).startswith("C") for c in name):
        raise ValueError("a user name has at most 64 characters and no control characters")
    if name.lower() == SETUP_USER.name.lower():
        raise ValueError(f"{name!r} is reserved")
    return name
