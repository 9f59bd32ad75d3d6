"""Supervisor reports from the inspection log: daily summary, per-inspection list, trend data. No Qt here.

Days. A report day is a calendar day in the station's local time zone (the
system's, DST-aware) unless a time zone is given (`tz=timezone.utc` for UTC).
When shifts are configured, a report day is a *production day*: it starts at
the first shift's start and ends at the next day's first shift start, and every
inspection belongs to the last shift that started at or before its local time.
So with early 06:00 / late 14:00 / night 22:00, an inspection at 03:00 on the
26th is counted in the night shift of the 25th: a night shift crossing midnight
is attributed to the day it started, and a date range selects whole shifts.

Ranges. `first`..`last` are inclusive report days; they are turned into UTC
bounds on `created_at` (ISO 8601 text, fixed width, so text order is time
order); the log answers such a range from its index on created_at
(`InspectionLog.report_*`), and the counting by day, shift and class is here;
a log that counts report days itself (the plant database, millions of rows a
month: `GroupedReports.report_groups`, local days with AT TIME ZONE) is asked
for the counts instead, with the same answer. `station=` narrows any report
to one station of a log that holds several.

CSV. `write_csv` writes UTF-8 (no BOM unless asked: scripts and strict UTF-8
readers take the file as is; `bom=True` is for double-clicking into Excel,
which otherwise decodes non-ASCII names as ANSI), a header row, ISO 8601 dates,
dot decimals (Python formatting is locale-free) and CRLF rows (RFC 4180).
Every text cell (header, names, dates) is quoted, numbers are not: a comma,
quote or line break typed into a part ID stays inside its cell. Text that a
spreadsheet could run as a formula is neutralised, also where a spreadsheet
that splits on `;` (the German and French default, blind to our quotes there)
or on a line break would start a new cell inside it: `x;=1+1` is written
`"x;'=1+1"`, so those spreadsheets see more cells in that row, none a formula.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any

from app.store import ClassStats, InspectionLog, InspectionStore, StoreError, iso_utc
from app.store.rows import ReportDefects, ReportGroup
from detector.files import atomic_write_bytes

# OWASP CSV injection: cells starting with these are run as formulas (or split
# into one) by Excel, LibreOffice and Google Sheets. The full-width forms are
# taken as formulas by some East Asian Excel set-ups.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
FLOAT_DECIMALS = 4


class ReportError(RuntimeError):
    """A report could not be made (message says why, for the user)."""


# -- CSV -----------------------------------------------------------------------------------


_FORMULA_STARTS = frozenset(FORMULA_PREFIXES)
# A cell boundary for a reader that does not see our quotes (`;` spreadsheets, line breaks),
# followed by a formula start or by a quote that such a reader would take as opening a cell;
# spaces before it too, which an import that trims cells drops.
_INNER_FORMULA = re.compile("([;\r\n])(?= *[" + re.escape("".join(FORMULA_PREFIXES) + '"') + "])")


def neutralise(text: str) -> str:
    """`text` made inert for spreadsheets: an apostrophe wherever a cell could start with a formula."""
    if text.lstrip(" ")[:1] in _FORMULA_STARTS:
        text = "'" + text
    if ";" in text or "\n" in text or "\r" in text:  # the regex only where it can match: ~2 million cells a month
        text = _INNER_FORMULA.sub(r"\1'", text)
    return text


def _text(text: str) -> str:
    text = neutralise(text)
    return '"' + (text.replace('"', '""') if '"' in text else text) + '"'


def _float(value: float) -> str:
    return f"{value:.{FLOAT_DECIMALS}f}"


# Exact types first: a month of per-inspection rows is ~2 million cells.
_FORMAT_BY_TYPE = {str: _text, int: str, float: _float, type(None): lambda _: "",
                   date: lambda d: f'"{d.isoformat()}"', datetime: lambda d: f'"{d.isoformat()}"'}


def format_cell(value: Any) -> str:
    """One CSV cell as written: numbers bare with a dot and fixed decimals, None empty, everything else quoted text.

    Only numbers we produce are int/float, so quoting and neutralising every
    other value also covers text fields added to the log later.
    """
    fast = _FORMAT_BY_TYPE.get(type(value))
    if fast is not None:
        return fast(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, (date, datetime)):
        return f'"{value.isoformat()}"'
    return _text(str(value))


def csv_bytes(header: Sequence[str], rows: Iterable[Sequence[Any]], *, bom: bool = False) -> tuple[bytes, int]:
    """The CSV file's bytes and the number of data rows."""
    fast = _FORMAT_BY_TYPE.get  # format_cell's own first step, without its call per cell (~2 million cells a month)
    lines = [",".join(map(format_cell, header))]
    for row in rows:
        lines.append(",".join([fast(type(v), format_cell)(v) for v in row]))
    lines.append("")  # the last row ends with CRLF too
    return (b"\xef\xbb\xbf" if bom else b"") + "\r\n".join(lines).encode("utf-8"), len(lines) - 2


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]], *, bom: bool = False) -> int:
    """Write a CSV atomically (a scheduled job never leaves half a file); returns the data rows written."""
    path = Path(path)
    check_folder(path)
    data, n = csv_bytes(header, rows, bom=bom)
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:  # the OS names the temporary file: say what it means for `path` instead
        raise ReportError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return n


