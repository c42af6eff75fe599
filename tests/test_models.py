"""Every model family fits and scores for both tasks; k-fold CV as the objective."""

from __future__ import annotations

import pytest

from conftest import group_options
from tabflow.job import objective_value, run_job, threads_per_job

FAST = {  # keep ensembles small: this checks wiring, not accuracy
    "rf": ["model.n_estimators=20"], "extra_trees": ["model.n_estimators=20"],
    "gb": ["model.n_estimators=20"], "hgb": ["model.max_iter=20"],
}


@pytest.mark.parametrize("model", group_options("model"))
@pytest.mark.parametrize(("dataset", "metric", "good"), [
    ("breast_cancer", "val_accuracy", lambda v: v > 0.85),
    # Some families are weak on diabetes with default settings (SVR); they must still fit.
    ("diabetes", "val_r2", lambda v: -0.5 < v <= 1.0),
])
def test_every_family_learns_each_task(compose_cfg, tmp_path, model, dataset, metric, good):
    cfg = compose_cfg(f"model={model}", f"dataset={dataset}", *FAST.get(model, []))
    metrics = run_job(cfg, tmp_path)
    assert good(metrics[metric]), metrics
    if dataset == "breast_cancer":  # every classifier has a ROC-AUC (SVC: decision function)
        assert 0.5 < metrics["val_roc_auc"] <= 1.0


def test_kfold_cv_scores_the_objective(compose_cfg, tmp_path):
    cfg = compose_cfg("cv.folds=4", "model.n_estimators=20")
    metrics = run_job(cfg, tmp_path)
    assert {"val_accuracy", "val_accuracy_std", "train_accuracy", "fit_time_s"} <= set(metrics)
    assert 0 < metrics["val_accuracy_std"] < 0.2
    single = run_job(compose_cfg("model.n_estimators=20"), tmp_path / "single")
    assert metrics["val_accuracy"] != single["val_accuracy"]  # a different estimate


def test_kfold_with_every_fold_failing_fails_the_job(compose_cfg, tmp_path):
    cfg = compose_cfg("cv.folds=3", "model.max_features=bogus")
    with pytest.raises(ValueError, match="max_features"):
        run_job(cfg, tmp_path)


def test_multi_objective_returns_one_value_per_metric(compose_cfg, tmp_path):
    metrics = run_job(compose_cfg("model.n_estimators=20"), tmp_path)
    values = objective_value(metrics, ["val_f1", "fit_time_s"])
    assert values == [metrics["val_f1"], metrics["fit_time_s"]]


@pytest.mark.parametrize(("threads", "jobs", "cpus", "expected"), [
    (3, 4, 8, 3), (None, None, 8, None), (None, 1, 8, None), (None, 2, 8, 4),
    (None, -1, 8, 1), (None, 16, 8, 1)])
def test_threads_are_shared_among_parallel_trials(monkeypatch, threads, jobs, cpus, expected):
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    assert threads_per_job(threads, jobs) == expected
