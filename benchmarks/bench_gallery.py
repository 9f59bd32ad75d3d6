"""The QA gallery on a big log: 100,000 inspections.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_gallery.py [--inspections 100000] [--db PATH]

Fills a database (bulk SQL through the station's own schema; all rows point at
one real saved frame so thumbnails decode for real), then times:
- the gallery's first page as SQL (count + page of 48),
- filtered queries (class + score range, operator, part ID substring, reviewed, date range),
- the GalleryWidget's first page on screen (query + 48 thumbnails decoded + drawn),
- a deep page (page 1,000).
Each figure is the median of 5 runs after one warm-up.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def fill(db: Path, n: int) -> None:
    import cv2
    import numpy as np

    from app.store import connect, iso_utc

    conn = connect(db)
    img_dir = db.parent / "images"
    img_dir.mkdir(exist_ok=True)
    frame = np.full((480, 640, 3), 120, np.uint8)
    cv2.line(frame, (300, 40), (310, 440), (200, 200, 200), 3)
    cv2.imwrite(str(img_dir / "frame.png"), frame)
    cv2.rectangle(frame, (290, 35), (320, 445), (0, 159, 230), 3)
    cv2.imwrite(str(img_dir / "frame_annotated.jpg"), frame)
    rng = random.Random(0)
    start = datetime(2026, 8, 1, tzinfo=timezone.utc)
    operators = [f"op{i}" for i in range(12)]
    conn.execute("BEGIN")
    det_rows = []
    for i in range(1, n + 1):
        t = start + timedelta(seconds=i * 78)  # ~100 days
        n_det = rng.choice((0, 0, 0, 1, 1, 2))
        dets = [(rng.choice(("scratch", "pit")), round(rng.uniform(0.1, 0.95), 3)) for _ in range(n_det)]
        shown = [s for _, s in dets if s >= 0.3]
        verdict = "FAIL" if shown else "PASS"
        conn.execute(
            "INSERT INTO inspections (id, uid, created_at, station, operator, part_id, source, frame_w, frame_h, roi_x, roi_y,"
            " roi_w, roi_h, model_id, model_version, threshold, rule_json, verdict, n_detections, max_score, inference_ms,"
            " image_path, annotated_path) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (i, f"u{i}", iso_utc(t), "line 1", rng.choice(operators), f"SN-{i:07d}", "camera 0", 640, 480, 0, 0, 640, 480,
             "m@1", "v1", 0.3, "{}", verdict, n_det, max(shown, default=0.0), 5.0, "images/frame.png",
             "images/frame_annotated.jpg"))
        for label, score in dets:
            det_rows.append((i, label, score, 290.0, 35.0, 320.0, 445.0, int(score >= 0.3), int(score >= 0.3)))
    conn.executemany("INSERT INTO detections (inspection_id, label, score, x1, y1, x2, y2, shown, fails)"
                     " VALUES (?,?,?,?,?,?,?,?,?)", det_rows)
    # Some reviewed ones.
    conn.execute("INSERT INTO audit (id, at, user, action, inspection_id, reason) VALUES (1, ?, 'qa', 'review.confirm', 1, 'x')",
                 (iso_utc(start),))
    conn.executemany("INSERT INTO reviews (inspection_id, qa_verdict, reviewer, reviewed_at, audit_id) VALUES (?,?,?,?,1)",
                     [(i, "FAIL", "qa", iso_utc(start)) for i in range(1, n + 1, 50)])
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def timed(fn, runs: int = 5) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inspections", type=int, default=100_000)
    p.add_argument("--db", type=Path, help="keep the filled database here (default: a temporary folder)")
    args = p.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from app.store import GalleryFilter, InspectionStore

    tmp = tempfile.TemporaryDirectory()
    db = args.db or Path(tmp.name) / "inspections.sqlite"
    if not db.exists():
        t0 = time.perf_counter()
        fill(db, args.inspections)
        print(f"filled {args.inspections} inspections in {time.perf_counter() - t0:.1f} s ({db.stat().st_size / 1e6:.0f} MB)")
    store = InspectionStore(db)
    print(f"{store.count()} inspections in the log")
    start = datetime(2026, 9, 1, tzinfo=timezone.utc)
    cases = {
        "no filter (newest first)": GalleryFilter(),
        "FAIL + scratch, score 0.5-0.8": GalleryFilter(verdict="FAIL", label="scratch", min_score=0.5, max_score=0.8),
        "operator op3": GalleryFilter(operator="op3"),
        "part ID contains '00123'": GalleryFilter(part_id="00123"),
        "reviewed": GalleryFilter(reviewed=True),
        "one week": GalleryFilter(start=start, end=start + timedelta(days=7)),
    }
    for name, flt in cases.items():
        count = timed(lambda flt=flt: store.gallery_count(flt))
        page = timed(lambda flt=flt: store.gallery_page(flt, "newest", 0, 48))
        print(f"{name:34s} count {count:7.1f} ms   first page {page:6.1f} ms   ({store.gallery_count(flt)} matches)")
    print(f"{'deep page (page 1,000, no filter)':34s} {timed(lambda: store.gallery_page(GalleryFilter(), 'newest', 1000, 48)):6.1f} ms")
    print(f"{'first page by highest score':34s} {timed(lambda: store.gallery_page(GalleryFilter(), 'highest score', 0, 48)):6.1f} ms")

    from app.ui.run import qt_application

    app = qt_application()
    from app.ui.gallery import GalleryWidget
    from app.users import User

    widget = GalleryWidget(store, User("qa", "qa"), {"scratch": "#E69F00", "pit": "#0072B2"})
    widget.resize(1400, 900)
    widget.show()
    app.processEvents()

    def first_page():
        widget.apply_filters()
        app.processEvents()

    print(f"gallery widget first page on screen (count + 48 thumbnails): {timed(first_page):.1f} ms")
    widget.verdict_combo.blockSignals(True)
    widget.verdict_combo.setCurrentText("FAIL")
    widget.verdict_combo.blockSignals(False)
    print(f"gallery widget, FAIL filter: {timed(first_page):.1f} ms")
    t0 = time.perf_counter()
    widget.thumbs.setCurrentRow(0)
    app.processEvents()
    print(f"detail view of one inspection: {(time.perf_counter() - t0) * 1000:.1f} ms")
    widget.close()
    widget.deleteLater()  # Qt deletes it before Python tears the application down
    app.processEvents()
    store.close()


if __name__ == "__main__":
    main()
