"""The plant database at scale: ingest from 50 stations at once, and the QA/report queries on 10 million inspections.

    .venv/bin/python benchmarks/bench_plant.py ingest [--stations 50] [--per-station 600] [--processes 5]
    .venv/bin/python benchmarks/bench_plant.py generate --folder DIR [--inspections 10000000] [--stations 50] [--days 365]
    .venv/bin/python benchmarks/bench_plant.py queries --folder DIR [--repeat 5]
    .venv/bin/python benchmarks/bench_plant.py sqlite --folder DIR [--inspections 1000000] [--repeat 5]

ingest: a temporary PostgreSQL (Debian's, as the tests start it) and 50 simulated stations, each with its own
SQLite log already holding `--per-station` inspections (2 detections and 2 regions each, the station's real
`record()`), all starting their Replicator at the same moment, spread over `--processes` processes (a station is
its own PC in a plant; here they share this machine with the server). Reports inspections/s (with their
detections and regions) from the first start to the last row committed: the rate at which the plant catches
up 50 backlogs at once, an upper bound of the sustained ingest.

generate: a plant database of `--inspections` inspections of `--stations` stations over `--days` days (from
2026-01-01), made inside the server (generate_series; partitions month by month, resumable), with 0-3
detections each (1.5 on average), one region each and a QA review (and its audit record) on 1 in 199. The
cluster stays in DIR/cluster for `queries` (DIR/generate.log: progress). It takes a while: run it with nohup.

queries: on that database, through PlantLog as the plant window and the reports use it: the gallery's first
page (newest, no filter) and its count, a filtered page (class + two weeks + one station) and its count, the
daily CSV of one month of all stations (Europe/Berlin days; and with three shifts), trends of 90 days.

sqlite: the same queries on a station's SQLite log of `--inspections` inspections (DIR/station.sqlite, made once).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from pg_server import PgServer, require_server  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
BERLIN = ZoneInfo("Europe/Berlin")
SHIFTS = (("early", "06:00"), ("late", "14:00"), ("night", "22:00"))
SERVER_SETTINGS = {"shared_buffers": "2GB", "work_mem": "64MB", "maintenance_work_mem": "512MB",
                   "effective_cache_size": "8GB", "max_wal_size": "8GB", "checkpoint_timeout": "30min",
                   "max_parallel_workers_per_gather": "2", "jit": "off"}
STATION_PASSWORD = "bench-station-pw"


def server(folder: Path | None, settings: dict[str, str] | None = None) -> PgServer:
    bin_dir = require_server() if "pytest" in sys.modules else _bin()
    return PgServer(bin_dir, folder, {**SERVER_SETTINGS, **(settings or {})}).start()


def _bin() -> Path:
    from pg_server import server_bin

    found = server_bin()
    if found is None:
        sys.exit("PostgreSQL server not found under /usr/lib/postgresql (scripts/setup.sh installs Debian's postgresql)")
    return found


def machine() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at start"


# -- ingest: 50 stations at once ----------------------------------------------------------------------


def _fill_station(path: Path, name: str, n: int) -> None:
    import numpy as np  # noqa: F401  (the station's own imports, before timing anything)

    from app.store import InspectionRecord, InspectionStore, RegionRecord
    from detector import Detection
    from detector.regions import Roi

    with InspectionStore(path) as store:
        store._conn.execute("PRAGMA synchronous=OFF")  # filling the simulated backlog only; not what is measured
        for i in range(n):
            fails = i % 17 == 0
            store.record(InspectionRecord(
                station=name, source="camera", frame_size=(1280, 960), roi=Roi(0, 0, 1280, 960), model_id="centernet@1",
                model_version="v1", threshold=0.3, rule_json="{}", verdict="FAIL" if fails else "PASS",
                detections=[Detection("scratch", 0.2 + (i % 7) / 10, (10, 10, 60, 200)), Detection("pit", 0.15, (300, 40, 310, 52))],
                shown=[0] if i % 7 >= 1 else [], failing=[0] if fails else [], operator="op", part_id=f"SN-{i}",
                inference_ms=45.0, regions=[RegionRecord("left", Roi(0, 0, 640, 960), 0.3, "{}", "FAIL" if fails else "PASS"),
                                            RegionRecord("right", Roi(640, 0, 640, 960), 0.3, "{}", "PASS")],
                detection_regions=["left", "right"], created_at=T0 + timedelta(seconds=3 * i)))


def _replicate(args: tuple) -> list[tuple[str, float, float, int]]:
    """One process's stations: start them together at `start_at` (wall clock), each until its backlog is shipped."""
    from app.store import InspectionStore
    from app.store.replicator import Replicator

    url, stations, start_at = args
    stores = [InspectionStore(path) for _, path in stations]
    replicators = [Replicator(store, url.replace("LOGIN", name.replace("-", "")), name, password=STATION_PASSWORD, batch=500,
                              poll_s=0.2) for store, (name, _) in zip(stores, stations)]
    time.sleep(max(0.0, start_at - time.time()))
    started = time.time()
    for r in replicators:
        r.start()
    out = []
    for r, (name, _) in zip(replicators, stations):
        ok = r.stop(drain=True, timeout=1800)
        out.append((name, started, time.time(), r.status().delivered if ok else -1))
    for store in stores:
        store.close()
    return out


