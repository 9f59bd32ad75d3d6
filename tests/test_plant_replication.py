"""Store-and-forward to a real PostgreSQL: two stations at once, an outage at full inspection rate, kill -9 of a
station mid-batch, pictures copied with their checksum, users and renames. Every row arrives exactly once, in order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from conftest import wait_until
from plant_data import PlantDb, fill, record, utc

from app.audit import verify
from app.reports import daily_summary, export_csv, write_csv
from app.review import ReviewService
from app.settings import StationSettings
from app.store import GalleryFilter, InspectionStore
from app.store.postgres import PlantLog, password_from, verify_plant
from app.store.replicator import Replicator, copy_picture, replicator_from_settings
from app.users import SETUP_USER, UserDirectory

pytest_plugins = ["plant_fixtures"]
TESTS = Path(__file__).resolve().parent
BERLIN = ZoneInfo("Europe/Berlin")


def station_login(db: PlantDb, tmp_path: Path, login: str) -> tuple[str, str]:
    """A station login; its URL (no password in it) and the password, read from a chmod-600 file."""
    url = db.login(login, "plant_station")
    return url, password_from(file=db.password_file(tmp_path, login))


def arrived(db: PlantDb, station_no: int) -> list[int]:
    """The station's inspections in the order they reached the plant (their ids at the station)."""
    with db.owner() as conn:
        return [r[0] for r in conn.execute("SELECT local_id FROM inspections WHERE id / 10000000000 = %s ORDER BY arrival",
                                           (station_no,))]


def assert_exactly_once_in_order(db: PlantDb, store: InspectionStore, station_no: int) -> None:
    local = store.gallery_ids(GalleryFilter())
    assert arrived(db, station_no) == local  # each one once, in the station's order
    with db.owner() as conn:
        uids = {r[0] for r in conn.execute("SELECT uid FROM inspections WHERE id / 10000000000 = %s", (station_no,))}
        audit = [r[0] for r in conn.execute("SELECT local_id FROM audit WHERE id / 10000000000 = %s ORDER BY arrival",
                                            (station_no,))]
    assert uids == {store.get(i)["uid"] for i in local}
    assert audit == [a.id for a in store.audit_records()]


def test_two_stations_replicate_at_the_same_time(plant_db, tmp_path):
    """Both log and ship at once; the plant's gallery and daily CSV are the union of the two stations' own."""
    stores, replicators, writers = {}, {}, []
    for n, name in enumerate(("line-1", "line-2")):
        url, password = station_login(plant_db, tmp_path, f"line{n + 1}")
        store = stores[name] = InspectionStore(tmp_path / name / "inspections.sqlite")
        replicators[name] = Replicator(store, url, name, password=password, picture_store=tmp_path / "store", poll_s=0.05,
                                       batch=25).start()

        def write(store=store, name=name, n=n, replicator=replicators[name]):
            for i in range(120):
                record(store, i, name, utc(2026, 3, 28, 20) + timedelta(minutes=3 * i + n))  # over the DST change
                replicator.notify()

        writers.append(threading.Thread(target=write))
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    for r in replicators.values():
        assert r.stop(drain=True, timeout=60), r.status()
        assert r.status().backlog_rows == 0 and r.status().delivered == 120

    with PlantLog(plant_db.owner_url, picture_store=tmp_path / "store") as plant:
        for no, (name, store) in enumerate(stores.items(), start=1):
            assert_exactly_once_in_order(plant_db, store, no)
            mine = plant.gallery_page(GalleryFilter(station=name, verdict="FAIL"), "newest", page_size=500)
            theirs = store.gallery_page(GalleryFilter(verdict="FAIL"), "newest", page_size=500)
            assert [(g.created_at, g.part_id, g.max_score) for g in mine] == [(g.created_at, g.part_id, g.max_score) for g in theirs]
        everything = plant.gallery_page(GalleryFilter(), "oldest", page_size=1000)
        local = [g for s in stores.values() for g in s.gallery_page(GalleryFilter(), "oldest", page_size=1000)]
        assert sorted((g.created_at, g.station) for g in everything) == sorted((g.created_at, g.station) for g in local)
        first, last = date(2026, 3, 28), date(2026, 3, 29)
        export_csv(plant, first, last, tmp_path / "plant.csv", tz=BERLIN, shifts=[("day", "06:00"), ("night", "18:00")])
        parts = [daily_summary(s, first, last, tz=BERLIN, shifts=[("day", "06:00"), ("night", "18:00")]) for s in stores.values()]
        write_csv(tmp_path / "union.csv", parts[0].header, sorted(parts[0].rows + parts[1].rows, key=lambda r: r[:3]))
        assert (tmp_path / "plant.csv").read_bytes() == (tmp_path / "union.csv").read_bytes()
        reports = verify_plant(plant, pictures_root=tmp_path / "store")  # the pictures in the store match their hashes
        assert all(r.ok for r in reports.values()), {k: (r.inspections.problem, r.problems[:3]) for k, r in reports.items()}
    for s in stores.values():
        s.close()


