"""Every model family fits and scores for both tasks; k-fold CV as the objective."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tabflow.job import objective_value, run_job, threads_per_job
from tests.helpers import group_options

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
    single = run_job(compose_cfg("cv.folds=0", "model.n_estimators=20"), tmp_path / "single")
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


@pytest.mark.parametrize(("overrides", "threads", "cells", "expected"), [
    ((), None, 398 * 30, 1),  # breast_cancer's train split: one thread
    ((), 4, 398 * 30, 1),  # even when the cores are shared out among parallel trials
    ((), None, 100_000 * 20, None),  # a large table: every core
    ((), 2, 100_000 * 20, 2),
    (("threads=3",), 3, 398 * 30, 3),  # a setting wins
    (("threads_single_below=0",), None, 398 * 30, None)])
def test_small_tables_fit_with_one_thread_unless_threads_is_set(compose_cfg, overrides, threads,
                                                               cells, expected):
    from tabflow.job import fit_threads

    assert fit_threads(compose_cfg(*overrides), threads, cells) == expected


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_batched_permutation_importance_agrees_with_scikit_learn(task):
    """The report's batched importances rank and size columns as scikit-learn's do."""
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.inspection import permutation_importance

    from tabflow.config import Task
    from tabflow.plots import importances

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"signal": rng.normal(size=400), "weak": rng.normal(size=400),
                      "noise": rng.normal(size=400)})
    raw = 3 * X["signal"] + X["weak"] + rng.normal(scale=0.3, size=400)
    y = (raw > 0).astype(int) if task == "classification" else raw
    model = (RandomForestClassifier if task == "classification" else RandomForestRegressor)(
        n_estimators=30, random_state=0).fit(X[:300], y[:300])
    mean, std = importances(model, X[300:], y[300:], Task(task), seed=0, repeats=10,
                            batch_cells=250 * 3)  # several batches
    ref = permutation_importance(model, X[300:], y[300:], n_repeats=10, random_state=0)
    assert list(np.argsort(mean)) == list(np.argsort(ref.importances_mean)) == [2, 1, 0]
    np.testing.assert_allclose(mean, ref.importances_mean, atol=0.05)
    assert mean[0] > 0.2 and abs(mean[2]) < 0.02 and (std >= 0).all()


@pytest.mark.parametrize(("folds", "task", "val_rows", "expected"), [
    (None, "classification", 57, 3),     # auto: a small validation split ties trials
    (None, "classification", 500, 0),    # auto: a large one separates them
    (None, "regression", 45, 0),         # continuous errors don't tie
    (0, "classification", 57, 0),        # asked for
    (5, "regression", 45, 5),
])
def test_trials_are_scored_by_cv_when_the_validation_split_is_small(folds, task, val_rows,
                                                                     expected):
    from tabflow.job import cv_folds

    cv = OmegaConf.create({"folds": folds, "auto_folds": 3, "min_val_rows": 200})
    assert cv_folds(cv, task, val_rows) == expected


def test_the_default_breast_cancer_trial_is_scored_by_three_folds(compose_cfg, tmp_path):
    metrics = run_job(compose_cfg("model=logreg"), tmp_path)
    assert metrics["cv_folds"] == 3 and "val_accuracy_std" in metrics
    assert metrics["val_accuracy"] not in {k / 57 for k in range(58)}  # finer than 57 rows


def test_console_metrics_show_sizes_whole_and_scores_to_four_places():
    from tabflow.job import main_metrics, metric_lines

    lines = metric_lines({"model_size_bytes": 1742360.0, "cv_folds": 3.0, "val_f1_macro": 0.912345,
                          "fit_time_s": 0.01234})
    assert "costs:  fit_time_s=0.0123  model_size_bytes=1742360" in lines
    assert main_metrics({"test_roc_auc": 0.98765, "test_f1": 0.5, "test_accuracy": 0.9},
                        "test") == "accuracy=0.9000  roc_auc=0.9877"  # main ones, in order


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_label_scores_equal_scikit_learns(n_classes):
    """The one-confusion-matrix metrics agree with scikit-learn's, zero divisions included."""
    import numpy as np
    from sklearn import metrics as skm

    from tabflow.evaluation import label_scores

    rng = np.random.default_rng(n_classes)
    for _ in range(20):
        y = rng.integers(0, n_classes, 40)
        pred = np.where(rng.random(40) < 0.6, y, rng.integers(0, n_classes + 1, 40))
        pred[pred == 1] = 0  # a class never predicted: precision divides by zero
        got = label_scores(y.astype(str), pred.astype(str))
        want = {"accuracy": skm.accuracy_score(y, pred),
                "balanced_accuracy": skm.balanced_accuracy_score(y, pred)}
        for average, suffix in (("weighted", ""), ("macro", "_macro")):
            for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score),
                             ("f1", skm.f1_score)):
                want[f"{name}{suffix}"] = fn(y, pred, average=average, zero_division=0)
        assert got == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("family", ["rf", "logreg", "knn"])
