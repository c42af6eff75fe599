"""``tabflow promote`` and ``rollback``: move a registered model's ``production`` alias."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_commands(sub: Any) -> None:
    """Add the lifecycle commands to the ``tabflow`` parser."""
    p = sub.add_parser(
        "promote", help="promote @staging to @production if it is significantly better",
        description="Compare @staging with @production on the test rows neither was trained "
                    "on (a paired bootstrap of the metric's gain, 95%% interval) and promote "
                    "when the whole interval clears the margin. Exit 0: production holds "
                    "staging; 3: NOT BETTER; 4: NOT SIGNIFICANT; 5: OVER BUDGET; 2: an error "
                    "(docs/lifecycle.md).")
    p.add_argument("name", help="registered model name")
    p.add_argument("overrides", nargs="*", metavar="registry.KEY=VALUE",
                   help="registry settings for this promotion, e.g. "
                        "registry.budgets.latency_p95_ms_1row=5 (conf/registry/)")
    p.add_argument("--metric", help="test metric to compare (default: the objective's, "
                                    "e.g. test_accuracy)")
    p.add_argument("--margin", type=float, default=None,
                   help="the minimum gain the interval must clear (default: "
                        "registry.promote_margin, 0.0)")
    p.add_argument("--force", action="store_true", help="promote whatever the scores say")
    p.add_argument("--sync", action="store_true",
                   help="only make the (deprecated) stages follow the aliases again")
    p.set_defaults(func=promote)

    p = sub.add_parser("rollback", help="point @production back at the version it replaced")
    p.add_argument("name", help="registered model name")
    p.set_defaults(func=rollback)


def promote(args: argparse.Namespace) -> int:
    """Compare @staging with @production on rows neither trained on; promote if better."""
    from omegaconf import OmegaConf

    from tabflow import lifecycle
    from tabflow.config import composed_node
    from tabflow.tracking.registry import registry_lock, sync_stages
    from tabflow.tracking.store import connect

    try:
        settings = composed_node("registry", args.overrides)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    store = connect(args.tracking_uri, create=False)
    if args.sync:
        with registry_lock(store, args.name):
            changed = sync_stages(store, args.name)
        print(f"{args.name}: " + ("; ".join(changed) if changed else
                                  "the stages already follow the aliases"))
        return 0
    margin = float(settings.promote_margin) if args.margin is None else args.margin
    budgets = OmegaConf.to_container(settings.budgets)
    assert isinstance(budgets, dict)
    try:
        result = lifecycle.promote(store, args.name, args.metric, margin, args.force,
                                   {str(k): v for k, v in budgets.items()})
    except lifecycle.RegistryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(lifecycle.render(result))
    return lifecycle.exit_code(result)


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
