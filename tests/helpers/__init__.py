"""Helpers shared by the tests and the benchmarks: paths, real subprocess runs, store readers.

Test modules import from here (``from tests.helpers import run_train``), never from each
other; ``services`` starts real servers and PostgreSQL databases.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
TRAIN = REPO / "src" / "train.py"
CUSTOMERS = REPO / "tests" / "data" / "customers.csv"  # a shipped churn table


try:  # a third-party-style estimator for the allow-list's tests (estimators.extra)
    from sklearn.base import BaseEstimator, ClassifierMixin

    class TinyClassifier(ClassifierMixin, BaseEstimator):
        """Predicts the most frequent class of its training labels (a user's own class)."""

        def __init__(self, C: float = 1.0) -> None:
            self.C = C

        def fit(self, X: Any, y: Any) -> TinyClassifier:
            import numpy as np

            self.classes_, counts = np.unique(y, return_counts=True)
            self.majority_ = self.classes_[counts.argmax()]
            return self

        def predict(self, X: Any) -> Any:
            import numpy as np

            return np.full(len(X), self.majority_)
except ImportError:  # helpers are also imported where scikit-learn isn't needed
    pass


def group_options(group: str) -> list[str]:
    """Return the option names of a config group (the YAML files in conf/<group>/)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def project_env(root: Path, **extra: str) -> dict[str, str]:
    """This environment for a command on the project root ``root`` (its own stores)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "TABFLOW_ROOT": str(root), "PYTHONWARNINGS": "ignore", **extra}


def without_report(args: tuple[str, ...]) -> tuple[str, ...]:
    """A sweep's arguments with its report off, unless they set figures themselves.

    The report (figures of the final model and the search, ~3 s a sweep) is checked by the
    tests that ask for it (``report=True`` or an ``evaluation.*figures`` argument); the
    figure settings are not part of a study's identity, so re-runs resume alike.
    """
    if "-m" not in args or any(a.startswith(("evaluation.figures", "evaluation.trial_figures"))
                               for a in args):
        return args
    return (*args, "evaluation.figures=false")


_EMPTY_STORE: list[Path] = []  # this process's empty MLflow store, made once


def seed_store(root: Path) -> None:
    """Give a project root without a tracking store an empty one, as MLflow makes it.

    Making one runs MLflow's schema migrations (about 1.3 s, in every test's first
    command); this process makes one once and copies it. Tests of what a fresh store does
    (its creation, "nothing is created") pass ``fresh_store=True`` to :func:`run_train`.
    """
    import sqlite3
    import tempfile

    target = root / "mlflow.db"
    if target.exists():
        return
    if not _EMPTY_STORE:
        from tabflow.tracking.store import create_sqlite_store

        folder = Path(tempfile.mkdtemp(prefix="tabflow-empty-store-"))
        create_sqlite_store(folder / "mlflow.db")  # complete: its WAL pages copied in
        _EMPTY_STORE.append(folder / "mlflow.db")
    # SQLite's backup, not a file copy: in WAL mode (tabflow's engines set it) the newest
    # pages may still be in the -wal file, and a copy of the main file alone is stale.
    source, copy = sqlite3.connect(_EMPTY_STORE[0]), sqlite3.connect(target)
    try:
        source.backup(copy)
        with copy:  # where MLflow, run in root, puts experiment 0
            copy.execute("UPDATE experiments SET artifact_location = ? "
                         "WHERE experiment_id = 0", (str(root / "mlruns" / "0"),))
    finally:
        source.close()
        copy.close()


def run_train(root: Path, *args: str, env: dict[str, str] | None = None,
              timeout: float = 600, report: bool = False, fresh_store: bool = False
              ) -> subprocess.CompletedProcess[str]:
    """Run ``python src/train.py ARGS`` as a user would, with stores under ``root``.

    A sweep's report is written only with ``report=True`` (:func:`without_report`); the
    root's tracking store is copied from an empty one unless ``fresh_store``
    (:func:`seed_store`).
    """
    args = args if report else without_report(args)
    if not fresh_store:
        seed_store(root)
    return subprocess.run([sys.executable, str(TRAIN), *args], cwd=root,
                          env=project_env(root, **(env or {})), capture_output=True,
                          text=True, timeout=timeout)


