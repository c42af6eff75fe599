"""``tabflow monitor`` and ``profile``: check a registered model against new data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EPILOG = """\
exit status: 0 no drift and no degradation; 3 data drift; 4 performance degraded;
5 both; 2 bad input (nothing recorded); 1 an unexpected error.
Thresholds: monitoring.* overrides after the file (conf/monitoring/default.yaml),
e.g.  tabflow monitor breast_cancer new.csv monitoring.drift.p_value=0.01
"""


def add_commands(sub: Any) -> None:
    """Add the monitoring commands to the ``tabflow`` parser."""
    p = sub.add_parser("monitor", help="check a registered model against a new batch of data",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="registered model name")
    p.add_argument("file", type=Path, help="the new batch: CSV or Parquet, written like the "
                                           "training data")
    p.add_argument("overrides", nargs="*", metavar="monitoring.KEY=VALUE",
                   help="threshold overrides (conf/monitoring/)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--alias", help="the alias of the version to check (default: "
                                       "monitoring.alias, production)")
    which.add_argument("--version", help="a version number instead of an alias")
    p.add_argument("--labels", help="the batch's column of true outcomes (default: the "
                                    "training target's column, if the batch has it)")
    p.add_argument("--ignore-extra", action="store_true",
                   help="leave out columns the model was not trained on instead of refusing")
    p.add_argument("--retrain", action="store_true",
                   help="on drift or degradation, sweep the version's configuration again on "
                        "new data, warm-started; registers the result at @staging")
    p.add_argument("--retrain-on", choices=["auto", "combined", "new"],
                   help="what --retrain trains on (default: monitoring.retrain.data, auto)")
    p.add_argument("--retrain-override", action="append", default=[], metavar="KEY=VALUE",
                   help="a Hydra override for the retraining sweep, e.g. "
                        "hydra.sweeper.n_trials=20 (repeatable)")
    p.set_defaults(func=monitor)

    p = sub.add_parser("profile", help="log the training profile of a version registered "
                                       "without one")
    _version_arguments(p)
    p.set_defaults(func=profile)

    p = sub.add_parser("holdout", help="write the held-out test rows of a registered version "
                                       "(rows it never trained on), e.g. to try monitor")
    _version_arguments(p)
    p.add_argument("--out", type=Path, default=None,
                   help="CSV or Parquet file to write (default: NAME-holdout.csv); a CSV is "
                        "written like the training file (separator, decimal mark, encoding)")
    p.set_defaults(func=holdout)


def _version_arguments(parser: Any) -> None:
    """A registered model's name, and which version: ``--alias`` or ``--version``."""
    parser.add_argument("name", help="registered model name")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--alias", default=None, help="the alias of the version (default: "
                                                     "production)")
    which.add_argument("--version", help="a version number")


def monitor(args: argparse.Namespace) -> int:
    """Check a version against a batch; print the table and verdict; exit with the gate."""
    from tabflow.monitoring import monitor as checks
    from tabflow.monitoring.batch import MonitorError
    from tabflow.tracking.store import connect

    try:
        cfg = checks.settings(args.overrides)
        store = connect(args.tracking_uri, create=False)
        if args.retrain:  # stored overrides are checked before anything is recorded
            from tabflow.monitoring.retrain import registering_sweep, stored_overrides

            alias = None if args.version is not None else (args.alias or str(cfg.alias))
            found = checks.find_version(store, args.name, alias, args.version)
            parent, tags = registering_sweep(store, args.name, str(found.version))
            stored_overrides(tags, parent)
        check, profile = checks.monitor(store, args.name, args.file, cfg, alias=args.alias,
                                        version=args.version, labels=args.labels,
                                        ignore_extra=args.ignore_extra,
                                        require_labels=args.retrain)
    except MonitorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(checks.render(check), flush=True)
    if args.retrain:
        from tabflow.monitoring.retrain import retrain

        try:
            if retrain(store, check, profile, cfg.retrain, args.retrain_on,
                       args.retrain_override) != 0:
                return 1
        except MonitorError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return check.exit_code


def profile(args: argparse.Namespace) -> int:
    """Build and log a version's training profile from its sweep's recorded config."""
    from tabflow.monitoring.batch import MonitorError
    from tabflow.monitoring.monitor import profile_version
    from tabflow.tracking.store import connect

    store = connect(args.tracking_uri, create=False)
    alias = None if args.version else (args.alias or "production")
    try:
        version, uri = profile_version(store, args.name, alias, args.version)
    except MonitorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.name} version {version}: training profile logged at {uri}")
    return 0


def holdout(args: argparse.Namespace) -> int:
    """Write a version's test split (features and target), as its sweep split the data."""
    from tabflow.lifecycle import RegistryError, version_data
    from tabflow.monitoring.batch import MonitorError
    from tabflow.monitoring.monitor import find_version
    from tabflow.tracking.store import connect

    out: Path = args.out or Path(f"{args.name}-holdout.csv")
    if out.suffix.lower() not in (".csv", ".parquet"):
        print(f"error: --out {out}: write a .csv or .parquet file", file=sys.stderr)
        return 2
    store = connect(args.tracking_uri, create=False)
    alias = None if args.version else (args.alias or "production")
    try:
        version = find_version(store, args.name, alias, args.version)
        rows, _, cfg = version_data(store, version)
    except (MonitorError, RegistryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    frame = rows.X_test.assign(**{rows.target: rows.y_test.to_numpy()})
    if out.suffix.lower() == ".parquet":
        frame.to_parquet(out, index=False)
    else:  # read back by `tabflow monitor` with the training file's options
        data = cfg.dataset
        frame.to_csv(out, index=False, sep=data.get("sep") or ",",
                     decimal=data.get("decimal") or ".",
                     encoding=data.get("encoding") or "utf-8-sig")
    print(f"Wrote {len(frame)} rows of {args.name} version {version.version} to {out}: its "
          f"held-out test split (features and {rows.target!r}), rows it never trained on")
    return 0
