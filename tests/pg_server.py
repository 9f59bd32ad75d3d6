"""A real PostgreSQL server (Debian's) for the plant-database tests: a temporary cluster on a free loopback port.

initdb refuses to run as root, so as root the cluster belongs to the `postgres` user: initdb and pg_ctl
run as that user (`runuser`), on a data folder it owns inside a parent it may enter (mkdtemp makes 700:
opened to 755). Connections over TCP need a password (scram-sha-256), as on a plant's server; the
superuser's is `SUPERUSER_PASSWORD`. Start-up takes about 2 s; each test gets its own database.

Skipped where the server is not installed; under CI=true that is a failure (scripts/setup.sh installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SUPERUSER_PASSWORD = "test-superuser-pw"


def server_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian: /usr/lib/postgresql/VERSION/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


def require_server() -> Path:
    bin_dir = server_bin()
    if bin_dir is None:
        message = "PostgreSQL server not found under /usr/lib/postgresql: scripts/setup.sh installs Debian's postgresql"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return bin_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One temporary cluster: `start()`, `stop()` (also mid-test, for an outage), `start()` again, `destroy()`.

    `folder`: keep the cluster there and use it again next time (a benchmark's generated database); `settings`:
    server settings for each start (e.g. {"shared_buffers": "2GB"}).
    """

    def __init__(self, bin_dir: Path, folder: Path | None = None, settings: dict[str, str] | None = None):
        self.bin = bin_dir
        self.port = free_port()
        self.settings = dict(settings or {})
        self.parent = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="plant-pg-"))
        self.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.parent, 0o755)  # the postgres user must be able to enter it
        self.data = self.parent / "data"
        self.log = self.parent / "server.log"
        self.as_root = os.geteuid() == 0
        if (self.data / "PG_VERSION").is_file():
            return  # a cluster made before
        pwfile = self.parent / "pw"
        pwfile.write_text(SUPERUSER_PASSWORD + "\n")
        self.data.mkdir()
        if self.as_root:
            shutil.chown(self.data, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
            self.log.touch()
            shutil.chown(self.log, "postgres", "postgres")
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
                   "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8"], timeout=120)
        pwfile.unlink()
        with open(self.data / "postgresql.conf", "a") as conf:
            # A test server: no durability waits, small memory (several helpers share this machine).
            conf.write("\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 64MB\n"
                       "max_connections = 200\n")

    def _run(self, argv: list[str], timeout: float = 60) -> None:
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> PgServer:
        options = "".join(f" -c {k}={v}" for k, v in self.settings.items())
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o",
                   f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1{options}", "start"], timeout=90)
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: open connections are cut, as when a plant's server goes down)."""
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"], timeout=90)

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        if self.running:
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.parent, ignore_errors=True)

    def url(self, user: str = "postgres", dbname: str = "postgres", password: str | None = SUPERUSER_PASSWORD) -> str:
        secret = f":{password}" if password else ""
        return f"postgresql://{user}{secret}@127.0.0.1:{self.port}/{dbname}"

    def admin(self):
        """A superuser connection (autocommit) to the maintenance database."""
        import psycopg

        return psycopg.connect(self.url(), autocommit=True)

    def create_database(self, name: str | None = None) -> str:
        name = name or f"plant_{uuid.uuid4().hex[:10]}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def create_login(self, login: str, password: str, *groups: str) -> None:
        """A login role in the given group roles (e.g. plant_station); idempotent."""
        from psycopg import sql

        with self.admin() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (login,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sql.SQL(f"{verb} ROLE {{}} LOGIN PASSWORD {{}}").format(sql.Identifier(login), sql.Literal(password)))
            for group in groups:
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(login)))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One server for the session's plant tests (each test makes its own database)."""
    server = PgServer(require_server()).start()
    try:
        yield server
    finally:
        server.destroy()
