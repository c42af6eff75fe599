"""Store guards: a foreign or corrupt SQLite file is refused and left untouched."""

from __future__ import annotations

import sqlite3

import pytest

from hydra_plugins.tabflow_sweeper.stores import (
    ForeignDatabaseError,
    check_sqlite_store,
    optuna_storage,
)


def test_a_missing_or_empty_file_is_fine(tmp_path):
    check_sqlite_store(f"sqlite:///{tmp_path}/new.db", "studies", "Optuna study storage")
    (tmp_path / "empty.db").touch()
    check_sqlite_store(f"sqlite:///{tmp_path}/empty.db", "studies", "Optuna study storage")
    check_sqlite_store("postgresql://u@h/db", "studies", "Optuna study storage")  # not ours


def test_a_foreign_database_is_refused_and_left_as_it_was(tmp_path):
    path = tmp_path / "optuna.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE invoices (id INTEGER)")
    before = path.read_bytes()
    with pytest.raises(ForeignDatabaseError, match=r"not an Optuna study storage.*invoices"):
        optuna_storage(f"sqlite:///{path}")
    assert path.read_bytes() == before


def test_a_corrupt_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "mlflow.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ForeignDatabaseError, match=r"mlflow.db is not a readable SQLite"):
        check_sqlite_store(f"sqlite:///{path}", "experiments", "MLflow tracking store")


def test_only_tabflows_own_stores_are_switched_to_wal(tmp_path):
    """The connection listener is process-wide; an app's own SQLite database keeps its mode."""
    import sqlalchemy

    storage = optuna_storage(f"sqlite:///{tmp_path}/optuna.db")
    assert storage is not None
    with sqlite3.connect(tmp_path / "optuna.db") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    theirs = sqlalchemy.create_engine(f"sqlite:///{tmp_path}/app.db")
    with theirs.connect() as con:
        con.execute(sqlalchemy.text("CREATE TABLE t (x INTEGER)"))
        assert con.execute(sqlalchemy.text("PRAGMA journal_mode")).scalar() == "delete"
    theirs.dispose()


def test_an_optuna_store_opens_once_per_process(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    assert optuna_storage(url) is optuna_storage(url)


def test_a_store_creation_stopped_midway_leaves_nothing_and_the_next_one_succeeds(
        tmp_path, monkeypatch):
    """A process stopped among MLflow's migrations (Ctrl-C, SIGTERM, a full disk) used to
    leave a half-migrated mlflow.db that every later run refused."""
    import mlflow.store.db.utils as db_utils

    from tabflow.tracking.store import connect

    real = db_utils._upgrade_db

    def stopped(engine):  # the initial tables exist; the migrations never run
        raise KeyboardInterrupt

    monkeypatch.setattr(db_utils, "_upgrade_db", stopped)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(KeyboardInterrupt):
        connect(uri)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.init-lock"]
    monkeypatch.setattr(db_utils, "_upgrade_db", real)
    store = connect(uri)
    assert [e.name for e in store.client.search_experiments()] == ["Default"]
    assert sorted(p.name for p in tmp_path.iterdir() if "creating" in p.name) == []


def _store_with_rows(path):
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE experiments (id INTEGER PRIMARY KEY, name TEXT)")
        con.execute("CREATE INDEX by_name ON experiments (name)")
        con.executemany("INSERT INTO experiments (name) VALUES (?)",
                        [(f"experiment {i:05d} " + "x" * 80,) for i in range(3000)])


def test_a_damaged_store_is_found_before_a_sweep_writes_into_it(tmp_path):
    """Garbage over pages in the middle of the file: it still opens, and reads may work."""
    path = tmp_path / "mlflow.db"
    _store_with_rows(path)
    url = f"sqlite:///{path}"
    check_sqlite_store(url, "experiments", "MLflow tracking store", integrity=True)  # healthy
    data = bytearray(path.read_bytes())
    page = 4096
    data[page * 20:page * 22] = b"\x07" * (page * 2)
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    check_sqlite_store(url, "experiments", "MLflow tracking store")  # opening alone misses it
    with pytest.raises(ForeignDatabaseError) as damaged:
        check_sqlite_store(url, "experiments", "MLflow tracking store", integrity=True)
    message = str(damaged.value)
    assert f"{path}, the MLflow tracking store, is damaged" in message
    assert f"sqlite3 {path} .recover" in message and "Move it aside" not in message
    assert path.read_bytes() == before


def test_a_read_only_store_is_named_so_and_kept(tmp_path):
    """A read-only mount of a healthy project: not "unreadable", never "move it aside"."""
    import subprocess

    source, mounted = tmp_path / "project", tmp_path / "ro"
    source.mkdir()
    mounted.mkdir()
    _store_with_rows(source / "mlflow.db")
    if subprocess.run(["mount", "--bind", "-o", "ro", str(source), str(mounted)],
                      capture_output=True).returncode != 0:
        pytest.skip("no permission to mount a read-only bind mount here")
    try:
        with pytest.raises(ForeignDatabaseError) as refused:
            check_sqlite_store(f"sqlite:///{mounted / 'mlflow.db'}", "experiments",
                               "MLflow tracking store", integrity=True)
    finally:
        subprocess.run(["umount", str(mounted)], check=True)
    message = str(refused.value)
    assert "can't be written here" in message and "is kept as it is" in message
    assert "Move it aside" not in message and "not a readable" not in message


def test_a_log_left_by_a_deleted_store_is_not_read_into_a_new_one(tmp_path):
    """``rm optuna.db`` while a process still has it open: its ``-wal`` and ``-shm`` stay
    beside the path, and the next sweep's new store must not read them."""
    import optuna

    path = tmp_path / "optuna.db"
    holder = sqlite3.connect(path)  # a process that still has the old store open
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("INSERT INTO t VALUES (1)")
    holder.commit()
    path.unlink()  # the user's rm: the log files stay
    assert (tmp_path / "optuna.db-wal").exists()
    try:
        url = f"sqlite:///{path}"
        study = optuna.create_study(storage=optuna_storage(url), study_name="fresh")
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
        assert len(optuna.load_study(study_name="fresh", storage=url).trials) == 2
        assert holder.execute("SELECT x FROM t").fetchall() == [(1,)]  # the old one, intact
    finally:
        holder.close()
