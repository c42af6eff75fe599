"""Cross-process locks through stores that every process already shares.

Several sweep processes (on one machine or many) may share a study, and lifecycle commands
(``tabflow promote``, ``rollback``) and a sweep's registration may touch one registered
model at once. They coordinate through a store they all reach, with no extra service:
creating a named object there is atomic (its name is unique), so the object is a mutex.

* :func:`storage_lock`: a study named ``<study>~<purpose>`` in the Optuna storage (SQLite,
  PostgreSQL, MySQL alike).
* ``tabflow.tracking.registry.registry_lock``: a registered model in the MLflow registry,
  through the same :func:`hold`.

A lock records its holder (host, pid, time). A holder on this host whose process is gone
is noticed at once and its lock broken; another host's lock is broken once it is older
than ``stale_s``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

LOCK_SUFFIX = "~"
# A lock created by a process that died before it could record itself is broken after this.
UNRECORDED_GRACE_S = 10.0
HOLDER_HOST, HOLDER_PID, HOLDER_SINCE = "holder_host", "holder_pid", "acquired_at"

log = logging.getLogger(__name__)


class _HideLockStudies(logging.Filter):
    """Optuna announces every study it creates; a lock is not worth a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return LOCK_SUFFIX not in record.getMessage()


logging.getLogger("optuna.storages._rdb.storage").addFilter(_HideLockStudies())


class LockBusyError(RuntimeError):
    """Another process holds the lock (and ``wait_s`` ran out)."""


def holder_record() -> dict[str, Any]:
    """What a lock records about its holder: this process, now."""
    return {HOLDER_HOST: socket.gethostname(), HOLDER_PID: os.getpid(),
            HOLDER_SINCE: time.time()}


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


def holder_gone(record: dict[str, Any], stale_s: float, unrecorded_for_s: float) -> bool:
    """Whether a lock's holder is gone, so that the lock may be broken.

    Args:
        record: What the lock recorded (:func:`holder_record`); may be empty.
        stale_s: Another host's lock older than this is taken to be abandoned.
        unrecorded_for_s: How long this process has seen the lock without a record.
    """
    host, pid, since = (record.get(HOLDER_HOST), record.get(HOLDER_PID),
                        record.get(HOLDER_SINCE))
    if host == socket.gethostname() and pid is not None:
        return not pid_alive(int(pid))  # provably dead: break it now
    if since is not None:
        return time.time() - float(since) > stale_s
    return unrecorded_for_s > UNRECORDED_GRACE_S


@dataclass
class Mutex:
    """A named object in a shared store, used as a lock.

    Attributes:
        create: Create the object with a holder record; return a handle, None if it exists.
        inspect: Return ``(handle, record)`` of the existing object, None if there is none.
        remove: Delete the object of a handle (no error if it is already gone).
    """

    create: Callable[[dict[str, Any]], Any]
    inspect: Callable[[], tuple[Any, dict[str, Any]] | None]
    remove: Callable[[Any], None]


@contextlib.contextmanager
def hold(mutex: Mutex, name: str, wait_s: float = 120.0, stale_s: float = 1800.0,
         on_wait: Callable[[dict[str, Any]], None] | None = None) -> Iterator[None]:
    """Hold a :class:`Mutex`, breaking it when its holder is gone.

    Args:
        mutex: The lock's object in the shared store.
        name: What is locked, for messages.
        wait_s: How long to wait for a live holder; 0 tries once.
        stale_s: See :func:`holder_gone`.
        on_wait: Called once, with the holder's record, if this process has to wait.

    Raises:
        LockBusyError: If a live holder kept the lock for all of ``wait_s``.
    """
    deadline = time.monotonic() + wait_s
    unrecorded_since: float | None = None
    waited = False
    while True:
        handle = mutex.create(holder_record())
        if handle is not None:
            break
        found = mutex.inspect()
        if found is None:
            continue  # released while we looked
        held, record = found
        if record:
            unrecorded_since = None
        elif unrecorded_since is None:
            unrecorded_since = time.monotonic()
        unrecorded_for = 0.0 if unrecorded_since is None else time.monotonic() - unrecorded_since
        if holder_gone(record, stale_s, unrecorded_for):
            log.warning("Breaking lock %s: its holder %s:%s is gone", name,
                        record.get(HOLDER_HOST, "?"), record.get(HOLDER_PID, "?"))
            mutex.remove(held)  # that object only: a new holder's has another handle
            continue
        if time.monotonic() >= deadline:
            raise LockBusyError(f"{name!r} is held by another process "
                                f"({record.get(HOLDER_HOST, '?')}:{record.get(HOLDER_PID, '?')})")
        if not waited and on_wait is not None:
            on_wait(record)
        waited = True
        time.sleep(0.1)
    try:
        yield
    finally:
        mutex.remove(handle)


def study_mutex(storage: Any, name: str) -> Mutex:
    """A mutex that is a study named ``name`` in an Optuna storage."""
    from optuna.exceptions import DuplicatedStudyError
    from optuna.study import StudyDirection

    def create(record: dict[str, Any]) -> Any:
        try:
            lock_id = storage.create_new_study([StudyDirection.MINIMIZE], name)
        except DuplicatedStudyError:
            return None
        for key, value in record.items():  # a kill in between leaves it unrecorded
            storage.set_study_user_attr(lock_id, key, value)
        return lock_id

    def inspect() -> tuple[Any, dict[str, Any]] | None:
        try:
            held = storage.get_study_id_from_name(name)
            return held, dict(storage.get_study_user_attrs(held))
        except KeyError:
            return None

    def remove(lock_id: Any) -> None:
        with contextlib.suppress(KeyError):
            storage.delete_study(lock_id)

    return Mutex(create, inspect, remove)


def storage_lock(storage: Any, name: str, wait_s: float = 120.0,
                 stale_s: float = 1800.0) -> contextlib.AbstractContextManager[None]:
    """Hold a mutex named ``name`` in an Optuna storage shared by several processes.

    Args:
        storage: An Optuna storage (``optuna_storage(url)`` or a study's ``_storage``).
        name: What is locked, e.g. ``<study>~parent``.
        wait_s: How long to wait for another holder; 0 tries once.
        stale_s: Another host's lock older than this is taken to be abandoned.

    Raises:
        LockBusyError: If another live process held the lock for all of ``wait_s``.
    """
    return hold(study_mutex(storage, name), name, wait_s, stale_s)


def running_trials(storage: Any, name: str) -> int:
    """Return how many trials of a study are RUNNING (0 if the study doesn't exist)."""
    from optuna.trial import TrialState

    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)))
