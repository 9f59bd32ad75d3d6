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
                        "--bin-dir", str(root / "bin"), "--no-desktop"],
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


def test_uninstall_removes_the_program(installed):
    root, env = installed
    subprocess.run([str(root / "prefix" / "uninstall.sh")], check=True, capture_output=True, env=env)
    assert not (root / "prefix").exists() and not (root / "bin" / "metal-inspection-station").exists()
