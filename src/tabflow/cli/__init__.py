"""The ``tabflow`` command: what a user does after training.

One module per command group; each adds its subcommands to the parser:

* :mod:`.views`: ``experiments``, ``sweeps``, ``runs``, ``report``: read the tracking store.
* :mod:`.lifecycle`: ``promote``, ``rollback``: move the registry's aliases.
* :mod:`.monitoring`: ``monitor``, ``profile``: check a registered model against new data.
* :mod:`.servers`: ``ui``, ``server``, ``dashboard``, ``serve``: become a server.
* :mod:`.recovery`: ``upload``, ``unlock``: mend what an outage or a lost process left.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from tabflow.cli import lifecycle, monitoring, recovery, servers, views
from tabflow.contract import (
    exit_cleanly,
    interrupt_code,
    project_root,
    raise_on_sigterm,
    restore_sigterm,
    skip_exit_gc,
)
from tabflow.interrupts import interrupted_line

DESCRIPTION = """\
tabflow: what to do after training, from the command line.

  tabflow experiments                         experiments in the store, with sweep counts
  tabflow sweeps breast_cancer                an experiment's sweeps, newest first
  tabflow runs breast_cancer --top 5          best trials of the latest sweep (--sweep -2 ...)
  tabflow report breast_cancer                the latest sweep's summary and report.html
  tabflow promote breast_cancer               staging -> production if it beats it
  tabflow rollback breast_cancer              production -> the version it replaced
  tabflow monitor breast_cancer new.csv       drift and performance of @production on new data
  tabflow upload multirun/<date>/<time>       track what a tracking outage left on disk
  tabflow unlock                              list held locks; clear a stale one by name
  tabflow ui                                  the MLflow UI on 127.0.0.1:5000
  tabflow server                              a tracking server for several processes
  tabflow dashboard                           the Optuna dashboard for optuna.db
  tabflow serve breast_cancer                 REST predictions from @production

Every command takes --tracking-uri (default: MLFLOW_TRACKING_URI, else the project's
mlflow.db) and --help.
"""


def default_tracking_uri() -> str:
    """Return ``MLFLOW_TRACKING_URI`` if set, else the project's SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{project_root() / 'mlflow.db'}")


def parser() -> argparse.ArgumentParser:
    """Build the command-line parser."""
    main = argparse.ArgumentParser(prog="tabflow", description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    main.add_argument("--tracking-uri", default=default_tracking_uri(),
                      help="MLflow tracking URI (default: %(default)s)")
    sub = main.add_subparsers(dest="command", required=True)
    for group in (views, lifecycle, monitoring, recovery, servers):
        group.add_commands(sub)
    return main


def main(argv: Sequence[str] | None = None) -> int:
    """Run a ``tabflow`` command."""
    args = parser().parse_args(argv)
    if getattr(args, "backend_store_uri", "unset") is None:
        args.backend_store_uri = args.tracking_uri
    previous = raise_on_sigterm()  # SIGTERM (a scheduler, `kill`) stops it like Ctrl-C
    try:
        return int(args.func(args))
    except KeyboardInterrupt as e:
        print(interrupted_line(e, args.command), file=sys.stderr, flush=True)
        return interrupt_code(e)
    except Exception as e:  # tabflow's own errors say what to do; others keep their traceback
        if type(e).__name__ not in ("TrackingError", "LockBusyError"):
            raise
        exit_cleanly(f"Error: {e}", e)
    finally:
        restore_sigterm(previous)


def run() -> None:
    """The ``tabflow`` command (console script and ``python -m tabflow``).

    :func:`main`, then an exit that skips the interpreter's last heap scan
    (``contract.skip_exit_gc``).
    """
    try:
        code = main()
    finally:
        skip_exit_gc()
    sys.exit(code)


if __name__ == "__main__":
    run()
