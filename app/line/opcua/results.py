"""Inspection results as OPC 40100-1 `ResultDataType` values, from a fresh result or from the inspection log.

ResultState (OPC 40100-1 12.19) says how far processing got, not PASS/FAIL:
every judged part is 1 (Completed), PASS or FAIL; an inspection that could not
be judged (InspectionFailed, nothing logged) is 4 (Failed). The verdict travels
in ResultContent, always in this order (a PLC reads it by position):

    [0] String  "PASS" or "FAIL" ("ERROR" when ResultState is 4)
    [1] Int32   failing defects (detections that make the part fail)
    [2] Int32   detections at or above the decision threshold (shown)
    [3] String  each region's verdict, "left=PASS; right=FAIL"
    [4] String  JSON: {"defects": [{"label", "score", "box": [x1, y1, x2, y2] (frame px), "region", "fails"}],
                "regions": [{"name", "verdict"}], "error": text (ResultState 4 only)}

GetResultListFiltered's ResultState filter takes 0 (any), 1 (Completed: every
logged result) and, application-specific (OPC 40100-1 allows values < 0),
-1 = Completed and PASS, -2 = Completed and FAIL.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from asyncua import ua

from app.inspection import InspectionResult
from app.store import GalleryFilter
from app.verdict import FAIL, PASS

COMPLETED, FAILED = 1, 4
FILTER_PASS, FILTER_FAIL = -1, -2
MAX_REMEMBERED = 100_000  # jobs and result ids this server remembers (MeasId/ProductId are not in the log)


@dataclass(frozen=True)
class JobInfo:
    """What a PLC's start call carried (the log keeps the job id and the part id, not the rest)."""

    job_id: str
    meas_id: str = ""
    part_id: str = ""
    product_id: str = ""


@dataclass(frozen=True)
class Facts:
    """One result, whichever way it came (fresh from the station or from the log)."""

    uid: str
    state: int  # COMPLETED or FAILED
    verdict: str  # PASS, FAIL or ERROR
    failing: int
    shown: int
    regions: tuple[tuple[str, str], ...]
    defects: tuple[dict, ...]
    recipe: str
    recipe_version: int
    recipe_external_id: str
    model_id: str
    model_version: str
    created: datetime
    inference_ms: float | None
    job: JobInfo
    error: str = ""

    def content(self) -> list[ua.Variant]:
        details = {"defects": list(self.defects), "regions": [{"name": n, "verdict": v} for n, v in self.regions]}
        if self.error:
            details["error"] = self.error
        return [ua.Variant(self.verdict, ua.VariantType.String), ua.Variant(self.failing, ua.VariantType.Int32),
                ua.Variant(self.shown, ua.VariantType.Int32),
                ua.Variant("; ".join(f"{n}={v}" for n, v in self.regions), ua.VariantType.String),
                ua.Variant(json.dumps(details, separators=(",", ":")), ua.VariantType.String)]


def facts_from_result(result: InspectionResult, job: JobInfo, created: datetime, model_id: str, model_version: str) -> Facts:
    verdict = result.verdict
    failing = set(verdict.failing)
    defects = tuple({"label": d.label, "score": round(float(d.score), 4), "box": [round(float(v), 1) for v in d.box],
                     "region": result.detection_regions[i] if i < len(result.detection_regions) else None,
                     "fails": i in failing}
                    for i, d in enumerate(result.detections) if i in set(verdict.shown) or i in failing)
    recipe = result.recipe
    return Facts(result.uid, COMPLETED, verdict.verdict, len(failing), len(verdict.shown),
                 tuple((r.name, r.verdict.verdict) for r in result.regions), defects, recipe.name, recipe.version,
                 recipe.line_id, model_id, model_version, created, result.inference_ms, job)


def facts_from_failure(uid: str, message: str, job: JobInfo, created: datetime, recipe_name: str, recipe_version: int,
                       recipe_external_id: str, model_id: str, model_version: str) -> Facts:
    return Facts(uid, FAILED, "ERROR", 0, 0, (), (), recipe_name, recipe_version, recipe_external_id, model_id,
                 model_version, created, None, job, error=message)


