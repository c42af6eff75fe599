"""Heartbeats on a real SQLite study storage: dead workers' trials fail, retry, count once.

Time passes by moving a trial's last heartbeat back in the database (the storage's own
clock decides staleness); processes frozen for real are in tests/e2e/test_heartbeats.py.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time

import pytest
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hydra_plugins.tabflow_sweeper import _heartbeat, _study
from hydra_plugins.tabflow_sweeper._heartbeat import Heartbeat, TrialBeats
from hydra_plugins.tabflow_sweeper.locks import lock_timing
from tabflow.contract import ATTR_ERROR, ATTR_RETRY_OF, HOST, PID

SPACE = {"x": FloatDistribution(0, 1)}


@pytest.fixture
def beating(tmp_path):
    """A stored study whose trials beat every second and die after two silent seconds."""
    heartbeat = Heartbeat(interval=1, grace_period=2, max_retry=1)
    study = _study.create_study("s", f"sqlite:///{tmp_path}/optuna.db", None, ["maximize"],
                                heartbeat=heartbeat)
    beats = TrialBeats(study, heartbeat.interval)
    yield study, heartbeat, beats, tmp_path / "optuna.db"
    beats.stop()


def _start(study, beats, host="node-b", pid=4242):
    """A trial started (and beaten once) by a sweep process on another host."""
    (trial,), _ = _study.ask_batch(study, True, n_trials=10, batch=1)
    trial._suggest("x", SPACE["x"])
    _study.set_user_attrs(trial, {HOST: host, PID: pid})
    beats.add(trial)
    beats.discard(trial)  # that process stops beating from now on
    return trial


def _silence(db, trial=None, seconds=10):
    """Move heartbeats (all, or one trial's) back, as if their workers had been silent."""
    which = "" if trial is None else f" WHERE trial_id = {trial._trial_id}"
    with sqlite3.connect(db) as con:
        con.execute("UPDATE trial_heartbeats SET heartbeat = "
                    f"datetime(heartbeat, '-{seconds} seconds'){which}")


@pytest.mark.parametrize(("node", "message"), [
    ({"interval": 0, "grace_period": 60}, "interval must be a whole number"),
    ({"interval": 20, "grace_period": 20}, "must be longer than the interval"),
    ({"interval": 20, "grace_period": 60, "max_retry": -1}, "max_retry must be >= 0"),
])
def test_bad_heartbeat_settings_are_named(node, message):
    with pytest.raises(ValueError, match=message):
        Heartbeat.from_config(OmegaConf.create(node))


def test_heartbeats_are_off_with_a_null_interval_and_locks_then_use_their_defaults():
    off = OmegaConf.create({"interval": None, "grace_period": 60, "max_retry": 1})
    assert Heartbeat.from_config(off) is None
    assert lock_timing(off) == {}
    on = OmegaConf.create({"interval": 5, "grace_period": 15, "max_retry": None})
    assert Heartbeat.from_config(on) == Heartbeat(5, 15, None)
    assert lock_timing(on) == {"interval_s": 5.0, "grace_s": 15.0}


def test_a_silent_trial_fails_with_its_reason_and_is_retried_with_its_parameters(beating):
    study, _, beats, db = beating
    trial = _start(study, beats)
    assert _heartbeat.fail_stale(study) == []  # beating a moment ago: alive
    _silence(db)
    assert _heartbeat.fail_stale(study) == [trial.number]
    dead = study.trials[trial.number]
    assert dead.state is TrialState.FAIL
    assert "node-b:4242 stopped beating" in dead.user_attrs[ATTR_ERROR]
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.params == dead.params
    assert retry.user_attrs == {ATTR_RETRY_OF: trial.number}  # not the attempt's host or error
    assert retry.system_attrs["retry_history"] == [trial.number]  # as Optuna's callback writes
    assert _heartbeat.taken_over(study, trial)
    assert _heartbeat.fail_stale(study) == []  # failed once, retried once


def test_a_trial_of_a_gone_process_on_this_host_is_taken_over_at_once(beating):
    import socket
    import subprocess
    import sys

    study, _, beats, _ = beating
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    alive = _start(study, beats, host=socket.gethostname(), pid=os.getpid())
    trial = _start(study, beats, host=socket.gethostname(), pid=gone.pid)
    assert _heartbeat.fail_stale(study) == [trial.number]  # no grace period to wait for
    assert study.trials[alive.number].state is TrialState.RUNNING


def test_a_retried_trial_counts_once_and_a_retry_that_dies_too_counts_as_a_failure(beating):
    study, _, beats, db = beating
    first = _start(study, beats)
    _silence(db)
    _study.ask_batch(study, True, n_trials=1, batch=1)  # fails the dead trial, ...
    assert _study.count_done(study.get_trials()) == 0  # ... which does not count
    (retry,) = study.get_trials(states=(TrialState.RUNNING,))  # its retry started instead
    assert retry.params == study.trials[first.number].params
    running = _trial(study, retry.number)
    beats.add(running)  # its process beats once, then dies too
    beats.discard(running)
    _silence(db)
    assert _heartbeat.fail_stale(study) == [retry.number]
    assert not study.get_trials(states=(TrialState.WAITING,))  # max_retry=1: no third run
    assert _study.count_done(study.get_trials()) == 1  # the retry's failure, once
    assert _study.ask_batch(study, True, n_trials=1, batch=1)[0] == []


def _trial(study, number):
    import optuna

    return optuna.Trial(study, study.trials[number]._trial_id)


def test_trials_beat_while_they_run(beating):
    study, _, _, db = beating
    beats = TrialBeats(study, 0.3)
    (_trial_started,), _ = _study.ask_batch(study, True, n_trials=10, batch=1, beats=beats)
    _silence(db)
    time.sleep(1.0)  # the thread beats again: the trial is alive
    assert _heartbeat.stale_trials(study) == []
    beats.stop()


def test_a_process_with_nothing_left_waits_for_others_and_takes_over_a_dead_ones(beating):
    study, heartbeat, beats, db = beating
    alive, dead = _start(study, beats), _start(study, beats, host="node-c")
    beats.add(alive)  # this one's process keeps beating, and finishes in a second
    threading.Timer(1.5, lambda: (beats.discard(alive), study.tell(alive, 0.5))).start()
    _silence(db, dead)
    taken = _study.await_others(study, True, n_trials=2, batch=1, mine=0,
                                heartbeat=heartbeat, beats=beats, timed_out=lambda: False)
    assert [t.user_attrs[ATTR_RETRY_OF] for t in taken] == [dead.number]
    study.tell(taken[0], 0.7)
    assert _study.await_others(study, True, n_trials=2, batch=1, mine=0, heartbeat=heartbeat,
                               beats=beats, timed_out=lambda: False) == []
    assert _study.count_done(study.get_trials()) == 2


def test_without_heartbeats_a_process_with_nothing_left_ends_at_once(tmp_path):
    study = _study.create_study("s", f"sqlite:///{tmp_path}/optuna.db", None, ["maximize"])
    study.ask(SPACE)
    start = time.monotonic()
    assert _study.await_others(study, True, n_trials=1, batch=1, mine=0, heartbeat=None,
                               beats=None, timed_out=lambda: False) == []
    assert time.monotonic() - start < 1


def test_dead_and_replaced_attempts_runs_are_closed_and_linked(tmp_path):
    """The sweep's end: one result per trial in MLflow, as in Optuna."""
    import optuna

    from tabflow.contract import ATTR_WORKER_DIED
    from tabflow.tracking.retries import close_attempts, replaced_by_study
    from tabflow.tracking.store import connect

    study = optuna.create_study()
    died = {ATTR_ERROR: "its sweep process node-b:1 stopped beating", ATTR_WORKER_DIED: "x"}
    for state, attrs in ((TrialState.FAIL, died),              # 0: dead, retried as 2
                         (TrialState.FAIL, died),              # 1: dead, retries used up
                         (TrialState.COMPLETE, {ATTR_RETRY_OF: 0}),  # 2: the retry of 0
                         (TrialState.COMPLETE, {})):           # 3: a plain trial
        study.add_trial(optuna.trial.create_trial(
            state=state, value=None if state is TrialState.FAIL else 0.5, user_attrs=attrs))
    store = connect(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = store.client.create_experiment("e")
    parent = store.client.create_run(experiment).info.run_id
    runs = {}
    for trial, status in ((0, "FINISHED"), (1, "RUNNING"), (2, "FINISHED"), (3, "FINISHED")):
        run = store.client.create_run(experiment, tags={
            "mlflow.parentRunId": parent, "tabflow.role": "trial", "optuna.trial": str(trial)})
        if status != "RUNNING":  # 0: a frozen worker woke up and logged its late result
            store.client.set_terminated(run.info.run_id, status)
        runs[trial] = run.info.run_id

    replaced = replaced_by_study(study.trials)
    assert set(replaced) == {"0", "1"}
    assert close_attempts(store, experiment, parent, replaced) == 2
    assert close_attempts(store, experiment, parent, replaced) == 0  # done once
    got = {n: store.client.get_run(r) for n, r in runs.items()}
    assert [got[n].info.status for n in range(4)] == ["FAILED", "FAILED", "FINISHED", "FINISHED"]
    assert got[0].data.tags["optuna.retried_as"] == "2"
    assert "retried as trial 2: its sweep process node-b:1" in got[0].data.tags["error"]
    assert "optuna.retried_as" not in got[1].data.tags
    assert "stopped beating" in got[1].data.tags["error"]
