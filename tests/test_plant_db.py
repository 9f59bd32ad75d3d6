"""The plant database on a real PostgreSQL: schema migrations, the three roles and what each cannot do, plant-mode
QA reviews in the plant's own hash chain, reports counted in the database equal to the stations' own."""

from __future__ import annotations

import inspect
import json
import os
import time
from datetime import date, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
import pytest
from plant_data import PlantDb, fill, record, utc
from test_store_interface import _members

from app.audit import verify
from app.reports import daily_summary, per_inspection, trends
from app.review import ReviewService
from app.settings import from_dict
from app.store import GalleryFilter, InspectionLog, InspectionStore, LogTransaction, StoreError
from app.store.base import GroupedReports
from app.store.postgres import (
    SCHEMA_VERSION,
    PlantLog,
    PlantTransaction,
    bucket_minutes,
    claim_station,
    conninfo,
    ingest,
    migrate,
    password_from,
    schema_version,
    station_heads,
    verify_plant,
)
from app.store.replicator import Replicator
from app.users import SETUP_USER, PermissionDenied, UserDirectory

pytest_plugins = ["plant_fixtures"]  # pg_server (one per session) and plant_db (a migrated database per test)
SHIFTS = (("early", "06:00"), ("late", "14:00"), ("night", "22:00"))
ODD_SHIFTS = (("a", "06:30"), ("b", "18:15"))
HISTOGRAM_BINS = np.linspace(0.0, 1.0, 21)  # the trends chart's (app/ui/trends.py)


def replicate(store: InspectionStore, url: str, station: str, password: str | None = None, **options) -> Replicator:
    """Ship everything in `store` to the plant and stop."""
    r = Replicator(store, url, station, password=password, poll_s=0.05, **options).start()
    assert r.stop(drain=True, timeout=30), r.status()
    return r


@pytest.mark.parametrize("protocol, implementation", [(InspectionLog, PlantLog), (LogTransaction, PlantTransaction),
                                                      (GroupedReports, PlantLog)])
def test_the_plant_log_implements_the_interface(protocol, implementation):
    for name, wanted in _members(protocol).items():
        assert hasattr(implementation, name), f"{implementation.__name__} lacks {name}"
        got = inspect.signature(getattr(implementation, name))
        assert list(got.parameters) == list(wanted.parameters), f"{implementation.__name__}.{name}{got} is not {name}{wanted}"


# -- schema ---------------------------------------------------------------------------------------


def test_migrates_up_from_an_empty_database_and_from_the_previous_version(pg_server, tmp_path):
    empty = PlantDb(pg_server, pg_server.create_database())
    with empty.owner() as conn:
        assert schema_version(conn) == 0
    log = PlantLog(empty.owner_url)  # the owner opening it migrates it, as a station's log is on open
    assert log.schema_version == SCHEMA_VERSION == 4 and log.missing_guards() == [] and log.role == "admin"
    assert empty.scalar("SELECT array_agg(version ORDER BY version) FROM schema_version") == [1, 2, 3, 4]
    log.close()

    # A plant database at v1 with replicated rows in it (v1 had no users or pictures tables).
    old = PlantDb(pg_server, pg_server.create_database())
    with InspectionStore(tmp_path / "s" / "inspections.sqlite") as store:
        fill(store, 5, "line-1", utc(2026, 3, 31, 22), step=timedelta(minutes=40))  # March and April
        batch = store.replication_batch({}, 100)
    batch.users = None
    with old.owner() as conn:
        assert migrate(conn, target=1) == 1
        assert conn.execute("SELECT to_regclass('pictures')").fetchone()[0] is None
        with conn.transaction():
            ingest(conn, claim_station(conn, "line-1"), "line-1", batch)
        assert migrate(conn, target=2) == 2 and migrate(conn, target=3) == 3  # each earlier version ...
        assert migrate(conn) == 4 and migrate(conn) == 4  # ... the newest, and again: nothing to do
    with PlantLog(old.owner_url) as log:
        assert log.count() == 5 and log.missing_guards() == []
        assert old_partitions(old) >= {"inspections_y2026m03", "inspections_y2026m04"}
        assert verify(log.origin("line-1")).ok

    with old.owner() as conn:  # a database written by a newer program is refused, never downgraded
        conn.execute("INSERT INTO schema_version (version, name) VALUES (99, 'future')")
    with pytest.raises(StoreError, match="schema 99, newer"):
        PlantLog(old.owner_url)


