"""What the sweeper shares with the jobs it launches and with the app around it.

The plugin stands on its own in any Hydra app; tabflow's own modules import these names
from here (through ``tabflow.contract``), so each is written once.

* **Trial attributes** the sweeper writes (users filter on them in Optuna's dashboard).
* **The job's environment**: its trial number, its study (when it prunes), the trial it
  retries. A job of any app reads them with ``os.environ``.
* **Files a job may leave** in its output dir, which the sweeper reads: ``metrics.json``
  (its metrics: a finished job of an interrupted batch is not run again) and
  ``mlflow_run_id.txt`` (its MLflow run, recorded on the trial).
* **Clean exits**: one message line, the traceback only with ``HYDRA_FULL_ERROR=1``;
  SIGTERM interrupts like Ctrl-C while a sweep runs.

It imports nothing of tabflow, and nothing heavy.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import ListConfig

# ------------------------------------------------------------------ files of a job's dir
METRICS_FILE = "metrics.json"
MLFLOW_RUN_FILE = "mlflow_run_id.txt"  # the job's MLflow run, for the sweeper's records
ERROR_FILE = "error.txt"  # a failed job's exception and traceback
RESULTS_FILE = "optimization_results.yaml"  # in the sweep dir: the study's outcome


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Write a file whole or not at all: ``write`` fills a temporary file beside it.

    A job's files are read by other processes (the sweep, a resume, ``tabflow upload``,
    parallel jobs sharing a cache), and a process may be killed at any moment: renamed
    into place once complete, the file is found old or new, never in part.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a JSON file, creating its folder: whole, or not at all."""
    text = json.dumps(data, indent=2, sort_keys=True)
    write_atomic(path, lambda p: p.write_text(text))


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON file written by :func:`write_json`; empty when the file is missing."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


# ------------------------------------------------------------- trials and their jobs
# The process that ran a trial: an MLflow tag and an Optuna trial attribute alike. Its
# start time tells it from a later process that was given the same pid.
HOST, PID, PID_STARTED = "tabflow.host", "tabflow.pid", "tabflow.pid_started"

# Optuna trial user attributes.
ATTR_RUN_ID = "mlflow_run_id"
ATTR_INTERRUPTED = "tabflow.interrupted"  # the trial was cut short, not wrong: retried
ATTR_RETRY_OF = "tabflow.retry_of"
ATTR_ERROR = "tabflow.error"
ATTR_WORKER_DIED = "tabflow.worker_died"  # host:pid of a sweep process that stopped beating
ATTR_SESSIONS = "tabflow.sessions"  # sweep processes started on the study so far

# The trial number reaches each job in its environment, and as this config key when the
# job's config has it (tabflow's does; a key another app lacks would fail every trial).
ENV_TRIAL = "OPTUNA_TRIAL_NUMBER"
TRIAL_KEY = "optuna_trial"
# The job's environment variable naming its study, set by the sweeper when it prunes.
ENV_STUDY = "OPTUNA_STUDY_NAME"
# The job's environment variable naming the trial it retries (a dead or interrupted attempt).
ENV_RETRY_OF = "OPTUNA_TRIAL_RETRY_OF"


def as_list(value: Any) -> list[Any]:
    """Return a config value that may be one item or a list as a list."""
    if isinstance(value, (list, tuple, ListConfig)):
        return list(value)
    return [value]


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


def disk_full(error: BaseException | None) -> str | None:
    """If an error (or one behind it) is a full disk (ENOSPC, or SQLite's own word), its text."""
    import errno

    while error is not None:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return text
        if "database or disk is full" in text or "No space left on device" in text:
            return text
        error = error.__cause__ or error.__context__
    return None


class SignalInterrupt(KeyboardInterrupt):
    """A signal other than Ctrl-C (SIGTERM) interrupting like Ctrl-C; it knows which."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signal.Signals(signum).name}")
        self.signum = signum


def interrupt_code(error: BaseException) -> int:
    """The exit status of a command a signal interrupted: 128 + the signal (130: Ctrl-C)."""
    return 128 + getattr(error, "signum", signal.SIGINT)


def raise_on_sigterm() -> Any:
    """Make SIGTERM (a scheduler, `kill`) interrupt like Ctrl-C, in the main thread.

    Returns:
        The handler it replaced (give it to :func:`restore_sigterm`), None off the main
        thread (nothing was changed).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupt)


@contextlib.contextmanager
def held_signals() -> Iterator[list[int]]:
    """Hold Ctrl-C and SIGTERM while the block runs; yield the list of those that came.

    For steps that must not be cut in two (a trial asked for but not yet recorded as this
    process's, a promotion's writes): the caller acts on what came once the step is whole
    (:func:`as_interrupt`). Off the main thread, where Python delivers no signal, it holds
    nothing.
    """
    came: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield came
        return
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, _: came.append(signum)) for s in held}
    try:
        yield came
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def as_interrupt(signum: int) -> KeyboardInterrupt:
    """The exception a signal raises: KeyboardInterrupt for Ctrl-C, SignalInterrupt else."""
    return KeyboardInterrupt() if signum == signal.SIGINT else SignalInterrupt(signum)


def restore_sigterm(previous: Any) -> None:
    """Put back the SIGTERM handler :func:`raise_on_sigterm` replaced."""
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise SignalInterrupt(signum)