def test_outage_at_full_rate_the_station_keeps_inspecting_and_every_row_arrives_once_in_order(plant_db, pg_server, tmp_path):
    url, password = station_login(plant_db, tmp_path, "line1")
    store = InspectionStore(tmp_path / "a" / "inspections.sqlite")
    replicator = Replicator(store, url, "line-1", password=password, poll_s=0.05, batch=50, retry_min_s=0.1,
                            retry_max_s=0.5, warn_after_s=0.5).start()
    stop, times, outage = threading.Event(), [], {}

    def inspect():  # the station's loop at its full rate: log, tell the replicator, next
        i = 0
        while not stop.is_set():
            record(store, i, "line-1", utc(2026, 6, 1, 6) + timedelta(seconds=2 * i), pictures=i % 10 == 0)
            replicator.notify()
            times.append(time.monotonic())
            i += 1

    station = threading.Thread(target=inspect)
    station.start()
    assert wait_until(lambda: replicator.status().delivered >= 30, 30)
    outage["start"] = time.monotonic()
    pg_server.stop("fast")  # the plant's server goes down mid-run
    try:
        assert wait_until(lambda: replicator.status().last_error is not None and replicator.status().backlog_rows > 20, 20)
        time.sleep(1.0)
        during = replicator.status()
        warning = replicator.warning()
    finally:
        pg_server.start()
        outage["end"] = time.monotonic()
    assert wait_until(lambda: replicator.status().last_error is None and replicator.status().delivered > during.delivered, 30)
    time.sleep(0.5)
    stop.set()
    station.join()
    assert replicator.stop(drain=True, timeout=60), replicator.status()

    logged_during = [t for t in times if outage["start"] <= t <= outage["end"]]
    assert len(logged_during) > 20, "the station stopped inspecting while the plant database was down"
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) < 1.0, f"an inspection waited {max(gaps):.2f} s"
    assert during.connected is False and during.backlog_rows > 20 and during.oldest_age_s > 0
    assert warning and "not replicated, the oldest for" in warning
    assert replicator.status().backlog_rows == 0 and replicator.warning() is None
    assert_exactly_once_in_order(plant_db, store, 1)
    with PlantLog(plant_db.owner_url) as plant:
        assert verify(plant.origin("line-1")).ok
    store.close()


