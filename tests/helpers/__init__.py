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


def group_options(group: str) -> list[str]:
    """Return the option names of a config group (the YAML files in conf/<group>/)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def project_env(root: Path, **extra: str) -> dict[str, str]:
    """This environment for a command on the project root ``root`` (its own stores)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "TABFLOW_ROOT": str(root), "PYTHONWARNINGS": "ignore", **extra}


def run_train(root: Path, *args: str, env: dict[str, str] | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``python src/train.py ARGS`` as a user would, with stores under ``root``."""
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
