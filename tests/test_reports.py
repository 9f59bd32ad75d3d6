"""Supervisor reports without Qt: daily summary, per-inspection CSV, shifts, time zones, formula-safe text, CLI."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import date, datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import run_app

from app import reports
from app.cli import main as cli_main
from app.reports import ReportError, daily_summary, export_csv, neutralise, per_inspection, trends, write_csv
from app.review import ReviewService
from app.store import InspectionRecord, InspectionStore, StoreError
from app.users import SETUP_USER, User, UserDirectory
from detector import Detection
from detector.regions import Roi

BERLIN = ZoneInfo("Europe/Berlin")
SHIFTS = (("early", "06:00"), ("late", "14:00"), ("night", "22:00"))
FORMULAS = ['=HYPERLINK("http://x","y")', "+1+1", "-2", "@SUM(A1)"]


def add(store: InspectionStore, local: tuple[int, ...], station: str = "line-1",
        dets: tuple[tuple[str, float, bool, bool], ...] = (), part_id: str = "", operator: str = "") -> int:
    """Log one inspection at a Berlin wall-clock time; dets are (label, score, shown, fails)."""
    when = datetime(*local, tzinfo=BERLIN)
    detections = [Detection(label, score, (1.0, 2.0, 11.0, 42.0)) for label, score, _, _ in dets]
    rec = InspectionRecord(
        station=station, source="camera 0", frame_size=(320, 240), roi=Roi(0, 0, 320, 240), model_id="m1",
        model_version="1.0", threshold=0.3, rule_json="{}", verdict="FAIL" if any(d[3] for d in dets) else "PASS",
        detections=detections, shown=[i for i, d in enumerate(dets) if d[2]],
        failing=[i for i, d in enumerate(dets) if d[3]], operator=operator, part_id=part_id, created_at=when)
    return store.record(rec).id


def reviewer(store: InspectionStore, name: str = "qa-1") -> User:
    """A reviewer the log knows: the first user of its users table (so an admin)."""
    return UserDirectory(store).add(name, "admin", "135790", by=SETUP_USER)


SCRATCH, WEAK_SCRATCH, PIT, SHOWN_PIT = ("scratch", 0.9, True, True), ("scratch", 0.1, False, False), \
    ("pit", 0.7, True, True), ("pit", 0.4, True, False)


@pytest.fixture
def log_db(tmp_path) -> Path:
    """Inspections around shift starts, midnight and the range ends (Berlin is UTC+1 in November)."""
    db = tmp_path / "data" / "inspections.sqlite"
    with InspectionStore(db) as store:
        add(store, (2026, 11, 1, 23, 59, 59, 999000))                    # before the range
        add(store, (2026, 11, 2, 5, 59, 59))                              # 11-02, but the night shift of 11-01
        add(store, (2026, 11, 2, 6, 0), dets=(SCRATCH, SHOWN_PIT), part_id="SN-001", operator="anna")  # early
        add(store, (2026, 11, 2, 13, 59), station="line-2", dets=(PIT, PIT))                         # early
        add(store, (2026, 11, 2, 14, 0), dets=(WEAK_SCRATCH,))                                      # late
        add(store, (2026, 11, 2, 23, 30), dets=(SCRATCH,))                                          # night of 11-02
        add(store, (2026, 11, 3, 0, 30), dets=(PIT,))                     # 23:30 UTC on 11-02; night of 11-02
        add(store, (2026, 11, 3, 10, 0))                                                            # early
        add(store, (2026, 11, 4, 12, 0), station="line-2", dets=(SCRATCH,))                         # early
        add(store, (2026, 11, 5, 0, 0))                                   # after the range; night of 11-04
    return db


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_daily_summary_per_local_day_and_station(log_db, tmp_path):
    table = daily_summary(log_db, date(2026, 11, 2), date(2026, 11, 4), tz=BERLIN)
    assert table.header == ["date", "station", "inspected", "passed", "failed", "defect_rate",
                            "qa_reviewed", "qa_passed", "qa_failed", "overridden", "defects_pit", "defects_scratch"]
    out = tmp_path / "daily.csv"
    assert write_csv(out, table.header, table.rows) == 4
    assert [list(r.values()) for r in read_csv(out)] == [
        ["2026-11-02", "line-1", "4", "2", "2", "0.5000", "0", "0", "0", "0", "0", "2"],  # a shown-but-passing pit is no defect
        ["2026-11-02", "line-2", "1", "0", "1", "1.0000", "0", "0", "0", "0", "2", "0"],
        ["2026-11-03", "line-1", "2", "1", "1", "0.5000", "0", "0", "0", "0", "1", "0"],
        ["2026-11-04", "line-2", "1", "0", "1", "1.0000", "0", "0", "0", "0", "0", "1"],
    ]
    raw = out.read_bytes()
    assert raw.startswith(b'"date","station",') and raw.count(b"\r\n") == 5  # no BOM by default, header row, CRLF rows
    # A class the caller names (e.g. from the model) gets a column even without defects; ranges are validated.
    assert "defects_dent" in daily_summary(log_db, date(2026, 11, 2), date(2026, 11, 2), tz=BERLIN, classes=["dent"]).header
    with pytest.raises(ReportError, match="starts after it ends"):
        daily_summary(log_db, date(2026, 11, 4), date(2026, 11, 2), tz=BERLIN)


def test_daily_summary_in_utc_moves_the_late_night_inspections(log_db):
    rows = daily_summary(log_db, date(2026, 11, 2), date(2026, 11, 4), tz=timezone.utc).rows
    assert [r[:5] + r[10:] for r in rows] == [
        [date(2026, 11, 2), "line-1", 5, 2, 3, 1, 2],  # 00:30 Berlin on 11-03 is 23:30 UTC on 11-02
        [date(2026, 11, 2), "line-2", 1, 0, 1, 2, 0],
        [date(2026, 11, 3), "line-1", 1, 1, 0, 0, 0],
        [date(2026, 11, 4), "line-1", 1, 1, 0, 0, 0],  # 00:00 Berlin on 11-05 is still 11-04 in UTC
        [date(2026, 11, 4), "line-2", 1, 0, 1, 0, 1],
    ]


def test_shifts_night_shift_counts_on_its_start_day(log_db):
    table = daily_summary(log_db, date(2026, 11, 2), date(2026, 11, 4), tz=BERLIN, shifts=SHIFTS)
    assert table.header[:4] == ["date", "station", "shift", "inspected"]
    assert [[str(r[0]), r[1], r[2], r[3], r[5], r[11], r[12]] for r in table.rows] == [
        ["2026-11-02", "line-1", "early", 1, 1, 0, 1],   # 06:00:00 starts the early shift
        ["2026-11-02", "line-1", "late", 1, 0, 0, 0],
        ["2026-11-02", "line-1", "night", 2, 2, 1, 1],   # 23:30 and 00:30 the next morning
        ["2026-11-02", "line-2", "early", 1, 1, 2, 0],   # 13:59 is still early
        ["2026-11-03", "line-1", "early", 1, 0, 0, 0],
        ["2026-11-04", "line-1", "night", 1, 0, 0, 0],   # 00:00 on 11-05 belongs to the night of 11-04
        ["2026-11-04", "line-2", "early", 1, 1, 0, 1],
    ]
    # A production day starts at the first shift: 05:59:59 on 11-02 and 23:59:59.999 on 11-01 are the night of 11-01.
    rows = daily_summary(log_db, date(2026, 11, 1), date(2026, 11, 1), tz=BERLIN, shifts=SHIFTS).rows
    assert [r[:4] for r in rows] == [[date(2026, 11, 1), "line-1", "night", 2]]
    # Shifts given in any order; a bad start is refused.
    assert daily_summary(log_db, date(2026, 11, 2), date(2026, 11, 2), tz=BERLIN, shifts=SHIFTS[::-1]).rows[0][2] == "early"
    with pytest.raises(ReportError, match="HH:MM"):
        daily_summary(log_db, date(2026, 11, 2), date(2026, 11, 2), shifts=[("x", "25:00")])


def test_days_follow_summer_time(tmp_path):
    """25 October 2026 has 25 hours in Berlin; both ends of it are counted, the next day's first minutes are not."""
    db = tmp_path / "dst.sqlite"
    with InspectionStore(db) as store:
        add(store, (2026, 10, 25, 0, 30))   # CEST, 22:30 UTC on 10-24
        add(store, (2026, 10, 25, 23, 30))  # CET, 22:30 UTC on 10-25
        add(store, (2026, 10, 26, 0, 10))
    table = per_inspection(db, date(2026, 10, 25), date(2026, 10, 25), tz=BERLIN)
    assert [(r[2], str(r[3])) for r in table.rows] == [("2026-10-25T00:30:00.000+02:00", "2026-10-25"),
                                                       ("2026-10-25T23:30:00.000+01:00", "2026-10-25")]