def run_tabflow(root: Path, *args: str, timeout: float = 300
                ) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tabflow ARGS`` as a user would, on the stores under ``root``."""
    return subprocess.run([sys.executable, "-m", "tabflow", *args], cwd=root,
                          env=project_env(root), capture_output=True, text=True,
                          timeout=timeout)


def holding_process(imports: str, lock: str) -> subprocess.Popen[str]:
    """Start a real process that enters ``with <lock>:`` and holds it until it is killed."""
    code = f"import time\n{imports}\nwith {lock}:\n    print('held', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    """Fail with the command's output tails unless it exited 0."""
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")


def client_for(root: Path) -> Any:
    """An MLflow client on a project root's SQLite store."""
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{root}/mlflow.db")


def runs_of(root: Path, experiment: str = "breast_cancer") -> tuple[Any, list[Any]]:
    """The client and every run of an experiment in a project root's store."""
    client = client_for(root)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment!r} was not created"
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def head_commit() -> str | None:
    """The checkout's commit, which every run must record (None before the first commit)."""
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def load_dataset_frame() -> Any:
    """The breast cancer features as the framework loads them (raw rows for the model)."""
    from omegaconf import OmegaConf

    from tabflow.config import DatasetConfig, Source, Task
    from tabflow.data import load_dataset

    return load_dataset(OmegaConf.structured(DatasetConfig(
        name="breast_cancer", source=Source.sklearn, loader="load_breast_cancer",
        task=Task.classification))).X


# Heartbeats fast enough for a test: a beat a second, dead after 3 silent seconds.
BEATING = ("hydra.sweeper.heartbeat.interval=1", "hydra.sweeper.heartbeat.grace_period=3")


def watch_heartbeats(proc: subprocess.Popen[str], storage: str,
                     dead_pids: frozenset[int] = frozenset(), timeout: float = 600
                     ) -> dict[str, Any]:
    """Watch a running sweep's study from outside until the process ends.

    Returns the trials of live processes found stale while running (must be none: their
    sweep process beat while the launcher ran the job) and how many trials were seen to
    beat again while they ran (> 0 proves beats during jobs, not only at their start).
    """
    import time

    import optuna
    import sqlalchemy

    from hydra_plugins.tabflow_sweeper import _heartbeat
    from hydra_plugins.tabflow_sweeper._heartbeat import Heartbeat
    from hydra_plugins.tabflow_sweeper.stores import optuna_storage

    opened = optuna_storage(storage, heartbeat=Heartbeat(1, 3, None))
    engine = getattr(opened, "_backend", opened).engine
    # One cheap query a look: on a loaded machine a look through Optuna's API took over a
    # second, and a trial of 2 s could be seen beating only once.
    beating = sqlalchemy.text(
        "SELECT t.number, h.heartbeat FROM trials t JOIN trial_heartbeats h "
        "ON h.trial_id = t.trial_id WHERE t.state = 'RUNNING'")
    stale: set[int] = set()
    beats: dict[int, set[Any]] = {}
    studies: dict[str, optuna.Study] = {}
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            with engine.connect() as con:
                for number, beat in con.execute(beating):
                    beats.setdefault(number, set()).add(beat)
            names = [n for n in optuna.get_all_study_names(opened) if "~" not in n]
        except Exception:  # the storage is still being created
            continue
        for name in names:
            if name not in studies:
                studies[name] = optuna.load_study(study_name=name, storage=opened)
            study = studies[name]
            stale_ids = _heartbeat.stale_trials(study)
            if not stale_ids:
                continue
            for trial in study.get_trials(deepcopy=False,
                                          states=(optuna.trial.TrialState.RUNNING,)):
                if (trial._trial_id in stale_ids
                        and trial.user_attrs.get("tabflow.pid") not in dead_pids):
                    stale.add(trial.number)
    proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    return {"stale": sorted(stale),
            "beat_while_running": sum(len(v) > 1 for v in beats.values())}


def run_train_watched(root: Path, *args: str, timeout: float = 600
                      ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """:func:`run_train` with fast heartbeats, watching its study (the project's SQLite
    storage) from outside while it runs (:func:`watch_heartbeats`)."""
    import tempfile

    seed_store(root)
    cmd = [sys.executable, str(TRAIN), *without_report(args), *BEATING]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=root, env=project_env(root), stdout=out,
                                stderr=err, text=True)
        watch = watch_heartbeats(proc, f"sqlite:///{root}/optuna.db", timeout=timeout)
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())
    return done, watch
