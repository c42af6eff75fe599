"""Cross-process coordination through the Optuna storage that sweep processes share.

Several sweep processes (on one machine or many) may share a study. They coordinate
through the Optuna storage they already share: creating a study is atomic (its name is
unique), so a study named ``<study>~<purpose>`` is a mutex that works the same on SQLite,
PostgreSQL and MySQL, with no extra service.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

LOCK_SUFFIX = "~"


class _HideLockStudies(logging.Filter):
    """Optuna announces every study it creates; a lock is not worth a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return LOCK_SUFFIX not in record.getMessage()


logging.getLogger("optuna.storages._rdb.storage").addFilter(_HideLockStudies())


class LockBusyError(RuntimeError):
    """Another process holds the lock (and ``wait_s`` ran out)."""


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
