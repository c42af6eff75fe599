"""The basic launcher, with each job's config composed once per set of group choices.

Hydra's basic launcher composes every job's config from scratch (``load_sweep_config``):
~0.25 s a job for tabflow's config, more than a fast model's fit. In a sweep, trials
differ only in a few values; this launcher composes once per distinct set of config-group
choices (``model=...``, ``preprocessing=...``) and applies each trial's value overrides
to a copy (:mod:`._compose`). The job configs and ``.hydra/`` files are the same as
Hydra's (``tests/unit/test_launcher.py`` proves it on every search space).

With ``n_jobs`` > 1, jobs run side by side in warm worker processes (:mod:`._workers`),
and :meth:`TabflowLauncher.submit` lets tabflow's sweeper hand each worker its next
trial as soon as it is free. With 1 (the default) jobs run one after another in this
process, as with the basic launcher.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.config_store import ConfigStore
from hydra.core.utils import (
    JobReturn,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


@dataclass
class TabflowLauncherConf:
    """``hydra/launcher=tabflow``: the basic launcher that composes once."""

    _target_: str = "hydra_plugins.tabflow_launcher.tabflow_launcher.TabflowLauncher"
    # false: compose every job from scratch, exactly as Hydra's basic launcher does.
    compose_once: bool = True
    # Jobs side by side, in warm worker processes; 1: one after another in this process.
    n_jobs: int = 1


ConfigStore.instance().store(group="hydra/launcher", name="tabflow", node=TabflowLauncherConf,
                             provider="tabflow_launcher")


class TabflowLauncher(BasicLauncher):
    """Run jobs sequentially in this process, composing their configs once per group set."""

    def __init__(self, compose_once: bool = True, n_jobs: int = 1) -> None:
        super().__init__()
        if n_jobs < 1:
            raise ValueError(f"hydra.launcher.n_jobs must be >= 1, got {n_jobs}")
        self.compose_once = compose_once
        self.n_jobs = n_jobs
        self._composer: Any = None
        self._workers: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        """Keep what the jobs need; the composer is built on first use."""
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self._composer = None
        self._workers = None

    def job_config(self, overrides: Sequence[str]) -> DictConfig:
        """The job config of one set of overrides, as ``load_sweep_config`` would compose it."""
        assert self.hydra_context is not None and self.config is not None
        loader = self.hydra_context.config_loader
        if not self.compose_once:
            return loader.load_sweep_config(self.config, list(overrides))
        if self._composer is None:
            from hydra_plugins.tabflow_launcher._compose import Composer

            self._composer = Composer(loader, self.config)
        return self._composer.compose(list(overrides))

    def _numbered(self, overrides: Sequence[str], idx: int) -> DictConfig:
        sweep_config = self.job_config(overrides)
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = str(idx)
            sweep_config.hydra.job.num = idx
        return sweep_config

    def submit(self, overrides: Sequence[str], idx: int) -> Future[JobReturn]:
        """Start one job in the next free worker (``n_jobs`` > 1); return its future."""
        assert self.hydra_context is not None and self.config is not None
        assert self.task_function is not None and self.n_jobs > 1
        if self._workers is None:
            from hydra_plugins.tabflow_launcher._workers import Workers

            Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
            self._workers = Workers(self.n_jobs, self.hydra_context, self.task_function)
        log.debug(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        return cast("Future[JobReturn]", self._workers.submit(self._numbered(overrides, idx)))

    def stop_workers(self) -> None:
        """Kill the workers and their running jobs (an interrupted sweep)."""
        if self._workers is not None:
            self._workers.shutdown()
            self._workers = None

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
               ) -> Sequence[JobReturn]:
        """Run the jobs: side by side in the workers, or in turn in this process."""
        if self.n_jobs > 1:
            futures = [self.submit(o, i) for i, o in enumerate(job_overrides, initial_job_idx)]
            try:
                return [f.result() for f in futures]
            except BaseException:
                self.stop_workers()
                raise
        setup_globals()
        assert self.hydra_context is not None
        assert self.config is not None
        assert self.task_function is not None
        context, config = self.hydra_context, self.config
        configure_log(config.hydra.hydra_logging, config.hydra.verbose,
                      execution_whitelist=context.execution_whitelist)
        Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs locally")
        runs: list[JobReturn] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self._numbered(overrides, idx)
            runs.append(run_job(hydra_context=context, task_function=self.task_function,
                                config=sweep_config, job_dir_key="hydra.sweep.dir",
                                job_subdir_key="hydra.sweep.subdir"))
            configure_log(config.hydra.hydra_logging, config.hydra.verbose,
                          execution_whitelist=context.execution_whitelist)
        return runs
