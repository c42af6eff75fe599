"""The connection to a tracking store: made once per process, created and upgraded first."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra_plugins.tabflow_sweeper.stores import (
    ForeignDatabaseError,
    check_sqlite_store,
    sqlite_init_lock,
    tune_sqlite,
)
from tabflow.contract import disk_full, lower_is_better

if TYPE_CHECKING:
    from mlflow import MlflowClient


class TrackingError(RuntimeError):
    """Tracking failed; the message names what and how to fix it."""


# Messages of processes racing on a fresh SQLite store's schema set-up.
_SCHEMA_RACE = ("already exists", "UNIQUE constraint failed", "database is locked",
                "no such table", "duplicate column", "alembic")


class _DiskFullFilter(logging.Filter):
    """Drops the tracebacks logged for writes that a full disk refuses.

    MLflow's session scope (and the background writer) log one per failed write; the
    sweep stops with one line that says so and how to resume.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None or disk_full(record.exc_info[1]) is None


# Where those tracebacks come from: MLflow's session scope, and the writer's catch-all.
_DISK_FULL_LOGGERS = ("mlflow.store.db.utils", "tabflow.tracking.writer")


def quiet_disk_full() -> None:
    """Install :class:`_DiskFullFilter` once (when tabflow opens a store, not at import)."""
    for name in _DISK_FULL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DiskFullFilter) for f in logger.filters):
            logger.addFilter(_DiskFullFilter())


@dataclass
class Store:
    """A connection to the tracking store, made once per process."""

    uri: str
    client: MlflowClient


def connect(uri: str, create: bool = True) -> Store:
    """Connect to a tracking store, creating or upgrading it if needed.

    Args:
        uri: The tracking URI.
        create: Create a SQLite store that doesn't exist yet; commands that only read
            (and lifecycle commands, which need something to act on) pass False.

    Raises:
        TrackingError: If the store can't be reached or opened, or doesn't exist and
            ``create`` is False.
    """
    if not create and uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise TrackingError(f"no tracking store at {path}: nothing has been tracked there "
                                f"yet. Run a sweep first (python src/train.py -m ...), or "
                                f"point --tracking-uri at your store")
    # Downloads (promote, report, serve) print no progress bars between our lines.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
        # MLflow retries a dead server for minutes per call by default; a sweep whose
        # server died should keep fitting (results stay on disk for `tabflow upload`).
        for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"),
                            ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                            ("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")):
            os.environ.setdefault(name, value)
    import mlflow
    from mlflow import MlflowClient

    tune_sqlite(uri)
    quiet_disk_full()
    try:
        check_sqlite_store(uri, "experiments", "MLflow tracking store")
    except ForeignDatabaseError as e:
        raise TrackingError(str(e)) from e
    for attempt in range(6):
        try:
            # Opening the store creates it and runs its schema migrations. Done here, in the
            # launching process, it can't race with this sweep's own jobs; other sweep
            # processes on the same SQLite file wait on a file lock.
            with sqlite_init_lock(uri):
                if uri.startswith("sqlite:///"):
                    create_sqlite_store(Path(uri.removeprefix("sqlite:///")))
                mlflow.set_tracking_uri(uri)
                client = MlflowClient(uri)
                client.search_experiments(max_results=1)
            break
        except Exception as e:
            # Sweep processes started together on a fresh database race on its schema
            # set-up; the losers see half-made tables and succeed a moment later.
            racing = any(m in str(e) for m in _SCHEMA_RACE)
            if not uri.startswith(("http:", "https:")) and racing and attempt < 5:
                time.sleep(0.5 * (attempt + 1))
                continue
            raise TrackingError(
                f"cannot open the MLflow tracking store {uri!r}: {type(e).__name__}: {e}. "
                f"Check tracking.uri / MLFLOW_TRACKING_URI (a server must be running, "
                f"e.g. `mlflow server --host 127.0.0.1 --port 5000`)"
            ) from e
    return Store(uri, client)


def create_sqlite_store(path: Path) -> None:
    """Create a SQLite tracking store that doesn't exist yet, whole or not at all.

    MLflow builds the schema through some sixty migrations (about 1.3 s); a process stopped
    among them (Ctrl-C, SIGTERM, a full disk) used to leave a half-migrated file that every
    later run refused. The store is built beside its path, copied complete with SQLite's
    backup (which reads through the write-ahead log) and renamed into place. Callers hold
    :func:`sqlite_init_lock`, so a leftover partial file is a dead process's.
    """
    import sqlite3

    from mlflow import MlflowClient

    if path.exists():
        return
    # A name of its own: MLflow caches a store per URI, and would reuse a failed one.
    attempt = f"{path.name}-creating-{os.getpid()}-{time.monotonic_ns()}"
    partial, complete = path.with_name(attempt), path.with_name(f"{attempt}-done")
    for leftover in path.parent.glob(f"{path.name}-creating*"):
        leftover.unlink()
    try:
        MlflowClient(f"sqlite:///{partial}").search_experiments(max_results=1)
        source, copy = sqlite3.connect(partial), sqlite3.connect(complete)
        try:
            source.backup(copy)
        finally:
            source.close()
            copy.close()
        os.replace(complete, path)
    finally:
        for leftover in path.parent.glob(f"{path.name}-creating*"):
            leftover.unlink(missing_ok=True)


