"""The identity of a sweep: which Optuna study and MLflow parent run a command belongs to.

Re-running the same command must continue the same study (resume), while a changed
experiment (other data, preprocessing, model settings, search space, sampler or
objective) must start a new one instead of polluting the old. The study name is
therefore derived from a hash of everything that shapes the trials, and nothing that
doesn't: the number of trials, a timeout, parallelism and tracking settings can change
between runs of one study.

Both the sweeper and the tracking callback call :func:`study_name`, in the launching
process, so they always agree.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from tabflow.config import job_config

# Job config keys that do not change what a trial computes.
_NOT_IDENTITY = ("tracking", "registry", "paths", "optuna_trial", "threads")


def sweep_overrides(overrides: list[str]) -> list[str]:
    """Return the command-line overrides that are sweep dimensions (``choice(...)`` etc.)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return sorted(o.input_line for o in parsed
                  if o.is_sweep_override() and o.input_line is not None)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def identity(cfg: DictConfig, data_digest: str | None = None) -> dict[str, Any]:
    """Return what makes two sweeps the same study.

    Args:
        cfg: The composed config of the sweep (launching process).
        data_digest: The dataset's content digest, so that edited data starts a new study.

    Returns:
        A JSON-able dict of the job config (without tracking and run settings), the search
        space, the command-line sweep dimensions, the sampler, the directions and the data.
    """
    job = OmegaConf.to_container(job_config(cfg))
    assert isinstance(job, dict)
    for key in _NOT_IDENTITY:
        job.pop(key, None)
    # The sweep's own dimensions take many values; their composed defaults don't matter.
    sweeper = cfg.hydra.sweeper
    params = {str(k): str(v) for k, v in (sweeper.get("params") or {}).items()}
    sampler = _plain(sweeper.get("sampler"))
    return {
        "job": job,
        "params": params,
        "sweep_overrides": sweep_overrides(list(cfg.hydra.overrides.task)),
        "sampler": sampler,  # the objective and its direction are in `job`
        "conditional": _plain(sweeper.get("conditional_params")),
        "data": data_digest,
    }


@functools.lru_cache(maxsize=8)
def _data_digest(dataset: str, data_dir: str) -> str:
    """Return a dataset's content digest, computed once per process.

    The tracking callback and the sweeper both name the study, in the same process.
    """
    from tabflow.data import load_dataset  # pandas, only for sweeps (cached by the check)

    return load_dataset(OmegaConf.create(json.loads(dataset)), data_dir).digest


def study_name(cfg: DictConfig) -> str:
    """Return the Optuna study name of a sweep.

    ``hydra.sweeper.study_name`` when set, else ``<dataset>-<model>-<sweep>-<hash>`` of the
    sweep's :func:`identity`.
    """
    explicit = cfg.hydra.sweeper.get("study_name")
    if explicit:
        return str(explicit)
    dataset = json.dumps(OmegaConf.to_container(cfg.dataset, resolve=True), sort_keys=True,
                         default=str)
    blob = json.dumps(identity(cfg, _data_digest(dataset, str(cfg.paths.data))),
                      sort_keys=True, default=str)
    short = hashlib.sha256(blob.encode()).hexdigest()[:10]
    choices = cfg.hydra.runtime.choices
    return f"{cfg.dataset.name}-{choices.get('model')}-{choices.get('sweep')}-{short}"


# ------------------------------------------------------------------ coordination
# Several sweep processes (on one machine or many) may share a study. They coordinate
# through the Optuna storage they already share: creating a study is atomic (its name is
# unique), so a study named ``<study>~<purpose>`` is a mutex that works the same on SQLite,
# PostgreSQL and MySQL, with no extra service.

LOCK_SUFFIX = "~"


