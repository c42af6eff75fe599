"""Cross-process locks through stores that every process already shares.

Several sweep processes (on one machine or many) may share a study, and lifecycle commands
(``tabflow promote``, ``rollback``) and a sweep's registration may touch one registered
model at once. They coordinate through a store they all reach, with no extra service:
creating a named object there is atomic (its name is unique), so the object is a mutex.

* :func:`storage_lock`: a study named ``<study>~<purpose>`` in the Optuna storage (SQLite,
  PostgreSQL, MySQL alike).
* ``tabflow.tracking.registry.registry_lock``: a registered model in the MLflow registry,
  through the same :func:`hold`.

A lock records its holder (host, pid, time) and beats while held: every ``interval_s`` it
writes the time again. A holder on this host whose process is gone is noticed at once
and its lock broken; any other holder that stopped beating for ``grace_s`` (frozen,
preempted, its host gone) loses the lock then, wherever it ran. A waiter judges a beat by
its own clock only where that is safe (an old beat); a beat dated in the future counts by
whether it changes while the waiter watches (:func:`holder_gone`), so a clock an hour
ahead neither keeps a dead holder's lock forever nor breaks a live one's.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra_plugins.tabflow_sweeper.contract import HOST, PID, PID_STARTED

LOCK_SUFFIX = "~"
# A lock created by a process that died before it could record itself is broken after this.
UNRECORDED_GRACE_S = 10.0
HOLDER_HOST, HOLDER_PID, HOLDER_SINCE = "holder_host", "holder_pid", "acquired_at"
HOLDER_BEAT = "beat_at"  # the holder's last beat (its clock, seconds since the epoch)
# How often a holder beats and how long a silent one keeps its lock. A sweep passes its
# own (hydra.sweeper.heartbeat); lifecycle commands use these.
BEAT_INTERVAL_S, GRACE_S = 20.0, 60.0

log = logging.getLogger(__name__)


class _HideLockStudies(logging.Filter):
    """Optuna announces every study it creates; a lock is not worth a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return LOCK_SUFFIX not in record.getMessage()


@functools.cache
def _hide_lock_studies() -> None:
    """Install :class:`_HideLockStudies` once, when a lock is first made (not at import)."""
    logging.getLogger("optuna.storages._rdb.storage").addFilter(_HideLockStudies())


def lock_timing(heartbeat: Any) -> dict[str, float]:
    """A sweep's beat settings for its locks (``hydra.sweeper.heartbeat``; defaults if off).

    Args:
        heartbeat: The node (or the sweeper's parsed settings), with ``interval`` and
            ``grace_period`` in seconds; None or ``interval: null`` when off.
    """
    interval = None if heartbeat is None else getattr(heartbeat, "interval", None)
    if interval is None:
        return {}
    return {"interval_s": float(interval), "grace_s": float(heartbeat.grace_period)}


class LockBusyError(RuntimeError):
    """Another process holds the lock (and ``wait_s`` ran out).

    Attributes:
        lock: The lock's name (``<study>~ask``, ``<model>~lock``).
        record: What the lock records of its holder.
    """

    def __init__(self, lock: str, record: dict[str, Any]) -> None:
        super().__init__(f"lock {lock!r} is held by another process "
                         f"({describe_holder(record)}); if that process is gone, clear the "
                         f"lock with: tabflow unlock {lock}")
        self.lock, self.record = lock, record


def holder_record() -> dict[str, Any]:
    """What a lock records about its holder: this process, now."""
    return {HOLDER_HOST: socket.gethostname(), HOLDER_PID: os.getpid(),
            HOLDER_SINCE: time.time()}


def _proc_stat(pid: int) -> list[str] | None:
    """A process's ``/proc/<pid>/stat`` fields from its state on (Linux), or None."""
    try:  # the state follows the name, which may hold spaces and parentheses
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def process_started(pid: int) -> str | None:
    """When a process of this machine started (clock ticks since boot), where /proc says.

    With its pid it names the process: a pid is reused once its process has ended.
    """
    fields = _proc_stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def this_process() -> dict[str, Any]:
    """The host, pid and start time of this process, as runs and trials record them."""
    me = {HOST: socket.gethostname(), PID: os.getpid()}
    started = process_started(os.getpid())
    return me if started is None else {**me, PID_STARTED: started}