def test_per_inspection_csv(log_db, tmp_path):
    out = tmp_path / "inspections.csv"
    assert export_csv(log_db, date(2026, 11, 2), date(2026, 11, 4), out, per_inspection_rows=True, tz=BERLIN, shifts=SHIFTS) == 8
    rows = read_csv(out)
    assert list(rows[0]) == [
        "id", "created_at", "local_time", "date", "station", "shift", "shift_date", "operator", "part_id", "source",
        "trigger", "job_id", "recipe", "recipe_version", "verdict", "regions",
        "model_id", "model_version", "threshold", "n_detections", "failing_pit", "failing_scratch", "max_score",
        "image_path", "note", "qa_verdict", "reviewer", "reviewed_at", "review_reason"]
    first = rows[0]
    assert (first["id"], first["created_at"], first["local_time"], first["date"]) == \
        ("3", "2026-11-02T05:00:00.000Z", "2026-11-02T06:00:00.000+01:00", "2026-11-02")
    assert (first["operator"], first["part_id"], first["verdict"], first["threshold"], first["n_detections"]) == \
        ("anna", "SN-001", "FAIL", "0.3000", "2")
    assert (first["failing_pit"], first["failing_scratch"], first["max_score"], first["qa_verdict"]) == ("0", "1", "0.9000", "")
    by_id = {int(r["id"]): r for r in rows}
    assert sorted(by_id) == [3, 4, 5, 6, 7, 8, 9, 10]
    assert by_id[5]["max_score"] == "" and by_id[5]["failing_scratch"] == "0"  # only a detection under the threshold
    night = by_id[7]  # 00:30 on 11-03: its calendar day and the day its shift started
    assert (night["date"], night["shift"], night["shift_date"]) == ("2026-11-03", "night", "2026-11-02")
    assert (by_id[10]["date"], by_id[10]["shift_date"]) == ("2026-11-05", "2026-11-04")
    assert [r["created_at"] for r in rows] == sorted(r["created_at"] for r in rows)


