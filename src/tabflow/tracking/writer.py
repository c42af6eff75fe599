"""A background writer: a trial's run is logged while the next trial runs.

A sequential sweep's trials run in the launching process, one after another; logging
a finished trial (params, metrics, dataset, artifacts, closing its run) takes about as
long as fitting a fast model. The writer takes that work off the trial path: the job
hands it over and the next trial starts at once. It is flushed before the sweep's end
reads the runs (and so on Ctrl-C and SIGTERM, which end the sweep through it too).

Nothing computed can be lost this way: the job dir holds every record, the run exists
(its id is in the job dir) before the job ends, and a killed sweep's re-run finishes
the runs the writer had not closed (:func:`tabflow.tracking.parent.reconcile_stale`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# Jobs waiting to be logged before a new one waits for the writer: a store that slows
# down (a remote server) slows the sweep instead of filling memory.
MAX_PENDING = 8


class BackgroundWriter:
    """One daemon thread running submitted tasks in order."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Callable[[], None]] = queue.Queue(maxsize=MAX_PENDING)
        self._thread: threading.Thread | None = None

    def submit(self, task: Callable[[], None]) -> None:
        """Queue a task (it handles its own errors); blocks while the queue is full."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="tabflow-tracking",
                                            daemon=True)
            self._thread.start()
        self._queue.put(task)

    def _run(self) -> None:
        while True:
            task = self._queue.get()
            try:
                task()
            except BaseException:  # a task records its own errors; never kill the writer
                log.exception("tracking task failed")
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        """Wait until every submitted task has run."""
        # Polled rather than Queue.join(), so Ctrl-C can still interrupt the wait.
        while self._queue.unfinished_tasks:
            time.sleep(0.005)
