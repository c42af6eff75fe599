"""Ctrl-C and SIGTERM outside sweeps: changes that are complete or not made.

A sweep turns both signals into :class:`KeyboardInterrupt` and resumes on the next run.
The ``tabflow`` commands do the same, and hold the signals for the few store writes that
must land together (a promotion's run, tags and aliases), raising them once those are done.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tabflow.contract import as_interrupt, held_signals


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then raise the first that came."""
    with held_signals() as came:
        yield
    if came:
        raise as_interrupt(came[0])


def interrupted_line(error: BaseException, command: str) -> str:
    """The one line an interrupted ``tabflow`` command ends with."""
    which = str(error) or "signal SIGINT"
    return (f"Interrupted ({which}): tabflow {command} stopped; what it had begun to change "
            f"in the store was completed first, and nothing is left RUNNING. Run the same "
            f"command again to go on")
