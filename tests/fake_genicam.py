"""Aravis' simulated GigE Vision camera (arv-fake-gv-camera-0.8) on 127.0.0.1, for the GenICam tests and benchmark.

The camera is a real GigE Vision peer: discovery, GVCP register access, GVSP packet streams, heartbeat.
Its GenICam file is the camera's own, with the Mono10/Mono12 pixel formats (unpacked, GigE "Packed", PFNC "p")
added to PixelFormat: the fake device then sends frames of those formats at their sizes (it draws its test
pattern in Mono8 and Mono16 only). GVCP uses the fixed port 3956: one fake camera per machine at a time.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

FAKE_CAMERA = "arv-fake-gv-camera-0.8"
DEVICE_ID = "Aravis-Fake-GV01"
GVCP_PORT = 3956
EXTRA_FORMATS = {"Mono10": 0x01100003, "Mono12": 0x01100005, "Mono10Packed": 0x010C0004, "Mono12Packed": 0x010C0006,
                 "Mono10p": 0x010A0046, "Mono12p": 0x010C0047}


def require_fake_camera() -> None:
    """Skip without Aravis, PyGObject or the fake camera; under CI that is a failure (scripts/setup.sh installs them)."""
    problem = None
    if shutil.which(FAKE_CAMERA) is None:
        problem = f"{FAKE_CAMERA} not found: the GenICam tests need Debian's aravis-tools (scripts/setup.sh installs it)"
    else:
        from app.sources import SourceError
        from app.sources_genicam import aravis

        try:
            aravis()
        except SourceError as exc:
            problem = str(exc)
    if problem is None and _gvcp_port_taken():
        problem = f"another GigE Vision camera already listens on 127.0.0.1:{GVCP_PORT} (a fake camera left running?)"
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(problem)
        pytest.skip(problem)


def _gvcp_port_taken() -> bool:
    """Whether a UDP socket is bound to 127.0.0.1:3956 (from /proc: binding it ourselves would disturb nothing,
    but reading is enough)."""
    want = f"0100007F:{GVCP_PORT:04X}"
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(line.split()[1] == want for line in lines if len(line.split()) > 1)


def _read_memory(device, address: int, size: int) -> bytes:
    buffer = ctypes.create_string_buffer(size)  # PyGObject passes a caller's buffer as a plain address
    device.read_memory(address, size, ctypes.addressof(buffer))
    return buffer.raw


class FakeCamera:
    """arv-fake-gv-camera-0.8 on 127.0.0.1; `kill()` and `start()` again as a camera that drops out and comes back."""

    def __init__(self, folder: Path, lost_packets_per_thousand: int = 0):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.genicam: Path | None = None
        self.lost_per_thousand = lost_packets_per_thousand
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> FakeCamera:
        args = [FAKE_CAMERA, "-i", "127.0.0.1"]
        if self.genicam is not None:
            args += ["-g", str(self.genicam)]
        if self.lost_per_thousand:
            args += ["-r", str(self.lost_per_thousand)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(self.folder / "fake-camera.log", "ab"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{FAKE_CAMERA} exited ({self.process.returncode}): {self.log()}")
            if _gvcp_port_taken():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"{FAKE_CAMERA} did not listen on 127.0.0.1:{GVCP_PORT}: {self.log()}")

    def kill(self) -> None:
        """SIGKILL: the camera is gone mid-stream, without a word (a cable pulled, a power cut)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        deadline = time.monotonic() + 5
        while _gvcp_port_taken() and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self, lost_packets_per_thousand: int | None = None) -> FakeCamera:
        self.kill()
        if lost_packets_per_thousand is not None:
            self.lost_per_thousand = lost_packets_per_thousand
        return self.start()

    def log(self) -> str:
        path = self.folder / "fake-camera.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def add_mono_formats(self) -> None:
        """Restart with the camera's own GenICam file plus the Mono10/Mono12 formats (read from the running camera)."""
        from app.sources_genicam import aravis

        Aravis, _ = aravis()
        device = Aravis.Camera.new("127.0.0.1").get_device()
        # The bootstrap register 0x200 holds the file's URL, "Local:NAME;ADDRESS;SIZE" (hex), in the device's memory.
        # (get_genicam_xml() cannot be used: the text it returns is not NUL-terminated and PyGObject reads past it.)
        url = _read_memory(device, 0x200, 512).split(b"\0")[0].decode()
        _, address, size = url.split(";")
        xml = _read_memory(device, int(address, 16), int(size, 16)).decode()
        del device
        entries = "".join(f'\t\t<EnumEntry Name="{name}" NameSpace="Standard">\n\t\t\t<Value>{code}</Value>\n'
                          f'\t\t</EnumEntry>\n' for name, code in EXTRA_FORMATS.items())
        marker = "\t\t<pValue>PixelFormatRegister</pValue>"
        if marker not in xml:
            raise RuntimeError("the fake camera's GenICam file has no PixelFormatRegister: Aravis changed it")
        self.genicam = self.folder / "fake-camera-mono.xml"
        self.genicam.write_text(xml.replace(marker, entries + marker, 1))
        self.restart()
