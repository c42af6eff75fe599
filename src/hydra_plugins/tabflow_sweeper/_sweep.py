"""The sweep loop: upstream's ask / launch / tell, plus what long sweeps need.

hydra-optuna-sweeper's implementation, subclassed (its search-space parsing, grid and
directions are reused), with: the trial number in each job's environment
(``OPTUNA_TRIAL_NUMBER``); resume to ``n_trials`` in total under the sweep's identity
(:mod:`.identity`), interrupted trials retried first (:mod:`._study`); a ``timeout``;
warm starts; conditional spaces; failures tolerated up to ``max_failure_rate`` (NaN / inf
included); heartbeats (:mod:`._heartbeat`): a process that stops beating loses its
trials to a retry; a progress line per trial and a results file (:mod:`._progress`).
Every difference from upstream is listed in docs/sweeper-plugin.md.

The loop's steps: :meth:`~TabflowOptunaSweeperImpl.search_space`, ``_study.join_study``,
:meth:`~TabflowOptunaSweeperImpl.run_batch` and
:meth:`~TabflowOptunaSweeperImpl.interrupted_launch`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any, NoReturn

import optuna
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from omegaconf import DictConfig, OmegaConf
from optuna.trial import Trial, TrialState

from hydra_plugins.tabflow_sweeper import _heartbeat, _study, best_trial, identity
from hydra_plugins.tabflow_sweeper._heartbeat import Heartbeat, TrialBeats
from hydra_plugins.tabflow_sweeper._outcomes import (
    finished_values,
    record_outputs,
    returned_values,
)
from hydra_plugins.tabflow_sweeper._progress import Progress, write_results
from hydra_plugins.tabflow_sweeper._pruning import check_pruning, pruned_error
from hydra_plugins.tabflow_sweeper._space import (
    OverlapError,
    SearchSpace,
    batch_size,
    parse_space,
    suggest,
    warm_sets,
)
from hydra_plugins.tabflow_sweeper.contract import (
    ATTR_ERROR,
    ATTR_INTERRUPTED,
    ENV_RETRY_OF,
    ENV_STUDY,
    ENV_TRIAL,
    TRIAL_KEY,
    as_interrupt,
    as_list,
    held_signals,
    interrupt_code,
    raise_on_sigterm,
    restore_sigterm,
)

log = logging.getLogger(__name__)

# Failure-rate checks wait for this many finished trials, so one early failure can't end a sweep.
MIN_TRIALS_FOR_RATE = 5


class SweepAbortedError(RuntimeError):
    """Too many trials failed; the message summarises the failures."""


class SweepInterruptedError(RuntimeError):
    """A batch was cut short (a signal, a lost worker); its trials will be retried.

    Attributes:
        code: The exit status: 128 + the signal for a signal, 1 for a lost worker.
    """

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def complete_message(study: optuna.Study, name: str, done: int, asked: int) -> str:
    """What a re-run of a finished study says: that it is complete, and how to run anew.

    A study is named by what it searches, so the same command finds the same study; asking
    for fewer trials than it has is no reason to run any.
    """
    best = ""
    trial = best_trial(study) if len(study.directions) == 1 else None
    if trial is not None:
        best = f", best trial {trial.number} at {trial.value:.4f}"
    count = f"{done} of {asked} trials" if asked >= done else \
        f"{done} trials, {asked} asked for"
    return (f"Resuming study {name}: it is complete ({count}{best}); nothing to run. To run "
            f"it again as a new study: add hydra.sweeper.study_name={name}-2 (or change what "
            f"it searches, e.g. seed=...); to extend it: hydra.sweeper.n_trials={done + asked}")


class TabflowOptunaSweeperImpl(OptunaSweeperImpl):
    """Upstream's implementation with resume, timeout, warm start and failure handling."""

    def __init__(self, sampler: Any, direction: Any, storage: Any | None,
                 study_name: str | None, n_trials: int, n_jobs: int | None,
                 max_failure_rate: float, custom_search_space: str | None, params: Any,
                 timeout: float | None, enqueue_defaults: bool,
                 enqueue: Sequence[dict[str, Any]], conditional_on: str,
                 conditional_params: dict[str, dict[str, str]] | None,
                 pruner: Any = None, heartbeat: Any = None) -> None:
        super().__init__(sampler, direction, storage, study_name, n_trials, 1,
                         max_failure_rate, custom_search_space, params)
        self.requested_n_jobs = n_jobs
        self.timeout = timeout
        self.enqueue_defaults = enqueue_defaults
        self.enqueue = [dict(p) for p in enqueue]
        self.conditional_on = conditional_on
        self.conditional_params = dict(conditional_params or {})
        self.pruner = pruner
        self.heartbeat_cfg = heartbeat
        self.heartbeat: Heartbeat | None = None  # the stored study's, set by sweep()
        self.beats: TrialBeats | None = None
        self.metric_name = "objective"
        self.metric_names: list[str] = []  # the objective's metrics, as the job names them
        self.current_study: str | None = None  # the study being swept, for messages
        self.numbered_dirs = True  # trials' output dirs are named by trial number
        # Trials this process started and has not told yet: the ones an interrupt must
        # settle (kept if their job finished, else marked for a retry), wherever it lands.
        self.open_trials: list[Trial] = []

    @property
    def _cfg(self) -> DictConfig:
        assert self.config is not None, "setup() runs before sweep()"
        return self.config

    def setup(self, **kwargs: Any) -> None:
        """Prepare the launcher and size batches to its parallelism."""
        super().setup(**kwargs)
        self.n_jobs = batch_size(self.requested_n_jobs, self._cfg.hydra.get("launcher"))
        # Hydra's default subdir (the job number) is replaced by the trial number; a
        # subdir of the user's own is kept.
        sweep = OmegaConf.to_container(self._cfg.hydra.sweep, resolve=False)
        self.numbered_dirs = isinstance(sweep, dict) and \
            sweep.get("subdir") in (None, "${hydra.job.num}")
        metric = OmegaConf.select(self._cfg, "objective.metric", default=None)
        self.metric_names = [str(m) for m in as_list(metric)] if metric is not None else []
        self.metric_name = "objective" if metric is None else str(metric)

    def search_space(self, arguments: list[str]) -> tuple[SearchSpace, Any, int]:
        """Parse the search space (``_space.parse_space``): space, sampler, trial count."""
        return parse_space(self, arguments, self.conditional_params)

    def trial_overrides(self, trials: list[Trial], space: SearchSpace
                        ) -> Sequence[Sequence[str]]:
        """Suggest each trial's values and return the overrides that launch its job."""
        overrides = []
        for trial in trials:
            try:
                values = suggest(trial, space, self.conditional_on,
                                 self.custom_search_space_extender, self._cfg)
            except OverlapError as e:  # the config's fault: every trial would do the same
                for started in trials[trials.index(trial):]:  # none of the batch runs
                    _study.set_user_attrs(started, {ATTR_ERROR: str(e)})
                    _study.tell(started.study, started, state=TrialState.FAIL)
                raise SweepAbortedError(str(e)) from e
            overrides.append((*(f"{k}={v}" for k, v in values.items()), *space.fixed_overrides,
                              *self._job_overrides(trial)))
        return overrides

    def _job_overrides(self, trial: Trial) -> list[str]:
        """What a trial's job gets besides its values: its number, study and retry.

        In the job's environment (any app can read it), and into its config when it has the
        key. Output dirs are named by trial number (unique across processes sharing the
        study) unless the user chose a subdir.
        """
        env: dict[str, Any] = {ENV_TRIAL: trial.number}
        if self.pruner:  # the job reports to its trial
            env[ENV_STUDY] = trial.study.study_name
        replaces = _heartbeat.retry_of(trial)
        if replaces is not None:  # the job's run links to the attempt it replaces
            env[ENV_RETRY_OF] = replaces
        out = [f"++hydra.job.env_set.{k}={v}" for k, v in env.items()]
        if TRIAL_KEY in self._cfg:
            out.append(f"{TRIAL_KEY}={trial.number}")
        if self.numbered_dirs:
            out.append(f"hydra.sweep.subdir={trial.number}")
        return out

    # ------------------------------------------------------------------------ loop
    def sweep(self, arguments: list[str]) -> None:
        """Run or resume the study until ``n_trials`` trials are done or time runs out.

        While it runs, SIGTERM (a scheduler, ``kill``) ends the sweep like Ctrl-C (running
        trials are marked interrupted and a re-run resumes; Python's default would exit on
        the spot and leave them RUNNING), and Optuna logs warnings only (the progress lines
        say the rest). Both are put back when it ends: Hydra may run inside another program.
        """
        previous = raise_on_sigterm()
        verbosity = optuna.logging.get_verbosity()
        if not self._cfg.hydra.get("verbose"):
            optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            self._sweep_study(arguments)
        finally:
            restore_sigterm(previous)
            optuna.logging.set_verbosity(verbosity)

    def _sweep_study(self, arguments: list[str]) -> None:
        space, self.sampler, self.n_trials = self.search_space(arguments)
        directions = self._get_directions()
        stored = bool(self.storage)
        try:
            check_pruning(self.pruner, directions, self.storage)
            self.heartbeat = Heartbeat.from_config(self.heartbeat_cfg) if stored else None
        except ValueError as e:
            raise SweepAbortedError(str(e)) from e
        name = identity.study_name(self._cfg)
        self.current_study = name
        study = _study.create_study(name, self.storage, self.sampler, directions,
                                    self.metric_names, self.pruner, self.heartbeat)
        warm = warm_sets(self._cfg, space, self.enqueue, self.enqueue_defaults)
        launched, queued = _study.join_study(study, stored, self.sampler, warm, self.heartbeat)
        done = _study.count_done(study.get_trials(deepcopy=False))  # retries queued too
        if launched and done >= self.n_trials and not queued:
            log.info("%s", complete_message(study, name, done, self.n_trials))
        elif launched:
            log.info("Resuming study %s: %d of %d trials done%s", name, done, self.n_trials,
                     f"; retrying interrupted trials {queued}" if queued else "")
        else:
            log.info("Study %s (%s), sampler %s, directions %s", name, self.storage,
                     type(self.sampler).__name__, directions)
        self.job_idx = len(launched)  # job numbers continue across resumes
        progress = Progress(total=self.n_trials, done=done)
        # Workers that take one job at a time get their next trial as soon as they are free.
        run = self.run_pipelined if self.n_jobs > 1 and hasattr(self.launcher, "submit") \
            else self.run_batches
        self.beats = TrialBeats(study, self.heartbeat.interval) if self.heartbeat else None
        try:
            failures, stopped_by_timeout = run(study, stored, space, progress)
        finally:
            if self.beats is not None:
                self.beats.stop()
        if stopped_by_timeout:
            log.warning("Timeout of %ss reached: stopping after %d of %d trials",
                        self.timeout, progress.done, self.n_trials)
        summary = self._write_results(study, failures, stopped_by_timeout)
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            raise SweepAbortedError(f"no trial of study {name} completed; {summary}")

    def _timed_out(self, progress: Progress) -> bool:
        return self.timeout is not None and time.monotonic() - progress.started >= self.timeout

    def _ask(self, study: optuna.Study, stored: bool, progress: Progress, batch: int,
             mine: int) -> list[Trial]:
        """Start up to ``batch`` trials.

        With none left to start and none of this process's running, wait for the
        trials of other processes (``_study.await_others``).
        """
        trials = self._ask_held(study, stored, progress, batch)
        if trials or mine:
            return trials
        return _study.await_others(study, stored, self.n_trials, batch, mine, self.heartbeat,
                                   self.beats, lambda: self._timed_out(progress),
                                   ask=lambda: self._ask_held(study, stored, progress, batch))

    def _ask_held(self, study: optuna.Study, stored: bool, progress: Progress, batch: int
                  ) -> list[Trial]:
        """Start trials with signals held: each is on :attr:`open_trials`, or not asked.

        A signal that came meanwhile is raised once they are: the sweep loop settles the
        open trials after it stopped its workers, so that no job still running changes
        its dir while its trial is judged.
        """
        with held_signals() as came:
            trials, progress.done = _study.ask_batch(study, stored, self.n_trials, batch,
                                                     self.heartbeat, self.beats)
            self.open_trials += trials
        if came:
            raise as_interrupt(came[0])
        return trials

    def run_batches(self, study: optuna.Study, stored: bool, space: SearchSpace,
                    progress: Progress) -> tuple[list[tuple[int, str]], bool]:
        """Ask for ``n_jobs`` trials, launch them together, tell; until done or timed out.

        Returns:
            The failures, and whether the timeout stopped the sweep.
        """
        failures: list[tuple[int, str]] = []
        try:
            while not self._timed_out(progress):
                trials = self._ask(study, stored, progress, self.n_jobs, 0)
                if not trials:
                    return failures, False
                failures += self.run_batch(study, trials, space, progress)
                self._check_failure_rate(study, failures, progress, False)
        except KeyboardInterrupt as e:  # between an ask and its launch: settle what is open
            self._interrupted(study, self.open_trials, e)
        return failures, True

    def run_batch(self, study: optuna.Study, trials: list[Trial], space: SearchSpace,
                  progress: Progress) -> list[tuple[int, str]]:
        """Launch a batch of trials, tell the study each outcome; return the failures."""
        assert self.launcher is not None
        try:
            overrides = self.trial_overrides(trials, space)
            returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
        except SweepAbortedError:  # trial_overrides failed the batch: the config's fault
            raise
        except BaseException as e:  # Ctrl-C, SIGTERM, a crashed launcher or worker
            self._interrupted(study, self.open_trials, e)
        self.job_idx += len(returns)
        failures = []
        try:
            for trial, ret in zip(trials, returns, strict=True):
                failure = self.tell_outcome(study, trial, ret, progress)
                if failure is not None:
                    failures.append(failure)
        except BaseException as e:  # Ctrl-C while telling: the rest are kept or retried
            self._interrupted(study, self.open_trials, e)
        progress.warn_if_flat(study, self.metric_name)
        return failures

    def tell_outcome(self, study: optuna.Study, trial: Trial, ret: JobReturn,
                     progress: Progress) -> tuple[int, str] | None:
        """Record a finished job on its trial and tell the study; return it if it failed."""
        if self.beats is not None:
            self.beats.discard(trial)
        if _heartbeat.taken_over(study, trial):
            self.open_trials.remove(trial)  # another process retries it
            log.warning("trial %d DROPPED: this process stopped beating for longer than the "
                        "grace period (paused or cut off), so another one failed the trial "
                        "and retries it; its retry counts instead", trial.number)
            return None
        record_outputs(trial, ret)
        outcome = self._tell(study, trial, ret, progress)
        # Told: no longer open (an interrupt before this line finds it told, and keeps it).
        self.open_trials.remove(trial)
        return outcome

    def _tell(self, study: optuna.Study, trial: Trial, ret: JobReturn, progress: Progress
              ) -> tuple[int, str] | None:
        pruned = pruned_error(ret)
        if pruned is not None:
            _study.tell(study, trial, state=TrialState.PRUNED)
            log.info("%s", progress.line(study, trial.number, f"PRUNED ({pruned})"))
            return None
        try:
            values = returned_values(ret, len(study.directions))
        except Exception as e:
            message = f"{type(e).__name__}: {e}"
            _study.set_user_attrs(trial, {ATTR_ERROR: message[:2000]})
            _study.tell(study, trial, state=TrialState.FAIL)
            log.warning("%s", progress.line(study, trial.number, f"FAILED ({message})"))
            return trial.number, message
        _study.tell(study, trial, values=values)
        shown = ", ".join(f"{v:.4f}" for v in values)
        log.info("%s", progress.line(study, trial.number, f"{self.metric_name}={shown}"))
        return None

    def run_pipelined(self, study: optuna.Study, stored: bool, space: SearchSpace,
                      progress: Progress) -> tuple[list[tuple[int, str]], bool]:
        """Keep every worker busy: each finished trial is told and the next one started.

        For launchers that start jobs one at a time (``submit``): unlike batches, no
        worker waits for the slowest trial of a batch. Returns the failures and whether
        the timeout stopped the sweep.
        """
        assert self.launcher is not None
        submit = self.launcher.submit  # type: ignore[attr-defined]
        running: dict[Future[JobReturn], Trial] = {}
        failures: list[tuple[int, str]] = []
        timed_out = False
        try:
            while True:
                while len(running) < self.n_jobs and not timed_out:
                    if self._timed_out(progress):
                        timed_out = True
                        break
                    trials = self._ask(study, stored, progress, 1, len(running))
                    if not trials:
                        break
                    (overrides,) = self.trial_overrides(trials, space)
                    running[submit(overrides, self.job_idx)] = trials[0]
                    self.job_idx += 1
                if not running:
                    self.launcher.stop_workers()  # type: ignore[attr-defined]  # free them
                    return failures, timed_out
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    ret = future.result()  # a lost worker raises: its trial stays `running`
                    # Popped once told; Ctrl-C while telling leaves it on open_trials.
                    failure = self.tell_outcome(study, running[future], ret, progress)
                    del running[future]
                    if failure is not None:
                        failures.append(failure)
                progress.warn_if_flat(study, self.metric_name)
                self._check_failure_rate(study, failures, progress, timed_out)
        except SweepAbortedError:  # trials still running are cut short, and retried later
            self.launcher.stop_workers()  # type: ignore[attr-defined]
            self.interrupted_launch(study, self.open_trials)
            raise
        except BaseException as e:  # Ctrl-C, SIGTERM, a lost worker
            self.launcher.stop_workers()  # type: ignore[attr-defined]
            self._interrupted(study, self.open_trials, e)

    def _interrupted(self, study: optuna.Study, trials: list[Trial], e: BaseException
                     ) -> NoReturn:
        lost = self.interrupted_launch(study, trials)
        first_line = str(e).splitlines()[0][:300] if str(e) else ""
        what = (f"while trial(s) {lost} ran; they are marked interrupted and will be retried"
                if lost else "as its running trials finished; they are kept, nothing is lost")
        raise SweepInterruptedError(
            f"Sweep interrupted ({type(e).__name__}: {first_line}) {what}. Re-run the same "
            f"command to resume study {study.study_name}",
            interrupt_code(e) if isinstance(e, KeyboardInterrupt) else 1) from e

    def _check_failure_rate(self, study: optuna.Study, failures: list[tuple[int, str]],
                            progress: Progress, timed_out: bool) -> None:
        finished = progress.finished_here
        if (finished >= min(MIN_TRIALS_FOR_RATE, self.n_trials)
                and len(failures) / finished > self.max_failure_rate):
            summary = self._write_results(study, failures, timed_out)
            raise SweepAbortedError(
                f"{len(failures)} of {finished} trials failed, more than "
                f"max_failure_rate={self.max_failure_rate}; {summary}")

    def interrupted_launch(self, study: optuna.Study, trials: list[Trial]) -> list[int]:
        """Keep the trials of a lost batch that finished; mark the others to be retried.

        Returns:
            The numbers of the trials marked for a retry.
        """
        lost = []
        for trial in trials:
            if self.beats is not None:
                self.beats.discard(trial)
            if _heartbeat.taken_over(study, trial):
                continue  # another process failed it already, and retries it
            if study._storage.get_trial(trial._trial_id).state is not TrialState.RUNNING:
                continue  # told before the interrupt came
            out = Path(self._cfg.hydra.sweep.dir) / str(trial.number)
            values = finished_values(trial, out, self.metric_names, len(study.directions)) \
                if self.numbered_dirs else None  # a subdir of the user's: not found
            if values is not None:  # its job finished before the others were lost
                _study.tell(study, trial, values=values)
                continue
            _study.set_user_attrs(trial, {ATTR_INTERRUPTED: True, ATTR_ERROR: "interrupted"})
            study.tell(trial, state=TrialState.FAIL)
            lost.append(trial.number)
        return lost

    def _write_results(self, study: optuna.Study, failures: list[tuple[int, str]],
                       stopped_by_timeout: bool) -> str:
        return write_results(study, Path(self._cfg.hydra.sweep.dir), self.storage,
                             self.n_trials, self.metric_name, failures, stopped_by_timeout)