def _check_server(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast when a tracking server is down (MLflow's own retries take minutes)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
            pass
    except (urllib.error.URLError, OSError) as e:
        raise TrackingError(
            f"the MLflow tracking server at {uri} is not reachable ({e}). Start it, e.g. "
            f"`mlflow server --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 "
            f"--port 5000`, or unset MLFLOW_TRACKING_URI to use the local SQLite store"
        ) from e


def ensure_experiment(store: Store, name: str, root: Path) -> str:
    """Return the id of the named experiment, creating it if needed."""
    experiment = store.client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    artifact_location = None
    if store.uri.startswith("sqlite:"):
        # MLflow would put artifacts under ./mlruns of whatever the cwd is; anchor them.
        artifact_location = (root / "mlruns").resolve().as_uri()
    # Open the UI on the classic model-training view, not the GenAI one.
    tags = {"mlflow.experimentKind": "custom_model_development"}
    try:
        return str(store.client.create_experiment(name, artifact_location, tags))
    except Exception:
        # Another process created it between our lookup and create.
        experiment = store.client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


# A saved view of the experiment's runs table (MLflow >= 3.15 "Views"): the UI opens the
# runs with these columns instead of none of the 200 metrics and params a sweep logs.
RUNS_VIEW_ID = "tabflow"
RUNS_VIEW_TAG = f"mlflow.sharedViewState.{RUNS_VIEW_ID}"


def save_runs_view(store: Store, experiment_id: str, metrics: list[str], tuned: list[str]
                   ) -> None:
    """Save the experiment's runs view: its objective and tuned values as columns.

    Stored as MLflow's UI stores a saved view (an experiment tag holding the envelope
    ``{name, createdAt, state}``, the state deflated), so it is listed under *Views* and
    opened by ``?viewStateShareKey=tabflow``. Each sweep updates it with its own columns.
    """
    import base64
    import json
    import zlib

    def column(kind: str, key: str) -> str:  # MLflow's canonical column key
        return f"{kind}.`{key}`"

    # The dataset column is left out: it is the experiment's own, and it is wide.
    columns = [column("attributes", "Duration"), *(column("metrics", m) for m in metrics),
               *(column("params", k) for k in tuned)]
    state = {"selectedColumns": columns, "orderByKey": column("metrics", metrics[0]),
             "orderByAsc": lower_is_better(metrics[0])}
    deflated = base64.b64encode(zlib.compress(json.dumps(state).encode())).decode()
    envelope = {"name": f"tabflow: {', '.join(metrics)} and tuned values",
                "createdAt": int(time.time() * 1000), "state": f"deflate;{deflated}"}
    # Sweep processes started together race on the tag's first write: MLflow looks it up,
    # then inserts it, and the loser's insert breaks the unique key. Then the tag exists
    # and a second try updates it. The view is a convenience: it never stops a sweep.
    for attempt in range(3):
        try:
            store.client.set_experiment_tag(experiment_id, RUNS_VIEW_TAG, json.dumps(envelope))
            return
        except Exception as e:
            if attempt == 2:
                logging.getLogger(__name__).warning(
                    "The experiment's runs view (tag %s) was not saved: %s: %s. The sweep "
                    "goes on; its runs are listed as always", RUNS_VIEW_TAG,
                    type(e).__name__, str(e).splitlines()[0][:200])
                return
            time.sleep(0.2 * (attempt + 1))


def experiment_id_of(store: Store, name: str) -> str:
    """Return the id of the experiment with this name.

    Raises:
        TrackingError: If the store has no such experiment.
    """
    exp = store.client.get_experiment_by_name(name)
    if exp is None:
        raise TrackingError(f"no experiment named {name!r} at {store.uri}")
    return str(exp.experiment_id)


def experiments(store: Store) -> list[Any]:
    """Return every experiment of the store."""
    return list(store.client.search_experiments())


def download_artifact(store: Store, run_id: str, path: str) -> Path:
    """Download one artifact of a run and return its local path."""
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                    tracking_uri=store.uri))


def best_config(store: Store, parent_run_id: str) -> Any:
    """The resolved config of the trial a sweep registered (its parent's ``best/config.yaml``).

    Raises:
        Exception: MLflow's or OmegaConf's error when the artifact can't be read (the
            store's artifacts were moved or deleted); callers say what to do.
    """
    from omegaconf import DictConfig, OmegaConf

    from tabflow.contract import CONFIG_FILE

    cfg = OmegaConf.load(download_artifact(store, parent_run_id, f"best/{CONFIG_FILE}"))
    assert isinstance(cfg, DictConfig)
    return cfg

