"""The Hydra callback that tracks runs and sweeps in MLflow: it decides *when*, tracking *how*.

Where each hook runs and what it does (the modules it calls decide *how*):

* ``on_multirun_start`` (launching process): creates or upgrades the tracking store
  once, before any job (parallel jobs would race on its schema migrations), sets the
  experiment and opens the sweep's parent run (:mod:`tabflow.tracking.parent`).
* ``on_job_start`` / ``on_job_end`` (the job's process: in-process, a joblib worker or
  a remote host): open a child run under the parent, then log the job's output dir
  and close it FINISHED or FAILED (:mod:`tabflow.tracking.jobs`).
* ``on_multirun_end`` (launching process): the sweep's end (:mod:`tabflow.sweep_end`):
  best trial, refit, test score, registration, report; then the parent is closed.
* ``on_run_start`` / ``on_run_end``: a single run is one standalone MLflow run.

Every tracking failure ends the command with a non-zero exit and a clear message
(:mod:`tabflow.tracking.failures`); Hydra would otherwise turn it into a warning.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from hydra_plugins.tabflow_sweeper import search_space
from tabflow.config import register_resolvers
from tabflow.contract import (
    CODE_ROOT,
    MLFLOW_RUN_FILE,
    TRACKING_ERROR_FILE,
    disk_full,
    is_optuna_sweep,
)
from tabflow.interrupts import first_interrupt_held
from tabflow.sweep_identity import study_name
from tabflow.tracking.failures import (
    close_leaked_run,
    fail,
    loud,
    raise_tracking_errors,
    record_job_error,
)
from tabflow.tracking.jobs import JobRecord, log_job_dir, note_process, open_job_run, write_outcome
from tabflow.tracking.parent import close_parent, open_parent
from tabflow.tracking.provenance import provenance_tags
from tabflow.tracking.store import Store, connect, ensure_experiment
from tabflow.tracking.writer import BackgroundWriter


@dataclass
class MlflowCallback(Callback):
    """Hydra callback that tracks runs and sweeps in MLflow and registers the best model.

    It takes no arguments: every setting is read from the composed config in each hook
    (``tracking``, ``registry``, ``objective``), which avoids ``${hydra:...}``
    interpolations in callback parameters (callbacks are built before HydraConfig).
    State set in the launching process (parent run, experiment) reaches joblib or
    remote workers because launchers pickle the callbacks after ``on_multirun_start``.
    """

    experiment_id: str | None = None
    parent_run_id: str | None = None
    parent_before: str | None = None  # the parent's status before this sweep reopened it
    parent_reopened: bool = True  # False: a finished study's re-run left its parent as it was
    run_tags: dict[str, str] = field(default_factory=dict)
    # The sweep's dimensions, read where its command line is (the launching process).
    searched: list[str] | None = None
    # The Optuna study's name, computed once at the sweep's start and handed on.
    study: str | None = None
    last_run_id: str | None = None
    # The process that launched the sweep: its in-process jobs log in the background.
    launcher_pid: int | None = None
    _job_run_id: str | None = field(default=None, repr=False)
    _store: Store | None = field(default=None, repr=False)
    _writer: BackgroundWriter | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        register_resolvers()  # the config's ${file_stem:...} resolves in this process

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        register_resolvers()  # a worker that unpickled the callback resolves it too

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_store"] = None  # a client is per process
        state["_job_run_id"] = None
        state["_writer"] = None  # a thread is per process
        return state

    def _background(self, config: DictConfig) -> BackgroundWriter | None:
        """The writer for this job's records; None: log them now (a worker process)."""
        if os.getpid() != self.launcher_pid or not config.tracking.get("async_logging"):
            return None
        if self._writer is None:
            self._writer = BackgroundWriter()
        return self._writer

    def flush(self) -> None:
        """Wait for the background writer (before anything reads the trials' runs)."""
        if self._writer is not None:
            self._writer.flush()

    def _connect(self, config: DictConfig) -> Store:
        if not config.hydra.get("verbose"):
            # Before MLflow's import, which reads it: its INFO lines (schema set-up, model
            # registration) are noise next to the sweep's own; hydra.verbose=true shows them.
            os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        if self._store is None or self._store.uri != config.tracking.uri:
            self._store = connect(config.tracking.uri)
        return self._store

    def _start(self, config: DictConfig) -> Store:
        """Open the store and experiment and collect the tags shared by every run."""
        store = self._connect(config)
        self.experiment_id = ensure_experiment(store, config.tracking.experiment,
                                               Path(config.paths.root))
        self.run_tags = provenance_tags(CODE_ROOT)
        return store

    # ---------------------------------------------------------------- single run
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Open the store before the job, so a bad URI stops the run before any fit."""
        if config.tracking.enabled:
            loud(lambda: self._start(config), "could not start tracking")

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Fail the command if the job's tracking failed."""
        if not config.tracking.enabled or self.experiment_id is None:
            return
        out = Path(config.hydra.runtime.output_dir)
        loud(lambda: raise_tracking_errors([out / TRACKING_ERROR_FILE]),
             "the run was not fully tracked")
        if self.last_run_id:
            print(f"MLflow run {self.last_run_id} in experiment "
                  f"{config.tracking.experiment!r} at {config.tracking.uri}")

    # ---------------------------------------------------------------------- sweep
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Open the store once and the sweep's parent run."""
        if not config.tracking.enabled:
            return
        # Registration's imports load when it starts, in this thread: importing them from
        # a background thread while a job imports scikit-learn in the main one can fail a
        # trial with a partially initialised module.
        loud(lambda: self._open_parent(config), "could not start tracking the sweep")

    def _open_parent(self, config: DictConfig) -> None:
        self.launcher_pid = os.getpid()
        store = self._start(config)
        assert self.experiment_id is not None
        self.study = study_name(config) if is_optuna_sweep(config) else None
        space = search_space(config)
        self.searched = list(space)
        self.parent_run_id, self.parent_before, self.parent_reopened = open_parent(
            store, self.experiment_id, config, self.run_tags, self.study, space)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Hand the sweep to its end step (registration), or close its parent as failed."""
        if not config.tracking.enabled or self.parent_run_id is None:
            return
        assert self.experiment_id is not None
        # This hook runs in a `finally`: an exception in flight means the sweep failed.
        error = sys.exc_info()[1]
        if disk_full(error) is not None:
            # Every write would fail (and MLflow log a traceback for each): the re-run
            # reopens the parent and logs the finished jobs from their dirs.
            return
        self.flush()
        store = self._connect(config)
        if error is not None:
            if self.parent_reopened:  # else it still records the sweep that ran
                close_parent(store, self.parent_run_id, error, self.parent_before)
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            raise_tracking_errors(sorted(sweep_dir.glob(f"**/{TRACKING_ERROR_FILE}")))
        except BaseException as e:
            with contextlib.suppress(Exception):  # the store may be what failed
                store.client.set_terminated(self.parent_run_id, "FAILED")
            fail(f"the sweep's results could not be tracked: {e}\nNothing computed is lost. "
                 f"Once the tracking store is back, upload them and register the best model:"
                 f"\n  tabflow --tracking-uri {config.tracking.uri} upload {sweep_dir}"
                 f"\n  and re-run this command (the study is complete: it only registers)", e)
        from tabflow.sweep_end import SweepRun, finish

        finish(SweepRun(store, config, self.experiment_id, self.parent_run_id, self.run_tags,
                        self.study, self.parent_reopened))

    # ------------------------------------------------------------------------ jobs
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Open the job's run: a child of the sweep's parent, or a standalone run."""
        self._job_run_id = None
        close_leaked_run("an earlier job in this process")
        if not config.tracking.enabled or self.experiment_id is None:
            return
        record = JobRecord.live(config)
        try:
            note_process(record.out)
            self._job_run_id = open_job_run(self._connect(config), self.experiment_id, record,
                                            self.parent_run_id, self.run_tags,
                                            searched=self.searched)
        except Exception as e:
            record_job_error(record.out, "opening the job's MLflow run", e)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """Log the job's outputs and close its run FINISHED or FAILED."""
        num = config.hydra.job.get("num")
        close_leaked_run("this job" if num is None else f"job {num}")
        run_id, self._job_run_id = self._job_run_id, None
        if run_id is None:
            return
        self.last_run_id = run_id
        record = JobRecord.live(config)
        error = None
        if job_return.status != JobStatus.COMPLETED:  # Hydra keeps the job's exception
            value = job_return._return_value
            error = value if isinstance(value, BaseException) else RuntimeError(str(value))
        log_model = config.tracking.log_model

        def abandon(e: Exception) -> None:
            record_job_error(record.out, "logging the job to MLflow", e)
            # Half-logged: `tabflow upload` tracks the job again, in a complete run.
            (record.out / MLFLOW_RUN_FILE).unlink(missing_ok=True)
            with contextlib.suppress(Exception):  # the error file says what happened
                self._connect(config).client.set_terminated(run_id, "FAILED")

        # Ctrl-C waits until the job's record is whole: cut off half-logged, its run stayed
        # RUNNING while the sweep kept its trial as COMPLETE (from the job's dir).
        with first_interrupt_held():
            try:
                status, summary = write_outcome(record.out, error)
                store = self._connect(config)
            except Exception as e:
                abandon(e)
                return

            def log_it() -> None:
                try:
                    log_job_dir(store, run_id, record, status, summary, log_model=log_model)
                except Exception as e:
                    abandon(e)

            writer = self._background(config)
            if writer is None:
                log_it()
            else:
                # The job's config is not touched again once it ended: the writer may read it.
                writer.submit(log_it)

