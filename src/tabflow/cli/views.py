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

    p = sub.add_parser("sweeps", help="an experiment's sweeps, newest first")
    p.add_argument("experiment", help="experiment name (the dataset name by default)")
    p.set_defaults(func=list_sweeps)

    which = {"help": "which sweep: -1 the latest (default), -2 the one before, ..., or a "
                     "sweep's run id, run name or study name (`tabflow sweeps` lists them)"}
    p = sub.add_parser("runs", help="the top trials of an experiment's sweep (the latest)")
    p.add_argument("experiment", help="experiment name (the dataset name by default)")
    p.add_argument("--sweep", **which)
    p.add_argument("--top", type=int, default=5, help="how many runs (default: %(default)s)")
    p.add_argument("--metric", help="rank by this metric (default: the sweep's objective)")
    p.add_argument("--ascending", action="store_true",
                   help="smaller is better (default: the objective's direction, or the "
                        "metric's own: rmse, mae, log_loss and times are minimised)")
    p.set_defaults(func=runs)

    p = sub.add_parser("report", help="a sweep's summary and its report.html (the latest)")
    p.add_argument("experiment", help="experiment name (the dataset name by default)")
    p.add_argument("--sweep", **which)
    p.add_argument("--out", help="where to write the report (default: "
                                 "outputs/report-<experiment>.html in the project root)")
    p.set_defaults(func=report)


def _table(header: list[str], rows: list[list[str]]) -> None:
    """Print rows under an upper-case header, columns as wide as their widest cell."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _when(run: Any) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(run.info.start_time / 1000))


class _Views:
    """What the views read, from either source: a SQLite store's tables, else MLflow.

    On a SQLite store (the default) the tables are read directly (``tracking.lite``): no
    MLflow import, so a view answers in a fraction of a second. Anything else (a server,
    PostgreSQL, a missing file, whose error MLflow's path words) goes through MLflow.
    """

    def __init__(self, uri: str, store: Any = None) -> None:
        from tabflow.tracking.lite import open_lite

        self.uri = uri
        self.lite = open_lite(uri)
        self._store: Any = store  # an MLflow connection the command holds already

    @property
    def store(self) -> Any:
        if self._store is None:
            from tabflow.tracking.store import connect

            self._store = connect(self.uri, create=False)
        return self._store

    def experiments(self) -> list[Any]:
        from tabflow.tracking.store import experiments

        return self.lite.experiments() if self.lite else experiments(self.store)

    def experiment_id(self, name: str) -> str:
        from tabflow.tracking.store import TrackingError, experiment_id_of

        if self.lite is None:
            return experiment_id_of(self.store, name)
        found = self.lite.experiment_id(name)
        if found is None:
            raise TrackingError(f"no experiment named {name!r} at {self.uri}")
        return found

    def sweeps(self, experiment_id: str) -> list[Any]:
        from tabflow.tracking.queries import sweeps

        return self.lite.sweeps(experiment_id) if self.lite else sweeps(self.store,
                                                                         experiment_id)

    def ranked(self, parent: Any, metric: str, direction: str, top: int
               ) -> tuple[list[Any], list[tuple[int, int]]]:
        """A sweep's ``top`` best trials (the one tie rule) and its pruned trials."""
        from tabflow.tracking import queries

        experiment_id, run_id = parent.info.experiment_id, parent.info.run_id
        if self.lite is not None:
            trials = self.lite.trials(experiment_id, run_id)
            return (queries.best_first(trials, metric, direction)[:top],
                    queries.pruned_of(trials))
        ranked = queries.ranked_trials(self.store, experiment_id, run_id, metric, direction)
        return (list(itertools.islice(ranked, top)),
                queries.pruned_trials(self.store, experiment_id, run_id))


def experiments(args: argparse.Namespace) -> int:
    """List the store's experiments: id, name, how many sweeps, the latest one's start."""
    views = _Views(args.tracking_uri)
    rows = []
    for exp in views.experiments():
        found = views.sweeps(exp.experiment_id)
        rows.append([exp.experiment_id, exp.name, str(len(found)),
                     _when(found[0]) if found else "-"])
    _table(["ID", "NAME", "SWEEPS", "LATEST SWEEP"], rows)
    return 0


def list_sweeps(args: argparse.Namespace) -> int:
    """List an experiment's sweeps, newest first: when, model, space, trials, best, version."""
    views = _Views(args.tracking_uri)
    rows = []
    for back, run in enumerate(views.sweeps(views.experiment_id(args.experiment)), 1):
        tags, metrics = run.data.tags, run.data.metrics
        best = next((f"{k.removeprefix('best_')}={v:.4f}" for k, v in sorted(metrics.items())
                     if k.startswith("best_")), "-")
        done = sum(int(v) for k, v in metrics.items() if k.startswith("trials_"))
        rows.append([f"-{back}", _when(run), tags.get("choice.model", "?"),
                     tags.get("choice.sweep", "?"), f"{done}/{tags.get('sweep.n_trials', '?')}",
                     best, tags.get("registry.version", "-"), run.info.status,
                     tags.get(TAG_STUDY, run.info.run_name)])
    if not rows:
        print(f"no sweep in experiment {args.experiment!r}", file=sys.stderr)
        return 1
    _table(["SWEEP", "STARTED", "MODEL", "SPACE", "TRIALS", "BEST", "VERSION", "STATUS",
            "STUDY"], rows)
    return 0


def _latest_sweep(views: _Views, experiment: str, which: str | None = None) -> Any:
    """The sweep asked for (the latest by default); None (and a message) when there is none."""
    from tabflow.tracking.queries import choose_sweep

    parent = choose_sweep(views.sweeps(views.experiment_id(experiment)), which)
    if parent is None:
        print(f"no sweep {which} in experiment {experiment!r} (tabflow sweeps {experiment} "
              f"lists them)" if which else f"no sweep in experiment {experiment!r}",
              file=sys.stderr)
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
    views = _Views(args.tracking_uri)
    parent = _latest_sweep(views, args.experiment, args.sweep)
    if parent is None:
        return 1
    metric, direction = _ranking(args, parent)
    top, pruned = views.ranked(parent, metric, direction, args.top)
    print(f"sweep {parent.info.run_name} ({parent.info.run_id}), "
          f"study {parent.data.tags.get(TAG_STUDY, '?')}")
    # The tuned parameters as columns: the sweep's search space, as its parent records it.
    tuned = [k.removeprefix("search_space.") for k in sorted(parent.data.params)
             if k.startswith("search_space.")]
    _table(["RANK", "TRIAL", metric.upper(), *tuned, "RUN"],
           [[str(rank), run.data.tags.get(TAG_TRIAL, "?"), f"{run.data.metrics[metric]:.4f}",
             *(run.data.params.get(k, "-") for k in tuned), run.info.run_id]
            for rank, run in enumerate(top, 1)])
    if top:
        print(f"best run: {top[0].info.run_id}")
    if pruned:
        print(f"pruned (stopped early by the sweep's pruner, never ranked): {len(pruned)} "
              f"trial(s): " + ", ".join(f"{t} at step {s}" for t, s in pruned[:20])
              + (" ..." if len(pruned) > 20 else ""))
    return 0


def report(args: argparse.Namespace) -> int:
    """Print the latest sweep's summary and write its report.html."""
    from tabflow.tracking.store import connect, download_artifact

    store = connect(args.tracking_uri, create=False)
    views = _Views(args.tracking_uri, store)  # the report's downloads need MLflow anyway
    parent = _latest_sweep(views, args.experiment, args.sweep)
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