def check_folder(path: str | Path) -> None:
    """ReportError unless the folder `path` is to be written in exists (before any temporary file is named)."""
    folder = Path(path).absolute().parent
    if not folder.is_dir():
        raise ReportError(f"the folder {folder} does not exist" if not folder.exists() else f"{folder} is not a folder")


# -- days, time zones, shifts ------------------------------------------------------------------


def parse_date(text: str) -> date:
    """A YYYY-MM-DD date (the CLI's --from/--to)."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ReportError(f"not a date (YYYY-MM-DD): {text!r}") from None


def resolve_tz(name: str | None = None, utc: bool = False) -> tzinfo | None:
    """The report time zone: UTC, a named zone ("Europe/Berlin"), or None for the system's local zone."""
    if utc:
        return timezone.utc
    if not name:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReportError(f"unknown time zone {name!r}") from None


def parse_shifts(shifts: Iterable[tuple[str, str]]) -> tuple[tuple[str, int], ...]:
    """(name, "HH:MM") pairs as (name, minute of the day), sorted by start."""
    out = []
    for name, start in shifts:
        try:
            hh, mm = (int(x) for x in str(start).split(":"))
        except ValueError:
            raise ReportError(f"shift {name!r}: start must be HH:MM, got {start!r}") from None
        if not (0 <= hh < 24 and 0 <= mm < 60):
            raise ReportError(f"shift {name!r}: start must be HH:MM, got {start!r}")
        out.append((str(name), hh * 60 + mm))
    out.sort(key=lambda s: s[1])
    if len({m for _, m in out}) != len(out):
        raise ReportError("two shifts start at the same time")
    return tuple(out)


