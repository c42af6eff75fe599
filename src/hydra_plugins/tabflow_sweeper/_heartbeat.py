"""Heartbeats: a sweep process that stops beating loses its trials, which are retried.

Optuna's own machinery does the work: an ``RDBStorage`` with ``heartbeat_interval`` and
``grace_period`` records a heartbeat per running trial (in the database's clock, so hosts
need not agree on the time), and a trial whose heartbeat is older than the grace period
is *stale*: its sweep process is frozen, preempted, killed or its host is gone. Any
other process of the study fails it and calls the storage's stale-trial callback,
which queues it again (:class:`Heartbeat` is that callback; it writes the same system
attributes as ``optuna.storages.RetryHeartbeatStaleTrialCallback``, ``failed_trial``
and ``retry_history``, so Optuna's helpers read them).

Optuna beats only inside ``Study.optimize``; this sweeper asks and tells, so it beats
itself: one thread per sweep process (:class:`TrialBeats`) beats every trial it runs,
whichever launcher runs the job, while the process lives and is not frozen.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.tabflow_sweeper.contract import (
    ATTR_ERROR,
    ATTR_RETRY_OF,
    ATTR_RUN_ID,
    ATTR_WORKER_DIED,
    HOST,
    PID,
    PID_STARTED,
)
from hydra_plugins.tabflow_sweeper.locks import Periodic, pid_alive

log = logging.getLogger(__name__)

# The attributes of a dead attempt that describe that attempt, not the trial's parameters.
_ATTEMPT_ATTRS = (ATTR_ERROR, ATTR_RUN_ID, ATTR_WORKER_DIED, HOST, PID, PID_STARTED)


@dataclass(frozen=True)
class Heartbeat:
    """Heartbeat settings (``hydra.sweeper.heartbeat``) and the stale-trial callback.

    Attributes:
        interval: Seconds between beats.
        grace_period: Seconds without a beat after which a trial (or lock) is dead.
        max_retry: How many times a dead worker's trial is run again (None: always).
    """

    interval: int
    grace_period: int
    max_retry: int | None

    @classmethod
    def from_config(cls, node: Any) -> Heartbeat | None:
        """Read ``hydra.sweeper.heartbeat``; None when it is off (``interval: null``).

        Raises:
            ValueError: Naming the setting and what it must be.
        """
        if node is None or node.get("interval") is None:
            return None
        interval, grace, retries = node.get("interval"), node.get("grace_period"), \
            node.get("max_retry")
        for key, value in (("interval", interval), ("grace_period", grace)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"hydra.sweeper.heartbeat.{key} must be a whole number of "
                                 f"seconds >= 1, got {value!r}")
        if grace <= interval:
            raise ValueError(
                f"hydra.sweeper.heartbeat.grace_period ({grace}) must be longer than the "
                f"interval ({interval}), or every trial between two beats looks dead; "
                f"about 3 intervals is safe, e.g. grace_period={3 * interval}")
        if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int)
                                    or retries < 0):
            raise ValueError(f"hydra.sweeper.heartbeat.max_retry must be >= 0 or null (no "
                             f"limit), got {retries!r}")
        return cls(int(interval), int(grace), retries)

    @property
    def poll_s(self) -> float:
        """How often a process waiting on other processes' trials looks for dead ones."""
        return float(min(self.interval, 2))

    def retries(self, trial: FrozenTrial) -> bool:
        """Whether a dead trial is run again (``max_retry`` counts its earlier attempts)."""
        attempts = len(trial.system_attrs.get("retry_history", [])) + 1
        return self.max_retry is None or attempts <= self.max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Queue a stale trial again with its parameters (the storage's callback)."""
        if not self.retries(trial):
            return
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in _ATTEMPT_ATTRS}
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            user_attrs={**user_attrs, ATTR_RETRY_OF: trial.number},
            system_attrs={**trial.system_attrs, "failed_trial": history[0],
                          "retry_history": history}))


def retry_of(trial: FrozenTrial | optuna.Trial) -> int | None:
    """The trial a trial replaces (a dead or interrupted attempt), if it is a retry."""
    attrs = trial.user_attrs
    return None if attrs.get(ATTR_RETRY_OF) is None else int(attrs[ATTR_RETRY_OF])