def test_per_inspection_csv_gives_recipe_trigger_and_each_region_verdict(tmp_path):
    from app.store import RegionRecord

    db = tmp_path / "inspections.sqlite"
    with InspectionStore(db) as store:
        rec = InspectionRecord(
            station="line-1", source="camera 0", frame_size=(320, 240), roi=Roi(0, 0, 320, 240), model_id="m1",
            model_version="1.0", threshold=0.3, rule_json="{}", verdict="FAIL",
            detections=[Detection("scratch", 0.9, (1.0, 2.0, 11.0, 42.0))], shown=[0], failing=[0],
            created_at=datetime(2026, 11, 2, 8, 0, tzinfo=BERLIN), trigger="line", job_id="J-42", recipe="halves",
            recipe_version=3, regions=[RegionRecord("left", Roi(0, 0, 160, 240), 0.3, "{}", "FAIL"),
                                       RegionRecord("right", Roi(160, 0, 160, 240), 0.3, "{}", "PASS")],
            detection_regions=["left"])
        store.record(rec)
    out = tmp_path / "inspections.csv"
    assert export_csv(db, date(2026, 11, 2), date(2026, 11, 2), out, per_inspection_rows=True, tz=BERLIN) == 1
    row = read_csv(out)[0]
    assert (row["trigger"], row["job_id"], row["recipe"], row["recipe_version"], row["regions"]) == \
        ("line", "J-42", "halves", "3", "left=FAIL; right=PASS")


