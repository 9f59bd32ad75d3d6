"""A station in its own process for the kill -9 test: logs inspections as fast as it can while replicating them.

    python tests/plant_station_process.py DB_PATH URL PASSWORD_FILE STATION COUNT FIRST

Prints "logged N" after every 10 inspections; with COUNT 0 it only replicates what is logged, then exits 0.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from plant_data import record, utc  # noqa: E402

from app.store import InspectionStore  # noqa: E402
from app.store.postgres import password_from  # noqa: E402
from app.store.replicator import Replicator  # noqa: E402


def main(db: str, url: str, password_file: str, station: str, count: str, first: str) -> int:
    store = InspectionStore(Path(db))
    replicator = Replicator(store, url, station, password=password_from(file=password_file), batch=40, poll_s=0.05).start()
    start = int(first)
    for k in range(int(count)):
        record(store, start + k, station, utc(2026, 6, 1, 6) + timedelta(seconds=7 * (start + k)), pictures=False)
        replicator.notify()
        if (k + 1) % 10 == 0:
            print(f"logged {k + 1}", flush=True)
    ok = replicator.stop(drain=True, timeout=60)
    store.close()
    return 0 if ok else 3


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