def facts_from_row(row: dict, job: JobInfo | None, recipe_external_id: str) -> Facts:
    """From `InspectionLog.get()`'s dict; `job`: what this server remembers of the job, if anything."""
    dets = row.get("detections") or []
    defects = tuple({"label": d["label"], "score": round(float(d["score"]), 4),
                     "box": [round(float(d[k]), 1) for k in ("x1", "y1", "x2", "y2")], "region": d.get("region"),
                     "fails": bool(d["fails"])} for d in dets if d["shown"] or d["fails"])
    created = parse_time(row["created_at"])
    job = job or JobInfo(row.get("job_id") or "", part_id=row.get("part_id") or "")
    return Facts(row["uid"], COMPLETED, row["verdict"], sum(1 for d in dets if d["fails"]),
                 sum(1 for d in dets if d["shown"]), tuple((r["name"], r["verdict"]) for r in row.get("regions") or ()),
                 defects, row.get("recipe") or "", int(row.get("recipe_version") or 0), recipe_external_id,
                 row.get("model_id") or "", row.get("model_version") or "", created, row.get("inference_ms"), job)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def result_value(f: Facts) -> ua.ResultDataType:
    """The ResultDataType of OPC 40100-1 12.17, every field the station knows filled in."""
    end = f.created
    processing = None if f.inference_ms is None else float(f.inference_ms)
    start = end - timedelta(milliseconds=processing or 0.0)
    job = f.job
    return ua.ResultDataType(
        ResultId=ua.ResultIdDataType(Id=f.uid),
        HasTransferableDataOnFile=False,
        IsPartial=False,
        IsSimulated=False,
        ResultState=f.state,
        MeasId=ua.MeasIdDataType(Id=job.meas_id) if job.meas_id else None,
        PartId=ua.PartIdDataType(Id=job.part_id) if job.part_id else None,
        ExternalRecipeId=ua.RecipeIdExternalDataType(Id=f.recipe_external_id) if f.recipe_external_id else None,
        InternalRecipeId=internal_recipe_id(f.recipe, f.recipe_version),
        ProductId=ua.ProductIdDataType(Id=job.product_id) if job.product_id else None,
        ExternalConfigurationId=None,
        InternalConfigurationId=ua.ConfigurationIdDataType(Id=f.model_id or "unknown model",
                                                           Version=f.model_version or None),
        JobId=ua.JobIdDataType(Id=job.job_id),
        CreationTime=f.created,
        ProcessingTimes=ua.ProcessingTimesDataType(StartTime=start, EndTime=end, ProcessingDuration=processing),
        ResultContent=f.content(),
    )


def internal_recipe_id(name: str, version: int) -> ua.RecipeIdInternalDataType:
    """A recipe's internal id: its name, and its version number as Version."""
    return ua.RecipeIdInternalDataType(Id=name, Version=str(version) if version else None)


def event_fields(f: Facts) -> dict[str, ua.Variant]:
    """ResultReadyEventType's fields (OPC 40100-1 8.3.8.4): the result's, one property each."""
    value = result_value(f)
    ext = ua.VariantType.ExtensionObject
    fields = {
        "ResultId": ua.Variant(value.ResultId, ext), "IsPartial": ua.Variant(False, ua.VariantType.Boolean),
        "IsSimulated": ua.Variant(False, ua.VariantType.Boolean),
        "ResultState": ua.Variant(f.state, ua.VariantType.Int32),
        "InternalRecipeId": ua.Variant(value.InternalRecipeId, ext),
        "InternalConfigurationId": ua.Variant(value.InternalConfigurationId, ext),
        "JobId": ua.Variant(value.JobId, ext), "CreationTime": ua.Variant(f.created, ua.VariantType.DateTime),
        "ProcessingTimes": ua.Variant(value.ProcessingTimes, ext),
        "ResultContent": ua.Variant(value.ResultContent, ua.VariantType.Variant),
    }
    for name in ("MeasId", "PartId", "ExternalRecipeId", "ProductId"):
        if getattr(value, name) is not None:
            fields[name] = ua.Variant(getattr(value, name), ext)
    return fields


@dataclass(frozen=True)
class ResultQuery:
    """GetResultListFiltered's filters (empty: not filtered) plus an optional time window (UTC, end exclusive).

    `recipe`/`recipe_version`: the recipe by name (an ExternalRecipeId is resolved to its recipe first).
    """

    state: int = 0
    part_id: str = ""
    job_id: str = ""
    meas_id: str = ""
    product_id: str = ""
    recipe: str = ""
    recipe_version: str = ""
    start: datetime | None = None
    end: datetime | None = None


