"""Store guards: open SQLite and Optuna stores safely, and refuse ones that aren't ours.

Processes started together on a fresh SQLite file race on its schema set-up; a file
that is corrupt or belongs to something else must be refused before anything writes
into it. Both the MLflow tracking store (:mod:`tabflow.tracking.store`) and the Optuna
study storage go through here.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def sqlite_init_lock(uri: str) -> Iterator[None]:
    """Serialise schema set-up of a SQLite database among this machine's processes.

    A database about to be created loses any write-ahead log or journal left beside its
    path: they belong to a file that was deleted or moved (``rm optuna.db``, its ``-wal``
    kept), and SQLite would read them into the new one and fail ("disk I/O error").
    """
    import fcntl

    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    path = db.with_suffix(".init-lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            if not db.exists():
                for orphan in ("-wal", "-shm", "-journal"):
                    Path(f"{db}{orphan}").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


_TUNED: set[str] = set()  # the SQLite files tabflow opened as stores (real paths)


def tune_sqlite(url: str) -> None:
    """Make the connections to the SQLite store at ``url`` write-ahead logged.

    With SQLite's defaults (a rollback journal, ``synchronous=FULL``) each commit waits on
    several fsyncs, and a trial commits a dozen times (Optuna's ask, attributes and tell;
    MLflow's run, params, inputs and close): most of a fast trial's tracking time. In WAL
    mode with ``synchronous=NORMAL`` a commit is a write to the log; a killed process loses
    nothing committed, only a power cut can lose the last commits, and the file is never
    corrupted. Readers (the UI, ``tabflow runs``) no longer block a sweep's writes.
    Keep the ``-wal`` and ``-shm`` files next to a store when copying it while in use.
    Other SQLite databases of the process (an app's own) keep their settings.
    """
    if url.startswith("sqlite:///"):
        _TUNED.add(os.path.realpath(url.removeprefix("sqlite:///")))
        _listen_for_connections()


@functools.cache
def _listen_for_connections() -> None:
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    # MLflow and Optuna make their engines inside: the listener is on every engine, and
    # acts on connections to the files tune_sqlite() was given.
    @event.listens_for(Engine, "connect")
    def _pragmas(dbapi_connection: Any, connection_record: Any) -> None:
        if not isinstance(dbapi_connection, sqlite3.Connection):
            return
        cursor = dbapi_connection.cursor()
        try:
            files = {row[2] for row in cursor.execute("PRAGMA database_list") if row[1] == "main"}
            if not any(f and os.path.realpath(f) in _TUNED for f in files):
                return
            # A no-op once set (it is stored in the file); needs a moment with no writer,
            # so a busy database keeps its mode until the next connection.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error:
            pass
        finally:
            cursor.close()


class ForeignDatabaseError(RuntimeError):
    """A SQLite file exists but is not a store of the expected kind (or is corrupt)."""


def check_sqlite_store(url: str, marker_table: str, kind: str, integrity: bool = False
                       ) -> None:
    """Refuse a SQLite file that is read-only, damaged, or belongs to something else.

    Opening a foreign database as a store would create the store's tables inside it, and a
    corrupt one fails deep inside SQLAlchemy; both are stopped here, naming the file. Each
    fault gets its own one-line diagnosis, since each has its own fix: a read-only store is
    healthy (it must not be moved aside), a damaged one is restored, a foreign one moved.

    Args:
        url: The store's URL; only ``sqlite:///`` files that exist are checked.
        marker_table: A table every store of this kind has (MLflow: ``experiments``,
            Optuna: ``studies``).
        kind: What the store is, for the message.
        integrity: Also run ``PRAGMA quick_check`` (a sweep is about to write into it;
            milliseconds on a small store, about a second per GB).

    Raises:
        ForeignDatabaseError: If the file can't be written here, is not a SQLite database,
            is damaged, or holds tables but not ``marker_table``.
    """
    import os
    import sqlite3

    if not url.startswith("sqlite:///"):
        return
    path = Path(url.removeprefix("sqlite:///"))
    if not path.is_file() or path.stat().st_size == 0:
        return
    unwritable = next((p for p in (path, path.parent) if not os.access(p, os.W_OK)), None)
    if unwritable is not None:
        raise ForeignDatabaseError(
            f"{path} can't be written here ({unwritable} is read-only); the {kind} is kept "
            f"as it is. Make it writable (chmod u+w, or mount it read-write), or copy it to "
            f"a writable place and point the store there")
    restore = (f"restore it from a backup, or save what SQLite can still read: sqlite3 "
               f"{path} .recover | sqlite3 {path.with_suffix('.recovered.db')}, and move that "
               f"into place")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
            tables = {row[0] for row in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            problems = ([row[0] for row in con.execute("PRAGMA quick_check(3)")]
                        if integrity and marker_table in tables else ["ok"])
    except sqlite3.DatabaseError as e:
        if "malformed" in str(e):
            raise ForeignDatabaseError(
                f"{path}, the {kind}, is damaged ({e}); it is left untouched: "
                f"{restore}") from e
        raise ForeignDatabaseError(
            f"{path} is not a readable SQLite database ({e}); it is left untouched. Move it "
            f"aside (or restore it from a backup) and run again for a fresh {kind}") from e
    if problems != ["ok"]:
        raise ForeignDatabaseError(
            f"{path}, the {kind}, is damaged (PRAGMA quick_check: {problems[0][:120]}); it "
            f"is left untouched and nothing was written to it: {restore}")
    if tables and marker_table not in tables:
        raise ForeignDatabaseError(
            f"{path} is a SQLite database but not an {kind} (its tables: "
            f"{', '.join(sorted(tables)[:8])}); it is left untouched. Point the {kind} "
            f"elsewhere or move the file aside")


@functools.lru_cache(maxsize=4)
def optuna_storage(url: str, attempts: int = 5, heartbeat: Any = None) -> Any:
    """Return an Optuna storage for a URL, one per process (and heartbeat setting).

    Processes started together on a fresh database (SQLite or PostgreSQL) race on its
    schema set-up; the loser retries a moment later, when the schema is there.

    Args:
        url: The storage's URL.
        attempts: Tries at the schema set-up.
        heartbeat: None, or heartbeat settings that are also the stale-trial callback
            (the sweeper's ``Heartbeat``: ``interval``, ``grace_period``, callable).
    """
    import time
    import warnings

    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    check_sqlite_store(url, "studies", "Optuna study storage")
    tune_sqlite(url)
    for attempt in range(attempts):
        try:
            with sqlite_init_lock(url):
                if heartbeat is None:
                    return optuna.storages.get_storage(url)
                with warnings.catch_warnings():  # "experimental" since Optuna 2.9
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return optuna.storages.get_storage(optuna.storages.RDBStorage(
                        url, heartbeat_interval=heartbeat.interval,
                        grace_period=heartbeat.grace_period,
                        heartbeat_stale_trial_callback=heartbeat))
        except (IntegrityError, OperationalError, ProgrammingError) as e:
            # On PostgreSQL the loser of the race sees the winner's tables appear
            # mid-creation (DuplicateTable); other programming errors are real.
            if attempt == attempts - 1 or (isinstance(e, ProgrammingError)
                                           and "already exists" not in str(e)):
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")
