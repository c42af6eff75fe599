"""Pruned sweeps for real: CV folds and boosting stages, every launcher, kills, PostgreSQL.

Workloads where some configurations are clearly bad (logistic regression with C down to
1e-4 scores ~0.63 on breast_cancer), so a pruner has something to stop.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.e2e.test_sweeps import launch, trial_states
from tests.helpers import assert_ok, client_for, run_train, runs_of
from tests.helpers import run_tabflow as tabflow
from tests.helpers.services import postgres_database, postgres_unavailable

pytestmark = pytest.mark.slow
PRUNED_SWEEP = ("-m", "model=logreg", "sweep=wide", "cv.folds=5", "evaluation.figures=false",
                "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=3")


def study(root: Path) -> optuna.Study:
    (name,) = optuna.get_all_study_names(f"sqlite:///{root}/optuna.db")
    return optuna.load_study(study_name=name, storage=f"sqlite:///{root}/optuna.db")


def trial_runs(root: Path, experiment: str = "breast_cancer") -> list:
    _, runs = runs_of(root, experiment)
    return [r for r in runs if r.data.tags.get("tabflow.role") == "trial"]


@pytest.mark.parametrize("launcher", [
    (), ("hydra.launcher.n_jobs=2",), ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")],
    ids=["in-process", "warm-workers", "joblib"])
def test_pruned_trials_are_first_class_everywhere(tmp_path, launcher):
    proc = run_train(tmp_path, *PRUNED_SWEEP, "hydra.sweeper.n_trials=12",
                     "registry.enabled=false", *launcher)
    assert_ok(proc)
    out = proc.stdout + proc.stderr
    s = study(tmp_path)
    pruned = s.get_trials(states=(TrialState.PRUNED,))
    assert pruned and len(s.trials) == 12  # pruned trials count toward the total
    assert "PRUNED (pruned at step" in out  # the progress line
    for t in pruned:  # each stopped at a fold, its running mean reported through the storage
        assert set(t.intermediate_values) == set(range(1, max(t.intermediate_values) + 1))
        assert max(t.intermediate_values) < 5
    runs = {int(r.data.tags["optuna.trial"]): r for r in trial_runs(tmp_path)}
    client = client_for(tmp_path)
    for t in pruned:
        run = runs[t.number]
        assert run.info.status == "KILLED" and "error" not in run.data.tags
        assert run.data.tags["optuna.pruned_at_step"] == str(max(t.intermediate_values))
        history = client.get_metric_history(run.info.run_id, "intermediate_val_accuracy")
        assert {m.step: m.value for m in history} == pytest.approx(t.intermediate_values)
        assert "val_accuracy" not in run.data.metrics  # never ranked, never registered
    parent = next(r for r in runs_of(tmp_path)[1] if r.data.tags.get("tabflow.role") == "sweep")
    assert parent.data.metrics["trials_pruned"] == len(pruned)
    assert s.best_trial.state is TrialState.COMPLETE
    assert parent.data.tags["best.trial"] == str(s.best_trial.number)
    listing = tabflow(tmp_path, "runs", "breast_cancer")
    assert f"pruned (stopped early by the sweep's pruner, never ranked): {len(pruned)}" \
        in listing.stdout


def test_boosting_stages_are_pruned_on_the_validation_split(tmp_path):
    assert_ok(run_train(tmp_path, "-m", "model=gb", "sweep=wide", "cv.folds=0",
                        "dataset=synthetic", "dataset.synthetic.n_rows=2000",
                        "evaluation.stage_size=25", "hydra.sweeper.n_trials=10",
                        "evaluation.figures=false", "hydra/sweeper/pruner=median",
                        "hydra.sweeper.pruner.n_startup_trials=2"))
    s = study(tmp_path)
    pruned = s.get_trials(states=(TrialState.PRUNED,))
    assert pruned
    for t in pruned:  # scored every 25 boosting stages, stopped before the last
        steps = sorted(t.intermediate_values)
        assert steps == list(range(25, 25 * len(steps) + 1, 25))
        assert steps[-1] < t.params["model.n_estimators"]
    complete = s.get_trials(states=(TrialState.COMPLETE,))
    assert all(max(t.intermediate_values) == t.params["model.n_estimators"] for t in complete)


def test_a_families_sweep_prunes_across_families(tmp_path):
    assert_ok(run_train(tmp_path, "-m", "experiment=penguins_families",
                        "hydra.sweeper.n_trials=10", "hydra.sweeper.timeout=null", "cv.folds=5",
                        "evaluation.figures=false", "hydra/sweeper/pruner=percentile",
                        "hydra.sweeper.pruner.n_startup_trials=2"))
    s = study(tmp_path)
    assert len(s.trials) == 10 and s.get_trials(states=(TrialState.PRUNED,))
    client = client_for(tmp_path)
    assert client.get_model_version_by_alias("penguins", "staging")


def test_a_killed_pruned_sweep_resumes_to_the_configured_total(tmp_path):
    sweep = ("-m", "dataset=synthetic", "dataset.synthetic.n_rows=10000", "model=rf",
             "sweep=wide", "cv.folds=3", "hydra.sweeper.n_trials=6", "evaluation.figures=false",
             "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=1")
    proc = launch(tmp_path, *sweep)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # kill it mid-trial, once something is done
            states = trial_states(tmp_path / "optuna.db")
            if states.count("COMPLETE") + states.count("PRUNED") >= 2 and "RUNNING" in states:
                break
            assert proc.poll() is None
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert_ok(run_train(tmp_path, *sweep))
    s = study(tmp_path)
    counted = s.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(counted) == 6  # the configured total: pruned trials count, retries don't
    assert any(t.user_attrs.get("tabflow.interrupted") for t in s.trials)


@pytest.mark.skipif(postgres_unavailable() is not None, reason="PostgreSQL unavailable")
def test_two_processes_prune_one_postgres_study(tmp_path):
    from tests.e2e.test_scale_out import start_workers

    with postgres_database() as optuna_db:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env["TABFLOW_OPTUNA_DB"] = optuna_db
        # The 25th percentile, not the median: which trials two processes prune depends on
        # how they interleave, and a median pruner pruned none of 14 once in CI.
        procs = start_workers(2, tmp_path, env, [*PRUNED_SWEEP, "hydra.sweeper.n_trials=14",
                                                 "hydra/sweeper/pruner=percentile",
                                                 "hydra.sweeper.pruner.n_startup_trials=3",
                                                 "hydra/sweeper/storage=postgres",
                                                 "registry.enabled=false"])
        logs = [p.communicate(timeout=300)[0] for p in procs]
        assert all(p.returncode == 0 for p in procs), "\n".join(log[-2000:] for log in logs)
        from tests.helpers.services import postgres_url

        url = postgres_url(optuna_db)
        (name,) = optuna.get_all_study_names(url)
        s = optuna.load_study(study_name=name, storage=url)
        assert len(s.trials) == 14 and s.get_trials(states=(TrialState.PRUNED,))
        # Each process pruned its own jobs through the shared storage.
        assert sum("PRUNED (pruned at step" in log for log in logs) >= 1
