"""Hydra's process launchers: child runs land under the sweep's parent whatever runs them,
and jobs reach their Optuna trial (pruning reports) from the launcher's processes.

joblib is exercised in test_sweeps.py; here submitit's local executor (the same code path
as submitit_slurm, minus the cluster) and a local Ray runtime (hydra-ray-launcher).
"""

from __future__ import annotations

import importlib.util
import sqlite3

import pytest

from tests.helpers import assert_ok, run_train_watched

pytestmark = pytest.mark.slow


def tracked(root) -> tuple[dict[str, int], set[str], int]:
    """Runs by role and status, the pids that ran trials, and registered versions."""
    with sqlite3.connect(root / "mlflow.db") as con:
        roles = dict(((f"{role}:{status}", n) for role, status, n in con.execute(
            "SELECT t.value, r.status, COUNT(*) FROM runs r JOIN tags t ON "
            "t.run_uuid = r.run_uuid AND t.key = 'tabflow.role' GROUP BY 1, 2")))
        pids = {v for (v,) in con.execute("SELECT value FROM tags WHERE key = 'tabflow.pid'")}
        parents = {v for (v,) in con.execute(
            "SELECT value FROM tags WHERE key = 'mlflow.parentRunId'")}
        versions = con.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0]
    assert len(parents) == 1  # every trial under the one parent
    return roles, pids, versions


# A pruner that never prunes 4 trials: each job still reports every CV fold to its trial,
# through the study's storage, from the launcher's own process.
REPORTING = ("hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=10")


def reported_trials(root) -> int:
    """How many trials received intermediate values from their jobs."""
    with sqlite3.connect(root / "optuna.db") as con:
        return con.execute("SELECT COUNT(DISTINCT trial_id) FROM "
                           "trial_intermediate_values").fetchone()[0]


def test_submitit_local_runs_trials_in_their_own_processes(project_root):
    out, watch = run_train_watched(project_root, "-m", "model=logreg", "sweep=narrow",
                                   "hydra.sweeper.n_trials=4", "hydra/launcher=submitit_local",
                                   "hydra.sweeper.n_jobs=2", *REPORTING)
    assert_ok(out)
    # Jobs of several seconds (a process each) beat all along: none looked dead.
    assert watch["stale"] == [] and watch["beat_while_running"] >= 1, watch
    roles, pids, versions = tracked(project_root)
    assert roles == {"sweep:FINISHED": 1, "trial:FINISHED": 4}
    assert len(pids) == 4  # one submitit process per job
    assert versions == 1
    assert reported_trials(project_root) == 4


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None,
                    reason="hydra-ray-launcher is not installed (pip install -e '.[ray]')")
def test_ray_launcher_on_a_local_ray_runtime(project_root):
    out, watch = run_train_watched(
        project_root, "-m", "model=logreg", "sweep=narrow", "hydra.sweeper.n_trials=4",
        "hydra/launcher=ray", "hydra.sweeper.n_jobs=2", "+hydra.launcher.ray.init.num_cpus=2",
        "+hydra.launcher.ray.init.include_dashboard=false", *REPORTING)
    assert_ok(out)
    assert watch["stale"] == [] and watch["beat_while_running"] >= 1, watch
    roles, _pids, versions = tracked(project_root)
    assert roles == {"sweep:FINISHED": 1, "trial:FINISHED": 4}
    assert versions == 1
    assert reported_trials(project_root) == 4