def old_partitions(db: PlantDb) -> set[str]:
    with db.owner() as conn:
        return {r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relispartition")}


def test_a_login_that_may_not_migrate_is_told_so(pg_server):
    db = PlantDb(pg_server, pg_server.create_database())
    with db.owner() as conn:
        migrate(conn, target=1)
        conn.execute(open_roles_sql())  # the roles exist and may read the version (as v1's grants had it) ...
        conn.execute("GRANT SELECT ON schema_version TO plant_qa")
    url = db.login("qa_early", "plant_qa")
    with pytest.raises(StoreError, match="schema 1, this program needs 4: open it once with the login that owns it"
                                         " .*may not migrate"):  # ... but a QA login cannot change the schema
        PlantLog(url, password=db.password("qa_early"))


def open_roles_sql() -> str:
    from app.paths import resource

    # Only the roles: the grants name v2's tables, which this database does not have yet.
    return resource("sql/roles.sql").read_text().split("-- Nothing but what is granted below")[0]


# -- roles ----------------------------------------------------------------------------------------


def refused(conn: psycopg.Connection, statement: str, *params) -> str:
    """Run `statement`, which must fail for lack of privilege (or a policy / append-only guard); the error's text."""
    with pytest.raises(psycopg.Error) as caught:
        with conn.transaction():
            conn.execute(statement, params)
    assert isinstance(caught.value, (psycopg.errors.InsufficientPrivilege, psycopg.errors.RaiseException)), caught.value
    return str(caught.value)


def test_each_role_is_refused_what_it_may_not_do(plant_db, tmp_path):
    store = InspectionStore(tmp_path / "a" / "inspections.sqlite")
    fill(store, 4, "line-1", utc(2026, 5, 4, 8))
    users = UserDirectory(store)
    admin = users.add("ada", "admin", "123456", SETUP_USER)  # the first user: anyone may add the admin
    ReviewService(store, admin).set_verdict(1, "PASS", "lighting glare")
    station_url = plant_db.login("line1", "plant_station")
    replicate(store, station_url, "line-1", password=plant_db.password("line1"))
    plant_db.login("line2", "plant_station")
    line2 = psycopg.connect(conninfo(plant_db.server.url(user="line2", dbname=plant_db.name, password=None),
                                     plant_db.password("line2")), autocommit=True)
    claim_station(line2, "line-2")
    station = psycopg.connect(conninfo(station_url, plant_db.password("line1")), autocommit=True)

    # The station: no UPDATE, DELETE or TRUNCATE, not even of its own rows; no reading of inspections; no DDL.
    assert "permission denied" in refused(station, "UPDATE inspections SET verdict = 'PASS'")
    assert "permission denied" in refused(station, "DELETE FROM audit")
    assert "permission denied" in refused(station, "TRUNCATE inspections")
    assert "permission denied" in refused(station, "SELECT count(*) FROM inspections")
    assert "permission denied" in refused(station, "CREATE TABLE mine (x int)")
    assert "permission denied" in refused(station, "UPDATE stations SET login = 'line1' WHERE name = 'line-2'")
    # ... nor insert rows of another station (line-2 is number 2: ids 2 * 10^10 + n), nor the plant's.
    assert "row-level security" in refused(
        station, "INSERT INTO audit (id, station, local_id, at, user_name, action, reason) VALUES (%s, 'line-2', 1, now(),"
        " 'x', 'forged', '')", 2 * 10**10 + 1)
    assert "row-level security" in refused(
        station, "INSERT INTO audit (id, station, local_id, at, user_name, action, reason) VALUES (1, 'plant', 1, now(),"
        " 'x', 'forged', '')")
    assert "row-level security" in refused(
        station, "INSERT INTO detections (inspection_id, local_id, created_at, label, score, x1, y1, x2, y2, shown, fails)"
        " VALUES (%s, 1, '2026-05-04T09:00:00Z', 'pit', 1, 0, 0, 1, 1, 1, 1)", 2 * 10**10 + 1)
    # ... nor claim a name another login has.
    with pytest.raises(StoreError, match="belongs to the login 'line2'"):
        claim_station(station, "line-2")
    with pytest.raises(StoreError, match="the plant's own name"):
        claim_station(station, "plant")
    # It reads the last ids of its own rows (to check its log against the plant), not another station's.
    heads = station_heads(station, 1)
    assert heads["inspections"] == (4, store.get(4)["uid"]) and heads["reviews"][0] == 1
    assert heads["audit"] == (store.audit_records()[-1].id, store.history_mark("audit", store.audit_records()[-1].id))
    assert "not one this login claimed" in refused(station, "SELECT * FROM plant_station_heads(2)")

    # QA: reads everything, writes reviews and audit records of the plant chain in its own name only.
    qa_url = plant_db.login("quinn", "plant_qa")
    qa = psycopg.connect(conninfo(qa_url, plant_db.password("quinn")), autocommit=True)
    assert qa.execute("SELECT count(*) FROM inspections").fetchone()[0] == 4
    assert "permission denied" in refused(qa, "INSERT INTO stations (name) VALUES ('fake')")
    assert "permission denied" in refused(qa, "UPDATE reviews SET qa_verdict = 'FAIL'")
    assert "permission denied" in refused(qa, "DELETE FROM audit")
    assert "permission denied" in refused(
        qa, "INSERT INTO inspection_regions (inspection_id, local_id, created_at, name, x, y, w, h, threshold, rule_json,"
        " verdict) VALUES (1, 1, '2026-05-04T09:00:00Z', 'r', 0, 0, 1, 1, 0.5, '{}', 'PASS')")
    assert "row-level security" in refused(
        qa, "INSERT INTO audit (id, station, local_id, at, user_name, action, reason) VALUES (7, 'plant', 7, now(),"
        " 'somebody-else', 'review.confirm', '')")
    assert "row-level security" in refused(
        qa, "INSERT INTO reviews (id, station, local_id, inspection_id, plant_inspection_id, qa_verdict, reviewer,"
        " reviewed_at, audit_id, plant_audit_id) VALUES (%s, 'line-1', 99, 1, %s, 'FAIL', 'quinn', now(), 1, 1)",
        10**10 + 99, 10**10 + 1)

    # Report: reads, writes nothing.
    report_url = plant_db.login("boss", "plant_report")
    report = psycopg.connect(conninfo(report_url, plant_db.password("boss")), autocommit=True)
    assert report.execute("SELECT count(*) FROM reviews").fetchone()[0] == 1
    assert "permission denied" in refused(
        report, "INSERT INTO audit (id, station, local_id, at, user_name, action, reason) VALUES (8, 'plant', 8, now(),"
        " 'boss', 'x', '')")
    assert "permission denied" in refused(report, "SELECT plant_ensure_month(now())")
    assert "permission denied" in refused(report, "SELECT * FROM plant_station_heads(1)")
    with PlantLog(report_url, password=plant_db.password("boss")) as log:
        assert log.read_only and log.whoami().role == "supervisor"
        with pytest.raises(StoreError, match="may only read"):
            with log.write():
                pass

    # The owner cannot rewrite history either: the append-only guards hold for every role.
    with plant_db.owner() as owner:
        assert "append-only" in refused(owner, "UPDATE inspections SET verdict = 'PASS'")
        assert "append-only" in refused(owner, "DELETE FROM detections")
        assert "append-only" in refused(owner, "TRUNCATE audit")
    for conn in (station, line2, qa, report):
        conn.close()
    store.close()


def test_the_password_comes_from_a_file_or_a_variable_never_from_the_settings(tmp_path, monkeypatch):
    path = tmp_path / "plant.pw"
    path.write_text("s3cret\n")
    os.chmod(path, 0o644)
    with pytest.raises(ValueError, match="readable by others: chmod 600"):
        password_from(file=path)
    os.chmod(path, 0o600)
    assert password_from(file=path) == "s3cret"
    with pytest.raises(ValueError, match="cannot read the password file"):
        password_from(file=tmp_path / "missing.pw")
    monkeypatch.setenv("PLANT_PW", "from-env")
    assert password_from(env="PLANT_PW") == "from-env"
    with pytest.raises(ValueError, match="PLANT_PW_UNSET .* is not set"):
        password_from(env="PLANT_PW_UNSET")

    settings, warnings = from_dict({"plant_db_url": "postgresql://line1:hunter2@db.plant/inspections"}, from_dict({}, _base())[0])
    assert settings.plant_db_url == "" and "password" in warnings[0] and "hunter2" not in warnings[0]
    settings, warnings = from_dict({"plant_db_url": "postgresql://line1@db.plant/inspections?sslmode=verify-full",
                                    "plant_db_password_file": str(path), "plant_picture_store": str(tmp_path),
                                    "plant_backlog_warn_minutes": 15}, _base())
    assert warnings == [] and settings.plant_db_url.endswith("sslmode=verify-full")
    assert "sslmode=verify-full" in conninfo(settings.plant_db_url, "x")  # TLS settings pass through to libpq
    assert from_dict({"plant_db_url": "mysql://x"}, _base())[1]


def _base():
    from app.settings import StationSettings

    return StationSettings()


# -- plant mode: QA at the plant --------------------------------------------------------------------


def test_plant_mode_reviews_are_append_only_and_hash_chained_like_a_stations(plant_db, tmp_path):
    store = InspectionStore(tmp_path / "a" / "inspections.sqlite")
    fill(store, 6, "line-1", utc(2026, 5, 4, 8))
    users = UserDirectory(store)
    ada = users.add("ada", "admin", "123456", SETUP_USER)
    users.add("sam", "qa", "654321", ada)
    users.set_role("sam", "operator", ada)
    ReviewService(store, ada).set_verdict(3, "FAIL", "deep scratch, station missed it")  # made at the station
    url = plant_db.login("line1", "plant_station")
    replicate(store, url, "line-1", password=plant_db.password("line1"))

    qa_url = plant_db.login("quinn", "plant_qa")
    with PlantLog(qa_url, password=plant_db.password("quinn")) as plant:
        me = plant.whoami()
        assert (me.name, me.role) == ("quinn", "qa") and not plant.read_only
        ids = plant.gallery_ids(GalleryFilter(station="line-1"))
        assert len(ids) == 6 and ids[0] == 10**10 + 1  # plant-wide ids: station number * 10^10 + the station's id
        service = ReviewService(plant, me)
        service.set_verdict(ids[0], "PASS", "glare, not a defect")
        insp = plant.inspection(ids[0])
        service.mark_false_positive(ids[0], insp.detections[0].id, "glare")
        service.add_missed(ids[1], "pit", (1, 1, 9, 9), "small pit")
        assert plant.current_review(ids[0]).qa_verdict == "PASS"
        assert plant.current_review(ids[1]).reviewer == "quinn"
        assert plant.current_review(ids[2]).qa_verdict == "FAIL"  # the station's own review, replicated
        history = plant.audit_records(inspection_id=ids[0])
        assert [a.action for a in history] == ["review.override" if insp.verdict == "FAIL" else "review.confirm",
                                               "review.false_positive"]
        # Someone else's name, or a user that is not this login, is refused before anything is written.
        with pytest.raises(PermissionDenied):
            ReviewService(plant, type(me)("mallory", "qa")).set_verdict(ids[0], "FAIL", "x")
        with pytest.raises(StoreError, match="PostgreSQL logins"), plant.write() as tx:
            tx.add_user("eve", "qa", "x", utc(2026, 5, 4))

        reports = verify_plant(plant)
        assert set(reports) == {"plant", "line-1"} and all(r.ok for r in reports.values()), {
            k: (r.audit.problem, r.inspections.problem, r.problems) for k, r in reports.items()}
        assert reports["plant"].audit.count == 3 and reports["line-1"].inspections.count == 6
        assert reports["line-1"].audit.count == store.audit_records().__len__()
        station_users = {u.name: u.role for u in plant.origin("line-1").users()}
        assert station_users == {"ada": "admin", "sam": "operator"}  # role changes replicate with their audit records

    # Rewriting the plant's history is seen: with the guard switched off by a superuser, a changed review shows.
    with plant_db.owner() as conn:
        conn.execute("ALTER TABLE audit DISABLE TRIGGER audit_append_only")
        conn.execute("UPDATE audit SET reason = 'edited' WHERE station = 'plant' AND local_id = 1")
        conn.execute("ALTER TABLE audit ENABLE TRIGGER audit_append_only")
        conn.execute("ALTER TABLE reviews DISABLE TRIGGER reviews_append_only")
    with PlantLog(plant_db.owner_url) as plant:
        report = verify(plant.origin("plant"))
        assert not report.ok and "audit record #1 was changed" in report.audit.problem
        assert plant.missing_guards() == ["reviews_append_only"]
    store.close()


# -- reports and the gallery across stations ---------------------------------------------------------


def test_reports_counted_in_the_database_equal_the_stations_own(plant_db, tmp_path):
    """Daily summary, per-inspection list and trends of the plant (grouped in PostgreSQL, AT TIME ZONE) equal the
    union of the stations' own (counted in Python from SQLite), across a DST change, with night shifts."""
    berlin = ZoneInfo("Europe/Berlin")
    stores = {}
    for n, name in enumerate(("line-1", "line-2")):
        store = stores[name] = InspectionStore(tmp_path / name / "inspections.sqlite")
        # Around the end of DST (2026-10-25 03:00 -> 02:00 in Berlin), every 37 min, both stations.
        fill(store, 90, name, utc(2026, 10, 23, 18, 5 + n), step=timedelta(minutes=37), pictures=False)
        users = UserDirectory(store)
        admin = users.add("ada", "admin", "123456", SETUP_USER)
        ReviewService(store, admin).set_verdict(3 + n, "PASS", "fine")
        ReviewService(store, admin).set_verdict(9, "FAIL", "not fine")
        login = f"line{n + 1}"
        replicate(store, plant_db.login(login, "plant_station"), name, password=plant_db.password(login))
    first, last = date(2026, 10, 23), date(2026, 10, 26)
    with PlantLog(plant_db.owner_url) as plant:
        calls = []
        plant_groups = plant.report_groups
        plant.report_groups = lambda *a: calls.append(a) or plant_groups(*a)
        nepal = timezone(timedelta(hours=5, minutes=45))
        for tz in (berlin, None, utc(2026, 1, 1).tzinfo, nepal, ZoneInfo("Australia/Lord_Howe")):
            for shifts in ((), SHIFTS, ODD_SHIFTS):
                got = daily_summary(plant, first, last, tz=tz, shifts=shifts)
                want = [daily_summary(s, first, last, tz=tz, shifts=shifts) for s in stores.values()]
                assert got.header == want[0].header == want[1].header
                assert got.rows == sorted(want[0].rows + want[1].rows, key=lambda r: (r[0], r[1], r[2] if shifts else 0)
                                          ), (tz, shifts)
        assert len(calls) == 15  # every one counted in the database (the system zone has a name here)
        one = daily_summary(plant, first, last, tz=berlin, shifts=SHIFTS, station="line-2")
        assert one.rows == daily_summary(stores["line-2"], first, last, tz=berlin, shifts=SHIFTS).rows
        got, want = trends(plant, first, last, tz=berlin), trends(stores["line-1"], first, last, tz=berlin)
        want2 = trends(stores["line-2"], first, last, tz=berlin)
        assert got.inspected == [a + b for a, b in zip(want.inspected, want2.inspected)] and got.stations == ["line-1", "line-2"]
        for label in ("scratch", "pit", "inclusion"):  # binned to 0.001 in the database: the chart's histogram is the same
            mine = np.histogram(got.scores[label], bins=HISTOGRAM_BINS)[0]
            theirs = np.histogram(want.scores[label] + want2.scores[label], bins=HISTOGRAM_BINS)[0]
            assert mine.tolist() == theirs.tolist() and len(got.scores[label]) == len(want.scores[label] + want2.scores[label])
        listed = per_inspection(plant, first, last, tz=berlin, station="line-1")
        local = per_inspection(stores["line-1"], first, last, tz=berlin)
        strip = [h for h in listed.header if h != "id"]
        assert [[c for h, c in zip(listed.header, r) if h != "id"] for r in listed.rows] == \
            [[c for h, c in zip(local.header, r) if h in strip] for r in local.rows]

        # The gallery across stations, and with the station filter.
        assert plant.gallery_count(GalleryFilter()) == 180
        assert plant.gallery_count(GalleryFilter(station="line-2", verdict="FAIL")) == 30
        assert plant.gallery_count(GalleryFilter(station="line-1", qa_verdict="PASS")) == 1
        assert plant.gallery_count(GalleryFilter(reviewed=True)) == 4
        newest = plant.gallery_page(GalleryFilter(label="scratch"), "newest", page_size=5)
        assert [i.created_at for i in newest] == sorted((i.created_at for i in newest), reverse=True)
        assert plant.operators() == ["ann"] and set(plant.labels()) == {"scratch", "pit", "inclusion"}
    for s in stores.values():
        s.close()


def test_counting_buckets_never_straddle_a_day_shift_or_offset_change():
    """The plant counts per UTC bucket first; a bucket must lie within one report day and shift (all else is a test above)."""
    lo, hi = "2026-01-01T00:00:00.000Z", "2027-01-01T00:00:00.000Z"
    assert bucket_minutes("Europe/Berlin", (), lo, hi) == 60
    assert bucket_minutes("Europe/Berlin", ((("a", 6 * 60 + 30),)), lo, hi) == 30
    assert bucket_minutes("+05:45", (), lo, hi) == 15 and bucket_minutes("Asia/Kolkata", (), lo, hi) == 30
    assert bucket_minutes("Australia/Lord_Howe", (), lo, hi) == 30  # DST there moves the clock by half an hour
    assert bucket_minutes("UTC", (("x", 7 * 60 + 10),), lo, hi) == 10
    assert bucket_minutes("Mars/Olympus_Mons", (), lo, hi) == 1  # a zone only the server knows: minutes


def test_station_filter_on_the_stations_own_log(tmp_path):
    """`station` in GalleryFilter and the reports works on SQLite too (a log that was sent copies of others)."""
    with InspectionStore(tmp_path / "inspections.sqlite") as store:
        fill(store, 4, "line-1", utc(2026, 5, 4, 8), pictures=False)
        record(store, 9, "line-2", utc(2026, 5, 4, 9), pictures=False)
        assert store.gallery_count(GalleryFilter(station="line-2")) == 1
        table = daily_summary(store, date(2026, 5, 4), date(2026, 5, 4), tz=ZoneInfo("UTC"), station="line-1")
        assert [(r[1], r[2]) for r in table.rows] == [("line-1", 4)]


def test_an_unreachable_plant_database_is_a_clear_error(pg_server):
    url = pg_server.url(dbname="postgres").replace(str(pg_server.port), "1")
    start = time.monotonic()
    with pytest.raises(StoreError, match="cannot connect to the plant database"):
        PlantLog(url, connect_timeout=2)
    assert time.monotonic() - start < 10
    with pytest.raises(ValueError, match="must start with postgresql://"):
        PlantLog("mysql://db/x")


# -- python -m app audit verify --plant ---------------------------------------------------------------


def test_audit_verify_plant_checks_every_origin_and_names_the_station_and_row_changed(plant_db, pg_server, tmp_path,
                                                                                       capsys, monkeypatch):
    from pg_server import free_port

    from app.cli import main

    for n, name in enumerate(("line-1", "line-2")):
        with InspectionStore(tmp_path / name / "inspections.sqlite") as store:
            fill(store, 3 + n, name, utc(2026, 5, 4, 8), pictures=False)
            login = f"line{n + 1}"
            replicate(store, plant_db.login(login, "plant_station"), name, password=plant_db.password(login))
    url = plant_db.login("boss", "plant_report")  # reading is all the check needs
    password_file = plant_db.password_file(tmp_path, "boss")
    config = tmp_path / "station.json"
    config.write_text(json.dumps({"plant_db_url": url, "plant_db_password_env": "BOSS_PW"}))
    monkeypatch.setenv("BOSS_PW", plant_db.password("boss"))

    def audit(*args: str) -> tuple[int, str]:
        code = main(["audit", "verify", "--config", str(config), *args])
        out = capsys.readouterr()
        return code, out.out + out.err

    code, out = audit("--plant", url, "--password-file", str(password_file))
    assert code == 0, out
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["plant's own chain", "station line-1", "station line-2", "intact"]
    assert lines[0] == "plant's own chain: intact: audit trail 0 audit records, empty; inspection log 0 inspections, empty"
    assert "station line-1: intact: audit trail" in lines[1] and "inspection log 3 inspections, head #3 " in lines[1]
    assert "inspection log 4 inspections, head #4 " in lines[2]
    assert lines[3] == f"intact: the plant database {url}: all 3 origins"
    head = lines[2].split("head #4 ")[1]
    # --plant alone: the settings' URL and password variable; a head noted from line-2 is found in line-2's chain.
    code, out = audit("--plant", "--expect-head", head)
    assert code == 0 and f"note: station line-2: expected head {head} is inspection #4" in out, out
    code, out = audit("--plant", "--expect-head", "ab" * 16)
    assert code == 1 and "the expected head " + "ab" * 16 + " is in no chain of the plant database" in out, out

    # Someone with the owner's rights switches the guard off, changes one of line-2's inspections, switches it on.
    with plant_db.owner() as conn:
        conn.execute("ALTER TABLE inspections DISABLE TRIGGER inspections_append_only")
        conn.execute("UPDATE inspections SET part_id = 'P-EDITED' WHERE station = 'line-2' AND local_id = 2")
        conn.execute("ALTER TABLE inspections ENABLE TRIGGER inspections_append_only")
    code, out = audit("--plant")
    assert code == 1, out
    assert "BROKEN: station line-2: inspection #2 was changed after it was written" in out
    assert "station line-2: NOT intact: " in out
    assert "station line-1: intact: " in out and "plant's own chain: intact: " in out
    assert out.splitlines()[-1] == f"the plant database {url} is NOT intact: station line-2"
    assert "protective triggers" not in out

    # Nothing to check: a closed port on this machine, no URL anywhere, a password file that is not there.
    closed = f"postgresql://boss@127.0.0.1:{free_port()}/{plant_db.name}"
    start = time.monotonic()
    code, out = audit("--plant", closed, "--password-file", str(password_file))
    assert code == 2 and out.startswith("error: cannot connect to the plant database") and "Traceback" not in out, out
    assert len(out.strip().splitlines()) == 1 and time.monotonic() - start < 15
    config.write_text("{}")
    code, out = audit("--plant")
    assert code == 2 and "error: no plant database" in out, out
    code, out = audit("--plant", url, "--password-file", str(tmp_path / "missing.pw"))
    assert code == 2 and "cannot read the password file" in out, out
    code, out = audit("--db", str(tmp_path / "line-1" / "inspections.sqlite"), "--password-env", "BOSS_PW")
    assert code == 2 and "are for --plant" in out, out
