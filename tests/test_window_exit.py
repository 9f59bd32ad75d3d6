"""The real window on a real X server, 30 times: inspect, every tab, a file dialog, quit mid-inspection; every exit 0.

"Fatal Python error: none_dealloc" showed at exit in 2 of ~22 real-window sessions. Two causes are
designed out: PySide6 6.12.0 loses a reference at every signal emit (excluded in pyproject.toml,
guarded by tests/test_qt_binding.py), and teardown at interpreter exit in arbitrary order with worker
threads alive (app.ui.run.shut_down closes the window, waits for the inspection in flight and deletes
the widgets while Qt and Python are both whole).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import REPO

RUNS = 30


@pytest.fixture(scope="module")
def x_display():
    if shutil.which("Xvfb") is None:
        if os.environ.get("CI"):
            pytest.fail("Xvfb missing: scripts/setup.sh installs Debian's xvfb")
        pytest.skip("Xvfb not installed")
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x900x24", "-nolisten", "tcp"],
                              pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        number = f.readline().strip()  # Xvfb picks a free display and says which
    try:
        assert number.isdigit(), "Xvfb did not start"
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(10)


def test_real_window_exits_cleanly_30_times(x_display, tmp_path, part_pictures):
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    env.update(DISPLAY=x_display, QT_QPA_PLATFORM="xcb", PYTHONPATH=str(REPO), PYTHONFAULTHANDLER="1")

    def session(i: int) -> tuple[int, int, str]:
        home = tmp_path / f"run{i}"
        for _ in range(2):
            r = subprocess.run([sys.executable, str(REPO / "tests" / "window_walkthrough.py"), "--config",
                                str(home / "s.json"), "--data-dir", str(home / "data"), "--source",
                                str(part_pictures[0].parent)],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
            # Xvfb refusing a client (seen once in many runs) fails before any station code runs: one retry.
            if "could not connect to display" not in r.stderr:
                break
        return i, r.returncode, r.stdout + r.stderr

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(session, range(RUNS)))
    failed = [(i, code, out[-2000:]) for i, code, out in results if code != 0 or "Fatal Python error" in out]
    assert not failed, failed
    for i in range(RUNS):  # each session really inspected (and logged) before quitting
        conn = sqlite3.connect(tmp_path / f"run{i}" / "data" / "inspections.sqlite")
        assert conn.execute("SELECT COUNT(*) FROM inspections").fetchone()[0] >= 1
        conn.close()
