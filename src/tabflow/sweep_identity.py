"""The identity of a sweep: which Optuna study and MLflow parent run a command belongs to.

Re-running the same command must continue the same study (resume), while a changed
experiment (other data, preprocessing, model settings, search space, sampler or
objective) must start a new one instead of polluting the old. The study name is
therefore derived from a hash of everything that shapes the trials, and nothing that
doesn't: the number of trials, a timeout, parallelism and tracking settings can change
between runs of one study.

Both the sweeper (through ``hydra.sweeper.study_namer``, conf/hydra/sweeper/tabflow.yaml)
and the tracking callback call :func:`study_name`, in the launching process, so they
always agree. It extends the sweeper's own identity (``identity``) with the data.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hydra_plugins.tabflow_sweeper.identity import digest, sweep_overrides
from hydra_plugins.tabflow_sweeper.identity import identity as sweep_identity
from tabflow.config import job_config
from tabflow.contract import TRIAL_KEY

# Job config keys that do not change what a trial computes.
# (`estimators` only admits classes: the model node names the one a trial uses.)
_NOT_IDENTITY = ("tracking", "registry", "paths", TRIAL_KEY, "threads", "threads_single_below",
                 "estimators")
# What the sweep draws, not what its trials compute: turning the report off resumes it.
_NOT_IDENTITY_EVALUATION = ("figures", "trial_figures")


def identity(cfg: DictConfig, data_digest: str | None = None) -> dict[str, Any]:
    """Return what makes two sweeps the same study.

    Args:
        cfg: The composed config of the sweep (launching process).
        data_digest: The dataset's content digest, so that edited data starts a new study.

    Returns:
        The sweeper's identity (``identity.identity``: search space, command-line sweep
        dimensions, sampler) of the job config without tracking and run settings (the
        objective and its direction are in it), and the data.
    """
    job = OmegaConf.to_container(job_config(cfg))
    assert isinstance(job, dict)
    for key in _NOT_IDENTITY:
        job.pop(key, None)
    for key in _NOT_IDENTITY_EVALUATION:
        job.get("evaluation", {}).pop(key, None)
    # The objective is its metric and direction (resolved above), not the table of defaults.
    job.get("objective", {}).pop("by_task", None)
    return {**sweep_identity(cfg, job), "data": data_digest}


@functools.lru_cache(maxsize=8)
def _data_digest(dataset: str, data_dir: str) -> str:
    """Return a dataset's content digest, computed once per process.

    The tracking callback and the sweeper both name the study, in the same process.
    """
    from tabflow.data import load_dataset  # pandas, only for sweeps (cached by the check)

    return load_dataset(OmegaConf.create(json.loads(dataset)), data_dir).digest


def model_label(cfg: DictConfig) -> str:
    """The model a sweep is about: its model choice, or ``families`` when it searches ``model``.

    A families sweep (``sweep=families``, or ``'model=choice(rf,hgb)'`` on the command line)
    tries several model families; naming it after the default model would mislead.
    """
    params = cfg.hydra.sweeper.get("params") or {}
    swept = "model" in params or any(o.split("=", 1)[0] == "model"
                                     for o in sweep_overrides(list(cfg.hydra.overrides.task)))
    return "families" if swept else str(cfg.hydra.runtime.choices.get("model"))


def study_name(cfg: DictConfig) -> str:
    """Return the Optuna study name of a sweep.

    ``hydra.sweeper.study_name`` when set, else ``<dataset>-<model>-<sweep>-<hash>`` of the
    sweep's :func:`identity`.
    """
    explicit = cfg.hydra.sweeper.get("study_name")
    if explicit:
        return str(explicit)
    dataset = json.dumps(OmegaConf.to_container(cfg.dataset, resolve=True), sort_keys=True,
                         default=str)
    short = digest(identity(cfg, _data_digest(dataset, str(cfg.paths.data))))
    return f"{cfg.dataset.name}-{sweep_label(cfg)}-{short}"


def sweep_label(cfg: DictConfig) -> str:
    """``<model>-<sweep>`` (``rf-wide``), or ``families`` for a sweep across model families."""
    model, sweep = model_label(cfg), str(cfg.hydra.runtime.choices.get("sweep"))
    return model if model == sweep else f"{model}-{sweep}"
