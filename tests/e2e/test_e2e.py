"""End to end: `python src/train.py` in a subprocess against real SQLite stores.

Each test gets a fresh project root (TABFLOW_ROOT) holding mlflow.db, optuna.db,
mlruns/ and the Hydra run dirs, and checks what a user would look at afterwards.
"""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import optuna
import pytest

from tests.helpers import (
    assert_ok,
    client_for,
    head_commit,
    load_dataset_frame,
    run_train,
    run_train_watched,
    runs_of,
)

pytestmark = pytest.mark.slow


def test_single_run_logs_one_run_with_metrics_and_model(tmp_path):
    proc = run_train(tmp_path, "model.n_estimators=30")
    assert_ok(proc)
    output = proc.stdout + proc.stderr
    # A small table of the main metrics, a row per split (the rest are in the run).
    assert re.search(r"\s+accuracy\s+balanced_accuracy\s+f1_macro\s+roc_auc\s+log_loss", output)
    assert re.search(r"validation\s+0\.\d{4}\s+0\.\d{4}", output)
    assert re.search(r"\((\d+) metrics in all: metrics.json in the output dir", output)
    assert "trials are scored" not in output  # a single run has no trials
    client, runs = runs_of(tmp_path)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["tabflow.role"] == "run"
    assert run.data.params["model.n_estimators"] == "30"
    assert run.data.params["seed"] == "42"
    assert {"train_accuracy", "val_accuracy", "val_f1", "val_roc_auc"} <= set(run.data.metrics)
    assert len(run.data.tags["dataset.digest"]) == 64
    assert "mlflow.parentRunId" not in run.data.tags
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "dataset.json"} <= artifacts
    # The run's model is the whole pipeline: it takes raw rows.
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert len(model.predict(load_dataset_frame().head(3))) == 3


