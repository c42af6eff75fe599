"""Read-only views of a SQLite tracking store without importing MLflow.

``tabflow experiments``, ``sweeps`` and ``runs`` only read a few tables; importing MLflow
and opening its client costs seconds before the first row. On a SQLite store these views
read the tables with the standard library's ``sqlite3`` instead: MLflow's schema is the
contract (``experiments``, ``runs``, ``tags``, ``params``, ``latest_metrics``), and a test
checks every answer against MLflow's own client. Other stores (a server, PostgreSQL) go
through MLflow as before. Runs come back shaped like MLflow's (``run.info.run_id``,
``run.data.tags`` ...), so the views print either kind alike.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tabflow.contract import TAG_PARENT, TAG_ROLE

SQLITE = "sqlite:///"


class LiteStore:
    """A SQLite tracking store opened read-only, for the views."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        # SELECTs on a short-lived connection: a sweep writing the store is not held up.
        with closing(sqlite3.connect(self.path, timeout=20)) as con:
            return con.execute(sql, args).fetchall()

    def experiments(self) -> list[SimpleNamespace]:
        """The active experiments, in MLflow's order (newest first, then by id)."""
        return [SimpleNamespace(experiment_id=str(i), name=n) for i, n in self._rows(
            "SELECT experiment_id, name FROM experiments WHERE lifecycle_stage = 'active' "
            "ORDER BY creation_time DESC, experiment_id ASC")]

    def experiment_id(self, name: str) -> str | None:
        """The id of the active experiment with this name, or None."""
        found = self._rows("SELECT experiment_id FROM experiments WHERE name = ? AND "
                           "lifecycle_stage = 'active'", (name,))
        return str(found[0][0]) if found else None

    def runs_tagged(self, experiment_id: str, key: str, value: str) -> list[SimpleNamespace]:
        """The experiment's active runs with tag ``key = value``, newest first, whole."""
        ids = [r for (r,) in self._rows(
            "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active' AND t.key = ? AND "
            "t.value = ? ORDER BY r.start_time DESC, r.run_uuid", (experiment_id, key, value))]
        return list(self._load(ids))

    def sweeps(self, experiment_id: str) -> list[SimpleNamespace]:
        """An experiment's sweep parent runs, newest first."""
        return self.runs_tagged(experiment_id, TAG_ROLE, "sweep")

    def trials(self, experiment_id: str, parent_run_id: str) -> list[SimpleNamespace]:
        """A sweep's trial runs (any status)."""
        return [r for r in self.runs_tagged(experiment_id, TAG_PARENT, parent_run_id)
                if r.data.tags.get(TAG_ROLE) == "trial"]

    def _load(self, ids: list[str]) -> Iterator[SimpleNamespace]:
        for start in range(0, len(ids), 500):  # SQLite's limit on bound variables
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            runs = {r[0]: SimpleNamespace(
                info=SimpleNamespace(run_id=r[0], run_name=r[1], status=r[2], start_time=r[3],
                                     end_time=r[4], experiment_id=str(r[5])),
                data=SimpleNamespace(tags={}, params={}, metrics={}))
                for r in self._rows("SELECT run_uuid, name, status, start_time, end_time, "
                                    f"experiment_id FROM runs WHERE run_uuid IN ({marks})",
                                    tuple(chunk))}
            for key, value, run in self._rows(
                    f"SELECT key, value, run_uuid FROM tags WHERE run_uuid IN ({marks})",
                    tuple(chunk)):
                runs[run].data.tags[key] = value
            for key, value, run in self._rows(
                    f"SELECT key, value, run_uuid FROM params WHERE run_uuid IN ({marks})",
                    tuple(chunk)):
                runs[run].data.params[key] = value
            for key, value, is_nan, run in self._rows(
                    "SELECT key, value, is_nan, run_uuid FROM latest_metrics "
                    f"WHERE run_uuid IN ({marks})", tuple(chunk)):
                runs[run].data.metrics[key] = math.nan if is_nan else float(value)
            yield from (runs[i] for i in chunk)


def open_lite(uri: str) -> LiteStore | None:
    """A :class:`LiteStore` for an existing SQLite store made by MLflow, else None."""
    if not uri.startswith(SQLITE):
        return None
    path = Path(uri.removeprefix(SQLITE))
    if not path.is_file():
        return None
    store = LiteStore(path)
    try:  # MLflow's tables, as the contract names them
        store._rows("SELECT 1 FROM experiments, runs, tags, params, latest_metrics LIMIT 0")
    except sqlite3.Error:
        return None  # not MLflow's (the MLflow path names what is wrong with it)
    return store