def test_formula_looking_text_stays_inert(tmp_path):
    db = tmp_path / "inspections.sqlite"
    with InspectionStore(db) as store:
        ids = [add(store, (2026, 11, 2, 8, i), part_id=p, operator="=cmd|' /C calc'!A0", dets=(SCRATCH,))
               for i, p in enumerate([*FORMULAS, "SN-001", "Müller 7"])]
        # A QA review by a user whose name and typed reason look like formulas.
        ReviewService(store, reviewer(store, "-qa")).set_verdict(ids[0], "PASS", "@SUM(1+1)*cmd")
    out = tmp_path / "inspections.csv"
    export_csv(db, date(2026, 11, 2), date(2026, 11, 2), out, per_inspection_rows=True, tz=BERLIN)
    rows = read_csv(out)
    assert [r["part_id"] for r in rows] == ["'" + p for p in FORMULAS] + ["SN-001", "Müller 7"]
    assert {r["operator"] for r in rows} == {"'=cmd|' /C calc'!A0"}
    assert (rows[0]["qa_verdict"], rows[0]["reviewer"], rows[0]["review_reason"]) == ("PASS", "'-qa", "'@SUM(1+1)*cmd")
    # Quotes inside the cell are CSV-escaped, the cell starts with the apostrophe: no spreadsheet runs it.
    assert '"\'=HYPERLINK(""http://x"",""y"")"' in out.read_text(encoding="utf-8")
    # Our own numbers are never prefixed.
    assert all(not v.startswith("'") for r in rows for k, v in r.items() if k not in ("part_id", "operator", "reviewer",
                                                                                      "review_reason"))
    for text in ("\tx", "\rx", "\uff1dSUM(1)", "=1", "  =1"):
        assert neutralise(text) == "'" + text
    for text in ("SN-001", "a=b", "", "'=already"):
        assert neutralise(text) == text
    # Excel: a BOM on request, UTF-8 either way.
    write_csv(out, ["name"], [["Müller"]], bom=True)
    assert out.read_bytes() == '\ufeff"name"\r\n"Müller"\r\n'.encode()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # atomic: no temp file left


def test_trends_data(log_db):
    data = trends(log_db, date(2026, 11, 2), date(2026, 11, 4), tz=BERLIN)
    assert data.days == [date(2026, 11, 2), date(2026, 11, 3), date(2026, 11, 4)]
    assert data.inspected == [5, 2, 1] and data.failed == [3, 1, 1]
    assert data.defect_rate == [0.6, 0.5, 1.0]
    assert data.defects == {"pit": [2, 1, 0], "scratch": [2, 0, 1]}
    assert sorted(data.scores["pit"]) == [0.4, 0.7, 0.7, 0.7] and data.scores["scratch"] == [0.9, 0.9, 0.9]  # shown only


def test_queries_use_the_created_at_index(log_db):
    from app.store import sqlite as sqlite_log

    conn = sqlite3.connect(log_db)
    for sql in (sqlite_log.REPORT_INSPECTIONS, sqlite_log.REPORT_LIST.format(v4=sqlite_log.REPORT_LIST_V4),
                sqlite_log.REPORT_CLASS_STATS, sqlite_log.REPORT_SCORES,
                sqlite_log.REPORT_REVIEWS.format(reviews="current_reviews")):
        plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, ("a", "b")))
        assert "ix_inspections_created" in plan, plan
    conn.close()
    with InspectionStore(log_db, read_only=True) as log:  # what a report opens a file with
        with pytest.raises(StoreError, match="read-only"):
            add(log, (2026, 11, 2, 8, 0))