def test_sweep_tracks_every_trial_and_registers_the_best(tmp_path):
    proc = run_train(tmp_path, "-m", "model=rf", "sweep=narrow", "hydra.sweeper.n_trials=3",
                     report=True)  # the default sweep, as a user runs it
    assert_ok(proc)
    client, runs = runs_of(tmp_path)
    parents = [r for r in runs if r.data.tags.get("tabflow.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("tabflow.role") == "trial"]
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["choice.model"] == "rf"
    assert parent.data.tags["sweep.n_trials"] == "3"

    # Children: nested under the parent, one per Optuna trial, with params and metrics.
    trials = set()
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        trials.add(int(child.data.tags["optuna.trial"]))
        assert {"train_accuracy", "val_accuracy", "val_f1"} <= set(child.data.metrics)
        overrides = child.data.tags["hydra.overrides"]
        n_est = child.data.params["model.n_estimators"]
        assert f"model.n_estimators={n_est}" in overrides
        assert 50 <= int(n_est) <= 150 and 3 <= int(child.data.params["model.max_depth"]) <= 8
        # The searched values stand out: a tag, and the run's description in the UI.
        depth = child.data.params["model.max_depth"]
        tuned = f"model.n_estimators={n_est} model.max_depth={depth}"
        assert child.data.tags["tabflow.tuned"] == tuned
        assert child.data.tags["mlflow.note.content"] == tuned
        assert child.data.tags.get("mlflow.source.git.commit") == head_commit()
        assert "config.yaml" in {a.path for a in client.list_artifacts(child.info.run_id)}
    assert trials == {0, 1, 2}

    # The same study in optuna.db, whose best value is the parent's best metric.
    study = optuna.load_study(study_name=parent.data.tags["optuna.study"],
                              storage=f"sqlite:///{tmp_path}/optuna.db")
    assert len(study.trials) == 3
    assert study.best_value == pytest.approx(parent.data.metrics["best_val_accuracy"])
    by_trial = {int(c.data.tags["optuna.trial"]): c for c in children}
    for t in study.trials:
        assert t.value == pytest.approx(by_trial[t.number].data.metrics["val_accuracy"])

    # The best configuration, refit and registered with the alias staging.
    assert {"test_accuracy", "test_f1", "test_roc_auc"} <= set(parent.data.metrics)
    version = client.get_model_version_by_alias("breast_cancer", "staging")
    assert str(version.version) == parent.data.tags["registry.version"]
    assert version.tags["sweep.parent_run_id"] == parent.info.run_id
    assert version.tags["best.run_id"] == parent.data.tags["best.run_id"]
    best_child = client.get_run(parent.data.tags["best.run_id"])
    assert best_child.data.metrics["val_accuracy"] == max(
        c.data.metrics["val_accuracy"] for c in children)
    # The console names the winning parameters under its "Best trial" line.
    tuned = " ".join(f"{k}={best_child.data.params[k]}" for k in study.best_params)
    assert f"\n  with {tuned}\n" in proc.stdout, proc.stdout[-1500:]

    # Served as registered: raw rows in, one prediction per row out.
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    model = mlflow.pyfunc.load_model("models:/breast_cancer@staging")
    rows = load_dataset_frame().head(10)
    predictions = model.predict(rows)
    assert len(predictions) == 10 and set(predictions) <= {0, 1}
    sk_model = mlflow.sklearn.load_model("models:/breast_cancer@staging")
    assert list(sk_model.predict(rows)) == list(predictions)
    assert [step for step, _ in sk_model.steps] == ["preprocess", "model"]
    assert model.metadata.get_input_schema().input_names() == list(rows.columns)
    # Requirements were given explicitly (not inferred) and pin scikit-learn.
    reqs = Path(mlflow.artifacts.download_artifacts(
        "models:/breast_cancer@staging/requirements.txt")).read_text()
    assert "scikit-learn==" in reqs


def test_joblib_launcher_runs_trials_in_parallel_under_one_parent(tmp_path):
    proc, watch = run_train_watched(tmp_path, "-m", "model=hgb", "sweep=wide",
                                    "hydra.sweeper.n_trials=4", "hydra/launcher=joblib",
                                    "hydra.launcher.n_jobs=2", "registry.enabled=false")
    assert_ok(proc)
    # Trials beat while joblib's workers run them (the first batch waits for the workers'
    # start-up, seconds): none looked dead to an outside observer.
    assert watch["stale"] == [] and watch["beat_while_running"] >= 1, watch
    _, runs = runs_of(tmp_path)
    parents = [r for r in runs if r.data.tags.get("tabflow.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("tabflow.role") == "trial"]
    assert len(parents) == 1 and len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert {c.info.status for c in children} == {"FINISHED"}
    assert sorted(int(c.data.tags["optuna.trial"]) for c in children) == [0, 1, 2, 3]
    assert len({c.data.tags["tabflow.pid"] for c in children}) == 2  # two worker processes
    # model=hgb sweep=wide searched hgb's own space.
    rates = {c.data.params["model.learning_rate"] for c in children}
    assert len(rates) == 4


def test_warm_workers_give_each_free_worker_its_next_trial(tmp_path):
    """hydra.launcher.n_jobs=2 on tabflow's launcher: two warm worker processes, and no
    batches: while a slow trial runs in one worker, the other works through the rest."""
    proc, watch = run_train_watched(
        tmp_path, "-m", "dataset=synthetic", "dataset.synthetic.n_rows=12000", "model=rf",
        "sweep=narrow", "hydra.sweeper.n_trials=5", "model.n_estimators=int(interval(5, 10))",
        "model.max_depth=4", "hydra.sweeper.enqueue=[{model.n_estimators: 600}]",
        "hydra.launcher.n_jobs=2", "registry.enabled=false")
    assert_ok(proc)
    assert watch["stale"] == [] and watch["beat_while_running"] >= 1, watch  # the slow one
    _, runs = runs_of(tmp_path, "synthetic")
    children = {int(r.data.tags["optuna.trial"]): r for r in runs
                if r.data.tags.get("tabflow.role") == "trial"}
    assert sorted(children) == [0, 1, 2, 3, 4]
    assert {c.info.status for c in children.values()} == {"FINISHED"}
    pids = {c.data.tags["tabflow.pid"] for c in children.values()}
    assert len(pids) == 2  # two worker processes, kept for the whole sweep
    slow = children[0]  # 600 trees: the others (5-10 trees) start and end meanwhile
    assert children[2].info.start_time < slow.info.end_time
    assert children[4].info.start_time < slow.info.end_time


def test_unopenable_tracking_store_stops_before_any_job(tmp_path):
    (tmp_path / "a_file").write_text("")  # a store path under a file can't be created
    proc = run_train(tmp_path, "-m", "sweep=narrow", "hydra.sweeper.n_trials=2",
                     f"tracking.uri=sqlite:///{tmp_path}/a_file/mlflow.db")
    assert proc.returncode != 0
    assert "cannot open the MLflow tracking store" in proc.stderr
    assert "a_file/mlflow.db" in proc.stderr
    assert not list(tmp_path.glob("multirun/**/metrics.json"))  # no model was fitted


def test_unwritable_artifact_store_fails_the_sweep_at_start(tmp_path):
    # A real fault: the experiment's artifact location is a file, so no run can store files.
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    client = client_for(tmp_path)
    client.create_experiment("breast_cancer", artifact_location=blocker.as_uri())
    proc = run_train(tmp_path, "-m", "sweep=narrow", "hydra.sweeper.n_trials=2")
    assert proc.returncode != 0
    assert "could not start tracking the sweep" in proc.stderr
    assert "not_a_dir" in proc.stderr
    assert not list(tmp_path.glob("multirun/**/metrics.json"))  # stopped before any fit
    assert not client.search_registered_models()


def test_bad_config_is_reported_before_tracking_starts(tmp_path):
    proc = run_train(tmp_path, "-m", "sweep=narrow", "objective.metric=test_accuracy",
                     fresh_store=True)
    assert proc.returncode != 0
    assert "objective.metric='test_accuracy'" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_a_failing_trial_is_tracked_failed_and_nothing_is_registered(tmp_path):
    # A real fault inside the job: scikit-learn rejects the value at fit time.
    proc = run_train(tmp_path, "-m", "sweep=narrow", "hydra.sweeper.n_trials=2",
                     "model.max_features=bogus")
    assert proc.returncode != 0
    assert "max_features" in proc.stderr
    client, runs = runs_of(tmp_path)
    child = next(r for r in runs if r.data.tags.get("tabflow.role") == "trial")
    parent = next(r for r in runs if r.data.tags.get("tabflow.role") == "sweep")
    assert child.info.status == "FAILED"
    assert "max_features" in child.data.tags["error"]
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.info.status == "FAILED"
    assert not client.search_registered_models()
