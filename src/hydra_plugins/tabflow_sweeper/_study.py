"""The study's side of a sweep: open it, resume it, warm-start it, ask under its lock.

Several sweep processes may share one stored study. What they finished and what they
are running counts toward ``n_trials``; counting and asking happen under a lock in the
shared storage, so that together they run exactly ``n_trials``. A trial retried in
another (after its process was interrupted or stopped beating, :mod:`._heartbeat`)
counts once, through its retry.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any, cast

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState

from hydra_plugins.tabflow_sweeper import _heartbeat
from hydra_plugins.tabflow_sweeper._heartbeat import Heartbeat, TrialBeats
from hydra_plugins.tabflow_sweeper.contract import (
    ATTR_INTERRUPTED,
    ATTR_RETRY_OF,
    ATTR_SESSIONS,
    HOST,
    PID,
    PID_STARTED,
)
from hydra_plugins.tabflow_sweeper.locks import (
    LOCK_SUFFIX,
    lock_timing,
    pid_alive,
    storage_lock,
    this_process,
)
from hydra_plugins.tabflow_sweeper.stores import optuna_storage

log = logging.getLogger(__name__)


def create_study(name: str, storage: Any, sampler: Any, directions: list[str],
                 metric_names: list[str] | None = None, pruner: Any = None,
                 heartbeat: Heartbeat | None = None) -> optuna.Study:
    """Create or load a study, opening its storage once per process.

    ``optuna_storage`` refuses foreign or corrupt SQLite files and serialises a fresh
    file's schema set-up among processes started together. The objectives are named
    after their metrics (the Optuna dashboard shows ``val_accuracy``, not "Objective 0").
    With ``heartbeat``, the storage beats and retries the trials of dead processes.
    """
    opened = optuna_storage(str(storage), heartbeat=heartbeat) if storage else None
    study = optuna.create_study(study_name=name, storage=opened,
                                sampler=sampler, pruner=pruner,
                                directions=cast(Any, directions), load_if_exists=True)
    if metric_names and len(metric_names) == len(directions) and study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(metric_names)
    return study


def study_lock(study: optuna.Study, stored: bool, heartbeat: Heartbeat | None = None) -> Any:
    """The lock that other sweep processes on the same stored study also take.

    Its holder beats as the trials do: one frozen while holding it loses it after the
    heartbeat's grace period.
    """
    if not stored:  # an in-memory study has no other processes
        return contextlib.nullcontext()
    return storage_lock(study._storage, f"{study.study_name}{LOCK_SUFFIX}ask",
                        **lock_timing(heartbeat))


def counts_toward_total(t: FrozenTrial, retried: set[int] | None = None) -> bool:
    """Whether a trial counts toward ``n_trials``.

    Args:
        t: The trial.
        retried: The numbers of trials that a later trial retries
            (``_heartbeat.retried``): they count through their retry.
    """
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return (t.state is TrialState.FAIL and not t.user_attrs.get(ATTR_INTERRUPTED)
            and t.number not in (retried or set()))


def count_done(trials: list[FrozenTrial]) -> int:
    """How many of a study's trials count toward ``n_trials``, each retried one once."""
    retried = _heartbeat.retried(trials)
    return sum(counts_toward_total(t, retried) for t in trials)


def is_complete(storage: str, name: str, n_trials: int) -> bool:
    """Whether a re-run of this study would run nothing: it holds ``n_trials`` results.

    Not when a trial runs or waits (in this or another process, or left by a killed one),
    or an interrupted trial awaits its retry. Reads the study; creates nothing.

    Args:
        storage: The study's storage URL.
        name: The study's name.
        n_trials: How many trials the sweep asks for.
    """
    try:
        study = optuna.load_study(study_name=name, storage=optuna_storage(storage))
    except KeyError:  # no such study yet
        return False
    trials = study.get_trials(deepcopy=False)
    retried = _heartbeat.retried(trials)
    pending = any(t.state in (TrialState.RUNNING, TrialState.WAITING)
                  or (t.state is TrialState.FAIL and t.user_attrs.get(ATTR_INTERRUPTED)
                      and t.number not in retried) for t in trials)
    return not pending and count_done(trials) >= n_trials


