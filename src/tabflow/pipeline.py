"""Build the model Pipeline: preprocessing and estimator as one fitted, servable unit."""

from __future__ import annotations

from omegaconf import DictConfig
from sklearn.pipeline import Pipeline

from tabflow.data import Dataset
from tabflow.estimators import build_estimator
from tabflow.preprocessing import make_preprocessor


def build_pipeline(cfg: DictConfig, ds: Dataset) -> Pipeline:
    """Build ``Pipeline([("preprocess", ColumnTransformer), ("model", estimator)])``.

    Args:
        cfg: The job config (reads ``preprocessing`` and ``model``).
        ds: The dataset, whose columns decide numeric vs categorical routing.

    Returns:
        An unfitted pipeline.
    """
    preprocess = make_preprocessor(cfg.preprocessing, ds.numeric_columns(),
                                   ds.categorical_columns())
    extra = cfg.get("estimators", {}).get("extra") or []
    return Pipeline([("preprocess", preprocess),
                     ("model", build_estimator(cfg.model, ds.task, extra))])
