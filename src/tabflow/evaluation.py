"""Score a fitted pipeline on one split; metric names are ``<split>_<metric>``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn import config_context
from sklearn import metrics as skm

from tabflow.config import Task


def label_scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy and weighted / macro precision, recall and F1.

    All come from one confusion matrix: scikit-learn's functions would rebuild it (and
    validate their inputs) once per metric, ~60 ms a trial on a small split. The values
    equal scikit-learn's with ``zero_division=0`` (tests/unit/test_evaluation.py).
    """
    labels, codes = np.unique(np.concatenate([y, pred]), return_inverse=True)
    k = len(labels)
    cm = np.bincount(codes[:len(y)] * k + codes[len(y):], minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    precision, recall = ratio(tp, predicted), ratio(tp, support)
    f1 = ratio(2 * tp, (support + predicted).astype(float))
    weights = support / support.sum()
    scores = {"accuracy": tp.sum() / len(y),
              # Per-class recall averaged over the classes present in y, as scikit-learn.
              "balanced_accuracy": recall[support > 0].mean()}
    for name, per_class in (("precision", precision), ("recall", recall), ("f1", f1)):
        scores[name] = float(per_class @ weights)
        scores[f"{name}_macro"] = float(per_class.mean())
    return {k: float(v) for k, v in scores.items()}


def classification_scores(model: Any, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """Return the classification metrics of a fitted model on one split.

    Accuracy, balanced accuracy, precision / recall / F1 weighted by class support (as in
    the guide; ``precision``, ``recall``, ``f1``) and unweighted (``*_macro``), ROC-AUC and
    log loss. ROC-AUC is binary on the positive class, or one-vs-rest weighted for several
    classes; a binary model without ``predict_proba`` is ranked by its decision function.
    Metrics that need what the model or split lacks (probabilities, two classes) are left out.
    """
    proba = model.predict_proba(X) if hasattr(model, "predict_proba") else None
    classes = np.asarray(getattr(model, "classes_", []))
    # For probabilistic classifiers predict() is the argmax of predict_proba(): reuse it.
    pred = classes[proba.argmax(axis=1)] if proba is not None and len(classes) else \
        model.predict(X)
    scores = label_scores(np.asarray(y), np.asarray(pred))
    with config_context(skip_parameter_validation=True):  # inputs are ours; saves ~10 ms
        scores.update(_ranking_scores(model, X, y, proba, classes))
    return scores


def _ranking_scores(model: Any, X: pd.DataFrame, y: pd.Series, proba: np.ndarray | None,
                    classes: np.ndarray) -> dict[str, float]:
    scores: dict[str, float] = {}
    if y.nunique() > 1 and proba is not None:
        if len(classes) == 2:
            scores["roc_auc"] = skm.roc_auc_score(y, proba[:, 1])
        elif set(np.unique(y)) == set(classes):
            scores["roc_auc"] = skm.roc_auc_score(y, proba, multi_class="ovr",
                                                  average="weighted", labels=classes)
        scores["log_loss"] = skm.log_loss(y, proba, labels=classes)
    elif y.nunique() > 1 and len(classes) == 2 and hasattr(model, "decision_function"):
        # SVC without probability estimates: the decision function ranks rows just as well.
        scores["roc_auc"] = skm.roc_auc_score(y, model.decision_function(X))
    return {k: float(v) for k, v in scores.items()}


def regression_scores(model: Any, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """Return RMSE, MAE and R² of a regressor."""
    pred = model.predict(X)
    with config_context(skip_parameter_validation=True):
        return {
            "rmse": float(skm.root_mean_squared_error(y, pred)),
            "mae": float(skm.mean_absolute_error(y, pred)),
            "r2": float(skm.r2_score(y, pred)),
        }


def predict_time_and_size(model: Any, X: pd.DataFrame) -> dict[str, float]:
    """Return the seconds to predict ``X`` and the model's serialized size in bytes."""
    import pickle

    start = time.perf_counter()
    model.predict(X)
    elapsed = time.perf_counter() - start
    return {"predict_time_s": elapsed, "model_size_bytes": float(len(pickle.dumps(model)))}


def compute_metrics(model: Any, X: pd.DataFrame, y: pd.Series, task: Task,
                    split: str) -> dict[str, float]:
    """Score a fitted model on one split.

    Args:
        model: A fitted estimator or pipeline.
        X: Features of the split.
        y: Target of the split.
        task: Decides which metrics apply.
        split: Prefix of the metric names: ``train``, ``val`` or ``test``.

    Returns:
        ``{"<split>_<metric>": value}``, e.g. ``val_accuracy``.
    """
    scores = (classification_scores if task is Task.classification else regression_scores)(
        model, X, y)
    return {f"{split}_{name}": value for name, value in scores.items()}


def cross_validate_metrics(model: Any, X: pd.DataFrame, y: pd.Series, task: Task, folds: int,
                           shuffle: bool, seed: int,
                           on_fold: Callable[[int, list[dict[str, float]]], None] | None = None
                           ) -> dict[str, float]:
    """Score a model by k-fold cross-validation (stratified for classification).

    ``on_fold(k, scores)`` is called after fold k (from 1) with every fold's scores so
    far; it may raise to stop (a pruned trial).

    Returns:
        ``train_<metric>`` and ``val_<metric>`` as means over the folds, ``val_<metric>_std``,
        and ``fit_time_s``, the total fitting time of the folds.

    Raises:
        Exception: The estimator's own error when a fold can't be fitted or scored.
    """
    from sklearn.base import clone
    from sklearn.model_selection import KFold, StratifiedKFold

    splitter_cls = StratifiedKFold if task is Task.classification else KFold
    splitter = splitter_cls(n_splits=folds, shuffle=shuffle,
                            random_state=seed if shuffle else None)
    folds_metrics: list[dict[str, float]] = []
    fit_time = 0.0
    for train_rows, val_rows in splitter.split(X, y):
        fold_model = clone(model)
        X_train, y_train = X.iloc[train_rows], y.iloc[train_rows]
        # A configuration that can't fit fails the trial with its own error (as on the
        # validation split), not with NaN scores.
        start = time.perf_counter()
        fold_model.fit(X_train, y_train)
        fit_time += time.perf_counter() - start
        folds_metrics.append({
            **compute_metrics(fold_model, X_train, y_train, task, "train"),
            **compute_metrics(fold_model, X.iloc[val_rows], y.iloc[val_rows], task, "val")})
        if on_fold is not None:
            on_fold(len(folds_metrics), folds_metrics)
    # A metric some fold could not compute (a fold with one class) is left out.
    names = set.intersection(*(set(m) for m in folds_metrics))
    metrics: dict[str, float] = {}
    for name in sorted(names):
        values = [m[name] for m in folds_metrics]
        metrics[name] = float(np.mean(values))
        if name.startswith("val_"):
            metrics[f"{name}_std"] = float(np.std(values))
    metrics["fit_time_s"] = fit_time
    return metrics
