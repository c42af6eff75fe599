"""Warm worker processes: jobs composed in the launching process, run side by side.

Each worker is started once per sweep (loky's reusable executor) and keeps its imports,
its Hydra state and the data it loaded; the launching process composes each job's config
(cheaply, :mod:`._compose`) and sends only that. Jobs are submitted one at a time, so a
sweeper can hand a worker its next trial the moment it is free: no batch waits for its
slowest trial.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

# What a worker keeps between jobs (set once, by the executor's initializer).
_WORKER: dict[str, Any] = {}


def _init_worker(singleton_state: Any, hydra_context: HydraContext,
                 task_function: TaskFunction) -> None:
    setup_globals()
    Singleton.set_state(singleton_state)
    _WORKER.update(context=hydra_context, task=task_function)


def _run(config: DictConfig) -> JobReturn:
    HydraConfig.instance().set_config(config)
    return run_job(hydra_context=_WORKER["context"], task_function=_WORKER["task"],
                   config=config, job_dir_key="hydra.sweep.dir",
                   job_subdir_key="hydra.sweep.subdir")


class Workers:
    """A pool of warm worker processes running jobs (loky, as joblib's launcher uses)."""

    def __init__(self, n_jobs: int, hydra_context: HydraContext,
                 task_function: TaskFunction) -> None:
        from joblib.externals.loky import get_reusable_executor

        # The initializer's arguments travel once per worker, not once per job.
        self.executor = get_reusable_executor(
            max_workers=n_jobs, timeout=60, reuse=False, initializer=_init_worker,
            initargs=(Singleton.get_state(), hydra_context, task_function))

    def submit(self, config: DictConfig) -> Future[JobReturn]:
        """Start a job in the next free worker."""
        return self.executor.submit(_run, config)

    def shutdown(self) -> None:
        """Stop the workers at once, killing running jobs, and wait until they are gone.

        Waiting matters: a worker left to die in the background could finish its job
        after the sweeper looked at the job's dir and marked its trial for a retry.
        """
        self.executor.shutdown(wait=True, kill_workers=True)