class _Clock:
    """UTC <-> report-local time. tz None: the system's zone, DST rules included (not a fixed offset)."""

    def __init__(self, tz: tzinfo | None, shifts: tuple[tuple[str, int], ...]):
        self.tz = tz
        self.shifts = shifts
        self.starts = [m for _, m in shifts]
        self.day_start = time(*divmod(shifts[0][1], 60)) if shifts else time(0, 0)
        self._by_hour: dict[str, tuple[date, str]] = {}

    def zone(self) -> str | None:
        """The report time zone as the plant database names it (an IANA name or "+HH:MM"); None: not known by name."""
        tz = self.tz
        if tz is None:
            return system_zone_name()
        if tz is timezone.utc:
            return "UTC"
        key = getattr(tz, "key", None)  # zoneinfo.ZoneInfo
        if key:
            return key
        if isinstance(tz, timezone):
            minutes = int(tz.utcoffset(None).total_seconds() // 60)
            return f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
        return None

    def local(self, utc: datetime) -> datetime:
        return utc.astimezone(self.tz)  # astimezone(None) is the system's local zone

    def to_utc(self, naive_local: datetime) -> datetime:
        if self.tz is None:
            return naive_local.astimezone(timezone.utc)  # naive = system local time
        return naive_local.replace(tzinfo=self.tz).astimezone(timezone.utc)

    def bounds(self, first: date, last: date) -> tuple[str, str]:
        """created_at bounds [lo, hi) covering report days first..last, in the log's text format."""
        if first > last:
            raise ReportError(f"the range starts after it ends ({first} > {last})")
        lo = self.to_utc(datetime.combine(first, self.day_start))
        hi = self.to_utc(datetime.combine(last + timedelta(days=1), self.day_start))
        return iso_utc(lo), iso_utc(hi)

    def day_and_shift(self, created_at: str) -> tuple[date, str]:
        """The report day and shift of a created_at (log text), remembered per UTC hour where the whole hour has one.

        Parsing and converting each of ~100,000 times a month is most of a daily summary's time,
        and a busy station logs hundreds an hour.
        """
        hour = created_at[:13]
        known = self._by_hour.get(hour)
        if known is not None:
            return known
        found = self.shift(self.local(_parse_created(created_at)))
        # One answer for the hour's first and last instant at one UTC offset: the same for every instant
        # between (report day and shift only move forward in time).
        first, last = (self.local(_parse_created(f"{hour}{tail}")) for tail in (":00:00.000Z", ":59:59.999Z"))
        if first.utcoffset() == last.utcoffset() and self.shift(first) == self.shift(last) == found:
            self._by_hour[hour] = found
        return found

    def shift(self, local: datetime) -> tuple[date, str]:
        """The report day and shift name of a local time ("" without shifts)."""
        if not self.shifts:
            return local.date(), ""
        i = bisect_right(self.starts, local.hour * 60 + local.minute) - 1
        if i < 0:  # before the day's first shift: still the previous day's last shift
            return local.date() - timedelta(days=1), self.shifts[-1][0]
        return local.date(), self.shifts[i][0]


def system_zone_name() -> str | None:
    """The IANA name of the system's time zone (TZ, /etc/timezone or the /etc/localtime link); None if it has none."""
    import os
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        candidates.append(Path("/etc/timezone").read_text(encoding="utf-8").strip())
    except OSError:
        pass
    try:
        link = os.readlink("/etc/localtime")
        candidates.append(link.split("zoneinfo/", 1)[1] if "zoneinfo/" in link else "")
    except OSError:
        pass
    if os.environ.get("TZ") is not None:
        candidates = candidates[:1]  # TZ set: it alone is the system's zone for this process
    for name in candidates:
        if name and not name.startswith("/"):
            try:
                ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
            return name
    return None


def _parse_created(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))  # 3.10's fromisoformat knows no "Z"


# -- the log ---------------------------------------------------------------------------------------


@contextmanager
def _opened(db: InspectionLog | str | Path) -> Iterator[InspectionLog]:
    """The log to report from: as given, or a file opened read-only (a report never changes or migrates it,
    and works beside a running station). Its errors become ReportError."""
    try:
        if isinstance(db, (str, Path)):
            with InspectionStore(db, read_only=True) as log:
                yield log
        else:
            yield db
    except StoreError as exc:
        raise ReportError(str(exc)) from exc


_NO_REVIEW = (None, None, None, None)
QA_COLUMNS = ("qa_reviewed", "qa_passed", "qa_failed", "overridden")


@dataclass
class Table:
    """A report: header and rows, ready for write_csv."""

    header: list[str]
    rows: list[list[Any]]


@dataclass
class _Group:
    inspected: int = 0
    passed: int = 0
    failed: int = 0
    qa_reviewed: int = 0
    qa_passed: int = 0
    qa_failed: int = 0
    overridden: int = 0  # QA's verdict differs from the station's
    defects: dict[str, int] = field(default_factory=dict)


def _per_class(log: InspectionLog, lo: str, hi: str, station: str | None = None) -> tuple[ClassStats, set[str]]:
    """Per inspection id: label -> (failing detections, best shown score or None); and every label seen."""
    stats = log.report_class_stats(lo, hi, station)
    return stats, {label for per_label in stats.values() for label in per_label}


def _reviews(log: InspectionLog, lo: str, hi: str, station: str | None = None) -> dict[int, tuple[str, str, str, str | None]]:
    """Per inspection id: (QA verdict, reviewer, reviewed at, reason); empty for a log without reviews."""
    return {r[0]: r[1:] for r in log.report_reviews(lo, hi, station)}


def _counted_by_log(counted: tuple[list[ReportGroup], list[ReportDefects], set[str]]
                    ) -> tuple[dict[tuple[date, str, str], _Group], set[str]]:
    """`_groups`' answer from the groups a log counted itself."""
    rows, defects, labels = counted
    groups = {(r.day, r.station, r.shift): _Group(*r[3:]) for r in rows}
    for d in defects:
        if d.failing:
            groups[(d.day, d.station, d.shift)].defects[d.label] = d.failing
    return groups, set(labels)