def pid_alive(pid: int, started: str | None = None) -> bool:
    """Whether a process of this machine is alive (a zombie is not: it has ended).

    A process that ended stays in the process table until its parent reaps it; where
    PID 1 does not reap orphans (a container started without an init), it stays
    forever, and ``kill(pid, 0)`` alone would call it alive: its locks never broken,
    its runs never closed.

    Args:
        pid: The process id.
        started: Its start time as :func:`process_started` gave it, if known: a live
            process that started at another time was given the pid after ours ended.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    fields = _proc_stat(pid)
    if fields is None:
        return True  # no /proc here (macOS): kill() said it exists
    if fields[:1] == ["Z"]:
        return False
    return started is None or len(fields) <= 19 or fields[19] == str(started)


def holder_gone(record: dict[str, Any], grace_s: float, unchanged_for_s: float) -> str | None:
    """Why a lock's holder is gone, so that the lock may be broken; None while it may live.

    Clocks are compared only one way: a beat older than ``grace_s`` by this host's clock is
    stale. A beat that lies in the future (another host's clock ahead, or a broken writer)
    proves nothing by its value, so what counts is whether it changes: a record that this
    process has watched stay the same for ``grace_s`` of its own monotonic clock belongs to
    a holder that stopped beating, whatever its timestamps say. A record without a pid or a
    time (its holder died, or the disk filled, while writing it) is broken once it stayed so
    for :data:`UNRECORDED_GRACE_S`.

    Args:
        record: What the lock recorded (:func:`holder_record`, beats); may be partial.
        grace_s: A holder silent for this long (frozen, preempted, its host down) is gone.
        unchanged_for_s: How long this process has seen the same record.
    """
    host, pid = record.get(HOLDER_HOST), record.get(HOLDER_PID)
    if host == socket.gethostname() and pid is not None and not pid_alive(int(pid)):
        return "its process is gone"  # provably dead: break it now
    last = record.get(HOLDER_BEAT, record.get(HOLDER_SINCE))
    age = None if last is None else time.time() - float(last)
    if age is not None and age > grace_s:
        return f"silent for {age:.0f} s, more than {grace_s:.0f} s"
    if pid is None or age is None:
        return (f"it holds no complete record for {unchanged_for_s:.0f} s"
                if unchanged_for_s > UNRECORDED_GRACE_S else None)
    if unchanged_for_s > grace_s:
        return (f"its beat stayed at {-age:.0f} s in the future for {unchanged_for_s:.0f} s"
                if age < 0 else f"silent for {unchanged_for_s:.0f} s")
    return None


def describe_holder(record: dict[str, Any]) -> str:
    """The holder of a lock and its last beat, in words (for messages)."""
    holder = f"{record.get(HOLDER_HOST, '?')}:{record.get(HOLDER_PID, '?')}"
    last = record.get(HOLDER_BEAT, record.get(HOLDER_SINCE))
    if last is None:
        return f"{holder} (no beat recorded)"
    age = time.time() - float(last)
    return f"{holder}, last beat {age:.0f} s ago" if age >= 0 else \
        f"{holder}, last beat {-age:.0f} s in the future by this host's clock"


class Periodic:
    """Call a function every ``interval_s`` seconds from a daemon thread, until stopped.

    The first call comes one interval after :meth:`start`: a lock held for milliseconds
    (most are) writes nothing. A failing call is logged once and retried next time: a
    store that is briefly unreachable must not end the work it guards.
    """

    def __init__(self, fn: Callable[[], None], interval_s: float, what: str) -> None:
        self._fn, self._interval, self._what = fn, interval_s, what
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"beat {what}", daemon=True)

    def start(self) -> Periodic:
        """Start beating; return self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating (the current call, if any, finishes first)."""
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        warned = False
        while not self._stopped.wait(self._interval):
            try:
                self._fn()
            except Exception as e:  # reported once; the next beat may work
                if not warned:
                    log.warning("Could not record the heartbeat of %s (%s: %s); retrying",
                                self._what, type(e).__name__, e)
                    warned = True


@dataclass
class Mutex:
    """A named object in a shared store, used as a lock.

    Attributes:
        create: Create the object with a holder record; return a handle, None if it exists.
        inspect: Return ``(handle, record)`` of the existing object, None if there is none.
        remove: Delete the object of a handle (no error if it is already gone).
        beat: Write a beat (``{HOLDER_BEAT: time}``) into the object of a handle.
    """

    create: Callable[[dict[str, Any]], Any]
    inspect: Callable[[], tuple[Any, dict[str, Any]] | None]
    remove: Callable[[Any], None]
    beat: Callable[[Any, dict[str, Any]], None]


@contextlib.contextmanager
def hold(mutex: Mutex, name: str, wait_s: float = 120.0, grace_s: float = GRACE_S,
         on_wait: Callable[[dict[str, Any]], None] | None = None,
         interval_s: float = BEAT_INTERVAL_S) -> Iterator[None]:
    """Hold a :class:`Mutex`, beating while held, and break it when its holder is gone.

    Args:
        mutex: The lock's object in the shared store.
        name: What is locked, for messages.
        wait_s: How long to wait for a live holder; 0 tries once.
        grace_s: See :func:`holder_gone`; must exceed ``interval_s``.
        on_wait: Called once, with the holder's record, if this process has to wait.
        interval_s: How often this process beats while it holds the lock.

    Raises:
        LockBusyError: If a live holder kept the lock for all of ``wait_s``.
    """
    deadline = time.monotonic() + wait_s
    seen: Any = None  # the record last seen, and since when (this host's monotonic clock)
    seen_since = time.monotonic()
    waited = False
    while True:
        handle = mutex.create(holder_record())
        if handle is not None:
            break
        found = mutex.inspect()
        if found is None:
            continue  # released while we looked
        held, record = found
        if (held, record) != seen:
            seen, seen_since = (held, record), time.monotonic()
        why = holder_gone(record, grace_s, time.monotonic() - seen_since)
        if why is not None:
            log.warning("Breaking lock %s: its holder %s is gone (%s)", name,
                        describe_holder(record), why)
            mutex.remove(held)  # that object only: a new holder's has another handle
            continue
        if time.monotonic() >= deadline:
            raise LockBusyError(name, record)
        if not waited and on_wait is not None:
            on_wait(record)
        waited = True
        time.sleep(0.1)
    beats = Periodic(lambda: mutex.beat(handle, {HOLDER_BEAT: time.time()}), interval_s,
                     f"lock {name}").start()
    try:
        yield
    finally:
        beats.stop()
        mutex.remove(handle)


def study_mutex(storage: Any, name: str) -> Mutex:
    """A mutex that is a study named ``name`` in an Optuna storage."""
    from optuna.exceptions import DuplicatedStudyError
    from optuna.study import StudyDirection

    _hide_lock_studies()

    def create(record: dict[str, Any]) -> Any:
        try:
            lock_id = storage.create_new_study([StudyDirection.MINIMIZE], name)
        except DuplicatedStudyError:
            return None
        try:  # a kill in between leaves it unrecorded (broken after UNRECORDED_GRACE_S)
            for key, value in record.items():
                storage.set_study_user_attr(lock_id, key, value)
        except Exception:  # a full disk: take back the half-made lock if the store lets us
            with contextlib.suppress(Exception):
                storage.delete_study(lock_id)
            raise
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

    def beat(lock_id: Any, record: dict[str, Any]) -> None:
        for key, value in record.items():
            storage.set_study_user_attr(lock_id, key, value)

    return Mutex(create, inspect, remove, beat)


def storage_lock(storage: Any, name: str, wait_s: float = 120.0, grace_s: float = GRACE_S,
                 interval_s: float = BEAT_INTERVAL_S) -> contextlib.AbstractContextManager[None]:
    """Hold a mutex named ``name`` in an Optuna storage shared by several processes.

    Args:
        storage: An Optuna storage (``optuna_storage(url)`` or a study's ``_storage``).
        name: What is locked, e.g. ``<study>~parent``.
        wait_s: How long to wait for another holder; 0 tries once.
        grace_s: A holder silent for this long (no beat) loses the lock.
        interval_s: How often this process beats while it holds the lock.

    Raises:
        LockBusyError: If another live process held the lock for all of ``wait_s``.
    """
    return hold(study_mutex(storage, name), name, wait_s, grace_s, interval_s=interval_s)


def running_trials(storage: Any, name: str) -> int:
    """Return how many trials of a study are RUNNING (0 if the study doesn't exist)."""
    from optuna.trial import TrialState

    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)))


def stored_locks(storage: Any) -> list[tuple[str, dict[str, Any]]]:
    """The locks held in an Optuna storage now: each one's name and holder record."""
    found = []
    for summary in storage.get_all_studies():
        if LOCK_SUFFIX in summary.study_name:
            with contextlib.suppress(KeyError):  # released while we looked
                found.append((summary.study_name,
                              dict(storage.get_study_user_attrs(summary._study_id))))
    return found


def remove_stored_lock(storage: Any, name: str) -> bool:
    """Delete a lock of an Optuna storage by name; False if there is none."""
    try:
        storage.delete_study(storage.get_study_id_from_name(name))
    except KeyError:
        return False
    return True
