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
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import ListConfig

# ---------------------------------------------------------------------- job output dir
METRICS_FILE = "metrics.json"
DATASET_FILE = "dataset.json"
CONFIG_FILE = "config.yaml"  # the job's resolved config, without the hydra node
MODEL_FILE = "model.joblib"  # single runs only: the fitted pipeline
PROCESS_FILE = "process.json"  # the host and pid of the process that ran the job
TRACKING_ERROR_FILE = "tracking_error.txt"
MLFLOW_RUN_FILE = "mlflow_run_id.txt"  # the job's MLflow run, for the sweeper's records
ERROR_FILE = "error.txt"  # a failed job's exception and traceback
FIGURES_DIR = "figures"  # trial figures, when evaluation.trial_figures is on
HYDRA_DIR = ".hydra"  # Hydra's own copy of the job's config, overrides and choices
RESULTS_FILE = "optimization_results.yaml"  # in the sweep dir: the study's outcome
OVERRIDES_ARTIFACT = "overrides.yaml"  # a run's command-line overrides, secrets redacted
INTERMEDIATE_FILE = "intermediate.json"  # scores reported to the trial's pruner, by step


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a JSON file, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON file written by :func:`write_json`; empty when the file is missing."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


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
TAG_PRUNED_AT = "optuna.pruned_at_step"  # on a pruned trial's run: where its pruner stopped it
PRUNED = "PRUNED"  # a pruned trial's state, as the sweep's counts and views show it
TAG_PRIMARY_METRIC = "objective.primary_metric"  # on the parent: what ranks its trials
TAG_PRIMARY_DIRECTION = "objective.primary_direction"
# The process that ran a trial: an MLflow tag and an Optuna trial attribute alike.
HOST, PID = "tabflow.host", "tabflow.pid"

# Optuna trial user attributes.
ATTR_RUN_ID = "mlflow_run_id"
ATTR_INTERRUPTED = "tabflow.interrupted"  # the trial was cut short, not wrong: retried
ATTR_RETRY_OF = "tabflow.retry_of"
ATTR_ERROR = "tabflow.error"
ATTR_WORKER_DIED = "tabflow.worker_died"  # host:pid of a sweep process that stopped beating
ATTR_SESSIONS = "tabflow.sessions"  # sweep processes started on the study so far

# Key of the job config that receives the Optuna trial number.
TRIAL_KEY = "optuna_trial"
# The job's environment variable naming its study, set by the sweeper when it prunes.
ENV_STUDY = "OPTUNA_STUDY_NAME"
# The job's environment variable naming the trial it retries (a dead or interrupted attempt).
ENV_RETRY_OF = "OPTUNA_TRIAL_RETRY_OF"


# ----------------------------------------------------------------------------- objective
# Metrics where a smaller value is better; every other metric is maximised.
LOWER_IS_BETTER = ("rmse", "mae", "log_loss", "fit_time_s", "predict_time_s",
                   "model_size_bytes")


def as_list(value: Any) -> list[Any]:
    """Return a config value that may be one item or a list as a list."""
    if isinstance(value, (list, tuple, ListConfig)):
        return list(value)
    return [value]


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


def project_root() -> Path:
    """The project root that anchors stores and data: ``TABFLOW_ROOT``, else the checkout.

    ``src/train.py`` sets ``TABFLOW_ROOT`` to its checkout, so stores land there whatever
    the cwd; conf/train.yaml reads the same variable (``paths.root``).
    """
    return Path(os.environ.get("TABFLOW_ROOT", CODE_ROOT))


# ---------------------------------------------------------------------------- parallelism
def effective_n_jobs(n_jobs: int) -> int:
    """Return how many workers a launcher's ``n_jobs`` means.

    Negative values count back from the number of CPUs, as joblib does (-1: all CPUs).
    """
    if n_jobs < 0:
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return max(1, n_jobs)


# ---------------------------------------------------------------------------- clean exits
class CleanExit(SystemExit):
    """The end of a command that has said why in one line (``str()`` gives the line)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Interrupted(CleanExit):
    """The command was cut short (a signal, a lost worker): resumable, not wrong."""


def exit_cleanly(message: str, error: BaseException | None = None, code: int = 1,
                 interrupted: bool = False) -> NoReturn:
    """Stop the command with one message line on stderr.

    Hydra turns exceptions raised in callbacks into warnings, but lets ``SystemExit``
    through. The traceback is printed only with ``HYDRA_FULL_ERROR=1``, Hydra's own switch.

    Args:
        message: The line: what happened and what to do.
        error: The exception behind it, for ``HYDRA_FULL_ERROR=1``.
        code: The exit status.
        interrupted: Raise :class:`Interrupted` (what was cut short can be resumed).
    """
    print(message, file=sys.stderr, flush=True)
    if error is not None and os.environ.get("HYDRA_FULL_ERROR") == "1":
        traceback.print_exception(error)
    raise (Interrupted if interrupted else CleanExit)(code, message) from error


class SignalInterrupt(KeyboardInterrupt):
    """A signal other than Ctrl-C (SIGTERM) interrupting like Ctrl-C; it knows which."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signal.Signals(signum).name}")
        self.signum = signum


def interrupt_code(error: BaseException) -> int:
    """The exit status of a command a signal interrupted: 128 + the signal (130: Ctrl-C)."""
    return 128 + getattr(error, "signum", signal.SIGINT)


def raise_on_sigterm() -> None:
    """Make SIGTERM (a scheduler, `kill`) interrupt like Ctrl-C, in the main thread."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise SignalInterrupt(signum)
