"""Score a fitted pipeline on one split; metric names are ``<split>_<metric>``."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from tabflow.config import Task


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
    scores = {
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
    }
    for average, suffix in (("weighted", ""), ("macro", "_macro")):
        scores[f"precision{suffix}"] = skm.precision_score(y, pred, average=average,
                                                           zero_division=0)
        scores[f"recall{suffix}"] = skm.recall_score(y, pred, average=average, zero_division=0)
        scores[f"f1{suffix}"] = skm.f1_score(y, pred, average=average, zero_division=0)
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


def _scorers(model: Any, y: pd.Series, task: Task) -> dict[str, str]:
    """Return scikit-learn scorer names for our metric names (negated ones are flipped)."""
    if task is Task.regression:
        return {"rmse": "neg_root_mean_squared_error", "mae": "neg_mean_absolute_error",
                "r2": "r2"}
    scorers = {"accuracy": "accuracy", "balanced_accuracy": "balanced_accuracy",
               "precision": "precision_weighted", "recall": "recall_weighted",
               "f1": "f1_weighted", "f1_macro": "f1_macro"}
    if y.nunique() == 2:
        scorers["roc_auc"] = "roc_auc"  # uses predict_proba or decision_function
    elif hasattr(model, "predict_proba"):
        scorers["roc_auc"] = "roc_auc_ovr_weighted"
    return scorers


def cross_validate_metrics(model: Any, X: pd.DataFrame, y: pd.Series, task: Task, folds: int,
                           shuffle: bool, seed: int) -> dict[str, float]:
    """Score a model by k-fold cross-validation (stratified for classification).

    Returns:
        ``train_<metric>`` and ``val_<metric>`` as means over the folds, ``val_<metric>_std``,
        and ``fit_time_s``, the total fitting time of the folds.

    Raises:
        Exception: The estimator's own error when a fold can't be fitted or scored.
    """
    from sklearn.model_selection import KFold, StratifiedKFold, cross_validate

    splitter_cls = StratifiedKFold if task is Task.classification else KFold
    splitter = splitter_cls(n_splits=folds, shuffle=shuffle,
                            random_state=seed if shuffle else None)
    scorers = _scorers(model, y, task)
    # A configuration that can't fit fails the trial with its own error (as on the
    # validation split), not with NaN scores and a warning full of tracebacks.
    result = cross_validate(model, X, y, cv=splitter, scoring=dict(scorers.items()),
                            return_train_score=True, error_score="raise")
    metrics: dict[str, float] = {}
    for name, scorer in scorers.items():
        sign = -1.0 if scorer.startswith("neg_") else 1.0
        val = sign * result[f"test_{name}"]
        metrics[f"train_{name}"] = float(np.mean(sign * result[f"train_{name}"]))
        metrics[f"val_{name}"] = float(np.mean(val))
        metrics[f"val_{name}_std"] = float(np.std(val))
    metrics["fit_time_s"] = float(np.sum(result["fit_time"]))
    return metrics
