"""``tabflow``: what a user does after training, from the command line.

    tabflow experiments                         # experiments in the store
    tabflow runs breast_cancer --top 5          # best trials of the latest sweep
    tabflow promote breast_cancer               # staging -> production if it beats it
    tabflow rollback breast_cancer              # production -> the version it replaced
    tabflow ui                                  # the MLflow UI on 127.0.0.1:5000
    tabflow serve breast_cancer                 # REST predictions from @production

Every command takes ``--tracking-uri`` (default: ``MLFLOW_TRACKING_URI``, else the
project's ``mlflow.db``) and ``--help``.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(os.environ.get("TABFLOW_ROOT", Path(__file__).resolve().parents[2]))


def default_tracking_uri() -> str:
    """Return ``MLFLOW_TRACKING_URI`` if set, else the project's SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}")


def _experiments(args: argparse.Namespace) -> int:
    from tabflow import tracking

    store = tracking.connect(args.tracking_uri)
    for exp in tracking.experiments(store):
        print(f"{exp.experiment_id:>4}  {exp.name}")
    return 0


def _latest_sweep(store: Any, experiment: str) -> Any:
    """The experiment's latest sweep parent run; None (and a message) when it has none."""
    from tabflow import tracking

    parent = tracking.latest_sweep(store, tracking.experiment_id_of(store, experiment))
    if parent is None:
        print(f"no sweep in experiment {experiment!r}", file=sys.stderr)
    return parent


def _runs(args: argparse.Namespace) -> int:
    from tabflow import tracking

    store = tracking.connect(args.tracking_uri)
    parent = _latest_sweep(store, args.experiment)
    if parent is None:
        return 1
    metric = args.metric or parent.data.params.get("objective.metric", "val_accuracy")
    if metric.startswith("["):  # multi-objective: rank by the first
        metric = metric.strip("[]").split(",")[0].strip(" '")
    order = "ASC" if args.ascending else "DESC"
    runs = tracking.search(
        store, args.experiment,
        f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and attributes.status = 'FINISHED'",
        [f"metrics.`{metric}` {order}"], max_results=args.top)
    print(f"sweep {parent.info.run_name} ({parent.info.run_id}), "
          f"study {parent.data.tags.get('optuna.study', '?')}")
    print(f"{'rank':>4}  {'trial':>5}  {metric:>14}  run")
    for rank, run in enumerate(runs, 1):
        value = run.data.metrics.get(metric, float("nan"))
        print(f"{rank:>4}  {run.data.tags.get('optuna.trial', '?'):>5}  {value:>14.4f}  "
              f"{run.info.run_id}")
    if runs:
        print(f"best run: {runs[0].info.run_id}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from tabflow import tracking

    store = tracking.connect(args.tracking_uri)
    parent = _latest_sweep(store, args.experiment)
    if parent is None:
        return 1
    try:
        local = tracking.download_artifact(store, parent.info.run_id, "report.html")
    except Exception:
        print(f"sweep {parent.info.run_name} has no report.html (it is written when a sweep "
              f"registers a model with evaluation.figures=true)", file=sys.stderr)
        return 1
    out = Path(args.out or f"report-{args.experiment}.html").resolve()
    out.write_bytes(local.read_bytes())
    tags, metrics = parent.data.tags, parent.data.metrics
    print(f"sweep {parent.info.run_name} ({parent.info.run_id}), study "
          f"{tags.get('optuna.study', '?')}: best trial {tags.get('best.trial', '?')}, "
          + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())
                      if k.startswith(("best_", "test_"))))
    if "registry.version" in tags:
        print(f"registered: models:/{tags['registry.model']}/{tags['registry.version']} "
              f"(@{tags.get('registry.alias', '?')})")
    print(f"report: {out}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from tabflow import registry, tracking

    store = tracking.connect(args.tracking_uri)
    try:
        result = registry.promote(store, args.name, args.metric, args.margin, args.force)
    except registry.RegistryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(registry.render(result))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from tabflow import registry, tracking

    store = tracking.connect(args.tracking_uri)
    try:
        old, new = registry.rollback(store, args.name)
    except registry.RegistryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.name}: production rolled back from version {old} to version {new}")
    return 0