def test_kill_9_of_a_station_mid_batch_then_every_row_arrives_once_in_order(plant_db, tmp_path):
    url, _ = station_login(plant_db, tmp_path, "line1")
    pw_file = plant_db.password_file(tmp_path, "line1")
    db_path = tmp_path / "station" / "inspections.sqlite"
    InspectionStore(db_path).close()
    argv = [sys.executable, str(TESTS / "plant_station_process.py"), str(db_path), url, str(pw_file), "line-1"]
    proc = subprocess.Popen([*argv, "1500", "0"], stdout=subprocess.DEVNULL, text=True)
    in_flight = False
    with plant_db.owner() as watch:
        # Wait until the station has shipped some rows and holds a plant transaction open, then kill it there.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            shipped, open_xact = watch.execute(
                "SELECT (SELECT count(*) FROM inspections), (SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                " 'inspection station line-1' AND xact_start IS NOT NULL AND state <> 'idle')").fetchone()
            if shipped >= 40 and open_xact:
                in_flight = True
                break
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL, "the station finished before it could be killed"
    with InspectionStore(db_path) as store:
        logged = store.count()
        before = arrived(plant_db, 1)
        assert 0 < len(before) < logged <= 1500 and before == list(range(1, len(before) + 1))
        # The station starts again: logs 20 more, ships the rest once, in order.
    done = subprocess.run([*argv, "20", "1000"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with InspectionStore(db_path) as store:
        assert store.count() == logged + 20
        assert_exactly_once_in_order(plant_db, store, 1)
        with PlantLog(plant_db.owner_url) as plant:
            assert verify(plant.origin("line-1")).ok
    print(f"killed with a plant transaction open: {in_flight}")


def test_pictures_are_copied_with_their_checksum_and_a_store_out_of_reach_holds_up_only_pictures(plant_db, tmp_path):
    url, password = station_login(plant_db, tmp_path, "line1")
    store = InspectionStore(tmp_path / "a" / "inspections.sqlite")
    fill(store, 6, "line-1", utc(2026, 5, 4, 8))
    blocked = tmp_path / "share"
    blocked.write_text("not mounted")  # the share is not there: a file where the folder should be
    replicator = Replicator(store, url, "line-1", password=password, picture_store=blocked / "pictures", poll_s=0.05,
                            retry_max_s=0.4).start()
    assert wait_until(lambda: replicator.status().backlog_rows == 0, 30)  # the rows went all the same
    assert wait_until(lambda: (replicator.status().last_error or "").startswith("pictures: cannot copy"), 10)
    assert plant_db.scalar("SELECT count(*) FROM pictures") == 0
    blocked.unlink()
    blocked.mkdir()  # the share is back
    tampered = store.resolve(store.get(6)["image_path"])
    tampered.write_bytes(tampered.read_bytes() + b"x")  # changed on the station after it was logged
    assert replicator.stop(drain=True, timeout=30)
    with plant_db.owner() as conn:
        rows = conn.execute("SELECT inspection_id - 10000000000, kind, path, sha256, bytes FROM pictures"
                            " ORDER BY 1, 2").fetchall()
    assert len(rows) == 11 and (6, "image") not in [(r[0], r[1]) for r in rows]  # the changed one is not copied
    for local_id, kind, path, sha, size in rows:
        row = store.get(local_id)
        assert sha == row["annotated_sha256" if kind == "annotated" else "image_sha256"]
        copy = blocked / "pictures" / path
        source = store.resolve(row["annotated_path" if kind == "annotated" else "image_path"])
        assert copy.stat().st_size == size and copy.read_bytes() == source.read_bytes()
    assert not [p for p in (blocked / "pictures").rglob("*") if p.name.startswith(".")]  # no temporary files left
    with PlantLog(plant_db.owner_url, picture_store=blocked / "pictures") as plant:
        first = plant.inspection(10**10 + 1)
        assert plant.resolve(first.image_path).read_bytes() == store.resolve(first.image_path).read_bytes()
        problems = verify(plant.origin("line-1"), pictures_root=blocked / "pictures").problems
        assert problems == [f"picture of inspection #6 is missing: {blocked / 'pictures' / 'images' / '2026-05-04'}"
                            f"/{store.get(6)['uid']}.png (No such file or directory)"]
    # A copy is checked before it is renamed into place: a changed source never lands in the store.
    with pytest.raises(OSError, match="does not match the SHA-256"):
        copy_picture(tampered, tmp_path / "other", store.get(6)["image_path"], store.get(6)["image_sha256"])
    assert not list((tmp_path / "other").rglob("*.png"))
    store.close()


def test_users_role_changes_and_a_renamed_station(plant_db, tmp_path):
    url, password = station_login(plant_db, tmp_path, "line1")
    store = InspectionStore(tmp_path / "a" / "inspections.sqlite")
    fill(store, 3, "line-1", utc(2026, 5, 4, 8), pictures=False)
    users = UserDirectory(store)
    ada = users.add("ada", "admin", "123456", SETUP_USER)
    users.add("sam", "qa", "654321", ada)
    r = Replicator(store, url, "line-1", password=password, poll_s=0.05).start()
    assert r.stop(drain=True, timeout=30)
    users.set_role("sam", "supervisor", ada)
    users.set_active("sam", False, ada)
    fill(store, 2, "line-1b", utc(2026, 5, 4, 9), first=3, pictures=False)  # the station was renamed meanwhile
    r = Replicator(store, url, "line-1b", password=password, poll_s=0.05).start()
    assert r.stop(drain=True, timeout=30) and r.origin == "line-1"
    with PlantLog(plant_db.owner_url) as plant:
        assert plant.stations() == ["line-1"]  # still one origin: its history is not sent twice
        origin = plant.origin("line-1")
        assert {u.name: (u.role, u.active) for u in origin.users()} == {"ada": ("admin", True), "sam": ("supervisor", False)}
        # Versions as seen at each round: as added, then as now (two changes between rounds arrive as one).
        assert plant_db.scalar("SELECT count(*) FROM user_versions WHERE name = 'sam'") == 2
        assert verify(origin).ok
        assert plant.gallery_count(GalleryFilter(station="line-1b")) == 2  # the rows keep the name they were logged with
    store.close()


def test_a_plant_database_restored_from_a_backup_gets_again_what_it_lost(plant_db, tmp_path):
    """The plant's server is restored from last night's backup under the same URL while the station runs: its
    cursors say the last rows went, the database lacks them; they are sent again, once, users and pictures too."""
    url, password = station_login(plant_db, tmp_path, "line1")
    store = InspectionStore(tmp_path / "a" / "inspections.sqlite")
    users = UserDirectory(store)
    ada = users.add("ada", "admin", "123456", SETUP_USER)
    share = tmp_path / "share"
    r = Replicator(store, url, "line-1", password=password, picture_store=share, poll_s=0.05, retry_max_s=0.2).start()
    fill(store, 3, "line-1", utc(2026, 5, 4, 8))
    r.notify()
    assert wait_until(lambda: plant_db.scalar("SELECT count(*) FROM pictures") == 6, 30)
    backup = f"{plant_db.name}_backup"
    with offline(plant_db) as admin:  # the night's backup: a copy of the database as it is now
        admin.execute(f'CREATE DATABASE "{backup}" TEMPLATE "{plant_db.name}"')
    users.add("sam", "qa", "654321", ada)
    ReviewService(store, ada).set_verdict(2, "FAIL", "scratch missed")
    fill(store, 3, "line-1", utc(2026, 5, 4, 9), first=3)
    r.notify()
    assert wait_until(lambda: plant_db.scalar("SELECT count(*) FROM pictures") == 12, 30)
    assert wait_until(lambda: r.status().backlog_rows == 0, 10)  # the cursors, as saved, say all went
    assert store.replication_cursors("plant")["inspections"] == 6

    with offline(plant_db) as admin:  # the server failed; its database comes back from the backup, same name
        admin.execute(f'ALTER DATABASE "{plant_db.name}" RENAME TO "{plant_db.name}_lost"')
        admin.execute(f'ALTER DATABASE "{backup}" RENAME TO "{plant_db.name}"')
        admin.execute(f'ALTER DATABASE "{plant_db.name}" ALLOW_CONNECTIONS true')
    fill(store, 1, "line-1", utc(2026, 5, 4, 10), first=6)  # the station's next inspection finds it
    r.notify()
    assert wait_until(lambda: len(arrived(plant_db, 1)) == 7 and plant_db.scalar("SELECT count(*) FROM pictures") == 14,
                      30), (r.status(), arrived(plant_db, 1), store.replication_cursors("plant"))
    assert r.stop(drain=True, timeout=30)
    assert_exactly_once_in_order(plant_db, store, 1)  # the audit records and inspections it lacked, once
    assert plant_db.scalar("SELECT count(*) FROM reviews") == 1
    assert plant_db.scalar("SELECT count(*) FROM user_versions WHERE name = 'sam'") == 1  # the users as they are
    with PlantLog(plant_db.owner_url, picture_store=share) as plant:
        assert verify(plant.origin("line-1"), pictures_root=share).ok
    store.close()


@contextmanager
def offline(db: PlantDb):
    """A superuser connection while nobody else may be connected to `db` (as a restore or a backup copy needs)."""
    with db.server.admin() as admin:
        admin.execute(f'ALTER DATABASE "{db.name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db.name,))
        try:
            yield admin
        finally:
            admin.execute(f'ALTER DATABASE "{db.name}" ALLOW_CONNECTIONS true')


def test_a_new_log_under_a_name_in_use_is_not_merged_into_that_history(plant_db, tmp_path):
    """A replaced station PC starts a new log under the old name: its ids would collide with the plant's rows of the
    old log, so nothing is sent (the rows wait); under a name of its own it replicates as a new station."""
    url, password = station_login(plant_db, tmp_path, "line1")
    old = InspectionStore(tmp_path / "old" / "inspections.sqlite")
    UserDirectory(old).add("ada", "admin", "123456", SETUP_USER)
    fill(old, 4, "line-1", utc(2026, 5, 4, 8), pictures=False)
    assert Replicator(old, url, "line-1", password=password, poll_s=0.05).start().stop(timeout=30)
    new = InspectionStore(tmp_path / "new" / "inspections.sqlite")
    UserDirectory(new).add("bea", "admin", "654321", SETUP_USER)
    fill(new, 5, "line-1", utc(2026, 6, 1, 8), pictures=False)

    r = Replicator(new, url, "line-1", password=password, poll_s=0.05, retry_max_s=0.2).start()
    assert wait_until(lambda: "another history" in (r.status().last_error or ""), 20), r.status()
    assert not r.stop(drain=True, timeout=1)
    assert "its inspection #4 differs from the one in this station's log" in r.last_error
    assert_exactly_once_in_order(plant_db, old, 1)  # the old log's history, untouched
    assert new.output_backlog("plant:inspections")[0] == 5  # the new log's rows wait
    assert "origin:line-1" not in new.replication_cursors("plant")

    r = Replicator(new, url, "line-1b", password=password, poll_s=0.05).start()
    assert r.stop(drain=True, timeout=30) and r.origin == "line-1b"
    assert_exactly_once_in_order(plant_db, new, 2)
    assert_exactly_once_in_order(plant_db, old, 1)
    with PlantLog(plant_db.owner_url) as plant:
        assert plant.stations() == ["line-1", "line-1b"] and verify(plant.origin("line-1b")).ok
    old.close()
    new.close()


def test_settings_make_the_replicator(plant_db, tmp_path, monkeypatch):
    url, _ = station_login(plant_db, tmp_path, "line1")
    with InspectionStore(tmp_path / "a" / "inspections.sqlite") as store:
        assert replicator_from_settings(store, StationSettings()) is None
        monkeypatch.setenv("LINE1_PW", plant_db.password("line1"))
        settings = StationSettings(station_name="line-1", plant_db_url=url, plant_db_password_env="LINE1_PW",
                                   plant_backlog_warn_minutes=5)
        r = replicator_from_settings(store, settings)
        assert r.warn_after_s == 300 and r.picture_store is None
        record(store, 1, "line-1", utc(2026, 5, 4, 8), pictures=False)
        r.start()
        assert r.stop(drain=True, timeout=30) and plant_db.scalar("SELECT count(*) FROM inspections") == 1
        with pytest.raises(ValueError, match="NO_SUCH_VAR"):
            replicator_from_settings(store, StationSettings(plant_db_url=url, plant_db_password_env="NO_SUCH_VAR"))
        with pytest.raises(ValueError, match="must start with postgresql://"):
            Replicator(store, "http://x", "line-1")
    # A login without the station role is refused at the plant, and says so in the status (the rows wait).
    with InspectionStore(tmp_path / "b" / "inspections.sqlite") as store:
        qa_url = plant_db.login("quinn", "plant_qa")
        record(store, 1, "line-9", utc(2026, 5, 4, 8), pictures=False)
        r = Replicator(store, qa_url, "line-9", password=plant_db.password("quinn"), retry_max_s=0.2).start()
        assert wait_until(lambda: "permission denied" in (r.status().last_error or ""), 20), r.status()
        assert not r.stop(drain=True, timeout=1) and r.status().backlog_rows == 1
    with psycopg.connect(plant_db.owner_url) as conn:
        assert conn.execute("SELECT count(*) FROM stations WHERE name = 'line-9'").fetchone()[0] == 0


def test_a_running_station_replicates_what_it_logs(plant_db, tmp_path, monkeypatch, detector):
    """The Station starts the replicator from its settings: inspections it logs reach the plant, the backlog shows."""
    from app.station import InspectionDone, Job, Station
    from synthetic import write_part_pictures

    url, _ = station_login(plant_db, tmp_path, "line5")
    monkeypatch.setenv("LINE5_PW", plant_db.password("line5"))
    folder = tmp_path / "parts"
    write_part_pictures(folder, n=2)
    settings = StationSettings(station_name="line-5", source=str(folder), data_dir=str(tmp_path / "data"),
                               plant_db_url=url, plant_db_password_env="LINE5_PW")
    station = Station(settings, config_path=tmp_path / "station.json", detector=detector)
    done = []
    station.subscribe(lambda e: done.append(e) if isinstance(e, InspectionDone) else None)
    station.start()
    try:
        assert station.replicator is not None and station.problems == []
        assert wait_until(lambda: station.feed.latest() is not None and station.state.value == "ready", 20)
        for i in range(3):
            assert station.trigger(Job("line", job_id=f"J{i}"))
            assert wait_until(lambda i=i: len(done) > i and not station.busy, 30)
        names = [o.name for o in station.output_status()]
        assert "plant database" in names
        assert wait_until(lambda: plant_db.scalar("SELECT count(*) FROM inspections") == 3, 30)
        # A renamed station replicates under its new name at once, as the origin it first replicated as.
        admin = station.users.add("root", "admin", "246810", by=SETUP_USER)
        station.apply_settings(replace(station.settings, station_name="line-5b"), admin)
        assert station.replicator.station == "line-5b"
        assert station.trigger(Job("line", job_id="J3"))
        assert wait_until(lambda: len(done) > 3 and not station.busy, 30)
        assert wait_until(lambda: plant_db.scalar("SELECT count(*) FROM inspections") == 4, 30)
        assert station.replicator.origin == "line-5"
    finally:
        assert station.stop(drain=True, timeout=30)
    with psycopg.connect(plant_db.owner_url) as conn:
        jobs = [r[0] for r in conn.execute("SELECT job_id FROM inspections ORDER BY arrival")]
    assert jobs == ["J0", "J1", "J2", "J3"]
    with PlantLog(plant_db.owner_url) as plant:
        assert plant.stations() == ["line-5"] and plant.gallery_count(GalleryFilter(station="line-5b")) == 1
