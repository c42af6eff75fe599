"""Cross-process locks in a real Optuna storage (SQLite), and the liveness of processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from hydra_plugins.tabflow_sweeper.locks import (
    LockBusyError,
    pid_alive,
    process_started,
    running_trials,
    storage_lock,
    this_process,
)
from hydra_plugins.tabflow_sweeper.stores import optuna_storage
from tests.helpers import holding_process


@pytest.fixture
def storage(tmp_path):
    return optuna_storage(f"sqlite:///{tmp_path}/optuna.db")


def test_a_held_lock_refuses_a_second_holder_until_released(storage):
    with storage_lock(storage, "study~register"):
        with pytest.raises(LockBusyError, match="study~register"), \
                storage_lock(storage, "study~register", wait_s=0):
            pass
        with storage_lock(storage, "study~parent", wait_s=0):  # other names are free
            pass
    with storage_lock(storage, "study~register", wait_s=0):  # released on exit
        pass


STORAGE_IMPORTS = ("from hydra_plugins.tabflow_sweeper.locks import storage_lock; "
                   "from hydra_plugins.tabflow_sweeper.stores import optuna_storage")


def test_a_lock_held_by_another_process_is_seen_there(tmp_path, storage):
    url = f"sqlite:///{tmp_path}/optuna.db"
    holder = holding_process(STORAGE_IMPORTS,
                             f"storage_lock(optuna_storage({url!r}), 'shared~ask')")
    try:
        with pytest.raises(LockBusyError), storage_lock(storage, "shared~ask", wait_s=0.3):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_whose_holder_died_here_is_taken_at_once(tmp_path, storage):
    url = f"sqlite:///{tmp_path}/optuna.db"
    holder = holding_process(STORAGE_IMPORTS,
                             f"storage_lock(optuna_storage({url!r}), 'study~register')")
    holder.kill()  # SIGKILL: it never releases the lock
    holder.wait()
    start = time.monotonic()
    with storage_lock(storage, "study~register", wait_s=0):  # no 30-minute wait
        pass
    assert time.monotonic() - start < 5


def _fake_lock(storage, name, record):
    lock_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], name)
    for key, value in record.items():
        storage.set_study_user_attr(lock_id, key, value)


def test_another_hosts_lock_is_kept_while_it_beats_and_broken_once_silent(storage):
    _fake_lock(storage, "s~ask", {"holder_host": "elsewhere", "holder_pid": 1,
                                  "acquired_at": time.time() - 3600, "beat_at": time.time()})
    with pytest.raises(LockBusyError, match="elsewhere:1"), \
            storage_lock(storage, "s~ask", wait_s=0, grace_s=60):
        pass  # held for an hour, but it beat a moment ago
    _fake_lock(storage, "t~ask", {"holder_host": "elsewhere", "holder_pid": 1,
                                  "acquired_at": time.time() - 90, "beat_at": time.time() - 61})
    with storage_lock(storage, "t~ask", wait_s=0, grace_s=60):
        pass  # silent for longer than the grace period: its host is gone


def test_an_unbeaten_lock_is_broken_after_the_grace_period(storage):
    _fake_lock(storage, "old~register", {"acquired_at": time.time() - 3600})
    with storage_lock(storage, "old~register", wait_s=0, grace_s=60):
        pass


def test_a_held_lock_beats(storage):
    with storage_lock(storage, "b~ask", interval_s=0.2):
        lock_id = storage.get_study_id_from_name("b~ask")
        first = storage.get_study_user_attrs(lock_id)
        assert "beat_at" not in first  # a short hold writes no beat
        time.sleep(0.7)
        beat = storage.get_study_user_attrs(lock_id)["beat_at"]
        assert beat > first["acquired_at"]
    with pytest.raises(KeyError):  # released: the lock and its beats are gone
        storage.get_study_id_from_name("b~ask")


def test_a_frozen_holder_keeps_its_lock_for_the_grace_period_then_loses_it(tmp_path, storage):
    """SIGSTOP a holder on this host: its pid lives, but it stops beating."""
    import signal

    url = f"sqlite:///{tmp_path}/optuna.db"
    holder = holding_process(STORAGE_IMPORTS, f"storage_lock(optuna_storage({url!r}), "
                                              f"'f~register', interval_s=0.3, grace_s=1.5)")
    try:
        # Alive and beating: kept past the grace period.
        with pytest.raises(LockBusyError), \
                storage_lock(storage, "f~register", wait_s=2, grace_s=1.5):
            pass
        os.kill(holder.pid, signal.SIGSTOP)
        start = time.monotonic()
        with storage_lock(storage, "f~register", wait_s=20, grace_s=1.5):
            taken_after = time.monotonic() - start
        assert 1.0 < taken_after < 6, taken_after  # its last beat + 1.5 s, not at once
    finally:
        holder.kill()
        holder.wait()


def test_pid_alive_tells_live_from_gone():
    assert pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_alive(child.pid)
    assert not pid_alive(0)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_pid_given_to_a_later_process_is_not_the_one_recorded():
    """Runs and trials record their process's start time with its pid: a long-lived
    machine reuses pids, and a dead sweep's runs must not look alive through another."""
    me = this_process()
    assert me["tabflow.pid"] == os.getpid()
    assert me["tabflow.pid_started"] == process_started(os.getpid())
    assert pid_alive(os.getpid(), me["tabflow.pid_started"])
    assert not pid_alive(os.getpid(), str(int(me["tabflow.pid_started"]) + 1))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_process_that_ended_but_was_not_reaped_is_gone():
    # A zombie: ended, not yet waited for (where PID 1 reaps no orphans, it stays forever).
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child did not end"
        time.sleep(0.05)
    try:
        assert not pid_alive(child.pid)
    finally:
        child.wait()


