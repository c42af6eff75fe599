"""A job's side of pruning: report intermediate scores to its trial, stop when pruned.

The sweeper (``hydra/sweeper/pruner=...``) names the job's study in its environment
(``OPTUNA_STUDY_NAME``); the trial number is the job's ``optuna_trial``, the storage
``hydra.sweeper.storage``. The job reports through the storage, wherever it runs. Every
reported value is also written to the job dir (``intermediate.json``), from which the
trial's MLflow run gets its history. Nothing here runs outside a sweep with a pruner.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from tabflow.contract import ENV_STUDY, INTERMEDIATE_FILE, write_json


class Reporter:
    """Reports a trial's intermediate scores; raises ``optuna.TrialPruned`` when told to.

    Args:
        trial: The job's Optuna trial, reached through the study's storage.
        per_step: Report each step's own score (Wilcoxon compares folds pairwise) rather
            than the running mean.
        out: The job's output dir.
        metric: The objective metric whose values are reported.
    """

    def __init__(self, trial: Any, per_step: bool, out: Path, metric: str) -> None:
        self.trial, self.per_step, self.out, self.metric = trial, per_step, out, metric
        self.values: list[tuple[int, float]] = []

    def __call__(self, step: int, running: float, current: float, last: bool = False) -> None:
        """Report the score at ``step``; stop the job if the pruner says so.

        Args:
            step: The step (a fold, or a number of iterations), increasing.
            running: The mean of the steps so far (what most pruners compare).
            current: This step's own score.
            last: The job's last step: reported, never pruned (nothing is left to save,
                and the trial's result is complete).

        Raises:
            optuna.TrialPruned: If the trial's pruner stops it here.
        """
        import optuna

        value = current if self.per_step else running
        self.trial.report(value, step)
        self.values.append((step, value))
        pruned = not last and self.trial.should_prune()
        write_json(self.out / INTERMEDIATE_FILE, {
            "metric": self.metric, "values": self.values, "pruned_at": step if pruned else None})
        if pruned:
            raise optuna.TrialPruned(f"pruned at step {step}: {self.metric}={value:.4f}")


@functools.lru_cache(maxsize=4)
def _study(storage_url: str, name: str, pruner_cfg: str) -> Any:
    """The study with its pruner, loaded once per process (warm workers keep it)."""
    import optuna
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from hydra_plugins.tabflow_sweeper.stores import optuna_storage

    pruner = instantiate(OmegaConf.create(pruner_cfg), _execution_whitelist_=("optuna.pruners.*",))
    return optuna.load_study(study_name=name, storage=optuna_storage(storage_url),
                             pruner=pruner, sampler=optuna.samplers.RandomSampler())


def reporter(cfg: DictConfig, hydra_cfg: Any, out: Path) -> Reporter | None:
    """The job's reporter, or None when its sweep prunes nothing (or it is no sweep).

    Args:
        cfg: The job's config (its ``optuna_trial`` and objective).
        hydra_cfg: Hydra's node for the job (``hydra.sweeper``).
        out: The job's output dir.
    """
    sweeper = hydra_cfg.get("sweeper") if hydra_cfg is not None else None
    if sweeper is None:
        return None
    pruner_cfg, storage = sweeper.get("pruner"), sweeper.get("storage")
    name, number = os.environ.get(ENV_STUDY), cfg.get("optuna_trial")
    if not pruner_cfg or not name or number is None or not storage:
        return None
    import optuna
    from omegaconf import OmegaConf

    metric = cfg.objective.metric
    if not isinstance(metric, str):
        return None  # several objectives: the sweeper refuses a pruner for them
    study = _study(str(storage), name, OmegaConf.to_yaml(pruner_cfg))
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id,
                                                                      int(number))
    per_step = isinstance(study.pruner, optuna.pruners.WilcoxonPruner)
    return Reporter(optuna.Trial(study, trial_id), per_step, out, metric)
