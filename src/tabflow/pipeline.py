"""Build the model Pipeline: preprocessing and estimator as one fitted, servable unit."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from omegaconf import DictConfig, OmegaConf
from sklearn.pipeline import Pipeline

from tabflow.config import Task
from tabflow.data import Dataset
from tabflow.preprocessing import make_preprocessor

# Keys of a model config that describe the family rather than the estimator's arguments.
RESERVED_MODEL_KEYS = frozenset({"name", "classifier", "regressor"})
# Estimator classes must come from scikit-learn: a config must not import arbitrary code.
ALLOWED_ESTIMATOR_MODULES = ("sklearn.",)


def estimator_params(model_cfg: DictConfig) -> dict[str, Any]:
    """Return the estimator's constructor arguments from a ``model`` node."""
    params = OmegaConf.to_container(model_cfg, resolve=True)
    assert isinstance(params, dict)
    return {str(k): v for k, v in params.items() if k not in RESERVED_MODEL_KEYS}


def build_estimator(model_cfg: DictConfig, task: Task) -> Any:
    """Instantiate the scikit-learn estimator a ``model`` node names for a task.

    Args:
        model_cfg: The ``model`` node: ``classifier``/``regressor`` import paths plus
            the estimator's arguments.
        task: Classification picks ``classifier``, regression ``regressor``.

    Returns:
        An unfitted estimator.

    Raises:
        ValueError: If the class is not a scikit-learn class.
    """
    path = model_cfg.classifier if task is Task.classification else model_cfg.regressor
    module_name, _, class_name = str(path).rpartition(".")
    if not module_name.startswith(ALLOWED_ESTIMATOR_MODULES):
        raise ValueError(
            f"model {model_cfg.name!r}: estimator {path!r} is not a scikit-learn class; "
            f"only modules starting with {ALLOWED_ESTIMATOR_MODULES} are allowed"
        )
    cls = getattr(importlib.import_module(module_name), class_name)
    params = estimator_params(model_cfg)
    if cls.__name__ == "Ridge" and "C" in params:
        # logreg's C is an inverse penalty; Ridge's alpha is the penalty: alpha = 1 / (2 C).
        params["alpha"] = 1.0 / (2.0 * params.pop("C"))
    # One family config serves classifier and regressor; pass each only what it takes
    # (SVR has no random_state, Ridge no max_iter for every solver, ...).
    accepted = set(inspect.signature(cls).parameters)
    return cls(**{k: v for k, v in params.items() if k in accepted})


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
    return Pipeline([("preprocess", preprocess), ("model", build_estimator(cfg.model, ds.task))])
