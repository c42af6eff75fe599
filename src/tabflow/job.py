"""The job body: data in, fitted pipeline and metrics out. No MLflow here."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from sklearn.pipeline import Pipeline

from tabflow import artifacts
from tabflow.data import Dataset, Splits, load_dataset, split_dataset
from tabflow.evaluation import compute_metrics
from tabflow.pipeline import build_pipeline

log = logging.getLogger(__name__)


def job_config(cfg: DictConfig) -> DictConfig:
    """Return the resolved job config without Hydra's own node."""
    # Resolve node by node: Hydra's own node holds values that only exist in some modes.
    return OmegaConf.create({
        str(key): OmegaConf.to_container(cfg[key], resolve=True, throw_on_missing=True)
        if OmegaConf.is_config(cfg[key]) else cfg[key]
        for key in cfg if key != "hydra"
    })


def _prepare(cfg: DictConfig) -> tuple[Dataset, Splits, Pipeline]:
    ds = load_dataset(cfg.dataset, cfg.paths.data)
    splits = split_dataset(ds, cfg.split, cfg.seed, cfg.paths.data)
    return ds, splits, build_pipeline(cfg, ds)


def _fit(pipeline: Pipeline, X: pd.DataFrame, y: pd.Series) -> float:
    start = time.perf_counter()
    pipeline.fit(X, y)
    return time.perf_counter() - start


def run_job(cfg: DictConfig, output_dir: str | Path, save_model: bool = False) -> dict[str, float]:
    """Fit one configuration on the training split and score it on train and validation.

    Args:
        cfg: The composed job config.
        output_dir: The job's Hydra output dir; receives the output-dir contract
            (see :mod:`tabflow.artifacts`).
        save_model: Also write the fitted pipeline (single runs log it as their model).

    Returns:
        ``train_*`` and ``val_*`` metrics plus ``fit_time_s``.
    """
    out = Path(output_dir)
    ds, splits, pipeline = _prepare(cfg)
    artifacts.write_json(out / artifacts.DATASET_FILE, ds.describe())
    OmegaConf.save(job_config(cfg), out / artifacts.CONFIG_FILE)
    fit_time = _fit(pipeline, splits.X_train, splits.y_train)
    metrics = {
        **compute_metrics(pipeline, splits.X_train, splits.y_train, ds.task, "train"),
        **compute_metrics(pipeline, splits.X_val, splits.y_val, ds.task, "val"),
        "fit_time_s": fit_time,
    }
    artifacts.write_json(out / artifacts.METRICS_FILE, metrics)
    if save_model:
        joblib.dump(pipeline, out / artifacts.MODEL_FILE)
    log.info("%s", "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    return metrics


def objective_value(metrics: dict[str, float], metric: str) -> float:
    """Return the value the sweeper optimises.

    Raises:
        KeyError: If the job did not compute ``metric``.
        ValueError: If the value is NaN or infinite (never ranked as best).
    """
    if metric not in metrics:
        raise KeyError(f"objective.metric={metric!r} was not computed; this job has "
                       f"{sorted(metrics)}")
    value = float(metrics[metric])
    if not math.isfinite(value):
        raise ValueError(f"objective {metric} is {value}; the trial counts as failed")
    return value


@dataclass
class FinalModel:
    """The best configuration refit on train + validation and scored once on test."""

    pipeline: Pipeline
    metrics: dict[str, float]
    input_example: pd.DataFrame
    dataset: dict[str, Any]


def refit_final(cfg: DictConfig) -> FinalModel:
    """Refit a configuration on train + validation and score it on the held-out test split.

    Args:
        cfg: A resolved job config (e.g. the best trial's ``config.yaml``).

    Returns:
        The fitted pipeline with ``test_*`` metrics and a few raw rows as input example.
    """
    ds, splits, pipeline = _prepare(cfg)
    X = pd.concat([splits.X_train, splits.X_val])
    y = pd.concat([splits.y_train, splits.y_val])
    fit_time = _fit(pipeline, X, y)
    metrics = compute_metrics(pipeline, splits.X_test, splits.y_test, ds.task, "test")
    metrics["refit_time_s"] = fit_time
    return FinalModel(pipeline, metrics, splits.X_test.head(5), ds.describe())
