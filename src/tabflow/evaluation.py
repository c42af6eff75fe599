"""Score a fitted pipeline on one split; metric names are ``<split>_<metric>``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from tabflow.config import Task


def classification_scores(model: Any, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """Return accuracy, weighted precision / recall / F1 (as in the guide) and ROC-AUC.

    ROC-AUC is binary on the positive class, or one-vs-rest weighted for several
    classes; a binary model without ``predict_proba`` is ranked by its decision
    function. It is left out when neither exists or the split holds a single class.
    """
    pred = model.predict(X)
    scores = {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, average="weighted", zero_division=0),
        "recall": skm.recall_score(y, pred, average="weighted", zero_division=0),
        "f1": skm.f1_score(y, pred, average="weighted", zero_division=0),
    }
    classes = list(getattr(model, "classes_", []))
    if y.nunique() > 1 and hasattr(model, "predict_proba"):
        proba = model.predict_proba(X)
        if len(classes) == 2:
            scores["roc_auc"] = skm.roc_auc_score(y, proba[:, 1])
        elif set(np.unique(y)) == set(classes):
            scores["roc_auc"] = skm.roc_auc_score(y, proba, multi_class="ovr",
                                                  average="weighted", labels=classes)
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
    scorers = {"accuracy": "accuracy", "precision": "precision_weighted",
               "recall": "recall_weighted", "f1": "f1_weighted"}
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
        and ``fit_time_s``, the total fitting time of the folds. A fold that fails to score
        gives NaN, which fails the trial rather than ranking it.
    """
    from sklearn.model_selection import KFold, StratifiedKFold, cross_validate

    splitter_cls = StratifiedKFold if task is Task.classification else KFold
    splitter = splitter_cls(n_splits=folds, shuffle=shuffle,
                            random_state=seed if shuffle else None)
    scorers = _scorers(model, y, task)
    result = cross_validate(model, X, y, cv=splitter, scoring=dict(scorers.items()),
                            return_train_score=True, error_score=np.nan)
    metrics: dict[str, float] = {}
    for name, scorer in scorers.items():
        sign = -1.0 if scorer.startswith("neg_") else 1.0
        val = sign * result[f"test_{name}"]
        metrics[f"train_{name}"] = float(np.mean(sign * result[f"train_{name}"]))
        metrics[f"val_{name}"] = float(np.mean(val))
        metrics[f"val_{name}_std"] = float(np.std(val))
    metrics["fit_time_s"] = float(np.sum(result["fit_time"]))
    return metrics
