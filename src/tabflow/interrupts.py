"""Ctrl-C and SIGTERM outside sweeps: changes that are complete or not made.

A sweep turns both signals into :class:`KeyboardInterrupt` and resumes on the next run.
The ``tabflow`` commands do the same, and hold the signals for the few store writes that
must land together (a promotion's run, tags and aliases), raising them once those are done.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tabflow.contract import as_interrupt, held_signals


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then raise the first that came."""
    with held_signals() as came:
        yield
    if came:
        raise as_interrupt(came[0])


@contextmanager
def first_interrupt_held() -> Iterator[None]:
    """Hold the first Ctrl-C or SIGTERM until the block ends, then raise it.

    A second one raises at once: a step stuck on an unreachable store can still be
    stopped. For a job's record, which must land whole (its run closed as what it is)
    rather than be cut off half-logged and left RUNNING. Off the main thread, nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []

    def hold(signum: int, _: Any) -> None:
        came.append(signum)
        if len(came) > 1:
            raise as_interrupt(signum)

    previous = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if came:
        raise as_interrupt(came[0])


def interrupted_line(error: BaseException, command: str) -> str:
    """The one line an interrupted ``tabflow`` command ends with."""
    which = str(error) or "signal SIGINT"
    return (f"Interrupted ({which}): tabflow {command} stopped; what it had begun to change "
            f"in the store was completed first, and nothing is left RUNNING. Run the same "
            f"command again to go on")
