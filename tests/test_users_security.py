"""PINs, sign-in lockout, the last admin, and role checks against the user's current record."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from conftest import run_app
from test_review import log

from app.review import ReviewService
from app.store import InspectionStore
from app.users import SCRYPT_N, SETUP_USER, AccountLocked, PermissionDenied, User, UserDirectory, hash_secret, verify_secret
from app.verdict import FAIL, PASS
from detector import Detection

ROOT_PIN, QA_PIN = "864213", "135790"


class Clock:
    """A clock the test moves (a lock lasts 5 minutes: nobody waits for that)."""

    def __init__(self):
        self.now = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def db(tmp_path):
    return tmp_path / "data" / "inspections.sqlite"


@pytest.fixture
def store(db):
    s = InspectionStore(db)
    yield s
    s.close()


@pytest.fixture
def users(store):
    users = UserDirectory(store)
    root = users.add("root", "admin", ROOT_PIN, by=SETUP_USER)
    users.add("quinn", "qa", QA_PIN, by=root)
    return users


ROOT = User("root", "admin")


def actions(store) -> list[str]:
    return [a.action for a in store.audit_records()]


def by_hand(db, statement: str, params=()) -> None:
    """A change made outside the station, with a plain connection."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(statement, params)
    conn.close()


def test_pins_have_at_least_six_digits_by_default(store, db):
    users = UserDirectory(store)
    with pytest.raises(ValueError, match="at least 6 digits"):
        users.add("root", "admin", "12345", by=SETUP_USER)
    users.add("root", "admin", "123456", by=SETUP_USER)
    with pytest.raises(ValueError, match="at least 6 digits"):
        users.set_secret("root", "1234", by=ROOT)
    strict = UserDirectory(store, min_pin_length=8)  # the station's setting
    with pytest.raises(ValueError, match="at least 8 digits"):
        strict.add("ana", "operator", "1234567", by=ROOT)
    r = run_app("users", "add", "ana", "--role", "qa", "--db", str(db), "--as", "root", "--pin-stdin", stdin="1234\n123456\n")
    assert r.returncode == 2 and "at least 6 digits" in r.stderr
    config = db.parent / "station.json"
    config.write_text(json.dumps({"min_pin_length": 8}), encoding="utf-8")
    r = run_app("users", "add", "ana", "--role", "qa", "--db", str(db), "--config", str(config), "--as", "root",
                "--pin-stdin", stdin="1234567\n123456\n")
    assert r.returncode == 2 and "at least 8 digits" in r.stderr


def test_five_wrong_pins_lock_the_user_for_five_minutes_across_restarts(db, users, store):
    clock = Clock()
    users = UserDirectory(store, clock=clock)
    for attempt in range(1, 5):
        assert users.authenticate("quinn", f"00000{attempt}") is None
    with pytest.raises(AccountLocked) as locked:
        users.authenticate("quinn", "000005")
    assert locked.value.until == clock.now + timedelta(minutes=5)
    assert actions(store)[-6:] == ["user.signin_failed"] * 5 + ["user.locked"]
    (lock,) = store.audit_records(action="user.locked")
    assert lock.user == "quinn" and json.loads(lock.new_value)["until"] == "2026-11-02T08:05:00.000Z"

    store.close()  # a restart does not reset it
    with InspectionStore(db) as again:
        users = UserDirectory(again, clock=clock)
        clock.now += timedelta(minutes=4, seconds=59)
        with pytest.raises(AccountLocked, match=r"quinn is locked after 5 wrong PINs until \d\d:\d\d:\d\d"):
            users.authenticate("quinn", QA_PIN)  # the right PIN too
        clock.now += timedelta(seconds=2)
        assert users.authenticate("quinn", QA_PIN) == User("quinn", "qa")
        # A fresh count after the lock: four wrong ones do not lock again.
        for _ in range(4):
            assert users.authenticate("quinn", "999999") is None
        assert users.authenticate("quinn", QA_PIN) == User("quinn", "qa")
        assert users.authenticate("quinn", "999999") is None  # a good sign-in resets the count
        assert again.user("quinn").failed_attempts == 1


def test_a_new_pin_from_an_admin_lifts_the_lock(users, store):
    for _ in range(4):
        users.authenticate("quinn", "111111")
    with pytest.raises(AccountLocked):
        users.authenticate("quinn", "111111")
    users.set_secret("quinn", "246802", by=ROOT)
    assert users.authenticate("quinn", "246802") == User("quinn", "qa")


def test_old_hashes_verify_and_are_upgraded_at_sign_in(users, store, db):
    old = hash_secret(QA_PIN, n=2**14, r=8, p=1)  # what the previous release stored
    by_hand(db, "UPDATE users SET secret_hash = ? WHERE name = 'quinn'", (old,))
    assert users.authenticate("quinn", QA_PIN) == User("quinn", "qa")
    stored = store.user("quinn").secret_hash
    assert stored != old and stored.split("$")[1] == str(SCRYPT_N) and verify_secret(QA_PIN, stored)