def run_ingest(args: argparse.Namespace) -> None:
    from app.store.postgres import migrate

    print(f"machine: {machine()}; other helpers' training runs share it")
    folder = Path(tempfile.mkdtemp(prefix="bench-plant-ingest-"))
    names = [f"line-{k + 1:02d}" for k in range(args.stations)]
    t = time.monotonic()
    with mp.Pool(min(args.processes, len(names))) as pool:
        pool.starmap(_fill_station, [(folder / n / "inspections.sqlite", n, args.per_station) for n in names])
    print(f"{len(names)} station logs of {args.per_station} inspections made in {time.monotonic() - t:.0f} s")
    pg = server(None)
    try:
        db = pg.create_database("plant")
        with pg.admin() as _, __import__("psycopg").connect(pg.url(dbname=db), autocommit=True) as conn:
            migrate(conn)
        for n in names:
            pg.create_login(n.replace("-", ""), STATION_PASSWORD, "plant_station")
        url = pg.url(user="LOGIN", dbname=db, password=None)
        groups = [[(n, folder / n / "inspections.sqlite") for n in names[k::args.processes]] for k in range(args.processes)]
        start_at = time.time() + 3.0
        with mp.Pool(args.processes) as pool:
            results = [r for part in pool.map(_replicate, [(url, g, start_at) for g in groups]) for r in part]
        if any(r[3] < 0 for r in results):
            sys.exit(f"not every station drained: {[r[0] for r in results if r[3] < 0]}")
        first, last = min(r[1] for r in results), max(r[2] for r in results)
        total = sum(r[3] for r in results)
        with __import__("psycopg").connect(pg.url(dbname=db)) as conn:
            rows = conn.execute("SELECT (SELECT count(*) FROM inspections), (SELECT count(*) FROM detections),"
                                " (SELECT count(*) FROM inspection_regions)").fetchone()
        assert rows[0] == total == len(names) * args.per_station, (rows, total)
        print(f"ingest: {len(names)} stations, {total} inspections ({rows[1]} detections, {rows[2]} regions) in"
              f" {last - first:.1f} s: {total / (last - first):.0f} inspections/s"
              f" ({(rows[0] + rows[1] + rows[2]) / (last - first):.0f} rows/s)")
    finally:
        pg.destroy()
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


# -- generate: a plant database of 10 million inspections ------------------------------------------------

