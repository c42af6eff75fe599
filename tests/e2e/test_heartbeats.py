"""Dead sweep workers, for real: one frozen (SIGSTOP), one killed on a simulated other host.

Three `python src/train.py -m ...` processes share one Optuna study and one MLflow store.
Worker A is frozen mid-trial (its pid lives, so only its silence tells it is dead);
worker B runs as if on another host (its recorded host name is `node-b`) and is killed
mid-trial (its pid can't be checked from here). Worker C must notice both through their
heartbeats, fail their trials, retry them and finish the study at its exact total, with
one parent run and one registration. Then A wakes up: its late result is dropped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from tests.helpers import BEATING, TRAIN, watch_heartbeats
from tests.helpers.services import postgres_database, postgres_unavailable, postgres_url

pytestmark = pytest.mark.slow

WHY_NOT = postgres_unavailable()
TRIALS = 5
# Trials of ~1-2 s (20,000 rows), so that a signal lands mid-trial; beats every second,
# dead after 3 silent seconds.
SWEEP = ["-m", "dataset=synthetic", "dataset.synthetic.n_rows=20000", "model=rf",
         "sweep=narrow", f"hydra.sweeper.n_trials={TRIALS}", "evaluation.figures=false",
         *BEATING]
# A sweep process whose host name is `node-b`: to every other process, another machine.
OTHER_HOST = ("import runpy, socket, sys; socket.gethostname = lambda: 'node-b'; "
              "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def _worker(root: Path, env: dict[str, str], extra: list[str], other_host: bool = False
            ) -> subprocess.Popen[str]:
    """Start a sweep worker in its own project root; its output goes to root/out.txt."""
    root.mkdir(parents=True, exist_ok=True)
    prefix = ["-c", OTHER_HOST] if other_host else []
    with open(root / "out.txt", "w") as out:
        return subprocess.Popen([sys.executable, *prefix, str(TRAIN), *SWEEP, *extra],
                                cwd=root, stdout=out, stderr=subprocess.STDOUT, text=True,
                                env={**env, "TABFLOW_ROOT": str(root),
                                     "PYTHONWARNINGS": "ignore"})


def _running_trials(storage: str) -> dict[int, optuna.trial.FrozenTrial]:
    """The study's running trials by the pid of their process (none while it is created)."""
    try:
        names = [n for n in optuna.get_all_study_names(storage) if "~" not in n]
    except Exception:  # the storage is still being created
        return {}
    running = {}
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            running[t.user_attrs.get("tabflow.pid")] = t
    return running


def _has_open_run(mlflow_db: Path, trial: int) -> bool:
    """Whether a trial's job opened its MLflow run (so that a dead attempt leaves one)."""
    query = ("SELECT COUNT(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
             "WHERE t.key = 'optuna.trial' AND t.value = ? AND r.status = 'RUNNING'")
    try:
        with sqlite3.connect(mlflow_db) as con:
            return bool(con.execute(query, (str(trial),)).fetchone()[0])
    except sqlite3.OperationalError:  # the store is being created
        return False


def _stop_both_mid_trial(storage: str, mlflow_db: Path, frozen: subprocess.Popen[str],
                         killed: subprocess.Popen[str]) -> tuple[int, int]:
    """Freeze one worker and kill the other, each in a first attempt whose run is open.

    Both are stopped (SIGSTOP) at once, when each runs a trial of its own (not a retry of
    the other's: on a loaded machine one may start late, after the other's trial went
    stale) and has opened its run; otherwise both go on and the check is made again.

    Returns:
        The frozen worker's trial and the killed worker's trial.
    """
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if not all(p.pid in _running_trials(storage) for p in (frozen, killed)):
            continue
        for p in (frozen, killed):
            os.kill(p.pid, signal.SIGSTOP)
        running = _running_trials(storage)  # what each holds, now that neither moves
        trials = [running.get(p.pid) for p in (frozen, killed)]
        if all(t is not None and "tabflow.retry_of" not in t.user_attrs
               and _has_open_run(mlflow_db, t.number) for t in trials):
            killed.kill()
            return trials[0].number, trials[1].number  # type: ignore[union-attr]
        for p in (frozen, killed):
            os.kill(p.pid, signal.SIGCONT)
    raise AssertionError("the two workers never ran a first attempt at once")


def _study_of(storage: str) -> optuna.Study:
    names = [n for n in optuna.get_all_study_names(storage) if "~" not in n]
    assert len(names) == 1, names  # one study, and no lock left behind
    assert not [n for n in optuna.get_all_study_names(storage) if "~" in n]
    return optuna.load_study(study_name=names[0], storage=storage)


# The survivor runs its trials in process (sqlite) or in two warm workers (postgres): either
# way its trials must beat all along, as an outside observer sees them.
@pytest.mark.parametrize(("backend", "launcher"), [("postgres", ["hydra.launcher.n_jobs=2"]),
                                                   ("sqlite", [])])
