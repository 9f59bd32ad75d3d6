"""installer/install.sh: a plant-PC install of the station runtime, proven end to end."""

from __future__ import annotations

import os
import sqlite3
import subprocess

import pytest
from conftest import REPO


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("plant_pc")
    env = {**os.environ, "HOME": str(root / "home")}
    r = subprocess.run(["bash", str(REPO / "installer" / "install.sh"), "--prefix", str(root / "prefix"),
                        "--bin-dir", str(root / "bin"), "--no-desktop", "--service", "--unit-dir", str(root / "units"),
                        "--service-config", str(root / "etc" / "station.json"), "--service-user", "root"],
                       capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "runs (cpu)" in r.stdout
    return root, env


def test_installed_command_inspects_headless_without_torch(installed, tmp_path, part_pictures):
    root, env = installed
    command = root / "bin" / "metal-inspection-station"
    assert command.is_symlink() and os.access(command, os.X_OK)
    db = tmp_path / "log.sqlite"
    r = subprocess.run([str(command), "inspect", "--source", str(part_pictures[0].parent), "--db", str(db), "--quiet"],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "inspected 4: 2 PASS, 2 FAIL" in r.stdout
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM inspections").fetchone()[0] == 4

    python = root / "prefix" / "venv" / "bin" / "python"
    code = ("import importlib.util, app.paths as p;"
            "print(importlib.util.find_spec('torch') is None, importlib.util.find_spec('mmdet') is None,"
            " p.resource('default_config.json'))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path).stdout.split()
    assert out[:2] == ["True", "True"]  # the station runtime carries no training stack
    assert out[2].startswith(str(root / "prefix" / "venv" / "share"))  # defaults come from the install, not the checkout

    # The int8 variant is installed beside the default model and runs the same headless inspection.
    int8 = root / "prefix" / "venv" / "share" / "metal-inspection-station" / "models" / "centernet_neu_scratch_pit.int8.onnx"
    r = subprocess.run([str(command), "inspect", "--source", str(part_pictures[0].parent), "--db", str(db), "--quiet",
                        "--model", str(int8)], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "inspected 4: 2 PASS, 2 FAIL" in r.stdout


def test_service_unit_runs_the_station_service(installed, tmp_path, part_pictures):
    """The installed systemd unit's command is the headless station (`serve`), stopped with SIGTERM."""
    import json
    import shlex

    root, env = installed
    unit = (root / "units" / "metal-inspection-station.service").read_text()
    assert "KillSignal=SIGTERM" in unit and "WantedBy=" in unit
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))[len("ExecStart="):]
    config_line = next(line for line in unit.splitlines() if line.startswith("Environment="))
    assert config_line == f"Environment=INSPECTION_STATION_CONFIG={root / 'etc' / 'station.json'}"
    (root / "etc" / "station.json").write_text(json.dumps({"source": str(part_pictures[0].parent),
                                                           "data_dir": str(tmp_path / "data")}))
    # The unit's own command line; a picture folder and continuous mode make it finish by itself.
    r = subprocess.run([*shlex.split(exec_start), "--trigger", "continuous"], capture_output=True, text=True, timeout=300,
                       env={**env, "INSPECTION_STATION_CONFIG": str(root / "etc" / "station.json")}, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(" INFO serve: #") == 4 and "every picture of the folder is inspected" in r.stdout
    assert sqlite3.connect(tmp_path / "data" / "inspections.sqlite").execute("SELECT COUNT(*) FROM inspections").fetchone()[0] == 4


def test_uninstall_removes_the_program(installed):
    root, env = installed
    subprocess.run([str(root / "prefix" / "uninstall.sh")], check=True, capture_output=True, env=env)
    assert not (root / "prefix").exists() and not (root / "bin" / "metal-inspection-station").exists()
    assert not (root / "units" / "metal-inspection-station.service").exists()
