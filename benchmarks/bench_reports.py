"""How long the supervisor's CSV exports take for a month of inspections.

    .venv/bin/python benchmarks/bench_reports.py [--per-day 3000] [--days 30] [--tz Europe/Berlin] [--repeat 3]

Fills a temporary database (schema from app.store.connect, rows in bulk with
executemany in one transaction) with --days days of --per-day inspections,
about 1.5 detections each (two classes, some failing, some below the
threshold), then times the daily summary and the per-inspection export of the
whole month, end to end: query, time zone and shift arithmetic, CSV writing:
from the database file (opened read-only per export, as the CLI does) and
through the station's open log (as the reports tab does). Prints the best of
--repeat runs, and the same through `python -m app export-csv`.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.reports import export_csv, resolve_tz  # noqa: E402
from app.store import InspectionStore, connect, iso_utc  # noqa: E402

SHIFTS = (("early", "06:00"), ("late", "14:00"), ("night", "22:00"))
FIRST_DAY = date(2026, 10, 15)  # spans the end of summer time in Europe


def fill(db: Path, start: datetime, per_day: int, days: int, seed: int = 0) -> tuple[int, int]:
    """`days` x `per_day` inspections evenly spread from `start` (UTC)."""
    rng = random.Random(seed)
    conn = connect(db)
    step = 86400.0 / per_day
    inspections, detections = [], []
    n = 0
    for day in range(days):
        for k in range(per_day):
            n += 1
            t = start + timedelta(days=day, seconds=k * step + rng.random() * step * 0.5)
            dets = []
            for _ in range(rng.choice((1, 1, 2, 2, 1, 2))):  # ~1.5 per inspection
                score = rng.random()
                shown = score >= 0.3
                fails = shown and score >= 0.6
                dets.append((rng.choice(("scratch", "pit")), score, shown, fails))
            verdict = "FAIL" if any(d[3] for d in dets) else "PASS"
            best = max((d[1] for d in dets if d[2]), default=0.0)
            inspections.append((n, f"u{n:08d}", iso_utc(t), f"station-{1 + n % 2}", f"op{n % 7}", f"SN-{n:07d}",
                                "camera 0", 1280, 960, 0, 0, 1280, 960, "centernet", "1", 0.3, "{}", verdict, len(dets),
                                best, 12.5, f"images/{t:%Y-%m-%d}/u{n:08d}.png", None, ""))
            for label, score, shown, fails in dets:
                detections.append((n, label, score, 10.0, 10.0, 50.0, 90.0, int(shown), int(fails)))
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO inspections (id, uid, created_at, station, operator, part_id, source, frame_w, frame_h, roi_x, roi_y,"
        " roi_w, roi_h, model_id, model_version, threshold, rule_json, verdict, n_detections, max_score, inference_ms,"
        " image_path, annotated_path, note) VALUES (" + ",".join("?" * 24) + ")", inspections)
    conn.executemany("INSERT INTO detections (inspection_id, label, score, x1, y1, x2, y2, shown, fails)"
                     " VALUES (?,?,?,?,?,?,?,?,?)", detections)
    conn.execute("COMMIT")
    conn.close()
    return len(inspections), len(detections)


def best_of(repeat: int, fn) -> tuple[float, int]:
    times, n = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn()
        times.append(time.perf_counter() - t0)
    return min(times), n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-day", type=int, default=3000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--tz", default="Europe/Berlin", help="report time zone ('' = the system's)")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    tz = resolve_tz(args.tz or None)
    first, last = FIRST_DAY, FIRST_DAY + timedelta(days=args.days - 1)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "inspections.sqlite"
        t0 = time.perf_counter()
        local_midnight = datetime.combine(first, datetime.min.time())
        start = local_midnight.replace(tzinfo=tz).astimezone(timezone.utc) if tz else local_midnight.astimezone(timezone.utc)
        n_insp, n_det = fill(db, start, args.per_day, args.days)
        print(f"filled {n_insp} inspections, {n_det} detections ({db.stat().st_size / 1e6:.1f} MB) "
              f"in {time.perf_counter() - t0:.1f} s")
        print(f"range {first}..{last}, time zone {args.tz or 'system'}, best of {args.repeat}:")
        out = Path(tmp) / "out.csv"
        for name, kwargs in (("daily CSV", {}), ("daily CSV per shift", {"shifts": SHIFTS}),
                             ("per-inspection CSV", {"per_inspection_rows": True}),
                             ("per-inspection CSV with shifts", {"per_inspection_rows": True, "shifts": SHIFTS})):
            seconds, rows = best_of(args.repeat, lambda kw=kwargs: export_csv(db, first, last, out, tz=tz, **kw))
            print(f"  {name:32s} {seconds:6.2f} s  {rows:6d} rows  {out.stat().st_size / 1e6:5.1f} MB")
        with InspectionStore(db) as log:
            for name, kwargs in (("daily CSV, open log", {}), ("per-inspection CSV, open log", {"per_inspection_rows": True})):
                seconds, rows = best_of(args.repeat, lambda kw=kwargs: export_csv(log, first, last, out, tz=tz, **kw))
                print(f"  {name:32s} {seconds:6.2f} s  {rows:6d} rows  {out.stat().st_size / 1e6:5.1f} MB")
        for extra in ([], ["--per-inspection"]):
            cmd = [sys.executable, "-m", "app", "export-csv", "--db", str(db), "--from", str(first), "--to", str(last),
                   "--out", str(Path(tmp) / "cli.csv"), "--no-shifts", *(["--tz", args.tz] if args.tz else []), *extra]
            t0 = time.perf_counter()
            r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            print(f"  CLI export-csv {' '.join(extra) or '(daily)':17s} {wall:6.2f} s wall incl. start-up: "
                  f"{(r.stdout or r.stderr).strip()}")


if __name__ == "__main__":
    main()
