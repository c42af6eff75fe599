"""``tabflow upload``: track the jobs a tracking outage left on disk only."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_commands(sub: Any) -> None:
    """Add the recovery commands to the ``tabflow`` parser."""
    p = sub.add_parser("upload", help="track a sweep's jobs that could not be tracked when "
                                      "they ran (e.g. the tracking server was down)")
    p.add_argument("sweep_dir", help="the sweep's output dir, multirun/<date>/<time>")
    p.set_defaults(func=upload)


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