class Memory:
    """What this server remembers beyond the log: which log row has which uid, and what each job carried.

    The log has one job id and the part id per inspection; MeasId and ProductId, and the
    job of a continuous run's results, are known only here. Bounded (oldest first out); thread-safe.
    """

    def __init__(self, limit: int = MAX_REMEMBERED):
        self.limit = limit
        self._lock = threading.Lock()
        self._ids: OrderedDict[str, int] = OrderedDict()  # uid -> inspection id
        self._jobs: OrderedDict[str, JobInfo] = OrderedDict()  # job id -> what its start call carried
        self._result_jobs: OrderedDict[str, str] = OrderedDict()  # uid -> job id

    def _put(self, table: OrderedDict, key, value) -> None:
        with self._lock:
            table[key] = value
            table.move_to_end(key)
            while len(table) > self.limit:
                table.popitem(last=False)

    def remember_job(self, job: JobInfo) -> None:
        self._put(self._jobs, job.job_id, job)

    def remember_result(self, uid: str, inspection_id: int | None, job_id: str) -> None:
        if inspection_id is not None:
            self._put(self._ids, uid, inspection_id)
        if job_id:
            self._put(self._result_jobs, uid, job_id)

    def inspection_id(self, uid: str) -> int | None:
        with self._lock:
            return self._ids.get(uid)

    def job_of(self, uid: str, logged_job_id: str = "") -> JobInfo | None:
        with self._lock:
            job_id = self._result_jobs.get(uid) or logged_job_id
            return self._jobs.get(job_id) if job_id else None

    def ids_of_jobs(self, job_id: str = "", meas_id: str = "", product_id: str = "") -> set[int]:
        """Inspection ids of remembered results whose job matches every given id."""
        with self._lock:
            jobs = {j for j, info in self._jobs.items()
                    if (not job_id or j == job_id) and (not meas_id or info.meas_id == meas_id)
                    and (not product_id or info.product_id == product_id)}
            return {self._ids[u] for u, j in self._result_jobs.items() if j in jobs and u in self._ids}


def find(store, memory: Memory, q: ResultQuery, start_index: int, max_results: int) -> tuple[list[int], int]:
    """Inspection ids matching `q` in log order (oldest first): this page of them, and how many match in all.

    Time, verdict and part id go to the store's gallery query; the job and recipe are
    checked on the rows (or in `memory` for what the log does not keep).
    """
    if q.state not in (0, COMPLETED, FILTER_PASS, FILTER_FAIL):
        return [], 0  # only judged results are logged: there are no Failed, Aborted or Processing ones to list
    verdict = {FILTER_PASS: PASS, FILTER_FAIL: FAIL}.get(q.state)
    flt = GalleryFilter(start=q.start, end=q.end, verdict=verdict, part_id=q.part_id or None)
    matches: list[int] = []
    for page in itertools.count():
        items = store.gallery_page(flt, sort="oldest", page=page, page_size=1000)
        matches += [i.id for i in items if not q.part_id or i.part_id == q.part_id]  # the gallery matches substrings
        if len(items) < 1000:
            break
    if q.job_id or q.meas_id or q.product_id:
        remembered = memory.ids_of_jobs(q.job_id, q.meas_id, q.product_id)
        if q.meas_id or q.product_id:
            matches = [i for i in matches if i in remembered]
        else:
            matches = [i for i in matches if i in remembered or (store.get(i) or {}).get("job_id") == q.job_id]
    if q.recipe:
        matches = [i for i in matches if _recipe_matches(store.get(i), q)]
    total = len(matches)
    page = matches[start_index:start_index + max_results] if max_results else matches[start_index:]
    return page, total


def _recipe_matches(row: dict | None, q: ResultQuery) -> bool:
    return (row is not None and (row.get("recipe") or "").casefold() == q.recipe.casefold()
            and (not q.recipe_version or str(row.get("recipe_version")) == q.recipe_version))


class Handles:
    """Result and recipe handles handed to clients (OPC 40100-1: released by Release*Handle); bounded."""

    def __init__(self, limit: int = 10_000):
        self._lock = threading.Lock()
        self._open: OrderedDict[int, str] = OrderedDict()
        self._next = itertools.count(1)
        self.limit = limit

    def new(self, what: str) -> int:
        with self._lock:
            handle = next(self._next) & 0xFFFFFFFF or next(self._next)
            self._open[handle] = what
            while len(self._open) > self.limit:
                self._open.popitem(last=False)
            return handle

    def release(self, handle: int) -> bool:
        with self._lock:
            return self._open.pop(handle, None) is not None


def utc(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t