def _upload(args: argparse.Namespace) -> int:
    from tabflow import tracking

    store = tracking.connect(args.tracking_uri)
    uploaded = tracking.upload_sweep(store, Path(args.sweep_dir))
    for out, run_id in uploaded:
        print(f"  {out.name}: run {run_id}")
    print(f"Uploaded {len(uploaded)} job(s) of {args.sweep_dir} to {args.tracking_uri}"
          + ("; re-run the sweep's command to register its best model" if uploaded else
             ": every job was already tracked"))
    return 0


def ui_command(tracking_uri: str, host: str, port: int,
               artifacts_destination: str | None = None) -> list[str]:
    """Return the ``mlflow server`` command; beyond localhost, allow that host.

    With ``artifacts_destination`` the server also stores and serves the artifacts
    (``--serve-artifacts``), so clients on other machines need no shared disk.
    """
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
           "--host", host, "--port", str(port)]
    if artifacts_destination:
        cmd += ["--serve-artifacts", "--artifacts-destination", artifacts_destination]
    if host not in ("127.0.0.1", "localhost"):
        # MLflow rejects other Host headers (DNS-rebinding protection) and cross-origin
        # requests unless they are allowed; name them instead of switching the checks off.
        hostname = socket.gethostname()
        hosts = [f"{h}:{port}" for h in (host, hostname, "localhost", "127.0.0.1")]
        cmd += ["--allowed-hosts", ",".join(hosts),
                "--cors-allowed-origins", ",".join(f"http://{h}" for h in hosts)]
    return cmd


def runs_page(base: str, experiment_id: str) -> str:
    """Return the UI address of an experiment's runs, in the model-training view.

    MLflow 3's UI opens on its GenAI view unless the address asks for the classic one.
    """
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def _ui(args: argparse.Namespace) -> int:
    from tabflow import tracking

    cmd = ui_command(args.tracking_uri, args.host, args.port)
    base = f"http://{args.host}:{args.port}"
    print(f"MLflow UI on {base} (Ctrl-C stops it); runs of each experiment:")
    for exp in tracking.experiments(tracking.connect(args.tracking_uri)):
        print(f"  {exp.name}: {runs_page(base, exp.experiment_id)}", flush=True)
    os.execve(cmd[0], cmd, _server_env(args.tracking_uri))  # become the server


def _server(args: argparse.Namespace) -> int:
    cmd = ui_command(args.backend_store_uri, args.host, args.port, args.artifacts_destination)
    if args.basic_auth:
        if not os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):
            print("Error: --basic-auth needs MLFLOW_FLASK_SERVER_SECRET_KEY (a long random "
                  "string, the same for every server of the store) and, unless the default "
                  "admin password will do, MLFLOW_AUTH_CONFIG_PATH (basic_auth.ini with "
                  "admin_username, admin_password, database_uri)", file=sys.stderr)
            return 2
        cmd += ["--app-name", "basic-auth"]
    base = f"http://{args.host}:{args.port}"
    print(f"MLflow tracking server on {base} (backend {args.backend_store_uri}, artifacts "
          f"{args.artifacts_destination}); point workers at it with\n"
          f"  MLFLOW_TRACKING_URI={base} python src/train.py -m tracking=server ...",
          flush=True)
    os.execve(cmd[0], cmd, _server_env(args.backend_store_uri))  # become the server


def dashboard_command(storage: str, host: str, port: int) -> list[str]:
    """Return the ``optuna-dashboard`` command for a study storage."""
    return [str(Path(sys.executable).parent / "optuna-dashboard"), storage, "--host", host,
            "--port", str(port), "--quiet"]


def _dashboard(args: argparse.Namespace) -> int:
    cmd = dashboard_command(args.storage, args.host, args.port)
    print(f"Optuna dashboard on http://{args.host}:{args.port} for {args.storage} "
          f"(Ctrl-C stops it); each trial's user attributes hold its MLflow run id "
          f"(mlflow_run_id) and its metrics", flush=True)
    os.execve(cmd[0], cmd, _server_env(args.tracking_uri))  # become the server


