"""The job body: data in, fitted pipeline and metrics out. No MLflow here."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
from omegaconf import DictConfig, ListConfig
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from tabflow.config import Task, config_yaml, loggable_config
from tabflow.contract import (
    CONFIG_FILE,
    DATASET_FILE,
    FIGURES_DIR,
    METRICS_FILE,
    MODEL_FILE,
    as_list,
    effective_n_jobs,
    write_json,
)
from tabflow.data import Dataset
from tabflow.evaluation import compute_metrics, cross_validate_metrics, predict_time_and_size
from tabflow.pipeline import build_pipeline
from tabflow.splits import Splits, load_and_split
from tabflow.stages import can_stage, fit_in_stages

log = logging.getLogger(__name__)


def prepare(cfg: DictConfig) -> tuple[Dataset, Splits, Pipeline]:
    """Load and split a job config's dataset and build its (unfitted) pipeline."""
    ds, splits = load_and_split(cfg)
    return ds, splits, build_pipeline(cfg, ds)


def _fit(pipeline: Pipeline, X: pd.DataFrame, y: pd.Series) -> float:
    start = time.perf_counter()
    pipeline.fit(X, y)
    return time.perf_counter() - start


def threads_per_job(threads: int | None, parallel_jobs: int | None) -> int | None:
    """Return how many threads a fit may use.

    Args:
        threads: The ``threads`` setting; wins when set.
        parallel_jobs: Trials running side by side (the joblib launcher's ``n_jobs``;
            negative counts back from the number of CPUs, as joblib does).

    Returns:
        None (the libraries' default: every core) for a single job at a time, else the
        cores divided among the parallel jobs, so they don't fight over them.
    """
    if threads is not None:
        return threads
    if not parallel_jobs or parallel_jobs == 1:
        return None
    return max(1, (os.cpu_count() or 1) // effective_n_jobs(parallel_jobs))


def fit_threads(cfg: DictConfig, threads: int | None, cells: int) -> int | None:
    """Threads for one fit: one for a small table unless ``threads`` is set, else ``threads``.

    On small tables (``threads_single_below`` rows x features) OpenMP's spinning threads
    cost more than they give, up to 57x on a busy 2-core machine (``bench/threads.py``,
    docs/models.md); larger tables keep every core (or their share under joblib).
    """
    if cfg.get("threads") is None and cells < int(cfg.get("threads_single_below") or 0):
        return 1
    return threads


def cv_folds(cv: DictConfig, task: Task, val_rows: int) -> int:
    """How many folds score a trial: 0 for the validation split (see ``CVConfig``)."""
    if cv.folds is not None:
        return int(cv.folds)
    if Task(task) is Task.classification and val_rows < cv.min_val_rows:
        return int(cv.auto_folds)
    return 0


def describe_scoring(folds: int, cv: DictConfig, val_rows: int) -> str:
    """One line saying how trials are scored, and why when it was chosen automatically."""
    if not folds:
        return f"trials are scored on the validation split ({val_rows} rows)"
    why = (f" (the validation split has {val_rows} rows < cv.min_val_rows={cv.min_val_rows}: "
           f"too few to tell trials apart; cv.folds=0 scores on it anyway)"
           if cv.folds is None else "")
    return f"trials are scored by {folds}-fold CV on train + validation{why}"


# (step, running score, the step's own score, whether it is the last step)
Report = Callable[[int, float, float, bool], None]


def _fold_reporter(report: Report, metric: str, folds: int
                   ) -> Callable[[int, list[dict[str, float]]], None]:
    """Report the running mean of the objective after each CV fold."""
    def on_fold(k: int, scores: list[dict[str, float]]) -> None:
        values = [s[metric] for s in scores if metric in s]
        if values:
            report(k, float(sum(values) / len(values)), values[-1], k == folds)
    return on_fold


def run_job(cfg: DictConfig, output_dir: str | Path, save_model: bool = False,
            threads: int | None = None, report: Report | None = None) -> dict[str, float]:
    """Fit one configuration on the training split and score it on train and validation.

    Args:
        cfg: The composed job config.
        output_dir: The job's Hydra output dir; receives the output-dir contract
            (see :mod:`tabflow.contract`).
        save_model: Also write the fitted pipeline (single runs log it as their model).
        threads: Threads the fit may use (see :func:`threads_per_job`); None: no limit.
        report: A pruned sweep's reporter (:mod:`tabflow.pruning`): called with the
            objective after each CV fold, or each stage of an iterative model scored on
            the validation split; it raises ``optuna.TrialPruned`` to stop the job.

    Returns:
        ``train_*`` and ``val_*`` metrics plus ``fit_time_s``.
    """
    out = Path(output_dir)
    ds, splits, pipeline = prepare(cfg)
    write_json(out / DATASET_FILE, ds.describe())
    (out / CONFIG_FILE).write_text(config_yaml(loggable_config(cfg)))
    folds = cv_folds(cfg.cv, ds.task, len(splits.y_val))
    with threadpool_limits(limits=fit_threads(cfg, threads, splits.X_train.size)):
        if folds >= 2:
            # k-fold CV on train + validation; test stays held out for the final model.
            X = pd.concat([splits.X_train, splits.X_val])
            y = pd.concat([splits.y_train, splits.y_val])
            on_fold = (_fold_reporter(report, str(cfg.objective.metric), folds) if report
                       else None)
            metrics = cross_validate_metrics(pipeline, X, y, ds.task, folds,
                                             cfg.cv.shuffle, cfg.seed, on_fold)
            if save_model:
                _fit(pipeline, splits.X_train, splits.y_train)
        else:
            if report is not None and can_stage(pipeline, cfg.evaluation.stage_size):
                fit_time = fit_in_stages(pipeline, splits.X_train, splits.y_train, splits.X_val,
                                         splits.y_val, ds.task, cfg.evaluation.stage_size,
                                         str(cfg.objective.metric), report)
            else:
                fit_time = _fit(pipeline, splits.X_train, splits.y_train)
            metrics = {
                **compute_metrics(pipeline, splits.X_train, splits.y_train, ds.task, "train"),
                **compute_metrics(pipeline, splits.X_val, splits.y_val, ds.task, "val"),
                **predict_time_and_size(pipeline, splits.X_val),
                "fit_time_s": fit_time,
            }
    metrics["cv_folds"] = float(folds)  # how this trial was scored (0: the validation split)
    write_json(out / METRICS_FILE, metrics)
    if cfg.evaluation.trial_figures:
        from tabflow.plots import model_figures, save_figures

        if folds >= 2:  # CV leaves no fitted model; fit one for the figures
            _fit(pipeline, splits.X_train, splits.y_train)
        save_figures(model_figures(pipeline, splits.X_val, splits.y_val, ds.task, "validation",
                                   cfg.seed), out / FIGURES_DIR)
    if save_model:
        joblib.dump(pipeline, out / MODEL_FILE)
    # A single run reports its metrics; in a sweep the progress line does (hydra.verbose=true
    # shows every trial's metrics too).
    level = logging.INFO if save_model else logging.DEBUG
    for line in metric_lines(metrics):
        log.log(level, "%s", line)
    return metrics


def main_metrics(metrics: dict[str, float], split: str) -> str:
    """One split's main metrics (:data:`MAIN_METRICS`) as ``name=value`` pairs."""
    return "  ".join(_pair(m, metrics[f"{split}_{m}"]) for m in MAIN_METRICS
                     if f"{split}_{m}" in metrics)


def _pair(key: str, value: float) -> str:
    return f"{key}={value:.0f}" if key.endswith(("_bytes", "_folds")) else f"{key}={value:.4f}"


# What a run prints of its scores: the main metrics of each task, a row per split. The rest
# (precision, recall, per-class averages) are in metrics.json and the MLflow run.
MAIN_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "log_loss",
                "rmse", "mae", "r2")
