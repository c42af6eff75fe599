"""hydra-optuna-sweeper, extended to tell each job which Optuna trial it runs.

The upstream sweeper asks Optuna for trials and launches them as Hydra jobs, but the
job never learns the trial's number (hydra issue 2293), so a tracked run cannot be
tied back to its trial. This subclass appends ``optuna_trial=<number>`` to every
job's overrides and sizes each batch to the launcher's parallelism when
``n_jobs`` is null. Everything else is the upstream implementation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from omegaconf import DictConfig

# Key of the job config that receives the trial number (declared in tabflow.config).
TRIAL_KEY = "optuna_trial"


def batch_size(n_jobs: int | None, launcher_cfg: Any) -> int:
    """Return how many trials to ask for per batch.

    Args:
        n_jobs: The sweeper's ``n_jobs``; null means "match the launcher".
        launcher_cfg: ``hydra.launcher`` of the composed config.

    Returns:
        ``n_jobs`` when set; else the launcher's ``n_jobs`` (joblib's negative values
        count back from the number of CPUs, as joblib does); 1 for the basic launcher.
    """
    if n_jobs is not None:
        if n_jobs < 1:
            raise ValueError(f"hydra.sweeper.n_jobs must be >= 1 or null, got {n_jobs}")
        return n_jobs
    launcher_jobs = launcher_cfg.get("n_jobs") if launcher_cfg is not None else None
    if launcher_jobs is None:
        return 1
    if launcher_jobs < 0:
        return max(1, (os.cpu_count() or 1) + 1 + launcher_jobs)
    return max(1, int(launcher_jobs))


def _impl_class() -> type:
    # Imported lazily: the upstream implementation imports optuna (slow), and Hydra
    # imports every plugin module at start-up, even for --help.
    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl

    class TabflowOptunaSweeperImpl(OptunaSweeperImpl):
        def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
                  config: DictConfig) -> None:
            super().setup(hydra_context=hydra_context, task_function=task_function,
                          config=config)
            self.n_jobs = batch_size(self.n_jobs, config.hydra.get("launcher"))

        def _configure_trials(self, trials: list[Any], *args: Any) -> Sequence[Sequence[str]]:
            overrides = super()._configure_trials(trials, *args)
            return [
                (*override, f"{TRIAL_KEY}={trial.number}")
                for override, trial in zip(overrides, trials, strict=True)
            ]

    return TabflowOptunaSweeperImpl


class TabflowOptunaSweeper(Sweeper):
    """Optuna sweeper that passes the trial number into each job."""

    def __init__(self, sampler: Any, direction: Any, storage: Any | None,
                 study_name: str | None, n_trials: int, n_jobs: int | None,
                 max_failure_rate: float, custom_search_space: str | None,
                 params: DictConfig | None) -> None:
        """Build the sampler (whitelisted to Optuna's samplers) and the implementation."""
        sampler = instantiate(
            sampler,
            _execution_whitelist_=("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*"),
        )
        self.sweeper = _impl_class()(
            sampler, direction, storage, study_name, n_trials, n_jobs,
            max_failure_rate, custom_search_space, params,
        )

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        """Prepare the launcher (see ``Sweeper.setup``)."""
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function,
                           config=config)

    def sweep(self, arguments: list[str]) -> None:
        """Run the study (see ``OptunaSweeperImpl.sweep``)."""
        return self.sweeper.sweep(arguments)


@dataclass
class TabflowOptunaSweeperConf(OptunaSweeperConf):
    """Upstream sweeper settings; ``n_jobs`` may be null (match the launcher)."""

    _target_: str = "hydra_plugins.tabflow_sweeper.tabflow_sweeper.TabflowOptunaSweeper"
    n_jobs: Any = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="tabflow_optuna", node=TabflowOptunaSweeperConf,
    provider="tabflow",
)
