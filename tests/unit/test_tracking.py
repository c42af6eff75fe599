"""Tracking helpers and the sweeper's batch sizing, without a full sweep."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tabflow.tracking.models import compact_names, trusted_types
from tabflow.tracking.records import flatten, sanitize_key
from tabflow.tracking.store import TrackingError, connect


@pytest.mark.parametrize(("key", "expected"), [
    ("search_space/rf@hydra.sweeper.params", "search_space/rf_at_hydra.sweeper.params"),
    ("+model.extra", "model.extra"),
    ("~model.x", "model.x"),
    ("choice.hydra/launcher", "choice.hydra/launcher"),
    ("weird:key!", "weird_key_"),
])
def test_sanitize_key_gives_names_mlflow_accepts(key, expected):
    assert sanitize_key(key) == expected


def test_flatten_nested_config():
    flat = flatten({"model": {"n_estimators": 10, "max_depth": None},
                    "dataset": {"columns": ["a", "b"]}, "seed": 1})
    assert flat == {"model.n_estimators": "10", "model.max_depth": "None",
                    "dataset.columns": "['a', 'b']", "seed": "1"}
    assert len(flatten({"x": "y" * 10_000})["x"]) == 6000


def test_unreachable_server_fails_fast_naming_the_uri():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    with pytest.raises(TrackingError, match=f"127.0.0.1:{port}.*mlflow server"):
        connect(uri)
    assert time.monotonic() - start < 15


def test_trusted_types_are_exactly_the_models_own():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    forest = RandomForestClassifier(n_estimators=2).fit([[0], [1]], [0, 1])
    assert "sklearn.tree._tree.Tree" in trusted_types(forest)
    linear = LogisticRegression().fit([[0], [1]], [0, 1])
    assert "sklearn.tree._tree.Tree" not in trusted_types(linear)


@pytest.mark.parametrize("model", ["rf", "extra_trees", "hgb", "gb", "logreg", "svm", "knn"])
@pytest.mark.parametrize("dataset", ["penguins", "diabetes"])
def test_fast_trusted_types_match_a_full_skops_dump(compose_cfg, model, dataset):
    """The one-tree shortcut must list exactly what skops finds in the whole model."""
    import skops.io

    from tabflow.job import prepare

    cfg = compose_cfg(f"model={model}", f"dataset={dataset}")
    _ds, splits, pipeline = prepare(cfg)
    pipeline.fit(splits.X_train, splits.y_train)
    full = skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))
    assert sorted(trusted_types(pipeline)) == sorted(full)
    # and the model loads back with exactly those types trusted
    loaded = skops.io.loads(skops.io.dumps(pipeline), trusted=trusted_types(pipeline))
    assert (loaded.predict(splits.X_val) == pipeline.predict(splits.X_val)).all()
    # As it is logged (names as string arrays): the same predictions and output names.
    saved = compact_names(pipeline)
    logged = skops.io.loads(skops.io.dumps(saved), trusted=trusted_types(saved))
    assert (logged.predict(splits.X_val) == pipeline.predict(splits.X_val)).all()
    assert list(logged[:-1].get_feature_names_out()) == list(
        pipeline[:-1].get_feature_names_out())


def test_a_wide_models_names_are_saved_as_arrays_and_read_back_alike():
    """A 2,000-column model's file is a fraction of its size with names as JSON objects."""
    import numpy as np
    import pandas as pd
    import skops.io
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.random((40, 2000)), columns=[f" col {i}" for i in range(2000)])
    y = np.arange(40) % 2
    pipeline = Pipeline([("preprocess", ColumnTransformer([("num", StandardScaler(),
                                                            list(X.columns))])),
                         ("model", LogisticRegression())]).fit(X, y)
    saved = compact_names(pipeline)
    as_lists, as_arrays = skops.io.dumps(pipeline), skops.io.dumps(saved)
    assert len(as_arrays) * 3 < len(as_lists)
    assert pipeline.feature_names_in_.dtype == object  # the fitted model is not changed
    loaded = skops.io.loads(as_arrays, trusted=trusted_types(saved))
    assert list(loaded.feature_names_in_) == list(X.columns)  # spaces kept
    assert (loaded.predict_proba(X) == pipeline.predict_proba(X)).all()
    with pytest.raises(ValueError, match="col 0"):
        loaded.predict(X.rename(columns={" col 0": "other"}))


