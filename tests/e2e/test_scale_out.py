"""Past one machine: sweep workers sharing a PostgreSQL study and an MLflow tracking server.

Runs the README's "Scaling out" commands for real: `tabflow server` backed by a fresh
PostgreSQL database, and three `python src/train.py -m ...` workers, each with its own
project root (as on separate machines), sharing one Optuna study in another database.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.helpers import TRAIN
from tests.helpers.services import (
    postgres_database,
    postgres_unavailable,
    postgres_url,
    tracking_server,
)

pytestmark = pytest.mark.slow

WHY_NOT = postgres_unavailable()
needs_postgres = pytest.mark.skipif(WHY_NOT is not None, reason=f"PostgreSQL: {WHY_NOT}")

TRIALS = 12
WORKER = ["-m", "model=logreg", "sweep=narrow", f"hydra.sweeper.n_trials={TRIALS}",
          "tracking=server", "hydra/sweeper/storage=postgres"]


def start_workers(n: int, base: Path, env: dict[str, str],
                  overrides: list[str]) -> list[subprocess.Popen[str]]:
    """Start n sweep workers at once, each in its own project root."""
    procs = []
    for i in range(n):
        root = base / f"worker{i}"
        root.mkdir()
        worker_env = {**env, "TABFLOW_ROOT": str(root), "PYTHONWARNINGS": "ignore"}
        procs.append(subprocess.Popen([sys.executable, str(TRAIN), *overrides], cwd=root,
                                      env=worker_env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    return procs


@needs_postgres
def test_three_workers_share_one_study_one_parent_and_register_once(tmp_path):
    import optuna

    with postgres_database() as mlflow_db, postgres_database() as optuna_db, \
            tracking_server(postgres_url(mlflow_db), tmp_path / "artifacts",
                            tmp_path / "server.log") as url:
        env = {k: v for k, v in os.environ.items()
               if k not in ("MLFLOW_TRACKING_URI", "TABFLOW_OPTUNA_DB")}
        env.update({"MLFLOW_TRACKING_URI": url, "TABFLOW_OPTUNA_DB": optuna_db})
        procs = start_workers(3, tmp_path, env, WORKER)
        outputs = [p.communicate(timeout=900)[0] for p in procs]
        for proc, out in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, out[-4000:]

        # Optuna: exactly the configured trials, all complete, no lock left behind.
        storage = postgres_url(optuna_db)
        names = optuna.get_all_study_names(storage)
        assert len(names) == 1, names
        trials = optuna.load_study(study_name=names[0], storage=storage).trials
        assert len(trials) == TRIALS
        assert {t.state.name for t in trials} == {"COMPLETE"}
        assert len({t.user_attrs["tabflow.pid"] for t in trials}) >= 2  # the work was shared

        # MLflow: one parent, every trial once under it, one registered version.
        client = MlflowClient(url)
        experiment = client.get_experiment_by_name("breast_cancer")
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        parents = [r for r in runs if r.data.tags.get("tabflow.role") == "sweep"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        children = [r for r in runs if r.data.tags.get("tabflow.role") == "trial"]
        assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
                   for r in children)
        assert sorted(int(r.data.tags["optuna.trial"]) for r in children) == list(range(TRIALS))
        assert {r.info.status for r in children} == {"FINISHED"}
        assert {t.user_attrs["mlflow_run_id"] for t in trials} == {
            r.info.run_id for r in children}
        versions = client.search_model_versions("name = 'breast_cancer'")
        assert len(versions) == 1
        assert client.get_model_version_by_alias("breast_cancer", "staging").version == "1"
        assert sum("Registered breast_cancer version 1" in out for out in outputs) == 1

        # Artifacts went through the server, not to the workers' disks.
        assert any((tmp_path / "artifacts").rglob("MLmodel"))
        assert not any((tmp_path / f"worker{i}" / "mlruns").exists() for i in range(3))


OPEN_STORAGE = """
import sys, time
from hydra_plugins.tabflow_sweeper.stores import optuna_storage
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all start at the same instant
optuna_storage(sys.argv[1])
"""


@needs_postgres
def test_processes_opening_a_fresh_postgres_study_storage_together_all_succeed():
    """The losers of the schema race see the winner's tables appear (DuplicateTable)."""
    import time

    for _ in range(3):
        with postgres_database() as db:
            start = time.time() + 4.0  # after every process has imported
            procs = [subprocess.Popen([sys.executable, "-c", OPEN_STORAGE, postgres_url(db),
                                       str(start)], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True) for _ in range(6)]
            for proc in procs:
                out = proc.communicate(timeout=120)[0]
                assert proc.returncode == 0, out[-3000:]


def test_compose_file_binds_localhost_and_holds_no_password():
    """deploy/compose.yaml can't run here (no Docker in CI); check what can be checked."""
    import yaml

    from tests.helpers import REPO

    path = REPO / "deploy" / "compose.yaml"
    spec = yaml.safe_load(path.read_text())
    ports = [p for service in spec["services"].values() for p in service.get("ports", [])]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)
    server = spec["services"]["mlflow"]["command"]
    assert "postgresql://mlflow@postgres:5432/mlflow" in server and "--serve-artifacts" in server
    assert "${POSTGRES_PASSWORD" in path.read_text()  # from the environment only
    assert (REPO / "deploy" / "mlflow.Dockerfile").exists()
