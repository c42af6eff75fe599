"""The sweep loop: upstream's ask / launch / tell, plus what long sweeps need.

Added to hydra-optuna-sweeper's implementation (by subclassing it; its parsing of
search spaces, grid handling and directions are reused as they are):

* the trial number reaches each job (``optuna_trial=<n>``);
* resume: the study is named by the sweep's identity (:mod:`tabflow.study`); a re-run
  continues it to ``n_trials`` in total, job numbers continue, and trials left RUNNING
  by a killed sweep (or FAILED by an interrupted one) are retried first;
* a wall-clock ``timeout``; warm start from the model's own values or given sets;
* conditional search spaces (``conditional_params``: one space per choice of a
  parameter, e.g. per model family);
* failures: a trial that raises or returns NaN / inf fails in Optuna with its error,
  the sweep goes on while ``max_failure_rate`` holds, and ends with a summary;
* a progress line per trial; the job's metrics and MLflow run id as user attributes;
* a results file naming the best trial and its MLflow run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_optuna_sweeper._impl import (
    OptunaSweeperImpl,
    create_params_from_overrides,
)
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, Trial, TrialState

from hydra_plugins.tabflow_sweeper.tabflow_sweeper import TRIAL_KEY, batch_size
from tabflow import artifacts
from tabflow.config import as_list
from tabflow.study import LOCK_SUFFIX, optuna_storage, pid_alive, storage_lock
from tabflow.study import study_name as derive_study_name

log = logging.getLogger(__name__)

# Trial user attributes set by this sweeper.
ATTR_HOST, ATTR_PID = "tabflow.host", "tabflow.pid"
ATTR_INTERRUPTED = "tabflow.interrupted"  # the trial was cut short, not wrong: retried
ATTR_RETRY_OF = "tabflow.retry_of"
ATTR_ERROR = "tabflow.error"
ATTR_RUN_ID = "mlflow_run_id"
ATTR_SESSIONS = "tabflow.sessions"  # sweep processes started on the study so far
# Failure-rate checks wait for this many finished trials, so one early failure can't end a sweep.
MIN_TRIALS_FOR_RATE = 5


class SweepAbortedError(RuntimeError):
    """Too many trials failed; the message summarises the failures."""


def _format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _create_study(name: str, storage: Any, sampler: Any, directions: list[str]) -> optuna.Study:
    """Create or load a study, opening its storage once per process.

    ``optuna_storage`` refuses foreign or corrupt SQLite files and serialises a fresh
    file's schema set-up among processes started together.
    """
    return optuna.create_study(study_name=name,
                               storage=optuna_storage(str(storage)) if storage else None,
                               sampler=sampler, directions=cast(Any, directions),
                               load_if_exists=True)


def _record_dir(trial: Trial, out: Path) -> dict[str, Any]:
    """Copy a job dir's finite metrics and MLflow run id onto its trial; return the metrics."""
    metrics = artifacts.read_json(out / artifacts.METRICS_FILE)
    for name, value in metrics.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            trial.set_user_attr(name, value)
    run_file = out / artifacts.MLFLOW_RUN_FILE
    if run_file.exists():
        trial.set_user_attr(ATTR_RUN_ID, run_file.read_text().strip())
    return metrics


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _tell(study: optuna.Study, trial: Trial, **kwargs: Any) -> None:
    try:
        study.tell(trial, **kwargs)
    except RuntimeError as e:
        # The grid sampler calls Study.stop() once the grid is covered, which Optuna only
        # allows inside optimize(); the trial is recorded all the same (as upstream does).
        if "Study.stop" not in str(e):
            raise