class _HideLockStudies(logging.Filter):
    """Optuna announces every study it creates; a lock is not worth a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return LOCK_SUFFIX not in record.getMessage()


logging.getLogger("optuna.storages._rdb.storage").addFilter(_HideLockStudies())


class LockBusyError(RuntimeError):
    """Another process holds the lock (and ``wait_s`` ran out)."""


@contextlib.contextmanager
def sqlite_init_lock(uri: str) -> Iterator[None]:
    """Serialise schema set-up of a SQLite database among this machine's processes."""
    import fcntl

    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri.removeprefix("sqlite:///")).with_suffix(".init-lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class ForeignDatabaseError(RuntimeError):
    """A SQLite file exists but is not a store of the expected kind (or is corrupt)."""


def check_sqlite_store(url: str, marker_table: str, kind: str) -> None:
    """Refuse a SQLite file that is corrupt or belongs to something else.

    Opening a foreign database as a store would create the store's tables inside it, and a
    corrupt one fails deep inside SQLAlchemy; both are stopped here, naming the file.

    Args:
        url: The store's URL; only ``sqlite:///`` files that exist are checked.
        marker_table: A table every store of this kind has (MLflow: ``experiments``,
            Optuna: ``studies``).
        kind: What the store is, for the message.

    Raises:
        ForeignDatabaseError: If the file is not a SQLite database, or holds tables but
            not ``marker_table``.
    """
    import sqlite3

    if not url.startswith("sqlite:///"):
        return
    path = Path(url.removeprefix("sqlite:///"))
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
            tables = {row[0] for row in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as e:
        raise ForeignDatabaseError(
            f"{path} is not a readable SQLite database ({e}); it is left untouched. Move it "
            f"aside (or restore it from a backup) and run again for a fresh {kind}") from e
    if tables and marker_table not in tables:
        raise ForeignDatabaseError(
            f"{path} is a SQLite database but not an {kind} (its tables: "
            f"{', '.join(sorted(tables)[:8])}); it is left untouched. Point the {kind} "
            f"elsewhere or move the file aside")


@functools.lru_cache(maxsize=4)
def optuna_storage(url: str, attempts: int = 5) -> Any:
    """Return an Optuna storage for a URL, one per process.

    Processes started together on a fresh SQLite file race on its schema set-up; the
    loser retries a moment later, when the schema is there.
    """
    import time

    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    check_sqlite_store(url, "studies", "Optuna study storage")
    for attempt in range(attempts):
        try:
            with sqlite_init_lock(url):
                return optuna.storages.get_storage(url)
        except (IntegrityError, OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


@contextlib.contextmanager
def storage_lock(storage: Any, name: str, wait_s: float = 120.0,
                 stale_s: float = 1800.0) -> Iterator[None]:
    """Hold a mutex named ``name`` in an Optuna storage shared by several processes.

    Args:
        storage: An Optuna storage (``optuna_storage(url)`` or a study's ``_storage``).
        name: What is locked, e.g. ``<study>~parent``.
        wait_s: How long to wait for another holder; 0 tries once.
        stale_s: A lock older than this is taken to be left by a dead process and broken.

    Raises:
        LockBusyError: If another process held the lock for all of ``wait_s``.
    """
    import socket
    import time

    from optuna.exceptions import DuplicatedStudyError
    from optuna.study import StudyDirection

    deadline = time.monotonic() + wait_s
    while True:
        try:
            lock_id = storage.create_new_study([StudyDirection.MINIMIZE], name)
            break
        except DuplicatedStudyError:
            try:
                held = storage.get_study_id_from_name(name)
                since = storage.get_study_user_attrs(held).get("acquired_at", time.time())
                if time.time() - since > stale_s:
                    storage.delete_study(held)
                    continue
            except KeyError:
                continue  # released while we looked
            if time.monotonic() >= deadline:
                raise LockBusyError(f"{name!r} is held by another process") from None
            time.sleep(0.1)
    storage.set_study_user_attr(lock_id, "acquired_at", time.time())
    storage.set_study_user_attr(lock_id, "holder", f"{socket.gethostname()}:{os.getpid()}")
    try:
        yield
    finally:
        with contextlib.suppress(KeyError):
            storage.delete_study(lock_id)


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine is alive."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    return True


def running_trials(storage: Any, name: str) -> int:
    """Return how many trials of a study are RUNNING (0 if the study doesn't exist)."""
    from optuna.trial import TrialState

    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)))