def retried(trials: list[FrozenTrial]) -> set[int]:
    """The numbers of the trials that a later trial retries (they count through it)."""
    numbers = {n for n in map(retry_of, trials) if n is not None}
    for t in trials:  # a retry of a retry lists every attempt before it
        numbers.update(int(n) for n in t.system_attrs.get("retry_history", []))
    return numbers


def enabled(study: optuna.Study) -> bool:
    """Whether the study's storage beats (a stored study with heartbeats on)."""
    return is_heartbeat_enabled(study._storage)


def stale_trials(study: optuna.Study) -> list[int]:
    """The ids of running trials whose sweep process is dead (reads only, no write).

    Dead: silent for the grace period (Optuna's stale trials, any host), or started by
    a process of this host that is gone (noticed at once, as for locks).
    """
    storage = study._storage
    if not isinstance(storage, BaseHeartbeat) or not is_heartbeat_enabled(storage):
        return []
    stale = set(storage._get_stale_trial_ids(study._study_id))
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get(PID)
        if (t.user_attrs.get(HOST) == host and pid is not None
                and not pid_alive(int(pid), t.user_attrs.get(PID_STARTED))):
            stale.add(t._trial_id)
    return sorted(stale)


def _beating(study: optuna.Study) -> Any:
    """The study's storage as a heartbeat storage (checked by :func:`enabled` first)."""
    return study._storage


def fail_stale(study: optuna.Study) -> list[int]:
    """Fail the trials whose worker stopped beating and queue them again.

    Optuna's ``fail_stale_trials``, plus the reason recorded on each trial before it
    fails (a finished trial's attributes can't change): who stopped beating, and since
    when. Processes may race on a trial; the storage lets one of them fail it.

    Returns:
        The numbers of the trials this process failed.
    """
    if not enabled(study):
        return []
    storage = _beating(study)
    callback = storage.get_heartbeat_stale_trial_callback()
    grace = getattr(callback, "grace_period", "?")
    failed: list[FrozenTrial] = []
    for trial_id in stale_trials(study):
        trial = storage.get_trial(trial_id)
        owner = f"{trial.user_attrs.get(HOST, '?')}:{trial.user_attrs.get(PID, '?')}"
        try:
            storage.set_trial_user_attr(
                trial_id, ATTR_ERROR, f"its sweep process {owner} stopped beating (gone, or "
                                      f"no heartbeat for {grace} s: frozen, killed, host lost)")
            storage.set_trial_user_attr(trial_id, ATTR_WORKER_DIED, owner)
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it finished, or another process failed it first
        failed.append(trial)
        retried = callback is not None and (not isinstance(callback, Heartbeat)
                                            or callback.retries(trial))
        again = "it is retried" if retried else (
            f"not retried: every run of its parameters died (max_retry="
            f"{getattr(callback, 'max_retry', None)})")
        log.warning("Trial %d failed: its sweep process %s stopped beating; %s",
                    trial.number, owner, again)
    for trial in failed:
        if callback is not None:  # the trial as it is now: FAIL, with the reason
            callback(study, storage.get_trial(trial._trial_id))
    return [trial.number for trial in failed]


def taken_over(study: optuna.Study, trial: optuna.Trial) -> bool:
    """Whether another process failed this process's trial (it stopped beating for a while)."""
    return bool(enabled(study)
                and study._storage.get_trial(trial._trial_id).state is not TrialState.RUNNING)


class TrialBeats:
    """Beat every trial this sweep process runs, from one thread, while it runs them."""

    def __init__(self, study: optuna.Study, interval: float) -> None:
        self._storage = _beating(study)
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._beats = Periodic(self._beat_all, interval, f"study {study.study_name}")
        self._started = False

    def add(self, trial: optuna.Trial) -> None:
        """Beat a trial now (a trial without a beat is never found stale) and from now on."""
        self._storage.record_heartbeat(trial._trial_id)
        with self._lock:
            self._ids.add(trial._trial_id)
        if not self._started:
            self._beats.start()
            self._started = True

    def discard(self, trial: optuna.Trial) -> None:
        """Stop beating a trial (it was told)."""
        with self._lock:
            self._ids.discard(trial._trial_id)

    def stop(self) -> None:
        """Stop the thread."""
        self._beats.stop()

    def _beat_all(self) -> None:
        with self._lock:
            ids = sorted(self._ids)
        for trial_id in ids:
            self._storage.record_heartbeat(trial_id)
