"""Pruning: the study's pruner, how jobs find their trial, and pruned outcomes.

A job reports intermediate scores to its own trial through the study's storage, so it
works wherever the job runs (in this process, a worker, another machine): the sweeper
passes the study's name in the job's environment (``hydra.job.env_set``), the job reads
its trial number from its config and the storage from ``hydra.sweeper.storage``. A job
that its trial's pruner stops raises ``optuna.TrialPruned``; the sweeper tells the study
the trial was PRUNED. Pruned trials count toward ``n_trials``, like finished ones.
"""

from __future__ import annotations

from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate

WHITELIST = ("optuna.pruners.*",)


def build_pruner(cfg: Any) -> optuna.pruners.BasePruner | None:
    """The configured pruner (Optuna's pruners only), or None for no pruning."""
    if cfg is None:
        return None
    pruner = instantiate(cfg, _execution_whitelist_=WHITELIST)
    return None if isinstance(pruner, optuna.pruners.NopPruner) else pruner


def check_pruning(pruner: Any, directions: list[str], storage: Any) -> None:
    """Refuse, before any trial, a pruner that can't work with this sweep.

    Raises:
        ValueError: For several objectives (Optuna prunes single-objective studies only)
            or a study without storage (jobs reach their trial through it).
    """
    if pruner is None:
        return
    if len(directions) > 1:
        raise ValueError(f"hydra.sweeper.pruner={type(pruner).__name__} needs one objective; "
                         f"this sweep has {len(directions)} (Optuna can't prune "
                         f"multi-objective studies): drop the pruner (hydra/sweeper/pruner="
                         f"none) or optimise one metric")
    if not storage:
        raise ValueError("pruning needs a study storage, through which jobs report to their "
                         "trial: keep hydra.sweeper.storage (sqlite by default) set")


def pruned_error(ret: JobReturn) -> optuna.TrialPruned | None:
    """The job's ``TrialPruned`` when its trial was pruned, else None."""
    value = ret._return_value
    if ret.status == JobStatus.FAILED and isinstance(value, optuna.TrialPruned):
        return value
    return None