def test_run_data_is_logged_in_the_fewest_batches_mlflow_accepts(tmp_path, monkeypatch):
    from tabflow.tracking.records import log_run_data

    store = connect(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = store.client.create_experiment("batches")
    calls = []
    real = store.client.log_batch

    def counted(run_id, metrics=(), params=(), tags=()):
        calls.append((len(params), len(tags), len(metrics)))
        return real(run_id, metrics=metrics, params=params, tags=tags)

    monkeypatch.setattr(store.client, "log_batch", counted)
    # A trial's record: one call (it was one per kind).
    run = store.client.create_run(experiment).info.run_id
    log_run_data(store, run, params={f"p{i}": str(i) for i in range(90)},
                 metrics={f"m{i}": i / 2 for i in range(32)}, tags={"t": "x"})
    assert calls == [(90, 1, 32)]
    # Past every limit (100 params, 100 tags, 1,000 metrics, 1,000 in all): all is logged.
    calls.clear()
    big = store.client.create_run(experiment).info.run_id
    params = {f"p{i}": str(i) for i in range(250)}
    tags = {f"t{i}": str(i) for i in range(120)}
    metrics = {f"m{i}": float(i) for i in range(1900)}
    log_run_data(store, big, params=params, metrics=metrics, tags=tags)
    assert calls == [(100, 100, 800), (100, 20, 880), (50, 0, 220)]
    data = store.client.get_run(big).data
    assert data.params == params and data.metrics == metrics
    assert {k: v for k, v in data.tags.items() if k.startswith("t")} == tags


def test_best_trial_run_pages_through_the_sweep_and_never_ranks_nan(tmp_path, monkeypatch):
    from tabflow.contract import TAG_ROLE, TAG_TRIAL
    from tabflow.tracking import queries

    # Small pages, so a few runs span several: the best sits on a later page.
    monkeypatch.setattr(queries, "SEARCH_PAGE", 2)
    store = connect(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = store.client.create_experiment("paged")
    parent = store.client.create_run(experiment).info.run_id
    trials = [("FINISHED", 0.7), ("FINISHED", float("nan")), ("FAILED", 0.99),
              ("FINISHED", 0.8), ("KILLED", None), ("FINISHED", 0.9), ("FINISHED", 0.9)]
    ids = []
    for number, (status, value) in enumerate(trials):
        run = store.client.create_run(experiment, tags={
            "mlflow.parentRunId": parent, TAG_ROLE: "trial",
            TAG_TRIAL: str(number)}).info.run_id
        if value is not None:
            store.client.log_metric(run, "val_accuracy", value)
        store.client.set_terminated(run, status)
        ids.append(run)
    other = store.client.create_run(experiment).info.run_id  # another sweep's run
    store.client.log_metric(other, "val_accuracy", 1.0)

    best, counts = queries.best_trial_run(store, experiment, parent, "val_accuracy", "maximize")
    assert counts == {"FINISHED": 5, "FAILED": 1, "KILLED": 1}
    assert (best.run_id, best.trial, best.value) == (ids[5], "5", 0.9)  # tie: earliest
    worst, _ = queries.best_trial_run(store, experiment, parent, "val_accuracy", "minimize")
    assert worst.trial == "0"  # NaN is not the minimum either

    # A sweep with a study takes the study's choice as it is (one decision, made by the
    # sweeper): its trial's run, even where the runs alone would rank another first.
    chosen, _ = queries.best_trial_run(store, experiment, parent, "val_accuracy", "maximize",
                                       chosen=("3", ids[3]))
    assert (chosen.run_id, chosen.trial, chosen.value) == (ids[3], "3", 0.8)
    # A choice whose run can't be used (failed record, NaN, another sweep's run, none):
    # the runs are ranked instead, and it says so.
    for unusable in (("2", ids[2]), ("1", ids[1]), ("9", other), ("4", None)):
        fallback, _ = queries.best_trial_run(store, experiment, parent, "val_accuracy",
                                             "maximize", chosen=unusable)
        assert fallback.run_id == ids[5], unusable


def test_the_best_trial_is_one_rule_for_progress_results_and_registration():
    import optuna
    from optuna.distributions import FloatDistribution

    from hydra_plugins.tabflow_sweeper import best_trial

    def study_of(directions, values):
        study = optuna.create_study(directions=directions)
        for number, v in enumerate(values):
            study.add_trial(optuna.trial.create_trial(
                values=v, params={"x": float(number)},
                distributions={"x": FloatDistribution(0, 10)},
                user_attrs={"mlflow_run_id": f"run{number}"}))
        return study

    assert best_trial(optuna.create_study()) is None  # nothing complete yet
    assert best_trial(study_of(["maximize"], [[0.8], [0.9], [0.9]])).number == 1  # earliest tie
    assert best_trial(study_of(["minimize"], [[0.8], [0.5], [0.5]])).number == 1
    # Several objectives: the Pareto front's best on the first, ties to the earliest.
    pareto = study_of(["maximize", "minimize"], [[0.9, 3.0], [0.9, 1.0], [0.7, 0.1], [0.9, 1.0]])
    assert best_trial(pareto).number == 1


def test_a_killed_sweeps_runs_are_finished_from_their_job_dirs_or_failed(tmp_path):
    """What a SIGKILL leaves while the background writer logs: runs still RUNNING. A trial
    the study counts as complete is logged from its job dir; an unfinished one fails."""
    import optuna
    from optuna.trial import TrialState

    from tabflow import contract
    from tabflow.tracking.parent import reconcile_stale
    from tabflow.tracking.store import ensure_experiment

    store = connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = ensure_experiment(store, "killed", tmp_path)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    runs = []
    for number, state in enumerate((TrialState.COMPLETE, TrialState.RUNNING)):
        trial = study.ask()
        if state is TrialState.COMPLETE:
            study.tell(trial, 0.9)
        out = tmp_path / "multirun" / str(number)
        (out / ".hydra").mkdir(parents=True)
        (out / contract.CONFIG_FILE).write_text("model:\n  name: rf\n")
        (out / ".hydra" / "hydra.yaml").write_text(
            "hydra:\n  runtime: {choices: {model: rf}}\n  overrides: {task: []}\n"
            f"  job: {{num: {number}}}\n")
        if state is TrialState.COMPLETE:  # its job finished; the kill came before logging
            contract.write_json(out / contract.METRICS_FILE, {"val_accuracy": 0.9})
            contract.write_json(out / contract.PROCESS_FILE, {"status": "FINISHED"})
        runs.append(store.client.create_run(experiment, tags={
            contract.TAG_TRIAL: str(number), contract.TAG_OUTPUT_DIR: str(out)}))

    # Trial 0's job was tracked twice: a first run, left RUNNING when its store went away
    # mid-job, then `tabflow upload`'s run, which its job dir names. One finishes.
    (tmp_path / "multirun" / "0" / contract.MLFLOW_RUN_FILE).write_text(runs[0].info.run_id)
    leftover = store.client.create_run(experiment, tags={
        contract.TAG_TRIAL: "0", contract.TAG_OUTPUT_DIR: str(tmp_path / "multirun" / "0")})

    finished = reconcile_stale(store, [*runs, leftover], {contract.TAG_STUDY: "s",
                                                          contract.TAG_STORAGE: storage})
    assert finished == 1
    assert store.client.get_run(leftover.info.run_id).info.status == "FAILED"
    assert "tracked again in run" in store.client.get_run(leftover.info.run_id).data.tags["error"]
    done, interrupted = (store.client.get_run(r.info.run_id) for r in runs)
    assert done.info.status == "FINISHED" and done.data.metrics["val_accuracy"] == 0.9
    assert done.data.params["model.name"] == "rf"
    assert interrupted.info.status == "FAILED"
    assert "interrupted" in interrupted.data.tags["error"]


def test_provenance_counts_tracked_changes_only_and_hashes_the_diff(tmp_path):
    import subprocess

    from tabflow.tracking.provenance import git_info

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    (tmp_path / "optuna.db-wal").write_text("untracked")  # what a sweep writes
    clean = git_info(tmp_path)
    assert clean["git.dirty"] == "false" and "git.diff_sha256" not in clean
    (tmp_path / "code.py").write_text("x = 2\n")
    one = git_info(tmp_path)
    (tmp_path / "code.py").write_text("x = 3\n")
    other = git_info(tmp_path)
    assert one["git.dirty"] == other["git.dirty"] == "true"
    assert one["git.diff_sha256"] != other["git.diff_sha256"]  # two dirty runs told apart


def test_a_rerun_stopped_by_a_busy_lock_leaves_a_finished_parent_finished(tmp_path):
    """Another process held the study's lock: nothing of the sweep the parent records ran."""
    from hydra_plugins.tabflow_sweeper.contract import CleanExit
    from hydra_plugins.tabflow_sweeper.locks import LockBusyError
    from tabflow.tracking.parent import close_parent
    from tabflow.tracking.store import connect
    from tests.helpers import seed_store

    seed_store(tmp_path)
    store = connect(f"sqlite:///{tmp_path}/mlflow.db")
    run_ids = []
    for before in ("FINISHED", None):
        run_id = store.client.create_run("0").info.run_id
        store.client.set_terminated(run_id, "FINISHED")
        store.client.update_run(run_id, status="RUNNING")  # reopened by the re-run
        busy = LockBusyError("s~ask", {"holder_host": "elsewhere", "holder_pid": 1})
        try:
            raise CleanExit(1, str(busy)) from busy
        except CleanExit as stopped:
            close_parent(store, run_id, stopped, before)
        run_ids.append(run_id)
    kept, new = (store.client.get_run(r) for r in run_ids)
    assert kept.info.status == "FINISHED" and "error" not in kept.data.tags
    assert new.info.status == "FAILED"  # a parent this run created did fail


def test_a_dataset_row_created_by_another_process_meanwhile_still_links_the_run(tmp_path,
                                                                                 monkeypatch):
    """Two sweep processes log a dataset's first use at once: the loser's insert breaks the
    unique key (CI9 saw it with two workers sharing a study). The race can't be timed for
    real, so the first call fails as MLflow's did; the run must still get its input."""
    from mlflow.exceptions import MlflowException

    from tabflow.tracking.records import log_dataset

    store = connect(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = store.client.create_experiment("race")
    run = store.client.create_run(experiment).info.run_id
    real, calls = store.client.log_inputs, []

    def racing(run_id, datasets=None, models=None):
        calls.append(run_id)
        if len(calls) == 1:
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: "
                                  "datasets.experiment_id, datasets.name, datasets.digest")
        return real(run_id, datasets=datasets, models=models)

    monkeypatch.setattr(store.client, "log_inputs", racing)
    dataset = {"name": "d", "digest": "0123456789abcdef0123", "source": "/data/d.csv",
               "schema": {"x": "float64"}, "n_rows": 3, "n_features": 1}
    log_dataset(store, run, dataset, "training")
    inputs = store.client.get_run(run).inputs.dataset_inputs
    assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [("d", "0123456789abcdef")]
    monkeypatch.setattr(store.client, "log_inputs", lambda *a, **k: (_ for _ in ()).throw(
        MlflowException("no such table: datasets")))
    with pytest.raises(MlflowException, match="no such table"):  # other errors still raise
        log_dataset(store, run, dataset, "training")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_run_whose_pid_was_given_to_another_process_is_a_dead_sweeps():
    """A resume closes the runs of dead processes; a reused pid does not keep one open."""
    from hydra_plugins.tabflow_sweeper.locks import this_process
    from tabflow.tracking.parent import _process_gone

    tags = {k: str(v) for k, v in this_process().items()}  # as the run's tags hold them
    assert not _process_gone(tags)
    assert _process_gone({**tags, "tabflow.pid_started": "1"})


def test_the_runs_view_survives_a_sweep_started_beside_it_and_never_stops_one(
        tmp_path, monkeypatch, caplog):
    """Sweep processes started together race on the view tag's first insert (seen on
    PostgreSQL: the loser broke the unique key and its sweep did not start)."""
    import logging

    from mlflow.exceptions import MlflowException

    from tabflow.tracking.store import RUNS_VIEW_TAG, ensure_experiment, save_runs_view

    store = connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = ensure_experiment(store, "view", tmp_path)
    real = store.client.set_experiment_tag
    calls = []

    def racing(*args):  # the first write loses to another process's insert
        calls.append(args)
        real(*args)
        if len(calls) == 1:
            raise MlflowException("duplicate key value violates unique constraint")

    monkeypatch.setattr(store.client, "set_experiment_tag", racing)
    save_runs_view(store, experiment, ["val_accuracy"], ["model.C"])
    assert len(calls) == 2 and RUNS_VIEW_TAG in store.client.get_experiment(experiment).tags

    def refused(*args):
        raise MlflowException("the server is gone")

    monkeypatch.setattr(store.client, "set_experiment_tag", refused)
    with caplog.at_level(logging.WARNING):
        save_runs_view(store, experiment, ["val_accuracy"], ["model.C"])  # no raise
    assert "runs view" in caplog.text and "the server is gone" in caplog.text
