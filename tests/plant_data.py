"""Shared by the plant-database tests: a plant database and its logins, and station logs filled with generated
inspections (detections, regions, pictures)."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import psycopg
from pg_server import PgServer

from app.store import InspectionRecord, InspectionStore, RegionRecord
from detector import Detection
from detector.regions import Roi

LABELS = ("scratch", "pit", "inclusion")


@dataclass
class PlantDb:
    server: PgServer
    name: str

    @property
    def owner_url(self) -> str:
        return self.server.url(dbname=self.name)

    def login(self, login: str, group: str) -> str:
        """A login in `group` (plant_station, plant_qa, plant_report) and its URL; its password comes in a file (password_file)."""
        self.server.create_login(login, self.password(login), group)
        with self.server.admin() as conn:
            conn.execute(f'GRANT CONNECT ON DATABASE "{self.name}" TO "{login}"')
        return self.server.url(user=login, dbname=self.name, password=None)

    @staticmethod
    def password(login: str) -> str:
        return f"pw-{login}-secret"

    def password_file(self, folder: Path, login: str) -> Path:
        path = folder / f"{login}.pw"
        path.write_text(self.password(login) + "\n")
        os.chmod(path, 0o600)
        return path

    def owner(self) -> psycopg.Connection:
        return psycopg.connect(self.owner_url, autocommit=True)

    def scalar(self, query: str, *params):
        with self.owner() as conn:
            return conn.execute(query, params).fetchone()[0]



def frame(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 255, (48, 64), dtype=np.uint8)


def record(store: InspectionStore, i: int, station: str, at: datetime, *, pictures: bool = True, operator: str = "ann"):
    """One generated inspection: FAIL every third (a failing scratch), detections of a few classes, two regions."""
    fails = i % 3 == 0
    dets = [Detection(LABELS[i % 3], 0.55 + (i % 7) / 20, (5, 5, 20, 30)), Detection("pit", 0.2, (30, 10, 34, 14))]
    regions = [RegionRecord("left", Roi(0, 0, 32, 48), 0.3, "{}", "FAIL" if fails else "PASS"),
               RegionRecord("right", Roi(32, 0, 32, 48), 0.3, "{}", "PASS")]
    rec = InspectionRecord(
        station=station, source="generated", frame_size=(64, 48), roi=Roi(0, 0, 64, 48), model_id="m@1", model_version="v1",
        threshold=0.3, rule_json="{}", verdict="FAIL" if fails else "PASS", detections=dets, shown=[0],
        failing=[0] if fails else [], operator=operator, part_id=f"P-{i:05d}", inference_ms=12.5 + i % 5,
        trigger="line", job_id=f"J{i}", recipe="cap", recipe_version=1, regions=regions, detection_regions=["left", "right"],
        created_at=at, uid=uuid.uuid4().hex)
    image = frame(i) if pictures else None
    return store.record(rec, image, image if pictures else None)


def fill(store: InspectionStore, n: int, station: str, start: datetime, step: timedelta = timedelta(minutes=7),
         first: int = 0, pictures: bool = True) -> list[int]:
    return [record(store, first + k, station, start + k * step, pictures=pictures).id for k in range(n)]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)