def test_a_tampered_hash_cannot_exhaust_memory():
    bomb = "scrypt$1073741824$8$1$" + "00" * 16 + "$" + "00" * 32  # 1 TiB of scrypt memory
    assert verify_secret("123456", bomb) is False


def test_the_last_active_admin_cannot_be_disabled_or_demoted(users):
    with pytest.raises(ValueError, match="root is the last active admin and cannot be disabled"):
        users.set_active("root", False, by=ROOT)
    with pytest.raises(ValueError, match="root is the last active admin and cannot be demoted"):
        users.set_role("root", "qa", by=ROOT)
    users.set_role("quinn", "admin", by=ROOT)
    users.set_role("root", "qa", by=ROOT)  # another admin exists now
    quinn = User("quinn", "admin")
    with pytest.raises(ValueError, match="quinn is the last active admin"):
        users.set_active("quinn", False, by=quinn)


def test_adding_users_needs_an_admin_once_any_user_was_ever_created(users, store, db):
    by_hand(db, "UPDATE users SET active = 0")  # every user disabled
    assert not users.is_open() and users.any_users() and not users.any_active()
    with pytest.raises(PermissionDenied):
        users.add("eve", "admin", "666666", by=User("eve", "admin"))
    with pytest.raises(PermissionDenied):
        users.add("eve", "admin", "666666", by=SETUP_USER)
    r = run_app("users", "add", "eve", "--role", "admin", "--db", str(db), "--pin-stdin", stdin="666666\n")
    assert r.returncode == 2 and "--as ADMIN" in r.stderr
    # Removing the users by hand does not reopen the station either.
    conn = sqlite3.connect(db, isolation_level=None)
    with pytest.raises(sqlite3.DatabaseError, match="never deleted"):
        conn.execute("DELETE FROM users")
    conn.execute("DROP TRIGGER users_no_delete")
    conn.execute("DELETE FROM users")
    conn.close()
    assert not users.is_open()
    with pytest.raises(PermissionDenied):
        users.add("eve", "admin", "666666", by=SETUP_USER)


def test_a_disabled_or_demoted_user_is_refused_at_once(users, store):
    first = log(store, 0, FAIL, [Detection("scratch", 0.8, (20, 20, 30, 90))])
    qa = ReviewService(store, User("quinn", "qa"))
    qa.set_verdict(first, PASS, "reflection")
    users.set_active("quinn", False, by=ROOT)
    with pytest.raises(PermissionDenied, match="quinn is not an active user"):
        qa.set_verdict(first, FAIL, "changed my mind")
    with pytest.raises(PermissionDenied):
        qa.mark_false_positive(first, store.inspection(first).detections[0].id, "dust")
    assert users.current("quinn") is None
    users.set_active("quinn", True, by=ROOT)
    users.set_role("quinn", "operator", by=ROOT)
    assert users.current("quinn") == User("quinn", "operator")
    with pytest.raises(PermissionDenied, match="quinn \\(operator\\) may not review"):
        qa.add_missed(first, "pit", (1, 1, 9, 9), "missed")
    assert [r.qa_verdict for r in store.reviews()] == [PASS]

    # A second admin, disabled: the User object they still hold no longer signs anything.
    users.add("ada", "admin", "975310", by=ROOT)
    ada = User("ada", "admin")
    users.set_active("ada", False, by=ROOT)
    with pytest.raises(PermissionDenied, match="ada is not an active user"):
        users.set_role("quinn", "qa", by=ada)
    with pytest.raises(PermissionDenied, match="ada is not an active user"):
        users.set_active("ada", True, by=ada)


def test_forged_user_objects_are_refused(users, store):
    first = log(store, 0, FAIL, [])
    for forged in (User("quinn", "admin"), User("nobody", "admin"), SETUP_USER):
        with pytest.raises(PermissionDenied):
            users.set_role("quinn", "admin", by=forged)
        with pytest.raises(PermissionDenied):
            users.add("eve", "admin", "666666", by=forged)
    with pytest.raises(PermissionDenied):
        ReviewService(store, User("nobody", "qa")).set_verdict(first, PASS, "trust me")
    with pytest.raises(PermissionDenied):
        ReviewService(store, SETUP_USER).set_verdict(first, PASS, "trust me")
    assert users.require(User("quinn", "operator"), "review") == User("quinn", "qa")  # the record decides
    with pytest.raises(ValueError, match="reserved"):
        users.add(SETUP_USER.name, "qa", "666666", by=ROOT)


def test_a_station_without_users_is_open(store):
    users = UserDirectory(store)
    assert users.is_open() and not users.any_users()
    assert users.require(User("whoever", "operator"), "users") == User("whoever", "operator")
    users.add("root", "admin", ROOT_PIN, by=SETUP_USER)
    assert not users.is_open()