def test_running_trials_counts_only_running_ones(tmp_path, storage):
    assert running_trials(storage, "absent") == 0
    study = optuna.create_study(study_name="s", storage=storage)
    study.tell(study.ask(), 1.0)
    study.ask()
    assert running_trials(storage, "s") == 1


def test_a_beat_in_the_future_is_judged_by_whether_it_changes(storage):
    """Another host's clock an hour ahead: dead, its lock goes after the grace period; alive
    (its future beat keeps changing), it keeps it."""
    import threading

    ahead = time.time() + 3600
    _fake_lock(storage, "skew~ask", {"holder_host": "elsewhere", "holder_pid": 7,
                                     "acquired_at": ahead, "beat_at": ahead})
    with pytest.raises(LockBusyError) as busy, storage_lock(storage, "skew~ask", wait_s=0):
        pass
    message = str(busy.value)
    # An hour ahead, less the moments the test took to get here (3599 under load).
    assert re.search(r"elsewhere:7, last beat 3(600|5\d\d) s in the future", message), message
    assert "clear the lock with: tabflow unlock skew~ask" in message
    start = time.monotonic()
    with storage_lock(storage, "skew~ask", wait_s=10, grace_s=1):
        assert 1 <= time.monotonic() - start < 5  # silent while watched: broken

    _fake_lock(storage, "live~ask", {"holder_host": "elsewhere", "holder_pid": 8,
                                     "acquired_at": ahead, "beat_at": ahead})
    lock_id, stop = storage.get_study_id_from_name("live~ask"), threading.Event()

    def beat() -> None:
        while not stop.wait(0.2):
            storage.set_study_user_attr(lock_id, "beat_at", time.time() + 3600)

    beating = threading.Thread(target=beat)
    beating.start()
    try:
        with pytest.raises(LockBusyError), storage_lock(storage, "live~ask", wait_s=2.5,
                                                        grace_s=1):
            pass
    finally:
        stop.set()
        beating.join()


def test_a_lock_record_cut_short_is_broken_once_it_stays_so(storage, monkeypatch):
    """A disk that filled while the lock was written left only the host: no pid, no time."""
    from hydra_plugins.tabflow_sweeper import locks

    monkeypatch.setattr(locks, "UNRECORDED_GRACE_S", 0.5)
    _fake_lock(storage, "half~ask", {"holder_host": "elsewhere"})
    with pytest.raises(LockBusyError), storage_lock(storage, "half~ask", wait_s=0):
        pass
    with storage_lock(storage, "half~ask", wait_s=5):
        pass