SPLITS = {"train": "train", "val": "validation", "test": "test"}


def metric_lines(metrics: dict[str, float]) -> list[str]:
    """A run's main metrics as a small table (a row per split), then its costs.

    Under k-fold CV a row of standard deviations over the folds follows validation's.
    35 ``name=value`` pairs in one line of 800 characters did not read.
    """
    columns = [m for m in MAIN_METRICS if any(f"{s}_{m}" in metrics for s in SPLITS)]
    widths = [max(len(c), 6) for c in columns]

    def row(label: str, values: list[float | None]) -> str:
        cells = ("-" if v is None else f"{v:.4f}" for v in values)
        return f"{label:<14}" + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths, strict=True))

    lines = [f"{'':<14}" + "".join(f"  {c:>{w}}" for c, w in zip(columns, widths, strict=True))]
    for prefix, label in SPLITS.items():
        values = [metrics.get(f"{prefix}_{c}") for c in columns]
        if any(v is not None for v in values):
            lines.append(row(label, values))
        spread = [metrics.get(f"{prefix}_{c}_std") for c in columns]
        if any(v is not None for v in spread):
            lines.append(row(f"  ± ({int(metrics.get('cv_folds', 0))}-fold)", spread))
    costs = {k: v for k, v in metrics.items()
             if k.partition("_")[0] not in (*SPLITS, "cv")}
    if costs:
        lines.append("costs:  " + "  ".join(_pair(k, v) for k, v in sorted(costs.items())))
    lines.append(f"({len(metrics)} metrics in all: metrics.json in the output dir, and the "
                 f"MLflow run)")
    return lines


def objective_value(metrics: dict[str, float], metric: Any) -> float | list[float]:
    """Return the value the sweeper optimises: one float, or a list for several metrics.

    Raises:
        KeyError: If the job did not compute a metric.
        ValueError: If a value is NaN or infinite (the trial fails; it is never ranked).
    """
    values = []
    for name in as_list(metric):
        if name not in metrics:
            raise KeyError(f"objective.metric={name!r} was not computed; this job has "
                           f"{sorted(metrics)}")
        value = float(metrics[name])
        if not math.isfinite(value):
            raise ValueError(f"objective {name} is {value}; the trial counts as failed")
        values.append(value)
    return values if isinstance(metric, (list, tuple, ListConfig)) else values[0]


@dataclass
class FinalModel:
    """The best configuration refit on train + validation and scored once on test."""

    pipeline: Pipeline
    metrics: dict[str, float]
    input_example: pd.DataFrame
    dataset: dict[str, Any]
    X_test: pd.DataFrame
    y_test: pd.Series
    task: Task


def refit_final(cfg: DictConfig) -> FinalModel:
    """Refit a configuration on train + validation and score it on the held-out test split.

    Args:
        cfg: A resolved job config (e.g. the best trial's ``config.yaml``).

    Returns:
        The fitted pipeline with ``test_*`` metrics and a few raw rows as input example.
    """
    ds, splits, pipeline = prepare(cfg)
    X = pd.concat([splits.X_train, splits.X_val])
    y = pd.concat([splits.y_train, splits.y_val])
    with threadpool_limits(limits=fit_threads(cfg, cfg.get("threads"), X.size)):
        fit_time = _fit(pipeline, X, y)
    metrics = compute_metrics(pipeline, splits.X_test, splits.y_test, ds.task, "test")
    metrics["refit_time_s"] = fit_time
    return FinalModel(pipeline, metrics, splits.X_test.head(5), ds.describe(), splits.X_test,
                      splits.y_test, ds.task)
