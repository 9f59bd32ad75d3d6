"""A real MQTT broker (Debian's mosquitto) on a free loopback port, and a subscriber that records what arrives."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = Path("/usr/sbin/mosquitto")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_mosquitto() -> None:
    """Skip without the broker; under CI a missing broker is a failure (set-up installs it)."""
    if not MOSQUITTO.is_file():
        message = f"{MOSQUITTO} not found: the output tests need Debian's mosquitto (scripts/setup.sh installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


class Mosquitto:
    """mosquitto on 127.0.0.1:`port`, with its config, log and (`persistent`) database in `folder`."""

    def __init__(self, folder: Path, persistent: bool = False, acl: str | None = None, port: int | None = None):
        self.folder, self.port, self.persistent = folder, port or free_port(), persistent
        self.folder.mkdir(parents=True, exist_ok=True)
        # Started as root (a container), mosquitto would switch to its own user, which cannot write here.
        lines = ["user root"] if os.geteuid() == 0 else []
        lines += [f"listener {self.port} 127.0.0.1", "allow_anonymous true", f"log_dest file {folder / 'mosquitto.log'}",
                 "max_queued_messages 100000"]
        if persistent:  # written on SIGUSR1 only: what a receiver's persistent session needs across a kill
            lines += ["persistence true", f"persistence_location {folder}/", "autosave_interval 0"]
        else:
            lines += ["persistence false"]
        if acl is not None:
            (folder / "acl").write_text(acl)
            lines.append(f"acl_file {folder / 'acl'}")
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> Mosquitto:
        self.process = subprocess.Popen([str(MOSQUITTO), "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.process.stderr.read().decode(errors='replace')}"
                                   f" {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log()}")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no final save."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def save(self, timeout: float = 5.0) -> None:
        """Write the broker's database now (sessions, subscriptions, retained messages)."""
        db = self.folder / "mosquitto.db"
        before = db.stat().st_mtime_ns if db.exists() else None
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if db.exists() and db.stat().st_mtime_ns != before:
                time.sleep(0.05)  # mosquitto writes a temporary file and renames it
                return
            time.sleep(0.01)
        raise RuntimeError("mosquitto did not save its database")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        path = self.folder / "mosquitto.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


class Subscriber:
    """A paho client recording each message on `topic` as (payload, monotonic time of arrival).

    `session`: a persistent session (clean_session off) under that client id, so that
    messages published while it is away are queued for it by the broker.
    """

    def __init__(self, port: int, topic: str, session: str | None = None):
        self.topic = topic
        self.messages: list[tuple[bytes, float]] = []
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=session or "",
                                  clean_session=session is None, protocol=mqtt.MQTTv311)
        self.client.reconnect_delay_set(0.05, 0.3)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError(f"subscriber could not subscribe to {topic} on port {port}")

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append((bytes(message.payload), time.monotonic()))

    def payloads(self) -> list[bytes]:
        with self._lock:
            return [m for m, _ in self.messages]

    def results(self) -> list[dict]:
        return [json.loads(m) for m in self.payloads()]

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.02)
        return predicate(self)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
