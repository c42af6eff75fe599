"""Fit an iterative model in stages, scoring each: what a pruner needs to stop it early.

Forests grow trees and boosting models add stages; with ``warm_start`` each stage adds
to the last, so scoring along the way costs the predictions only, and the model at the
end is the one a single fit would give (scikit-learn draws a warm-started forest's seeds
as a single fit does). The preprocessing is fitted once, before the first stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd
from sklearn.pipeline import Pipeline

from tabflow.config import Task

# The parameter that counts each family's iterations.
ITERATIONS = {
    "RandomForestClassifier": "n_estimators", "RandomForestRegressor": "n_estimators",
    "ExtraTreesClassifier": "n_estimators", "ExtraTreesRegressor": "n_estimators",
    "GradientBoostingClassifier": "n_estimators", "GradientBoostingRegressor": "n_estimators",
    "HistGradientBoostingClassifier": "max_iter", "HistGradientBoostingRegressor": "max_iter",
}


def stages(total: int, size: int) -> list[int]:
    """The iteration counts at which to score: multiples of ``size``, then ``total``."""
    steps = list(range(size, total, size)) if size > 0 else []
    return [*steps, total]


def can_stage(pipeline: Pipeline, size: int) -> bool:
    """Whether the pipeline's model grows in iterations, more than one stage's worth."""
    param = ITERATIONS.get(type(pipeline.named_steps["model"]).__name__)
    return param is not None and size > 0 and \
        int(pipeline.named_steps["model"].get_params()[param]) > size


def fit_in_stages(pipeline: Pipeline, X: pd.DataFrame, y: pd.Series, X_val: pd.DataFrame,
                  y_val: pd.Series, task: Task, size: int, metric: str,
                  on_stage: Callable[[int, float, float, bool], None]) -> float:
    """Fit the pipeline stage by stage, calling ``on_stage`` with each stage's score.

    Args:
        pipeline: An unfitted pipeline whose model :func:`can_stage`.
        X: Training features.
        y: Training target.
        X_val: Validation features.
        y_val: Validation target.
        task: The dataset's task.
        size: Iterations per stage.
        metric: The ``val_<metric>`` reported (the objective).
        on_stage: Called as ``(iterations, score, score, last)``; may raise to stop the
            fit.

    Returns:
        The fitting time in seconds (scoring excluded).
    """
    from tabflow.evaluation import compute_metrics

    model = pipeline.named_steps["model"]
    param = ITERATIONS[type(model).__name__]
    total, warm = int(model.get_params()[param]), model.get_params()["warm_start"]
    start = time.perf_counter()
    preprocess = pipeline[:-1]
    Xt = preprocess.fit_transform(X, y)
    Xv = preprocess.transform(X_val)
    fit_time = time.perf_counter() - start
    model.set_params(warm_start=True)
    try:
        for n in stages(total, size):
            start = time.perf_counter()
            model.set_params(**{param: n}).fit(Xt, y)
            fit_time += time.perf_counter() - start
            score = compute_metrics(model, Xv, y_val, task, "val").get(metric)
            if score is not None:
                on_stage(n, score, score, n == total)
    finally:
        model.set_params(warm_start=warm)
    return fit_time