GENERATOR_SQL = """
CREATE OR REPLACE FUNCTION bench_score(n bigint, j integer, fail boolean) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN fail AND j = 1 THEN 0.5 + ((n * 7919 + j * 104729) % 500) / 1000.0
                      ELSE 0.1 + ((n * 7919 + j * 104729) % 900) / 1000.0 END $$;
CREATE OR REPLACE FUNCTION bench_rows(lo bigint, hi bigint, stations integer, t0 timestamptz, dt double precision)
    RETURNS TABLE (n bigint, no integer, local_id bigint, created_at timestamptz, uid text, fail boolean, nd integer)
    LANGUAGE sql STABLE
    AS $$ SELECT n, (n % stations)::integer + 1, n / stations + 1, t0 + make_interval(secs => n * dt), md5(n::text),
                 (n * 2654435761) % 1000 < 60,
                 CASE WHEN (n * 2654435761) % 1000 < 60 THEN 1 + ((n * 40503 + 17) % 3)::integer
                      ELSE ((n * 40503 + 17) % 4)::integer END
          FROM generate_series(lo, hi - 1) n $$;
CREATE TABLE IF NOT EXISTS bench_progress (month date PRIMARY KEY, rows bigint NOT NULL, done_at timestamptz NOT NULL DEFAULT now());
"""
CHUNK_SQL = """
INSERT INTO inspections (id, station, local_id, uid, created_at, operator, part_id, source, frame_w, frame_h, roi_x, roi_y,
    roi_w, roi_h, model_id, model_version, threshold, rule_json, verdict, n_detections, max_score, inference_ms, image_path,
    annotated_path, note, image_sha256, annotated_sha256, trigger, job_id, recipe, recipe_version, hash_version, prev_hash, hash)
SELECT no * 10000000000 + local_id, 'line-' || lpad(no::text, 2, '0'), local_id, uid, created_at, 'op-' || (n / 5000) % 12,
    'SN-' || n, 'camera', 1280, 960, 0, 0, 1280, 960, 'centernet_neu@1', 'v1', 0.3, '{}',
    CASE WHEN fail THEN 'FAIL' ELSE 'PASS' END, nd,
    COALESCE((SELECT max(bench_score(n, j, fail)) FROM generate_series(1, nd) j WHERE bench_score(n, j, fail) >= 0.3), 0),
    40 + n % 20, 'images/' || to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') || '/' || uid || '.png',
    'images/' || to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') || '/' || uid || '_annotated.jpg', '',
    md5(uid) || md5(uid || 'i'), md5(uid) || md5(uid || 'a'), 'line', 'J' || n, 'cap', 1, 2, md5(uid || 'p') || md5(uid),
    md5(uid || 'h') || md5(uid)
FROM bench_rows(%(lo)s, %(hi)s, %(stations)s, %(t0)s, %(dt)s);
INSERT INTO detections (inspection_id, local_id, created_at, label, score, x1, y1, x2, y2, shown, fails, region)
SELECT no * 10000000000 + local_id, local_id * 4 + j, created_at, (ARRAY['scratch', 'pit', 'inclusion'])[1 + (n + j) % 3], s,
    (n * 13 + j * 31) % 1200, (n * 17 + j * 7) % 900, (n * 13 + j * 31) % 1200 + 20 + j, (n * 17 + j * 7) % 900 + 30 + n % 50,
    (s >= 0.3)::integer::smallint, (fail AND j = 1)::integer::smallint, 'whole'
FROM bench_rows(%(lo)s, %(hi)s, %(stations)s, %(t0)s, %(dt)s), generate_series(1, nd) j,
    LATERAL (SELECT bench_score(n, j, fail) AS s) score;
INSERT INTO inspection_regions (inspection_id, local_id, created_at, name, x, y, w, h, threshold, rule_json, verdict)
SELECT no * 10000000000 + local_id, local_id, created_at, 'whole', 0, 0, 1280, 960, 0.3, '{}', CASE WHEN fail THEN 'FAIL' ELSE 'PASS' END
FROM bench_rows(%(lo)s, %(hi)s, %(stations)s, %(t0)s, %(dt)s);
INSERT INTO audit (id, station, local_id, at, user_name, action, inspection_id, plant_inspection_id, old_value, new_value, reason,
    prev_hash, hash)
SELECT no * 10000000000 + n, 'line-' || lpad(no::text, 2, '0'), n, created_at + interval '1 hour', 'qa-1',
    CASE WHEN n % 3 = 0 THEN 'review.override' ELSE 'review.confirm' END, local_id, no * 10000000000 + local_id, NULL,
    '{"verdict": "x"}', 'bench', md5(uid || 'ap'), md5(uid || 'ah')
FROM bench_rows(%(lo)s, %(hi)s, %(stations)s, %(t0)s, %(dt)s) WHERE n % 199 = 0;
INSERT INTO reviews (id, station, local_id, inspection_id, plant_inspection_id, qa_verdict, reviewer, reviewed_at, audit_id,
    plant_audit_id)
SELECT no * 10000000000 + n, 'line-' || lpad(no::text, 2, '0'), n, local_id, no * 10000000000 + local_id,
    CASE WHEN (n % 3 = 0) = fail THEN 'PASS' ELSE 'FAIL' END, 'qa-1', created_at + interval '1 hour', n, no * 10000000000 + n
FROM bench_rows(%(lo)s, %(hi)s, %(stations)s, %(t0)s, %(dt)s) WHERE n % 199 = 0;
"""


