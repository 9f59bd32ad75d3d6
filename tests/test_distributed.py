"""Distributed training under torchrun, on CPU over gloo: the README's multi-machine command, one machine.

The command is read from the README (section "Training on several GPUs or
machines") and run as written, with its variables set, `--nnodes=1` and a free
port, plus options that keep a CPU run tiny.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from detector import Detector
from detector.cli import main
from detector.model_file import load_model_file
from synthetic import make_voc_dataset

REPO = Path(__file__).resolve().parents[1]
TINY = ["--device", "cpu", "--threads", "1", "--input-size", "64", "--batch-size", "2"]
# Multi-scale steps draw their size on rank 0 and broadcast it (BatchSyncRandomResize): exercised here too.
MULTI_SCALE = ["--multi-scale", "64,96"]


def readme_multinode_command() -> str:
    """The README's two-machine torchrun command, continuation lines joined."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Training on several GPUs or machines"):]
    block = section[section.index("```bash") + len("```bash"):]
    block = block[:block.index("```")].replace("\\\n", " ")
    (line,) = [ln for ln in block.splitlines() if "--nnodes=2" in ln]
    return " ".join(line.split())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_readme_command(root: Path, extra: list[str]) -> subprocess.CompletedProcess:
    command = readme_multinode_command()
    assert "--master_port=29500" in command and "--nproc_per_node=$NPROC" in command
    command = command.replace("--nnodes=2", "--nnodes=1").replace("--master_port=29500", f"--master_port={free_port()}")
    # Run in a folder laid out like the repository: .venv/bin/torchrun and runs/data as the README names them.
    env = {**os.environ, "NODE_RANK": "0", "HEAD_IP": "127.0.0.1", "NPROC": "2"}
    return subprocess.run(["bash", "-c", command + " " + " ".join(extra)], cwd=root, env=env, capture_output=True,
                          text=True, timeout=240)


@pytest.fixture(scope="module")
def dist_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dist")
    (root / ".venv").symlink_to(Path(sys.executable).parent.parent)
    make_voc_dataset(root / "src", n_images=8, size=96)
    assert main(["dataset", "--source", str(root / "src"), "--out", str(root / "runs" / "data"),
                 "--class-map", "scratches=scratch,pitted_surface=pit", "--val-fraction", "0.34"]) == 0
    return root


def test_readme_command_trains_with_two_processes_and_resumes(dist_root):
    first = run_readme_command(dist_root, [*TINY, *MULTI_SCALE, "--epochs", "1"])
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    model_path = dist_root / "runs" / "train" / "model.pth"
    meta = load_model_file(model_path).metadata
    assert meta.training["processes"] == 2 and meta.training["epochs_run"] == 1 and meta.training["multi_scale"] == [64, 96]
    assert Detector(model_path, device="cpu").detect(dist_root / "src" / "images" / "scratches_0.jpg", threshold=0.0)
    log = next((dist_root / "runs" / "train").glob("*/*.log")).read_text()
    assert "in each of 2 processes (torchrun)" in model_path.with_suffix(".md").read_text()
    assert re.search(r"Distributed launcher: pytorch", log) and re.search(r"Distributed training: True", log)
    assert "BatchSyncRandomResize" in log  # the multi-scale step in the config both processes ran

    # Resume under torchrun: epoch 2 continues from epoch 1's checkpoint; the time budget
    # (used up at once) stops both processes after that epoch although 3 are planned.
    second = run_readme_command(dist_root, [*TINY, *MULTI_SCALE, "--epochs", "3", "--resume", "--max-minutes", "0.0001"])
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    meta = load_model_file(model_path).metadata
    assert meta.training["epochs_run"] == 2 and meta.training["processes"] == 2 and meta.training["multi_scale"] == [64, 96]
    assert [row["step"] for row in meta.training["val_history"]] == [1, 2]
    scalars = sorted((dist_root / "runs" / "train").glob("*/vis_data/scalars.json"))
    rows = [json.loads(line) for s in scalars for line in s.read_text().splitlines()]
    assert max(row.get("epoch", 0) for row in rows) == 2
    output = second.stdout + second.stderr
    assert "resumed epoch: 1" in output and "time budget of 0.0 min used up after epoch 2" in output
