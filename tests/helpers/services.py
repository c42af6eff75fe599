"""Real services for tests and benchmarks: servers on free localhost ports, PostgreSQL databases.

PostgreSQL is expected on 127.0.0.1:5432 with trust authentication (as on the development
and CI machines); PGHOST, PGPORT and PGUSER point elsewhere. Tests that need it skip, with
the reason, when no server answers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = os.environ.get("PGPORT", "5432")
PG_USER = os.environ.get("PGUSER", "postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(args: list[str], root: Path, env: dict[str, str], log: Path
                 ) -> subprocess.Popen:
    """Start a server in its own process group (it spawns workers), logging to a file."""
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "tabflow", *args], cwd=root, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_server(proc: subprocess.Popen) -> None:
    """Stop a server and every worker it started."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=20)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def wait_http(url: str, proc: subprocess.Popen, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {limit}s")


def postgres_unavailable() -> str | None:
    """Return why PostgreSQL can't be used here, or None when it can."""
    try:
        import psycopg

        psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres",
                        connect_timeout=3).close()
    except Exception as e:
        return f"no PostgreSQL server at {PG_USER}@{PG_HOST}:{PG_PORT} ({e})".strip()
    return None


def _admin(sql: str) -> None:
    import psycopg

    # CREATE / DROP DATABASE can't run in a transaction
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres",
                         autocommit=True) as con:
        con.execute(sql.encode())


@contextlib.contextmanager
def postgres_database(prefix: str = "tabflow_test") -> Iterator[str]:
    """Create a fresh, uniquely named database; yield its name; drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _admin(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def postgres_url(database: str) -> str:
    """The SQLAlchemy URL of a database (no password: libpq reads PGPASSWORD)."""
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


@contextlib.contextmanager
def tracking_server(backend_store_uri: str, artifacts: Path, log: Path) -> Iterator[str]:
    """Run `tabflow server` on a free localhost port; yield its URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = start_server(["server", "--backend-store-uri", backend_store_uri,
                         "--artifacts-destination", str(artifacts), "--port", str(port)],
                        artifacts.parent, env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc)
        assert not job_runners(proc)  # MLflow's server-side jobs stay off (tabflow's default)
        yield url
    finally:
        stop_server(proc)


def job_runners(proc: subprocess.Popen) -> list[str]:
    """The processes of MLflow's server-side job runner among a server's descendants."""
    import psutil

    tree = [" ".join(c.cmdline()) for c in psutil.Process(proc.pid).children(recursive=True)]
    return [c for c in tree if "huey" in c or "_job_runner" in c]