def _groups(log: InspectionLog, clock: _Clock, lo: str, hi: str,
            station: str | None = None) -> tuple[dict[tuple[date, str, str], _Group], set[str]]:
    """(report day, station, shift) -> counts, QA's figures included; and every label seen.

    QA's figures count on the day of the inspection, not of the review, so they
    sit beside the station's figures for the same parts. A log that groups report
    days itself (the plant database: app.store.base.GroupedReports) does, when
    the time zone has a name it knows; the counts are the same.
    """
    grouped, zone = getattr(log, "report_groups", None), clock.zone()
    if grouped is not None and zone is not None:
        return _counted_by_log(grouped(lo, hi, zone, clock.shifts, station))
    per_class, labels = _per_class(log, lo, hi, station)
    qa = {r.inspection_id: r.qa_verdict for r in log.report_reviews(lo, hi, station)}
    groups: dict[tuple[date, str, str], _Group] = {}
    day_and_shift = clock.day_and_shift
    for inspection_id, created_at, station_name, verdict in log.report_inspections(lo, hi, station):
        day, shift_name = day_and_shift(created_at)
        g = groups.get((day, station_name, shift_name))
        if g is None:
            g = groups[(day, station_name, shift_name)] = _Group()
        g.inspected += 1
        if verdict == "PASS":
            g.passed += 1
        else:
            g.failed += 1
        qa_verdict = qa.get(inspection_id)
        if qa_verdict is not None:
            g.qa_reviewed += 1
            if qa_verdict == "PASS":
                g.qa_passed += 1
            else:
                g.qa_failed += 1
            if qa_verdict != verdict:
                g.overridden += 1
        for label, (fails, _) in per_class.get(inspection_id, {}).items():
            if fails:
                g.defects[label] = g.defects.get(label, 0) + fails
    return groups, labels


def daily_summary(db: InspectionLog | str | Path, first: date, last: date, *, tz: tzinfo | None = None,
                  shifts: Iterable[tuple[str, str]] = (), classes: Iterable[str] = (), station: str | None = None) -> Table:
    """Per report day, station (and shift): the station's inspected, passed, failed, defect rate; QA's
    reviewed, passed, failed and overridden (QA's current verdict differs from the station's) among
    those inspections; failing defects per class (as the station logged them).

    Class columns are `classes` plus every label detected in the range, sorted,
    so a class with no defects still shows as 0 when the caller names it.
    Only days/stations/shifts with inspections get a row. `station`: that station's
    inspections only (a plant log holds many).
    """
    parsed = parse_shifts(shifts)
    clock = _Clock(tz, parsed)
    lo, hi = clock.bounds(first, last)
    with _opened(db) as log:
        groups, labels = _groups(log, clock, lo, hi, station)
    labels = sorted(labels | set(classes))
    order = {name: i for i, (name, _) in enumerate(parsed)}
    header = ["date", "station", *(["shift"] if parsed else []), "inspected", "passed", "failed", "defect_rate",
              *QA_COLUMNS, *(f"defects_{c}" for c in labels)]
    rows = []
    for (day, station, shift_name), g in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], order.get(kv[0][2], 0))):
        rows.append([day, station, *([shift_name] if parsed else []), g.inspected, g.passed, g.failed,
                     g.failed / g.inspected, g.qa_reviewed, g.qa_passed, g.qa_failed, g.overridden,
                     *(g.defects.get(c, 0) for c in labels)])
    return Table(header, rows)