def test_dead_workers_trials_are_retried_and_the_study_ends_at_its_total(tmp_path, backend,
                                                                        launcher):
    if backend == "postgres" and WHY_NOT is not None:
        pytest.skip(f"PostgreSQL: {WHY_NOT}")
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "TABFLOW_OPTUNA_DB")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path}/mlflow.db"
    with postgres_database() if backend == "postgres" else contextlib.nullcontext() as database:
        if backend == "postgres":
            storage = postgres_url(database)
            env["TABFLOW_OPTUNA_DB"] = database
            sweep_storage = ["hydra/sweeper/storage=postgres"]
        else:
            storage = f"sqlite:///{tmp_path}/optuna.db"
            sweep_storage = [f"hydra.sweeper.storage={storage}"]
        frozen = _worker(tmp_path / "a", env, sweep_storage)
        elsewhere = _worker(tmp_path / "b", env, sweep_storage, other_host=True)
        try:
            frozen_trial, killed_trial = _stop_both_mid_trial(
                storage, tmp_path / "mlflow.db", frozen, elsewhere)
            survivor = _worker(tmp_path / "c", env, [*sweep_storage, *launcher])
            watch = watch_heartbeats(survivor, storage,
                                     frozenset({frozen.pid, elsewhere.pid}))
            out = (tmp_path / "c" / "out.txt").read_text()
            assert survivor.returncode == 0, out[-4000:]
            assert watch["stale"] == [] and watch["beat_while_running"] >= 1, watch
        finally:
            if frozen.poll() is None:
                os.kill(frozen.pid, signal.SIGCONT)
            if elsewhere.poll() is None:
                elsewhere.kill()
        frozen.wait(timeout=300)  # woken: it finishes its trial, too late
        elsewhere.wait()
        late = (tmp_path / "a" / "out.txt").read_text()

        study = _study_of(storage)
        trials = {t.number: t for t in study.trials}
        complete = [t for t in trials.values() if t.state.name == "COMPLETE"]
        assert len(complete) == TRIALS, (
            {n: (t.state.name, t.user_attrs.get("tabflow.pid"),
                 t.user_attrs.get("tabflow.error", "")[:300]) for n, t in trials.items()},
            out[-3000:], late[-3000:])
        for dead, host in ((frozen_trial, f"{os.uname().nodename}:{frozen.pid}"),
                           (killed_trial, f"node-b:{elsewhere.pid}")):
            assert trials[dead].state.name == "FAIL"
            assert f"{host} stopped beating" in trials[dead].user_attrs["tabflow.error"]
            (retry,) = [t for t in complete if t.user_attrs.get("tabflow.retry_of") == dead]
            assert retry.params == trials[dead].params
        assert "Trial" in out and "stopped beating; it is retried" in out
        assert f"trial {frozen_trial} DROPPED" in late, late[-3000:]
        assert frozen.returncode == 0, late[-3000:]

    # MLflow: one parent, one registration; the dead attempts' runs FAILED and linked.
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("synthetic")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("tabflow.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("tabflow.role") == "trial"]
    by_trial = {int(r.data.tags["optuna.trial"]): r for r in children}
    finished = sorted(n for n, r in by_trial.items() if r.info.status == "FINISHED")
    assert finished == sorted(t.number for t in complete)
    for dead in (frozen_trial, killed_trial):
        run = by_trial[dead]
        retry = next(t.number for t in complete if t.user_attrs.get("tabflow.retry_of") == dead)
        assert run.info.status == "FAILED"
        assert run.data.tags["optuna.retried_as"] == str(retry)
        assert "stopped beating" in run.data.tags["error"]
        assert by_trial[retry].data.tags["optuna.retry_of"] == str(dead)
    with sqlite3.connect(tmp_path / "mlflow.db") as con:
        assert con.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0] == 1



def test_a_lock_held_by_a_frozen_process_on_postgres_is_taken_over_after_the_grace_period():
    """The study's locks on PostgreSQL: a frozen holder (pid alive) beats no more."""
    if WHY_NOT is not None:
        pytest.skip(f"PostgreSQL: {WHY_NOT}")
    from hydra_plugins.tabflow_sweeper.locks import LockBusyError, storage_lock
    from hydra_plugins.tabflow_sweeper.stores import optuna_storage
    from tests.helpers import holding_process

    with postgres_database() as database:
        url = postgres_url(database)
        holder = holding_process(
            "from hydra_plugins.tabflow_sweeper.locks import storage_lock\n"
            "from hydra_plugins.tabflow_sweeper.stores import optuna_storage",
            f"storage_lock(optuna_storage({url!r}), 's~ask', interval_s=0.3, grace_s=1.5)")
        try:
            storage = optuna_storage(url)
            with pytest.raises(LockBusyError), storage_lock(storage, "s~ask", wait_s=2,
                                                            grace_s=1.5):
                pass  # beating: kept past the grace period
            os.kill(holder.pid, signal.SIGSTOP)
            start = time.monotonic()
            with storage_lock(storage, "s~ask", wait_s=20, grace_s=1.5):
                taken_after = time.monotonic() - start
            assert 1.0 < taken_after < 6, taken_after
        finally:
            holder.kill()
            holder.wait()