def reclaim_interrupted(study: optuna.Study) -> list[int]:
    """Fail trials a killed sweep left RUNNING, and queue every interrupted trial again.

    Returns:
        The numbers of the trials queued again.
    """
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner, pid = t.user_attrs.get(HOST), t.user_attrs.get(PID)
        if owner not in (None, host) or (pid is not None and pid_alive(
                int(pid), t.user_attrs.get(PID_STARTED))):
            continue  # another live sweep process is running it
        Trial(study, t._trial_id).set_user_attr(ATTR_INTERRUPTED, True)
        study.tell(t.number, state=TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = _heartbeat.retried(trials)
    queued = []
    for t in trials:
        if (t.state is TrialState.FAIL and t.user_attrs.get(ATTR_INTERRUPTED)
                and t.number not in retried):
            study.enqueue_trial(t.params, user_attrs={ATTR_RETRY_OF: t.number})
            queued.append(t.number)
    return queued


def warm_start(study: optuna.Study, sets: Iterable[dict[str, Any]]) -> None:
    """Queue parameter sets to be tried first."""
    for params in sets:
        study.enqueue_trial(params)
        log.info("Warm start: queued %s", params)


def join_study(study: optuna.Study, stored: bool, sampler: Any,
               warm_sets: Iterable[dict[str, Any]], heartbeat: Heartbeat | None = None
               ) -> tuple[list[FrozenTrial], list[int]]:
    """Register this process on the study, reclaim what a killed sweep left, warm-start.

    Set-up happens under the study's lock: other sweep processes may be starting on it.

    Returns:
        The trials already launched (resume) and the numbers of those queued again.
    """
    with study_lock(study, stored, heartbeat):
        sessions = int(study.user_attrs.get(ATTR_SESSIONS, 0))
        study.set_user_attr(ATTR_SESSIONS, sessions + 1)
        if study.user_attrs.get("sampler") != type(sampler).__name__:
            study.set_user_attr("sampler", type(sampler).__name__)
        # A killed sweep of this host is being resumed: its trials were interrupted, and
        # retried however often that happens. Then processes that stopped beating.
        queued = reclaim_interrupted(study)
        _heartbeat.fail_stale(study)
        launched = [t for t in study.get_trials(deepcopy=False)
                    if t.state is not TrialState.WAITING]
        if not launched and not sessions:
            warm_start(study, warm_sets)
    if sessions or launched:
        # A fresh sampler with the same seed would re-propose the trials of the first
        # session (a resume) or of the other processes sharing the study.
        sampler.reseed_rng()
    return launched, queued


def ask_batch(study: optuna.Study, stored: bool, n_trials: int, batch: int,
              heartbeat: Heartbeat | None = None, beats: TrialBeats | None = None
              ) -> tuple[list[Trial], int]:
    """Start the next batch of trials; none when the study has all it needs.

    Args:
        study: The study.
        stored: Whether it lives in a storage other processes may share (a lock is taken).
        n_trials: The study's total.
        batch: How many trials to start at most.
        heartbeat: The study's heartbeat settings, if it beats.
        beats: This process's heartbeat thread: the new trials beat from now on.

    Returns:
        The trials started, and how many trials count toward the total so far.
    """
    with study_lock(study, stored, heartbeat):
        _heartbeat.fail_stale(study)  # a dead process's trials are queued again first
        existing = study.get_trials(deepcopy=False)
        counted = count_done(existing)
        running = sum(t.state is TrialState.RUNNING for t in existing)
        remaining = n_trials - counted - running
        if remaining <= 0:
            return [], counted
        with warnings.catch_warnings():
            # Optuna expects heartbeats only inside optimize(); this loop beats itself.
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            trials = [study.ask() for _ in range(min(remaining, batch))]
        owner = this_process()
        for trial in trials:
            # Owned and beating before the lock is released: another process looking
            # for dead trials must see that this one's owner is alive.
            set_user_attrs(trial, owner)
            if beats is not None:
                beats.add(trial)
        return trials, counted


def others_running(study: optuna.Study, mine: int = 0) -> tuple[int, bool]:
    """Return how many trials other processes run, and whether one of them is dead.

    Reads only (no lock): a process waiting on others' trials polls this.
    """
    states = [t.state for t in study.get_trials(deepcopy=False)]
    running = states.count(TrialState.RUNNING)
    waiting = TrialState.WAITING in states
    return running - mine, waiting or bool(running and _heartbeat.stale_trials(study))


def set_user_attrs(trial: Trial, attrs: dict[str, Any]) -> None:
    """Set a running trial's user attributes, in one statement on a database storage.

    Optuna writes each attribute in its own transaction (a lookup of the trial and an
    upsert each); a trial's ~30 metrics then cost more than a fast model's fit. On SQLite
    and PostgreSQL one multi-row upsert writes them all (Optuna's own per-key statement,
    with every row); other storages get Optuna's per-key calls.
    """
    if not attrs:
        return
    storage = trial.storage
    backend = getattr(storage, "_backend", storage)
    import sqlite3

    dialect = getattr(getattr(backend, "engine", None), "name", None)
    upserts = dialect == "postgresql" or (dialect == "sqlite"
                                          and sqlite3.sqlite_version_info >= (3, 24, 0))
    if not isinstance(backend, optuna.storages.RDBStorage) or not upserts:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    import json

    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from sqlalchemy.dialects import postgresql, sqlite

    insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
    table = models.TrialUserAttributeModel
    rows = [{"trial_id": trial._trial_id, "key": key, "value_json": json.dumps(value)}
            for key, value in attrs.items()]
    with _create_scoped_session(backend.scoped_session, True) as session:
        found = models.TrialModel.find_or_raise_by_id(trial._trial_id, session)
        backend.check_trial_is_updatable(trial._trial_id, cast(TrialState, found.state))
        for start in range(0, len(rows), 200):  # 3 bound values a row, well within limits
            statement = insert(table).values(rows[start:start + 200])
            session.execute(statement.on_conflict_do_update(
                index_elements=[table.trial_id, table.key],
                set_={"value_json": statement.excluded.value_json}))
    trial._cached_frozen_trial.user_attrs.update(attrs)


def tell(study: optuna.Study, trial: Trial, **kwargs: Any) -> None:
    """Tell the study a trial's outcome (grid exhaustion is not an error here)."""
    try:
        study.tell(trial, **kwargs)
    except RuntimeError as e:
        # The grid sampler calls Study.stop() once the grid is covered, which Optuna only
        # allows inside optimize(); the trial is recorded all the same (as upstream does).
        # Any other sampler's error is one.
        if "Study.stop" not in str(e) or not isinstance(study.sampler,
                                                        optuna.samplers.GridSampler):
            raise


def await_others(study: optuna.Study, stored: bool, n_trials: int, batch: int, mine: int,
                 heartbeat: Heartbeat | None, beats: TrialBeats | None,
                 timed_out: Callable[[], bool],
                 ask: Callable[[], list[Trial]] | None = None) -> list[Trial]:
    """Wait while other sweep processes run the study's last trials; take over dead ones.

    Without heartbeats this process ends at once, as before: it could not tell a dead
    process from a slow one. With them it stays until the others' trials finish (then
    returns none) or one of their processes stops beating (then its trial, queued again,
    is started here and returned), so a study always reaches its total. ``ask`` starts
    that trial (default: :func:`ask_batch`); the sweeper's records it as its own.
    """
    others, _ = others_running(study, mine)
    if others <= 0:
        return []
    if heartbeat is None or not stored:
        log.info("The other %d trial(s) of study %s are running in other sweep processes; "
                 "this one is done", others, study.study_name)
        return []
    log.info("Waiting for %d trial(s) of study %s running in other sweep processes: one "
             "whose process stops beating for %d s is retried here", others,
             study.study_name, heartbeat.grace_period)
    while not timed_out():
        time.sleep(heartbeat.poll_s)
        others, work = others_running(study, mine)
        if work or others <= 0:  # a trial is stale (fail it, start its retry), or all ended
            trials = ask() if ask is not None else \
                ask_batch(study, stored, n_trials, batch, heartbeat, beats)[0]
            if trials or others <= 0:
                return trials
    return []
