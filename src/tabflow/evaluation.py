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
    classes; it is left out when the model has no ``predict_proba`` or the split
    holds a single class.
    """
    pred = model.predict(X)
    scores = {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, average="weighted", zero_division=0),
        "recall": skm.recall_score(y, pred, average="weighted", zero_division=0),
        "f1": skm.f1_score(y, pred, average="weighted", zero_division=0),
    }
    if hasattr(model, "predict_proba") and y.nunique() > 1:
        proba = model.predict_proba(X)
        classes = list(model.classes_)
        if len(classes) == 2:
            scores["roc_auc"] = skm.roc_auc_score(y, proba[:, 1])
        elif set(np.unique(y)) == set(classes):
            scores["roc_auc"] = skm.roc_auc_score(y, proba, multi_class="ovr",
                                                  average="weighted", labels=classes)
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