def test_cli_export_csv(log_db, tmp_path):
    out = tmp_path / "daily.csv"
    config = tmp_path / "station.json"
    config.write_text(json.dumps({"shifts": [{"name": n, "start": t} for n, t in SHIFTS]}), encoding="utf-8")
    # The system's time zone by default, DST rules and all (TZ as a scheduled job on the station would have it).
    r = run_app("export-csv", "--db", str(log_db), "--from", "2026-11-02", "--to", "2026-11-04", "--out", str(out),
                "--config", str(config), env={"TZ": "Europe/Berlin"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "wrote 7 summary rows (per shift)" in r.stdout and " s" in r.stdout
    rows = read_csv(out)
    assert [(r["date"], r["station"], r["shift"], r["inspected"]) for r in rows][2] == ("2026-11-02", "line-1", "night", "2")

    # The same in-process for the other options and the errors (no interpreter start-up each time).
    assert cli_main(["export-csv", "--db", str(log_db), "--from", "2026-11-02", "--to", "2026-11-04", "--out", str(out),
                     "--tz", "Europe/Berlin", "--config", str(config), "--no-shifts", "--per-inspection"]) == 0
    assert len(read_csv(out)) == 8 and "shift" not in read_csv(out)[0]
    assert cli_main(["export-csv", "--db", str(log_db), "--from", "2026-11-02", "--to", "2026-11-04", "--out", str(out),
                     "--utc", "--config", str(config), "--no-shifts"]) == 0
    assert len(read_csv(out)) == 5
    assert cli_main(["export-csv", "--db", str(log_db), "--from", "yesterday", "--to", "today", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8").startswith('"date","station",')


@pytest.mark.parametrize("args, message", [
    (["--db", "{missing}", "--from", "2026-11-02", "--to", "2026-11-04"], "no inspection database"),
    (["--from", "2026-11-31", "--to", "2026-12-01"], "not a date"),
    (["--from", "2026-11-04", "--to", "2026-11-02"], "is after --to"),
    (["--from", "2026-11-02", "--to", "2026-11-04", "--tz", "Mars/Olympus"], "unknown time zone"),
])
def test_cli_export_csv_errors(log_db, tmp_path, capsys, args, message):
    missing = tmp_path / "nothing" / "inspections.sqlite"
    args = [a.replace("{missing}", str(missing)) for a in args]
    if "--db" not in args:
        args = ["--db", str(log_db), *args]
    out = tmp_path / "out.csv"
    assert cli_main(["export-csv", *args, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not missing.parent.exists()  # nothing written, no database created


def test_csv_bytes_are_locale_free():
    data, n = reports.csv_bytes(["x", "d"], [[0.1, date(2026, 1, 2)], [2, None]])
    assert n == 2 and list(csv.reader(io.StringIO(data.decode("utf-8")))) == [["x", "d"], ["0.1000", "2026-01-02"], ["2", ""]]


def test_daily_summary_has_qa_figures_beside_the_stations(log_db, tmp_path):
    """QA's current verdict per inspection, counted on the inspection's day: reviewed, passed, failed, overridden."""
    with InspectionStore(log_db) as store:
        qa = ReviewService(store, reviewer(store))
        qa.set_verdict(3, "PASS", "reflection, not a scratch")   # 11-02 line-1: station FAIL, overridden
        qa.set_verdict(5, "PASS", "clean")                       # 11-02 line-1: confirmed
        qa.set_verdict(4, "FAIL", "two pits")                    # 11-02 line-2: confirmed
        qa.set_verdict(8, "PASS", "looks fine")                  # 11-03 line-1: first PASS ...
        qa.set_verdict(8, "FAIL", "on second look a pit")        # ... then FAIL: the current word counts
    out = tmp_path / "daily.csv"
    assert export_csv(log_db, date(2026, 11, 2), date(2026, 11, 4), out, tz=BERLIN) == 4
    rows = read_csv(out)
    assert [(r["date"], r["station"], r["failed"], r["qa_reviewed"], r["qa_passed"], r["qa_failed"], r["overridden"])
            for r in rows] == [
        ("2026-11-02", "line-1", "2", "2", "2", "0", "1"),
        ("2026-11-02", "line-2", "1", "1", "0", "1", "0"),
        ("2026-11-03", "line-1", "1", "1", "0", "1", "1"),  # 11-03 10:00 was a station PASS
        ("2026-11-04", "line-2", "1", "0", "0", "0", "0"),
    ]
    export_csv(log_db, date(2026, 11, 3), date(2026, 11, 3), out, per_inspection_rows=True, tz=BERLIN)
    by_id = {int(r["id"]): r for r in read_csv(out)}
    assert (by_id[8]["qa_verdict"], by_id[8]["review_reason"]) == ("FAIL", "on second look a pit")
    # Per shift too: the night shift of 11-02 has none reviewed, its early shift has the override.
    shifts = daily_summary(log_db, date(2026, 11, 2), date(2026, 11, 2), tz=BERLIN, shifts=SHIFTS)
    qa_cols = [shifts.header.index(c) for c in reports.QA_COLUMNS]
    assert [(r[1], r[2], *(r[i] for i in qa_cols)) for r in shifts.rows] == [
        ("line-1", "early", 1, 1, 0, 1), ("line-1", "late", 1, 1, 0, 0), ("line-1", "night", 0, 0, 0, 0),
        ("line-2", "early", 1, 0, 1, 0)]


SEMICOLON_TEXTS = ["x;=1+1;", 'a;"=1+1"', "two\nlines\n@SUM(1)", "x\r\n-2", "; +3", "SN-001"]


def test_text_is_quoted_and_stays_inert_when_a_spreadsheet_splits_on_semicolons(tmp_path):
    db = tmp_path / "inspections.sqlite"
    with InspectionStore(db) as store:
        for i, text in enumerate(SEMICOLON_TEXTS):
            add(store, (2026, 11, 2, 8, i), part_id=text, operator="anna;=cmd|' /C calc'!A0", dets=(SCRATCH,))
    out = tmp_path / "inspections.csv"
    export_csv(db, date(2026, 11, 2), date(2026, 11, 2), out, per_inspection_rows=True, tz=BERLIN)
    text = out.read_bytes().decode("utf-8")  # as is: a line break typed into a part ID is data

    # A spreadsheet that splits on ',' (and every CSV library): one cell per column, text kept, formulas neutralised.
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    assert all(len(r) == len(header) for r in rows) and len(rows) == 1 + len(SEMICOLON_TEXTS)
    part = header.index("part_id")
    assert [r[part] for r in rows[1:]] == ["x;'=1+1;", 'a;\'"=1+1"', "two\nlines\n'@SUM(1)", "x\r\n'-2", ";' +3", "SN-001"]
    assert {r[header.index("operator")] for r in rows[1:]} == {"anna;'=cmd|' /C calc'!A0"}
    assert '"SN-001"' in text and ',"line-1",' in text and ',"2026-11-02",' in text  # every text cell quoted ...
    assert ",0.3000," in text and ',"0.3000"' not in text  # ... numbers not

    # A German or French spreadsheet splits the same file on ';' and sees no quotes inside the comma rows:
    # it may see more cells in a row with a ';', but no cell (nor a row cut at a line break) starts a formula.
    cells = [c for row in csv.reader(io.StringIO(text), delimiter=";") for c in row]
    assert not [c for c in cells if c[:1] in reports.FORMULA_PREFIXES], cells
    semicolon_rows = list(csv.reader(io.StringIO(text), delimiter=";"))
    assert len(semicolon_rows[0]) == 1  # a row without a typed ";" is one cell there

    # Numbers stay numbers for a reader that takes every unquoted cell as one (the daily CSV has no empty cells).
    daily = tmp_path / "daily.csv"
    export_csv(db, date(2026, 11, 2), date(2026, 11, 2), daily, tz=BERLIN)
    header, row = list(csv.reader(io.StringIO(daily.read_bytes().decode("utf-8")), quoting=csv.QUOTE_NONNUMERIC))
    assert row[:7] == ["2026-11-02", "line-1", 6.0, 0.0, 6.0, 1.0, 0.0] and all(isinstance(h, str) for h in header)


def test_writing_into_a_missing_folder_says_so(log_db, tmp_path):
    out = tmp_path / "no such folder" / "daily.csv"
    for write in (lambda: write_csv(out, ["a"], [[1]]),
                  lambda: export_csv(log_db, date(2026, 11, 2), date(2026, 11, 4), out, tz=BERLIN)):
        with pytest.raises(ReportError, match="does not exist") as err:
            write()
        assert str(out.parent) in str(err.value) and ".tmp" not in str(err.value)  # not the atomic write's temp file
    assert not out.parent.exists()
    (tmp_path / "a file").write_text("x")
    with pytest.raises(ReportError, match="is not a folder"):
        write_csv(tmp_path / "a file" / "daily.csv", ["a"], [[1]])


@pytest.mark.parametrize("zone, shifts", [
    ("Europe/Berlin", SHIFTS),                                     # summer time ends on 2026-10-25
    ("Europe/Berlin", ()),
    ("Australia/Lord_Howe", (("a", "01:45"), ("b", "02:15"), ("c", "13:30"))),  # DST moves the clock by 30 minutes
    ("Asia/Kathmandu", (("day", "06:10"), ("night", "18:10"))),    # UTC+05:45: hours do not line up with UTC's
])
def test_day_and_shift_per_hour_are_those_of_each_inspection(zone, shifts):
    """The daily summary remembers a report day and shift per UTC hour: never a different answer than per inspection."""
    clock = reports._Clock(ZoneInfo(zone), reports.parse_shifts(shifts))
    start = datetime(2026, 10, 2, 12, 0, tzinfo=timezone.utc)  # Lord Howe's summer time starts on 2026-10-04
    for minute in range(0, 40 * 24 * 60, 7):
        for second in (0.0, 59.999):
            t = start.timestamp() + minute * 60 + second
            text = reports.iso_utc(datetime.fromtimestamp(t, timezone.utc))
            assert clock.day_and_shift(text) == clock.shift(clock.local(reports._parse_created(text))), text