@dataclass
class _Progress:
    """Counts this invocation's trials and prints a line per finished one."""

    total: int
    done: int
    metric: str
    started: float = field(default_factory=time.monotonic)
    finished_here: int = 0

    def line(self, study: optuna.Study, trial_number: int, outcome: str) -> str:
        self.done += 1
        self.finished_here += 1
        elapsed = time.monotonic() - self.started
        remaining = max(0, self.total - self.done)
        eta = elapsed / self.finished_here * remaining
        best = ""
        if len(study.directions) == 1:
            complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if complete:
                b = study.best_trial
                best = f" | best {b.value:.4f} (trial {b.number})"
        else:
            best = f" | Pareto front: {len(study.best_trials)} trials"
        return (f"trial {trial_number} {outcome} | {self.done}/{self.total}{best} | "
                f"elapsed {_format_duration(elapsed)} | ETA {_format_duration(eta)}")


class TabflowOptunaSweeperImpl(OptunaSweeperImpl):
    """Upstream's implementation with resume, timeout, warm start and failure handling."""

    def __init__(self, sampler: Any, direction: Any, storage: Any | None,
                 study_name: str | None, n_trials: int, n_jobs: int | None,
                 max_failure_rate: float, custom_search_space: str | None, params: Any,
                 timeout: float | None, enqueue_defaults: bool,
                 enqueue: Sequence[dict[str, Any]], conditional_on: str,
                 conditional_params: dict[str, dict[str, str]] | None) -> None:
        super().__init__(sampler, direction, storage, study_name, n_trials, 1,
                         max_failure_rate, custom_search_space, params)
        self.requested_n_jobs = n_jobs
        self.timeout = timeout
        self.enqueue_defaults = enqueue_defaults
        self.enqueue = [dict(p) for p in enqueue]
        self.conditional_on = conditional_on
        self.conditional_params = dict(conditional_params or {})
        self._conditional: dict[str, dict[str, BaseDistribution]] = {}
        self.metric_name = "objective"

    @property
    def _cfg(self) -> DictConfig:
        assert self.config is not None, "setup() runs before sweep()"
        return self.config

    def setup(self, **kwargs: Any) -> None:
        """Prepare the launcher and size batches to its parallelism."""
        super().setup(**kwargs)
        # SIGTERM (a scheduler, `kill`) ends the sweep like Ctrl-C: running trials are
        # marked interrupted, runs KILLED, and a re-run resumes; Python's default would
        # exit on the spot and leave them RUNNING.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _raise_interrupt)
        self.n_jobs = batch_size(self.requested_n_jobs, self._cfg.hydra.get("launcher"))
        if not self._cfg.hydra.get("verbose"):  # the progress lines say what Optuna would
            optuna.logging.set_verbosity(optuna.logging.WARNING)
        metric = OmegaConf.select(self._cfg, "objective.metric", default="objective")
        self.metric_name = str(metric)

    # ---------------------------------------------------------------- trial set-up
    def _configure_trials(self, trials: list[Trial],
                          search_space_distributions: dict[str, BaseDistribution],
                          fixed_params: dict[str, Any],
                          fixed_overrides: list[str]) -> Sequence[Sequence[str]]:
        overrides = []
        for trial in trials:
            for name, distribution in search_space_distributions.items():
                trial._suggest(name, distribution)
            # A conditional space: the choice made above decides which keys exist.
            choice = trial.params.get(self.conditional_on)
            for name, distribution in self._conditional.get(str(choice), {}).items():
                trial._suggest(f"{choice}:{name}", distribution)
            for name, value in fixed_params.items():
                trial.set_user_attr(name, value)
            if self.custom_search_space_extender:
                self.custom_search_space_extender(self._cfg, trial)
            # Conditional names carry their choice as a prefix; the override doesn't.
            values = {name.split(":", 1)[-1]: value for name, value in trial.params.items()}
            values.update(fixed_params)
            # Each trial's output dir is named by its trial number: unique even when several
            # sweep processes share one study and start in the same second.
            overrides.append((*(f"{k}={v}" for k, v in values.items()), *fixed_overrides,
                              f"{TRIAL_KEY}={trial.number}",
                              f"hydra.sweep.subdir={trial.number}"))
        return overrides

    def _search_space(self, arguments: list[str]) -> tuple[dict[str, BaseDistribution],
                                                            dict[str, Any], list[str], bool]:
        self._process_searchspace_config()
        params_conf = self._parse_sweeper_params_config()
        params_conf.extend(arguments)
        dists, fixed_params, fixed_overrides = create_params_from_overrides(params_conf)
        is_grid = getattr(self.sampler, "func", None) is optuna.samplers.GridSampler
        if is_grid:
            grid = {name: self._to_grid_sampler_choices(d) for name, d in dists.items()}
            self.sampler = self.sampler(grid)
            self.n_trials = min(self.n_trials, math.prod(len(v) for v in grid.values()))
            log.info("Grid sampler: %d trials cover the grid", self.n_trials)
        for name in fixed_params:
            dists.pop(name, None)
        self._conditional = {
            str(choice): create_params_from_overrides(
                [f"{k}={v}" for k, v in space.items()])[0]
            for choice, space in self.conditional_params.items()
        }
        return dists, fixed_params, fixed_overrides, is_grid

    # ---------------------------------------------------------------------- resume
    def _reclaim_interrupted(self, study: optuna.Study) -> list[int]:
        """Fail trials a killed sweep left RUNNING, and queue every interrupted trial again."""
        host = socket.gethostname()
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner, pid = t.user_attrs.get(ATTR_HOST), t.user_attrs.get(ATTR_PID)
            if owner not in (None, host) or (pid is not None and pid_alive(int(pid))):
                continue  # another live sweep process is running it
            Trial(study, t._trial_id).set_user_attr(ATTR_INTERRUPTED, True)
            study.tell(t.number, state=TrialState.FAIL)
        trials = study.get_trials(deepcopy=False)
        retried = {t.user_attrs.get(ATTR_RETRY_OF) for t in trials}
        queued = []
        for t in trials:
            if (t.state is TrialState.FAIL and t.user_attrs.get(ATTR_INTERRUPTED)
                    and t.number not in retried):
                study.enqueue_trial(t.params, user_attrs={ATTR_RETRY_OF: t.number})
                queued.append(t.number)
        return queued

    @staticmethod
    def _counts_toward_total(t: FrozenTrial) -> bool:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            return True
        return t.state is TrialState.FAIL and not t.user_attrs.get(ATTR_INTERRUPTED)

    def _warm_start(self, study: optuna.Study, dists: dict[str, BaseDistribution]) -> None:
        sets = list(self.enqueue)
        if self.enqueue_defaults:
            # The model's configured values for the searched keys: a known-good first trial.
            defaults = {name: OmegaConf.select(self._cfg, name) for name in dists}
            sets.insert(0, {k: v for k, v in defaults.items() if v is not None})
        for params in sets:
            study.enqueue_trial(params)
            log.info("Warm start: queued %s", params)

    # ------------------------------------------------------------------------ loop
    def _record_outputs(self, trial: Trial, ret: JobReturn) -> None:
        """Copy the job's metrics and MLflow run id onto the trial as user attributes."""
        if ret.hydra_cfg is not None:
            _record_dir(trial, Path(str(ret.hydra_cfg.hydra.runtime.output_dir)))

    def _finished_values(self, trial: Trial, n_directions: int) -> list[float] | None:
        """The objective of a trial whose job finished (per its output dir), else None.

        A batch whose launcher failed (a killed joblib worker) may hold trials that
        completed; their results are on disk and are kept rather than run again.
        """
        out = Path(self._cfg.hydra.sweep.dir) / str(trial.number)
        metrics = artifacts.read_json(out / artifacts.METRICS_FILE)
        if not metrics or (out / artifacts.ERROR_FILE).exists():
            return None
        values = [metrics.get(str(n)) for n in as_list(self._cfg.objective.metric)]
        if len(values) != n_directions or not all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            return None
        _record_dir(trial, out)
        return [float(v) for v in values if v is not None]

    @staticmethod
    def _values(ret: JobReturn, n_directions: int) -> list[float]:
        if ret.status == JobStatus.FAILED:
            # The job's own exception. (Hydra's return_value getter raises it too, but also
            # logs an "Error executing job" line per trial; the progress line says it.)
            raise cast(BaseException, ret._return_value)
        result = ret.return_value
        values = [float(v) for v in (result if n_directions > 1 else [result])]
        if len(values) != n_directions:
            raise ValueError(f"the job returned {len(values)} values for {n_directions} "
                             f"objectives")
        bad = [v for v in values if not math.isfinite(v)]
        if bad:
            raise ValueError(f"the objective is {bad[0]}; a trial must return finite values")
        return values

    def _study_lock(self, study: optuna.Study, name: str) -> Any:
        """The lock that other sweep processes on the same stored study also take."""
        if not self.storage:  # an in-memory study has no other processes
            return contextlib.nullcontext()
        return storage_lock(study._storage, f"{name}{LOCK_SUFFIX}ask")

    def _ask(self, study: optuna.Study, name: str, progress: _Progress) -> list[Trial]:
        """Start the next batch of trials; none when the study has all it needs.

        Other sweep processes may share the study: what they finished and what they are
        running counts toward ``n_trials``, and the count and the asks happen under a lock
        in the shared storage, so that together they run exactly ``n_trials``.
        """
        with self._study_lock(study, name):
            existing = study.get_trials(deepcopy=False)
            counted = sum(self._counts_toward_total(t) for t in existing)
            running = sum(t.state is TrialState.RUNNING for t in existing)
            progress.done = counted
            remaining = self.n_trials - counted - running
            if remaining <= 0:
                if running:
                    log.info("The other %d trial(s) of study %s are running in other sweep "
                             "processes; this one is done", running, name)
                return []
            trials = [study.ask() for _ in range(min(remaining, self.n_jobs))]
            for trial in trials:
                # Owned before the lock is released: another process reclaiming stale
                # RUNNING trials must see that this one's owner is alive.
                trial.set_user_attr(ATTR_HOST, socket.gethostname())
                trial.set_user_attr(ATTR_PID, os.getpid())
            return trials

    def sweep(self, arguments: list[str]) -> None:
        """Run or resume the study until ``n_trials`` trials are done or time runs out."""
        dists, fixed_params, fixed_overrides, _ = self._search_space(arguments)
        directions = self._get_directions()
        name = self.study_name or derive_study_name(self._cfg)
        study = _create_study(name, self.storage, self.sampler, directions)
        assert self.launcher is not None
        # Set-up under the study's lock: other sweep processes may be starting on it too.
        with self._study_lock(study, name):
            sessions = int(study.user_attrs.get(ATTR_SESSIONS, 0))
            study.set_user_attr(ATTR_SESSIONS, sessions + 1)
            if study.user_attrs.get("sampler") != type(self.sampler).__name__:
                study.set_user_attr("sampler", type(self.sampler).__name__)
            queued = self._reclaim_interrupted(study)
            launched = [t for t in study.get_trials(deepcopy=False)
                        if t.state is not TrialState.WAITING]
            if not launched and not sessions:
                self._warm_start(study, dists)
        done = sum(self._counts_toward_total(t) for t in launched)
        if sessions or launched:
            # A fresh sampler with the same seed would re-propose the trials of the first
            # session (a resume) or of the other processes sharing the study.
            self.sampler.reseed_rng()
        if launched:
            log.info("Resuming study %s: %d of %d trials done%s", name, done, self.n_trials,
                     f"; retrying interrupted trials {queued}" if queued else "")
        else:
            log.info("Study %s (%s), sampler %s, directions %s", name, self.storage,
                     type(self.sampler).__name__, directions)
        self.job_idx = len(launched)  # job numbers continue across resumes
        progress = _Progress(total=self.n_trials, done=done, metric=self.metric_name)
        failures: list[tuple[int, str]] = []
        stopped_by_timeout = False

        while True:
            if self.timeout is not None and time.monotonic() - progress.started >= self.timeout:
                stopped_by_timeout = True
                log.warning("Timeout of %ss reached: stopping after %d of %d trials",
                            self.timeout, progress.done, self.n_trials)
                break
            trials = self._ask(study, name, progress)
            if not trials:
                break
            overrides = self._configure_trials(trials, dists, fixed_params, fixed_overrides)
            try:
                returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            except BaseException as e:  # Ctrl-C, SIGTERM, a crashed launcher or worker
                lost = []
                for trial in trials:
                    values = self._finished_values(trial, len(directions))
                    if values is not None:  # its job finished before the others were lost
                        _tell(study, trial, values=values)
                        continue
                    trial.set_user_attr(ATTR_INTERRUPTED, True)
                    trial.set_user_attr(ATTR_ERROR, f"interrupted: {type(e).__name__}")
                    study.tell(trial, state=TrialState.FAIL)
                    lost.append(trial.number)
                log.error("Sweep interrupted (%s: %s) while trial(s) %s ran; they are marked "
                          "interrupted and will be retried. Re-run the same command to resume "
                          "study %s", type(e).__name__, str(e).splitlines()[0][:300] if str(e)
                          else "", lost, name)
                raise
            self.job_idx += len(returns)
            for trial, ret in zip(trials, returns, strict=True):
                self._record_outputs(trial, ret)
                try:
                    values = self._values(ret, len(directions))
                except Exception as e:
                    message = f"{type(e).__name__}: {e}"
                    trial.set_user_attr(ATTR_ERROR, message[:2000])
                    _tell(study, trial, state=TrialState.FAIL)
                    failures.append((trial.number, message))
                    log.warning("%s", progress.line(study, trial.number, f"FAILED ({message})"))
                    continue
                _tell(study, trial, values=values)
                shown = ", ".join(f"{v:.4f}" for v in values)
                log.info("%s", progress.line(study, trial.number, f"{self.metric_name}={shown}"))
            finished = progress.finished_here
            if (finished >= min(MIN_TRIALS_FOR_RATE, self.n_trials)
                    and len(failures) / finished > self.max_failure_rate):
                summary = self._write_results(study, failures, stopped_by_timeout)
                raise SweepAbortedError(
                    f"{len(failures)} of {finished} trials failed, more than "
                    f"max_failure_rate={self.max_failure_rate}; {summary}")

        summary = self._write_results(study, failures, stopped_by_timeout)
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            raise SweepAbortedError(f"no trial of study {name} completed; {summary}")

    # --------------------------------------------------------------------- results
    def _write_results(self, study: optuna.Study, failures: list[tuple[int, str]],
                       stopped_by_timeout: bool) -> str:
        """Write optimization_results.yaml and return a one-line failure summary."""
        trials = study.get_trials(deepcopy=False)
        states = Counter(t.state.name for t in trials)
        by_error = Counter(message.split(":", 1)[0] for _, message in failures)
        summary = (f"failures by error: {dict(by_error)}; first: trial {failures[0][0]}: "
                   f"{failures[0][1]}" if failures else "no failures")
        results: dict[str, Any] = {
            "name": "optuna",
            "study_name": study.study_name,
            "storage": str(self.storage),
            "n_trials": self.n_trials,
            "trials_by_state": dict(states),
            "stopped_by_timeout": stopped_by_timeout,
            "failures": [{"trial": n, "error": m} for n, m in failures],
        }
        complete = [t for t in trials if t.state is TrialState.COMPLETE]
        if complete and len(study.directions) == 1:
            best = study.best_trial
            results.update({"best_trial": best.number, "best_value": best.value,
                            "best_params": best.params,
                            "best_mlflow_run_id": best.user_attrs.get(ATTR_RUN_ID)})
            log.info("Best trial %d: %s=%s %s", best.number, self.metric_name, best.value,
                     best.params)
        elif complete:
            results["solutions"] = [
                {"trial": t.number, "values": t.values, "params": t.params,
                 "mlflow_run_id": t.user_attrs.get(ATTR_RUN_ID)} for t in study.best_trials]
            log.info("Pareto front: %d trials", len(study.best_trials))
        if failures:
            log.warning("%d trial(s) failed: %s", len(failures), summary)
        sweep_dir = Path(self._cfg.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)  # a resumed, complete study launched nothing
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
        return summary
