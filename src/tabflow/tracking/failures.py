"""Tracking failures made loud, and runs that job code leaves open closed.

Hydra turns exceptions raised in callbacks into warnings, so a sweep could "succeed"
with nothing tracked. A job's tracking failure is written to its output dir
(``tracking_error.txt``), where the launching process finds it; there it ends the
command with a non-zero exit and a clear message (``SystemExit`` passes through Hydra).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from tabflow.contract import TAG_ERROR, TRACKING_ERROR_FILE, exit_cleanly
from tabflow.tracking.store import TrackingError

log = logging.getLogger(__name__)


def fail(message: str, error: BaseException | None = None) -> NoReturn:
    """Stop the command: ``Tracking error: <message>`` (see ``contract.exit_cleanly``)."""
    exit_cleanly(f"Tracking error: {message}", error)


def loud(action: Callable[[], Any], what: str) -> None:
    """Run a tracking action; on failure stop the command with a clear message."""
    try:
        action()
    except Exception as e:
        fail(f"{what}: {e}", e)


def record_job_error(out: Path, what: str, error: BaseException) -> None:
    """Leave a job's tracking failure where the launching process will find it."""
    message = f"{what} failed: {type(error).__name__}: {error}"
    log.error("%s", message)
    out.mkdir(parents=True, exist_ok=True)
    (out / TRACKING_ERROR_FILE).write_text(
        f"{message}\n\n{''.join(traceback.format_exception(error))}")


def raise_tracking_errors(files: list[Path]) -> None:
    """Raise one error listing the jobs whose tracking failed (their error files)."""
    errors = [f"{f.parent}: {f.read_text().splitlines()[0]}" for f in files if f.exists()]
    if errors:
        raise TrackingError(
            f"{len(errors)} job(s) could not be tracked; their results are in their output "
            f"dirs:\n  " + "\n  ".join(errors))


def close_leaked_run(culprit: str) -> list[str]:
    """End the MLflow runs that job code left active in this process, as FAILED.

    The callback names its runs by id and never uses MLflow's active run. A run that job
    code opened with ``mlflow.start_run()`` and never ended would otherwise outlive its job:
    in a reused worker (joblib's workers run many jobs) the next ``mlflow.start_run`` fails
    or nests under it, and MLflow's exit hook ends it FINISHED, as if it had succeeded.

    Args:
        culprit: Who left it open, for the warning and the run's ``error`` tag.

    Returns:
        The ids of the runs closed.
    """
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:  # never imported here: nothing can be active
        return []
    closed: list[str] = []
    # Never raises: Hydra turns a callback's exception into a warning and skips the rest
    # of the hook, which would leave the job's own run untracked.
    try:
        while (run := mlflow.active_run()) is not None and len(closed) < 100:
            closed.append(run.info.run_id)
            log.warning("MLflow run %s was left active by %s (mlflow.start_run without "
                        "end_run); closing it as FAILED so that no later job logs into it",
                        run.info.run_id, culprit)
            with contextlib.suppress(Exception):  # a courtesy; ending it is what matters
                mlflow.set_tag(TAG_ERROR, f"left active by {culprit}; closed by tabflow")
            mlflow.end_run("FAILED")  # pops it first, even if the store then fails
    except Exception as e:
        log.warning("an MLflow run left active could not be closed: %s", e)
    return closed
