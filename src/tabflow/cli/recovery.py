"""``tabflow upload`` and ``unlock``: mend what an outage or a lost process left behind."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tabflow.contract import default_optuna_storage


def add_commands(sub: Any) -> None:
    """Add the recovery commands to the ``tabflow`` parser."""
    p = sub.add_parser("upload", help="track a sweep's jobs that could not be tracked when "
                                      "they ran (e.g. the tracking server was down)")
    p.add_argument("sweep_dir", help="the sweep's output dir, multirun/<date>/<time>")
    p.set_defaults(func=upload)

    p = sub.add_parser(
        "unlock", help="list the locks sweeps and promotions hold, or clear a stale one",
        description="Without a name: list the locks held in the Optuna storage and the MLflow "
                    "registry, with their holder and last beat. With a name: remove that lock "
                    "if its holder is gone (its process ended on this host, or it stopped "
                    "beating); --force removes it whatever its record says.")
    p.add_argument("lock", nargs="?", help="the lock to clear, e.g. breast_cancer-rf-wide-"
                                           "1a2b3c4d~ask or breast_cancer~lock")
    p.add_argument("--storage", default=default_optuna_storage(),
        help="Optuna storage URL (default: %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="remove it although its holder may be alive (you checked it is not)")
    p.set_defaults(func=unlock)


def upload(args: argparse.Namespace) -> int:
    """Log each untracked job dir of a sweep as a trial run of its parent."""
    from tabflow.tracking.store import connect
    from tabflow.tracking.upload import upload_sweep

    uploaded = upload_sweep(connect(args.tracking_uri, create=False), Path(args.sweep_dir))
    for out, run_id in uploaded:
        print(f"  {out.name}: run {run_id}")
    print(f"Uploaded {len(uploaded)} job(s) of {args.sweep_dir} to {args.tracking_uri}"
          + ("; re-run the sweep's command to register its best model" if uploaded else
             ": every job was already tracked"))
    return 0


def unlock(args: argparse.Namespace) -> int:
    """List the held locks, or remove one whose holder is gone (or any, with --force)."""
    from hydra_plugins.tabflow_sweeper.locks import (
        GRACE_S,
        describe_holder,
        holder_gone,
        remove_stored_lock,
        stored_locks,
    )
    from tabflow.tracking.registry import registry_locks, remove_registry_lock
    from tabflow.tracking.store import connect

    storage = _lock_storage(args.storage)
    store = connect(args.tracking_uri, create=False)
    held = [(n, r, args.storage) for n, r in (stored_locks(storage) if storage else [])]
    held += [(n, r, args.tracking_uri) for n, r in registry_locks(store)]
    if args.lock is None:
        if not held:
            print("No locks are held")
        for name, record, where in held:
            why = holder_gone(record, GRACE_S, 0.0)
            print(f"{name}  held by {describe_holder(record)}  in {where}  "
                  + (f"STALE ({why}): tabflow unlock {name}" if why else "live"))
        return 0
    found = next(((r, w) for n, r, w in held if n == args.lock), None)
    if found is None:
        print(f"error: no lock named {args.lock!r} is held; `tabflow unlock` lists them",
              file=sys.stderr)
        return 2
    record, where = found
    why = holder_gone(record, GRACE_S, 0.0)
    if why is None and not args.force:
        print(f"error: {args.lock} is held by {describe_holder(record)}, which may still be "
              f"running; stop it, or if you know it is gone: tabflow unlock {args.lock} "
              f"--force", file=sys.stderr)
        return 2
    removed = (remove_stored_lock(storage, args.lock) if where == args.storage
               else remove_registry_lock(store, args.lock))
    print(f"Removed lock {args.lock} (held by {describe_holder(record)}"
          + (f"; {why})" if why else "; forced)") if removed else
          f"{args.lock} was released meanwhile")
    return 0


def _lock_storage(url: str) -> Any:
    """The Optuna storage of the locks, None where a SQLite file doesn't exist (no locks)."""
    from hydra_plugins.tabflow_sweeper.stores import optuna_storage

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    return optuna_storage(url)
