"""The facts several parts of tabflow share, written once.

* **The job output dir**: what a job writes and the tracking callback, the sweeper and
  ``tabflow upload`` read. Jobs never talk to MLflow: they leave small files in their
  Hydra output dir, so results survive a tracking outage and any launcher works.
* **Names users filter on**: MLflow tags and Optuna trial attributes.
* **The objective**: which metric ranks trials, and in which direction.
* **Where things are**: the project root (stores, data) and the code's checkout.
* **Parallelism**: how a launcher's ``n_jobs`` counts (joblib's negative values).
* **Clean exits**: one message line, the traceback only with ``HYDRA_FULL_ERROR=1``.

This module imports nothing heavy and nothing else of tabflow: everything may import it.
The names it shares with the sweeper plugin (trial attributes, the job's environment, the
files the sweeper reads, clean exits) are defined in the plugin, which stands on its own
in any Hydra app (``hydra_plugins.tabflow_sweeper.contract``), and re-exported here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# The sweeper plugin's names, shared with it: defined there, re-exported here.
from hydra_plugins.tabflow_sweeper.contract import (
    ATTR_ERROR,
    ATTR_INTERRUPTED,
    ATTR_RETRY_OF,
    ATTR_RUN_ID,
    ATTR_SESSIONS,
    ATTR_WORKER_DIED,
    ENV_RETRY_OF,
    ENV_STUDY,
    ENV_TRIAL,
    ERROR_FILE,
    HOST,
    METRICS_FILE,
    MLFLOW_RUN_FILE,
    PID,
    PID_STARTED,
    RESULTS_FILE,
    TRIAL_KEY,
    CleanExit,
    Interrupted,
    SignalInterrupt,
    as_interrupt,
    as_list,
    disk_full,
    effective_n_jobs,
    exit_cleanly,
    held_signals,
    interrupt_code,
    raise_on_sigterm,
    read_json,
    restore_sigterm,
    write_atomic,
    write_json,
)

# ---------------------------------------------------------------------- job output dir
DATASET_FILE = "dataset.json"
CONFIG_FILE = "config.yaml"  # the job's resolved config, without the hydra node
MODEL_FILE = "model.joblib"  # single runs only: the fitted pipeline
PROCESS_FILE = "process.json"  # the host and pid of the process that ran the job
TRACKING_ERROR_FILE = "tracking_error.txt"
FIGURES_DIR = "figures"  # trial figures, when evaluation.trial_figures is on
HYDRA_DIR = ".hydra"  # Hydra's own copy of the job's config, overrides and choices
OVERRIDES_ARTIFACT = "overrides.yaml"  # a run's command-line overrides, secrets redacted
INTERMEDIATE_FILE = "intermediate.json"  # scores reported to the trial's pruner, by step


# ------------------------------------------------------------------ names users filter on
# MLflow run tags (`tags.tabflow.role = 'sweep'`).
TAG_ROLE = "tabflow.role"  # "sweep" (parent), "trial" (child) or "run" (single run)
TAG_TRIAL = "optuna.trial"
TAG_STUDY = "optuna.study"
TAG_STORAGE = "optuna.storage"
TAG_OVERRIDES = "hydra.overrides"
TAG_OUTPUT_DIR = "hydra.output_dir"
TAG_JOB_NUM = "hydra.job.num"
TAG_DIGEST = "dataset.digest"
TAG_ERROR = "error"
TAG_PARENT = "mlflow.parentRunId"
TAG_UPLOADED = "tabflow.uploaded"  # the run was logged by `tabflow upload`, not live
TAG_RETRY_OF = "optuna.retry_of"  # on a retry's run: the trial number of the attempt it replaces
TAG_RETRIED_AS = "optuna.retried_as"  # on a dead attempt's run: the trial that replaced it
TAG_TUNED = "tabflow.tuned"  # on a trial's run: its values of the searched parameters
TAG_NOTE = "mlflow.note.content"  # a run's description in MLflow's UI
TAG_PRUNED_AT = "optuna.pruned_at_step"  # on a pruned trial's run: where its pruner stopped it
PRUNED = "PRUNED"  # a pruned trial's state, as the sweep's counts and views show it
TAG_PRIMARY_METRIC = "objective.primary_metric"  # on the parent: what ranks its trials
TAG_PRIMARY_DIRECTION = "objective.primary_direction"

# ----------------------------------------------------------------------------- objective
# Metrics where a smaller value is better; every other metric is maximised.
LOWER_IS_BETTER = ("rmse", "mae", "log_loss", "fit_time_s", "predict_time_s",
                   "model_size_bytes")


def primary_objective(metric: Any, direction: Any) -> tuple[str, str]:
    """Return the metric and direction that rank trials (the first of several objectives)."""
    return str(as_list(metric)[0]), str(as_list(direction)[0])


def lower_is_better(metric: str) -> bool:
    """Return whether a smaller value of the metric is better (``test_rmse``, ``val_mae``)."""
    return metric.removeprefix("test_").removeprefix("val_") in LOWER_IS_BETTER


def natural_direction(metric: str) -> str:
    """``minimize`` for errors, losses and costs, ``maximize`` for every other metric."""
    return "minimize" if lower_is_better(metric) else "maximize"


def is_optuna_sweep(config: Any) -> bool:
    """Whether a composed config's sweeper is an Optuna sweeper (it has a study)."""
    return "study_name" in config.hydra.sweeper


# ----------------------------------------------------------------------- where things are
# The checkout this code runs from: its commit and lock file are recorded with every sweep.
CODE_ROOT = Path(__file__).resolve().parents[2]


def default_optuna_storage() -> str:
    """The study storage ``tabflow`` commands read: TABFLOW_OPTUNA_STORAGE, else optuna.db."""
    return os.environ.get("TABFLOW_OPTUNA_STORAGE", f"sqlite:///{project_root() / 'optuna.db'}")


def project_root() -> Path:
    """The project root that anchors stores and data: ``TABFLOW_ROOT``, else the checkout.

    ``src/train.py`` sets ``TABFLOW_ROOT`` to its checkout, so stores land there whatever
    the cwd; conf/train.yaml reads the same variable (``paths.root``).
    """
    return Path(os.environ.get("TABFLOW_ROOT", CODE_ROOT))




# --------------------------------------------------------------------------- clean exits
def skip_exit_gc() -> None:
    """Let a finished command exit without the interpreter's last scan of its whole heap.

    With MLflow, scikit-learn, pandas and Optuna imported, that scan costs 0.7-1.2 s at the
    end of every command (measured: a process importing them exits in 0.73 s, 0.08 s
    after this). The objects alive now are moved to the collector's permanent generation
    (``gc.freeze``) and freed with the process; ``atexit`` handlers (MLflow's, logging's
    flush) run as before. Call it only where the process ends: ``src/train.py`` and the
    ``tabflow`` command, never a library function a long-lived process calls.
    """
    import gc

    gc.freeze()
