"""Local users, roles and what each role may do. PINs are kept only as salted scrypt hashes.

Roles: operators inspect; QA also reviews; supervisors export reports and see
trends; admins may do everything, including rules, models and users. A
station with no users yet is open (first-run set-up) until an admin is added.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone

from app.store import InspectionStore, iso_utc

ROLES = ("operator", "qa", "supervisor", "admin")
PERMISSIONS: dict[str, frozenset[str]] = {
    "operator": frozenset({"inspect"}),
    "qa": frozenset({"inspect", "gallery", "review"}),
    "supervisor": frozenset({"inspect", "gallery", "reports"}),
    "admin": frozenset({"inspect", "gallery", "review", "reports", "settings", "users"}),
}
# scrypt cost: ~50 ms per check on one core, 16 MiB; enough to make offline guessing of short PINs slow.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_SECRET_LENGTH = 4


class PermissionDenied(PermissionError):
    pass


@dataclass(frozen=True)
class User:
    name: str
    role: str

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())

    def require(self, permission: str) -> None:
        if not self.can(permission):
            raise PermissionDenied(f"{self.name} ({self.role}) may not {permission}")


# Stands for whoever uses a station that has no users yet.
SETUP_USER = User("setup (no users yet)", "admin")


def hash_secret(secret: str) -> str:
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(f"PIN/password must have at least {MIN_SECRET_LENGTH} characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(secret.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(bytes.fromhex(digest)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, bytes.fromhex(digest))


def audit(conn: sqlite3.Connection, user: str, action: str, *, inspection_id: int | None = None,
          old=None, new=None, reason: str = "") -> int:
    """Append one audit record (inside the caller's transaction)."""
    cur = conn.execute(
        "INSERT INTO audit (at, user, action, inspection_id, old_value, new_value, reason) VALUES (?,?,?,?,?,?,?)",
        (iso_utc(datetime.now(timezone.utc)), user, action, inspection_id,
         None if old is None else json.dumps(old, sort_keys=True, ensure_ascii=False),
         None if new is None else json.dumps(new, sort_keys=True, ensure_ascii=False), reason),
    )
    return int(cur.lastrowid)


class UserDirectory:
    """Users in the station's database (the `users` table); every change is audited."""

    def __init__(self, store: InspectionStore):
        self.store = store

    def any_users(self) -> bool:
        return bool(self.store.query("SELECT 1 FROM users WHERE active = 1 LIMIT 1"))

    def list(self) -> list[dict]:
        return [dict(r) for r in self.store.query("SELECT name, role, active, created_at FROM users ORDER BY name")]

    def _check_admin(self, by: User) -> None:
        # The very first user may be created by anyone and must be an admin.
        if self.any_users():
            by.require("users")

    def add(self, name: str, role: str, secret: str, by: User) -> User:
        name = name.strip()
        if not name:
            raise ValueError("user name is empty")
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if not self.any_users() and role != "admin":
            raise ValueError("the first user must be an admin (someone has to be able to manage users)")
        self._check_admin(by)
        hashed = hash_secret(secret)
        try:
            with self.store.transaction() as conn:
                conn.execute("INSERT INTO users (name, role, secret_hash, created_at) VALUES (?,?,?,?)",
                             (name, role, hashed, iso_utc(datetime.now(timezone.utc))))
                audit(conn, by.name, "user.add", new={"name": name, "role": role})
        except sqlite3.IntegrityError:
            raise ValueError(f"a user named {name!r} exists already") from None
        return User(name, role)

    def set_role(self, name: str, role: str, by: User) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        by.require("users")
        row = self._row(name)
        with self.store.transaction() as conn:
            conn.execute("UPDATE users SET role = ? WHERE name = ?", (role, row["name"]))
            audit(conn, by.name, "user.role", old={"name": row["name"], "role": row["role"]},
                  new={"name": row["name"], "role": role})

    def set_active(self, name: str, active: bool, by: User) -> None:
        by.require("users")
        row = self._row(name)
        with self.store.transaction() as conn:
            conn.execute("UPDATE users SET active = ? WHERE name = ?", (int(active), row["name"]))
            audit(conn, by.name, "user.enable" if active else "user.disable", new={"name": row["name"]})

    def set_secret(self, name: str, secret: str, by: User) -> None:
        if by.name.lower() != name.lower():
            by.require("users")
        row = self._row(name)
        hashed = hash_secret(secret)
        with self.store.transaction() as conn:
            conn.execute("UPDATE users SET secret_hash = ? WHERE name = ?", (hashed, row["name"]))
            audit(conn, by.name, "user.secret", new={"name": row["name"]})

    def authenticate(self, name: str, secret: str) -> User | None:
        rows = self.store.query("SELECT name, role, secret_hash, active FROM users WHERE name = ?", (name.strip(),))
        row = rows[0] if rows else None
        if row is None or not row["active"]:
            verify_secret(secret, hash_secret("timing-equaliser"))  # same cost whether or not the user exists
            return None
        return User(row["name"], row["role"]) if verify_secret(secret, row["secret_hash"]) else None

    def _row(self, name: str) -> sqlite3.Row:
        rows = self.store.query("SELECT name, role FROM users WHERE name = ?", (name.strip(),))
        if not rows:
            raise ValueError(f"no user named {name!r}")
        return rows[0]
