"""``tabflow promote`` and ``rollback``: move a registered model's ``production`` alias."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_commands(sub: Any) -> None:
    """Add the lifecycle commands to the ``tabflow`` parser."""
    p = sub.add_parser("promote", help="promote @staging to @production if it is better")
    p.add_argument("name", help="registered model name")
    p.add_argument("--metric", help="test metric to compare (default: the objective's, "
                                    "e.g. test_accuracy)")
    p.add_argument("--margin", type=float, default=0.0,
                   help="how much better staging must be (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="promote whatever the scores say")
    p.set_defaults(func=promote)

    p = sub.add_parser("rollback", help="point @production back at the version it replaced")
    p.add_argument("name", help="registered model name")
    p.set_defaults(func=rollback)


def promote(args: argparse.Namespace) -> int:
    """Compare @staging with @production on the same test rows; promote if better."""
    from tabflow import lifecycle
    from tabflow.tracking.store import connect

    store = connect(args.tracking_uri, create=False)
    try:
        result = lifecycle.promote(store, args.name, args.metric, args.margin, args.force)
    except lifecycle.RegistryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(lifecycle.render(result))
    return 0


def rollback(args: argparse.Namespace) -> int:
    """Point @production back at the version it replaced."""
    from tabflow import lifecycle
    from tabflow.tracking.store import connect

    store = connect(args.tracking_uri, create=False)
    try:
        old, new = lifecycle.rollback(store, args.name)
    except lifecycle.RegistryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.name}: production rolled back from version {old} to version {new}")
    return 0
