"""Store guards: a foreign or corrupt SQLite file is refused and left untouched."""

from __future__ import annotations

import sqlite3

import pytest

from hydra_plugins.tabflow_sweeper._stores import (
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