def run_generate(args: argparse.Namespace) -> None:
    import psycopg

    from app.store.postgres import migrate

    folder = Path(args.folder)
    pg = server(folder / "cluster")
    try:
        with pg.admin() as admin:
            if not admin.execute("SELECT 1 FROM pg_database WHERE datname = 'plant'").fetchone():
                admin.execute("CREATE DATABASE plant")
        with psycopg.connect(pg.url(dbname="plant"), autocommit=True) as conn:
            migrate(conn)
            conn.execute(GENERATOR_SQL)
            for k in range(args.stations):
                conn.execute("INSERT INTO stations (name) VALUES (%s) ON CONFLICT DO NOTHING", (f"line-{k + 1:02d}",))
            conn.execute("SET synchronous_commit = off")
            dt = args.days * 86400 / args.inspections
            month = date(T0.year, T0.month, 1)
            end = T0 + timedelta(days=args.days)
            started = time.monotonic()
            made = 0
            while datetime(month.year, month.month, 1, tzinfo=timezone.utc) < end:
                nxt = date(month.year + month.month // 12, month.month % 12 + 1, 1)
                lo = max(0, math.ceil((datetime(month.year, month.month, 1, tzinfo=timezone.utc) - T0).total_seconds() / dt))
                hi = min(args.inspections, math.ceil((datetime(nxt.year, nxt.month, 1, tzinfo=timezone.utc) - T0).total_seconds() / dt))
                if conn.execute("SELECT 1 FROM bench_progress WHERE month = %s", (month,)).fetchone():
                    made += hi - lo
                    month = nxt
                    continue
                conn.execute("SELECT plant_ensure_month(%s)", (datetime(month.year, month.month, 1, tzinfo=timezone.utc),))
                for chunk in range(lo, hi, args.chunk):
                    params = {"lo": chunk, "hi": min(hi, chunk + args.chunk), "stations": args.stations, "t0": T0, "dt": dt}
                    with conn.transaction():
                        for statement in CHUNK_SQL.split(";\n")[:-1]:
                            conn.execute(re.sub(r"%(?!\()", "%%", statement), params)  # % is modulo here
                    made += min(hi, chunk + args.chunk) - chunk
                    rate = made / (time.monotonic() - started)
                    print(f"{datetime.now():%H:%M:%S} {made} inspections ({rate:.0f}/s)", flush=True)
                conn.execute("INSERT INTO bench_progress (month, rows) VALUES (%s, %s)", (month, hi - lo))
                month = nxt
            print("VACUUM ANALYZE ...", flush=True)
            conn.execute("VACUUM ANALYZE")
            n = conn.execute("SELECT count(*) FROM inspections").fetchone()[0]
            size = conn.execute("SELECT pg_size_pretty(pg_database_size('plant'))").fetchone()[0]
            print(f"generated: {n} inspections, database {size}, in {(time.monotonic() - started) / 60:.0f} min", flush=True)
    finally:
        pg.stop()


# -- queries -----------------------------------------------------------------------------------------


def timed(label: str, fn, repeat: int) -> float:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    size = len(result) if hasattr(result, "__len__") else result
    print(f"  {label:<58} first {times[0] * 1000:8.0f} ms, median {statistics.median(times) * 1000:8.0f} ms  ({size})",
          flush=True)
    return statistics.median(times)


def run_queries_on(log, station: str, repeat: int, out: Path, days_in_log: int) -> None:
    from app.reports import export_csv, trends
    from app.store import GalleryFilter

    month_first = (T0 + timedelta(days=min(days_in_log, 365) // 2)).date().replace(day=1)
    month_last = date(month_first.year + month_first.month // 12, month_first.month % 12 + 1, 1) - timedelta(days=1)
    two_weeks = GalleryFilter(label="scratch", station=station, start=datetime.combine(month_first, datetime.min.time(), BERLIN),
                              end=datetime.combine(month_first + timedelta(days=14), datetime.min.time(), BERLIN))
    timed("gallery first page (newest, no filter)", lambda: log.gallery_page(GalleryFilter(), "newest", 0, 48), repeat)
    timed("gallery count (no filter)", lambda: log.gallery_count(GalleryFilter()), repeat)
    week = GalleryFilter(start=datetime.combine(month_last - timedelta(days=6), datetime.min.time(), BERLIN),
                         end=datetime.combine(month_last + timedelta(days=1), datetime.min.time(), BERLIN))
    timed("gallery count, 7 days (what plant mode opens on)", lambda: log.gallery_count(week), repeat)
    timed(f"filtered page (scratch, 2 weeks, {station})", lambda: log.gallery_page(two_weeks, "newest", 0, 48), repeat)
    timed("filtered count", lambda: log.gallery_count(two_weeks), repeat)
    timed(f"daily CSV {month_first:%Y-%m}, all stations, Berlin days",
          lambda: export_csv(log, month_first, month_last, out, tz=BERLIN), repeat)
    timed(f"daily CSV {month_first:%Y-%m}, all stations, 3 shifts",
          lambda: export_csv(log, month_first, month_last, out, tz=BERLIN, shifts=SHIFTS), repeat)
    last = month_last
    timed("trends, 90 days", lambda: trends(log, last - timedelta(days=89), last, tz=BERLIN).days, repeat)


def run_queries(args: argparse.Namespace) -> None:
    import psycopg

    from app.store.postgres import PlantLog

    pg = server(Path(args.folder) / "cluster")
    try:
        with psycopg.connect(pg.url(dbname="plant")) as conn:
            n = conn.execute("SELECT count(*) FROM inspections").fetchone()[0]
            size = conn.execute("SELECT pg_size_pretty(pg_database_size('plant'))").fetchone()[0]
            span = conn.execute("SELECT max(created_at) - min(created_at) FROM inspections").fetchone()[0]
        print(f"plant database: {n} inspections of 50 stations over {span.days + 1} days, {size}; machine: {machine()};"
              " other helpers' training runs share it")
        t = time.perf_counter()
        with PlantLog(pg.url(dbname="plant")) as log, tempfile.TemporaryDirectory() as tmp:
            print(f"  opened (migrated to schema {log.schema_version} where older) in {time.perf_counter() - t:.1f} s")
            run_queries_on(log, "line-07", args.repeat, Path(tmp) / "daily.csv", span.days + 1)
    finally:
        pg.stop()


def run_sqlite(args: argparse.Namespace) -> None:
    from app.store import InspectionStore

    path = Path(args.folder) / "station.sqlite"
    if not path.exists():
        make_sqlite(path, args.inspections, args.days)
    with InspectionStore(path, read_only=True) as log, tempfile.TemporaryDirectory() as tmp:
        print(f"station SQLite log: {log.count()} inspections over {args.days} days; machine: {machine()}")
        run_queries_on(log, "line-07", args.repeat, Path(tmp) / "daily.csv", args.days)


def make_sqlite(path: Path, n: int, days: int) -> None:
    """A station's log of `n` inspections (the station's schema and guards; hashes are not computed: not queried here)."""
    import hashlib

    from app.store import InspectionStore

    labels = ("scratch", "pit", "inclusion")
    dt = days * 86400 / n
    with InspectionStore(path) as store:
        conn = store._conn
        conn.execute("PRAGMA synchronous=OFF")
        t = time.monotonic()
        conn.execute("BEGIN")
        for i in range(n):
            fail = (i * 2654435761) % 1000 < 60
            nd = 1 + (i * 40503 + 17) % 3 if fail else (i * 40503 + 17) % 4
            scores = [(0.5 + ((i * 7919 + j * 104729) % 500) / 1000 if fail and j == 1
                       else 0.1 + ((i * 7919 + j * 104729) % 900) / 1000) for j in range(1, nd + 1)]
            at = (T0 + timedelta(seconds=i * dt)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            uid = hashlib.md5(str(i).encode()).hexdigest()
            verdict = "FAIL" if fail else "PASS"
            conn.execute(
                "INSERT INTO inspections (id, uid, created_at, station, operator, part_id, source, frame_w, frame_h, roi_x, roi_y,"
                " roi_w, roi_h, model_id, model_version, threshold, rule_json, verdict, n_detections, max_score, inference_ms,"
                " image_path, annotated_path, note, trigger, job_id, recipe, recipe_version, hash_version)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (i + 1, uid, at, "line-07", f"op-{(i // 100) % 12}", f"SN-{i}", "camera", 1280, 960, 0, 0, 1280, 960,
                 "centernet_neu@1", "v1", 0.3, "{}", verdict, nd, max([s for s in scores if s >= 0.3], default=0.0), 45.0,
                 f"images/{at[:10]}/{uid}.png", f"images/{at[:10]}/{uid}_annotated.jpg", "", "line", f"J{i}", "cap", 1, 2))
            conn.executemany("INSERT INTO detections (inspection_id, label, score, x1, y1, x2, y2, shown, fails, region)"
                             " VALUES (?,?,?,?,?,?,?,?,?,?)",
                             [(i + 1, labels[(i + j) % 3], s, 10, 10, 40, 80, int(s >= 0.3), int(fail and j == 1), "whole")
                              for j, s in enumerate(scores, start=1)])
            conn.execute("INSERT INTO inspection_regions (inspection_id, name, x, y, w, h, threshold, rule_json, verdict)"
                         " VALUES (?,?,?,?,?,?,?,?,?)", (i + 1, "whole", 0, 0, 1280, 960, 0.3, "{}", verdict))
            if (i + 1) % 100_000 == 0:
                conn.execute("COMMIT")
                print(f"  {i + 1} inspections ({(i + 1) / (time.monotonic() - t):.0f}/s)", flush=True)
                conn.execute("BEGIN")
        conn.execute("COMMIT")
        conn.execute("ANALYZE")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    i = sub.add_parser("ingest")
    i.add_argument("--stations", type=int, default=50)
    i.add_argument("--per-station", type=int, default=600)
    i.add_argument("--processes", type=int, default=5)
    g = sub.add_parser("generate")
    g.add_argument("--folder", required=True)
    g.add_argument("--inspections", type=int, default=10_000_000)
    g.add_argument("--stations", type=int, default=50)
    g.add_argument("--days", type=int, default=365)
    g.add_argument("--chunk", type=int, default=200_000)
    q = sub.add_parser("queries")
    q.add_argument("--folder", required=True)
    q.add_argument("--repeat", type=int, default=5)
    s = sub.add_parser("sqlite")
    s.add_argument("--folder", required=True)
    s.add_argument("--inspections", type=int, default=1_000_000)
    s.add_argument("--days", type=int, default=365)
    s.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    {"ingest": run_ingest, "generate": run_generate, "queries": run_queries, "sqlite": run_sqlite}[args.what](args)


if __name__ == "__main__":
    main()