def per_inspection(db: InspectionLog | str | Path, first: date, last: date, *, tz: tzinfo | None = None,
                   shifts: Iterable[tuple[str, str]] = (), classes: Iterable[str] = (), station: str | None = None) -> Table:
    """One row per inspection in the range, oldest first.

    `date` is the local calendar day; with shifts, `shift` and `shift_date`
    (the day the shift started) follow. `failing_<class>` counts detections
    that made the part fail; `max_score` is the best score of a shown
    detection (at or above the threshold), empty when none was shown. The QA
    columns are empty until QA has reviewed the inspection.
    """
    parsed = parse_shifts(shifts)
    clock = _Clock(tz, parsed)
    lo, hi = clock.bounds(first, last)
    with _opened(db) as log:
        per_class, labels = _per_class(log, lo, hi, station)
        records = log.report_list(lo, hi, station)
        reviews = _reviews(log, lo, hi, station)
    labels = sorted(labels | set(classes))
    header = ["id", "created_at", "local_time", "date", "station", *(["shift", "shift_date"] if parsed else []),
              "operator", "part_id", "source", "trigger", "job_id", "recipe", "recipe_version", "verdict", "regions",
              "model_id", "model_version", "threshold", "n_detections",
              *(f"failing_{c}" for c in labels), "max_score", "image_path", "note",
              "qa_verdict", "reviewer", "reviewed_at", "review_reason"]
    rows = []
    for (inspection_id, created_at, station, verdict, operator, part_id, source, model_id, model_version, threshold,
         n_detections, image_path, note, recipe, recipe_version, trigger, job_id, regions) in records:
        t = clock.local(_parse_created(created_at))
        stats = per_class.get(inspection_id, {})
        shift_cells = []
        if parsed:
            shift_date, shift_name = clock.shift(t)
            shift_cells = [shift_name, shift_date]
        rows.append([inspection_id, created_at, t.isoformat(timespec="milliseconds"), t.date(), station, *shift_cells,
                     operator, part_id, source, trigger, job_id, recipe, recipe_version or None, verdict, regions or "",
                     model_id, model_version, float(threshold), n_detections,
                     *(stats[c][0] if c in stats else 0 for c in labels),
                     max((s for _, s in stats.values() if s is not None), default=None), image_path, note,
                     *reviews.get(inspection_id, _NO_REVIEW)])
    return Table(header, rows)


@dataclass
class Trends:
    """What the trend charts plot: per report day (all stations and shifts together), and score samples."""

    days: list[date]
    inspected: list[int]
    failed: list[int]
    defect_rate: list[float]
    defects: dict[str, list[int]]  # class -> failing defects per day, aligned with `days`
    scores: dict[str, list[float]]  # class -> scores of the shown detections in the range (to 0.001 from the plant database)
    stations: list[str] = field(default_factory=list)  # stations with inspections in the range, sorted


def trends(db: InspectionLog | str | Path, first: date, last: date, *, tz: tzinfo | None = None,
           shifts: Iterable[tuple[str, str]] = (), classes: Iterable[str] = (), station: str | None = None) -> Trends:
    """Trend data for the range; days without inspections are left out (no rate to plot)."""
    clock = _Clock(tz, parse_shifts(shifts))
    lo, hi = clock.bounds(first, last)
    with _opened(db) as log:
        groups, labels = _groups(log, clock, lo, hi, station)
        scores: dict[str, list[float]] = {}
        binned = getattr(log, "report_score_counts", None)  # the plant database: millions of scores, binned there
        if binned is not None:
            for label, score, n in binned(lo, hi, station):
                scores.setdefault(label, []).extend([score] * n)
        else:
            for label, score in log.report_scores(lo, hi, station):
                scores.setdefault(label, []).append(float(score))
    labels = sorted(labels | set(classes))
    per_day: dict[date, _Group] = {}
    for (day, _, _), g in groups.items():
        total = per_day.setdefault(day, _Group())
        total.inspected += g.inspected
        total.failed += g.failed
        for label, n in g.defects.items():
            total.defects[label] = total.defects.get(label, 0) + n
    days = sorted(per_day)
    return Trends(
        days=days,
        inspected=[per_day[d].inspected for d in days],
        failed=[per_day[d].failed for d in days],
        defect_rate=[per_day[d].failed / per_day[d].inspected for d in days],
        defects={c: [per_day[d].defects.get(c, 0) for d in days] for c in labels},
        scores={c: scores.get(c, []) for c in labels},
        stations=sorted({station for _, station, _ in groups}),
    )


def export_csv(db: InspectionLog | str | Path, first: date, last: date, out: str | Path, *,
               per_inspection_rows: bool = False, tz: tzinfo | None = None, shifts: Iterable[tuple[str, str]] = (),
               classes: Iterable[str] = (), bom: bool = False, station: str | None = None) -> int:
    """The daily summary (or the per-inspection list) for first..last written to `out`; returns data rows."""
    make = per_inspection if per_inspection_rows else daily_summary
    table = make(db, first, last, tz=tz, shifts=shifts, classes=classes, station=station)
    return write_csv(out, table.header, table.rows, bom=bom)