def serve_command(name: str, alias: str, port: int, tracking_uri: str) -> list[str]:
    """Return the ``mlflow models serve`` command for a registered model's alias."""
    return [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{name}@{alias}",
            "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]


def _server_env(tracking_uri: str) -> dict[str, str]:
    """Return the environment for MLflow's servers.

    They start helpers by name (``uvicorn``), so this environment's ``bin`` must be on
    ``PATH`` even when the virtual environment is not activated.
    """
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    return {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
            "PATH": f"{bin_dir}{os.pathsep}{path}" if path else bin_dir}


def _serve(args: argparse.Namespace) -> int:
    env = _server_env(args.tracking_uri)
    cmd = serve_command(args.name, args.alias, args.port, args.tracking_uri)
    print(f"Serving models:/{args.name}@{args.alias} on http://127.0.0.1:{args.port}"
          f"/invocations", flush=True)
    os.execve(cmd[0], cmd, env)  # become the server: signals reach it directly


def parser() -> argparse.ArgumentParser:
    """Build the command-line parser."""
    main = argparse.ArgumentParser(prog="tabflow", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    main.add_argument("--tracking-uri", default=default_tracking_uri(),
                      help="MLflow tracking URI (default: %(default)s)")
    sub = main.add_subparsers(dest="command", required=True)

    p = sub.add_parser("experiments", help="list the experiments in the store")
    p.set_defaults(func=_experiments)

    p = sub.add_parser("runs", help="the top trials of an experiment's latest sweep")
    p.add_argument("experiment", help="experiment name (the dataset name by default)")
    p.add_argument("--top", type=int, default=5, help="how many runs (default: %(default)s)")
    p.add_argument("--metric", help="rank by this metric (default: the sweep's objective)")
    p.add_argument("--ascending", action="store_true", help="smaller is better")
    p.set_defaults(func=_runs)

    p = sub.add_parser("report", help="the latest sweep's summary and its report.html")
    p.add_argument("experiment", help="experiment name (the dataset name by default)")
    p.add_argument("--out", help="where to write the report (default: report-<experiment>.html)")
    p.set_defaults(func=_report)

    p = sub.add_parser("promote", help="promote @staging to @production if it is better")
    p.add_argument("name", help="registered model name")
    p.add_argument("--metric", help="test metric to compare (default: the objective's, "
                                    "e.g. test_accuracy)")
    p.add_argument("--margin", type=float, default=0.0,
                   help="how much better staging must be (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="promote whatever the scores say")
    p.set_defaults(func=_promote)

    p = sub.add_parser("rollback", help="point @production back at the version it replaced")
    p.add_argument("name", help="registered model name")
    p.set_defaults(func=_rollback)

    p = sub.add_parser("upload", help="track a sweep's jobs that could not be tracked when "
                                      "they ran (e.g. the tracking server was down)")
    p.add_argument("sweep_dir", help="the sweep's output dir, multirun/<date>/<time>")
    p.set_defaults(func=_upload)

    p = sub.add_parser("ui", help="the MLflow UI for the store")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default: %(default)s; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=_ui)

    p = sub.add_parser("server", help="a tracking server for several sweep processes or "
                                      "machines (mlflow server, artifacts proxied)")
    p.add_argument("--backend-store-uri", default=None,
                   help="runs and registry, e.g. postgresql://postgres@127.0.0.1:5432/mlflow "
                        "(password from PGPASSWORD; default: --tracking-uri)")
    p.add_argument("--artifacts-destination", default=str(PROJECT_ROOT / "mlartifacts"),
                   help="where the server keeps artifacts (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default: %(default)s; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--basic-auth", action="store_true",
                   help="require a login (MLflow's basic-auth app); clients pass "
                        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    p.set_defaults(func=_server)

    p = sub.add_parser("dashboard", help="the Optuna dashboard for the study storage")
    p.add_argument("--storage", default=os.environ.get(
        "TABFLOW_OPTUNA_STORAGE", f"sqlite:///{PROJECT_ROOT / 'optuna.db'}"),
        help="Optuna storage URL (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default: %(default)s; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=_dashboard)

    p = sub.add_parser("serve", help="serve a registered model over REST (mlflow models serve)")
    p.add_argument("name", help="registered model name")
    p.add_argument("--alias", default="production", help="(default: %(default)s)")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=_serve)
    return main


def main(argv: Sequence[str] | None = None) -> int:
    """Run a ``tabflow`` command."""
    args = parser().parse_args(argv)
    if getattr(args, "backend_store_uri", "unset") is None:
        args.backend_store_uri = args.tracking_uri
    try:
        return int(args.func(args))
    except Exception as e:  # tabflow's own errors say what to do; others keep their traceback
        if type(e).__name__ != "TrackingError" or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"Error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