def test_importance_on_a_wide_table_shuffles_the_models_top_columns_in_bounded_batches(family):
    """1,000 columns: 50 shuffled (the signal among them), no predict call above the cap."""
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tabflow.config import Task
    from tabflow.plots import importances

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 1000)), columns=[f"x{i}" for i in range(1000)])
    y = pd.Series((3 * X["x7"] + X["x900"] > 0).astype(int))
    estimator = {"rf": RandomForestClassifier(n_estimators=50, random_state=0),
                 "logreg": LogisticRegression(max_iter=500),
                 "knn": KNeighborsClassifier()}[family]
    model = make_pipeline(StandardScaler(), estimator).fit(X[:200], y[:200])
    seen: list[int] = []
    predict = model.predict

    def counting(frame):
        seen.append(frame.size)
        return predict(frame)

    model.predict = counting
    mean, _ = importances(model, X[200:], y[200:], Task.classification, seed=0,
                          batch_cells=1_000_000)
    assert int((~np.isnan(mean)).sum()) == 50
    assert not np.isnan(mean[7]) and not np.isnan(mean[900])  # both signal columns ranked in
    if family != "knn":  # 1,000 columns of noise drown a neighbour's distances
        assert mean[7] == np.nanmax(mean)
    assert max(seen) <= 1_000_000 + X[200:].size  # one copy over the cap at most


def test_a_single_run_prints_its_main_metrics_as_a_small_table():
    from tabflow.job import metric_lines

    names = ("accuracy", "balanced_accuracy", "f1", "f1_macro", "log_loss", "precision",
             "precision_macro", "recall", "recall_macro", "roc_auc")
    metrics = {f"{split}_{name}": 0.91 for split in ("train", "val") for name in names}
    metrics.update({f"val_{name}_std": 0.02 for name in names})
    metrics.update({"fit_time_s": 0.0145, "model_size_bytes": 1742360.0, "cv_folds": 3.0})
    lines = metric_lines(metrics)
    header = lines[0].split()
    assert header == ["accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "log_loss"]
    table = {line[:14].strip(): line[14:].split() for line in lines[1:4]}
    assert table == {"train": ["0.9100"] * 5, "validation": ["0.9100"] * 5,
                     "± (3-fold)": ["0.0200"] * 5}
    assert "costs:  fit_time_s=0.0145  model_size_bytes=1742360" in lines
    assert lines[-1] == f"({len(metrics)} metrics in all: metrics.json in the output dir, " \
                        "and the MLflow run)"
    assert len(lines) == 6 and all(len(line) <= 100 for line in lines)
    regression = metric_lines({"train_rmse": 1.5, "val_rmse": 2.25, "val_r2": 0.5})
    assert regression[0].split() == ["rmse", "r2"]
    assert regression[1].split() == ["train", "1.5000", "-"]
