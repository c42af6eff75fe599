"""``tabflow experiments``, ``runs`` and ``report``: read what the tracking store holds."""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

from tabflow.contract import (
    TAG_PRIMARY_DIRECTION,
    TAG_PRIMARY_METRIC,
    TAG_STUDY,
    TAG_TRIAL,
    natural_direction,
    project_root,
)


def add_commands(sub: Any) -> None:
    """Add the view commands to the ``tabflow`` parser."""
    p = sub.add_parser("experiments", help="list the experiments in the store")
    p.set_defaults(func=experiments)

    p = sub.add_parser("runs", help="the top trials of an experiment's latest sweep")
    p.add_argument("experiment", help="experiment name (the dataset name by default)")
    p.add_argument("--top", type=int, default=5, help="how many runs (default: %(default)s)")
    p.add_argument("--metric", help="rank by this metric (default: the sweep's objective)")
    p.add_argument("--ascending", action="store_true",
                   help="smaller is better (default: the objective's direction, or the "
                        "metric's own: rmse, mae, log_loss and times are minimised)")
    p.set_defaults(func=runs)

    p = sub.add_parser("report", help="the latest sweep's summary and its report.html")
    p.add_argument("experiment", help="experiment name (the dataset name by default)")
    p.add_argument("--out", help="where to write the report (default: "
                                 "outputs/report-<experiment>.html in the project root)")
    p.set_defaults(func=report)


def experiments(args: argparse.Namespace) -> int:
    """List the store's experiments."""
    from tabflow.tracking.store import connect
    from tabflow.tracking.store import experiments as all_experiments

    for exp in all_experiments(connect(args.tracking_uri, create=False)):
        print(f"{exp.experiment_id:>4}  {exp.name}")
    return 0


def _latest_sweep(store: Any, experiment: str) -> Any:
    """The experiment's latest sweep parent run; None (and a message) when it has none."""
    from tabflow.tracking.queries import latest_sweep
    from tabflow.tracking.store import experiment_id_of

    parent = latest_sweep(store, experiment_id_of(store, experiment))
    if parent is None:
        print(f"no sweep in experiment {experiment!r}", file=sys.stderr)
    return parent


def _ranking(args: argparse.Namespace, parent: Any) -> tuple[str, str]:
    """The metric and direction to rank by: the options', else the sweep's objective."""
    tags = parent.data.tags
    metric = args.metric or tags.get(TAG_PRIMARY_METRIC) or parent.data.params.get(
        "objective.metric", "val_accuracy")
    if args.ascending:
        return metric, "minimize"
    if not args.metric and TAG_PRIMARY_DIRECTION in tags:
        return metric, tags[TAG_PRIMARY_DIRECTION]
    return metric, natural_direction(metric)


def runs(args: argparse.Namespace) -> int:
    """Print the latest sweep's best trials, ranked as the sweep ranked them."""
    from tabflow.tracking.queries import pruned_trials, ranked_trials
    from tabflow.tracking.store import connect

    store = connect(args.tracking_uri, create=False)
    parent = _latest_sweep(store, args.experiment)
    if parent is None:
        return 1
    metric, direction = _ranking(args, parent)
    top = list(itertools.islice(ranked_trials(store, parent.info.experiment_id,
                                              parent.info.run_id, metric, direction), args.top))
    print(f"sweep {parent.info.run_name} ({parent.info.run_id}), "
          f"study {parent.data.tags.get(TAG_STUDY, '?')}")
    print(f"{'rank':>4}  {'trial':>5}  {metric:>14}  run")
    for rank, run in enumerate(top, 1):
        print(f"{rank:>4}  {run.data.tags.get(TAG_TRIAL, '?'):>5}  "
              f"{run.data.metrics[metric]:>14.4f}  {run.info.run_id}")
    if top:
        print(f"best run: {top[0].info.run_id}")
    pruned = pruned_trials(store, parent.info.experiment_id, parent.info.run_id)
    if pruned:
        print(f"pruned (stopped early by the sweep's pruner, never ranked): {len(pruned)} "
              f"trial(s): " + ", ".join(f"{t} at step {s}" for t, s in pruned[:20])
              + (" ..." if len(pruned) > 20 else ""))
    return 0


def report(args: argparse.Namespace) -> int:
    """Print the latest sweep's summary and write its report.html."""
    from tabflow.tracking.store import connect, download_artifact

    store = connect(args.tracking_uri, create=False)
    parent = _latest_sweep(store, args.experiment)
    if parent is None:
        return 1
    try:
        local = download_artifact(store, parent.info.run_id, "report.html")
    except Exception:
        print(f"sweep {parent.info.run_name} has no report.html (it is written when a sweep "
              f"registers a model with evaluation.figures=true)", file=sys.stderr)
        return 1
    out = Path(args.out).resolve() if args.out else (
        project_root() / "outputs" / f"report-{args.experiment}.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(local.read_bytes())
    tags, metrics = parent.data.tags, parent.data.metrics
    print(f"sweep {parent.info.run_name} ({parent.info.run_id}), study "
          f"{tags.get(TAG_STUDY, '?')}: best trial {tags.get('best.trial', '?')}, "
          + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())
                      if k.startswith(("best_", "test_"))))
    if "registry.version" in tags:
        from tabflow.tracking.registry import resolve_version

        name = tags["registry.model"]
        print(f"registered: models:/{name}/{tags['registry.version']} "
              f"(@{tags.get('registry.alias', '?')})")
        production = resolve_version(store, name, "production")
        print(f"in production: version {production.version}" if production is not None else
              f"in production: nothing yet (tabflow promote {name})")
    print(f"report: {out}")
    return 0
