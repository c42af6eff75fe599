"""``tabflow ui``, ``server``, ``dashboard`` and ``serve``: each becomes a server process.

Each prints where it listens, then replaces itself with the server (``os.execve``), so
signals reach the server directly.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path
from typing import Any

from tabflow.contract import default_optuna_storage, project_root


def add_commands(sub: Any) -> None:
    """Add the server commands to the ``tabflow`` parser."""
    p = sub.add_parser("ui", help="the MLflow UI for the store")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default: %(default)s; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="server processes (default: %(default)s, from this machine's cores)")
    _verbose(p)
    p.set_defaults(func=ui)

    p = sub.add_parser("server", help="a tracking server for several sweep processes or "
                                      "machines (mlflow server, artifacts proxied)")
    p.add_argument("--backend-store-uri", default=None,
                   help="runs and registry, e.g. postgresql://postgres@127.0.0.1:5432/mlflow "
                        "(password from PGPASSWORD; default: --tracking-uri)")
    p.add_argument("--artifacts-destination", default=str(project_root() / "mlartifacts"),
                   help="where the server keeps artifacts (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default: %(default)s; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="server processes (default: %(default)s, from this machine's cores)")
    p.add_argument("--basic-auth", action="store_true",
                   help="require a login (MLflow's basic-auth app); clients pass "
                        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    _verbose(p)
    p.set_defaults(func=server)

    p = sub.add_parser("dashboard", help="the Optuna dashboard for the study storage")
    p.add_argument("--storage", default=default_optuna_storage(),
        help="Optuna storage URL (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default: %(default)s; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=8080)
    _verbose(p)
    p.set_defaults(func=dashboard)

    p = sub.add_parser("serve", help="serve a registered model over REST (mlflow models serve)")
    p.add_argument("name", help="registered model name")
    p.add_argument("--alias", default="production", help="(default: %(default)s)")
    p.add_argument("--port", type=int, default=8000)
    _verbose(p)
    p.set_defaults(func=serve)


def _verbose(parser: Any) -> None:
    parser.add_argument("--verbose", action="store_true",
                        help="log every request (an access line each; off by default)")


def default_workers() -> int:
    """Server processes for this machine: one per two cores, at least 1, at most 4.

    MLflow's own default (4) on a 2-core machine makes the UI slow to start and answer.
    """
    return max(1, min(4, (os.cpu_count() or 1) // 2))


def ui_command(tracking_uri: str, host: str, port: int,
               artifacts_destination: str | None = None, workers: int | None = None
               ) -> list[str]:
    """Return the ``mlflow server`` command; beyond localhost, allow that host.

    With ``artifacts_destination`` the server also stores and serves the artifacts
    (``--serve-artifacts``), so clients on other machines need no shared disk.
    """
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
           "--host", host, "--port", str(port)]
    if workers:
        cmd += ["--workers", str(workers)]
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


def runs_page(base: str, experiment_id: str, view: str | None = None) -> str:
    """Return the UI address of an experiment's runs, in the model-training view.

    MLflow 3's UI opens on its GenAI view unless the address asks for the classic one;
    ``view`` opens a saved view of the runs table (the one each sweep saves).
    """
    page = f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    return f"{page}&viewStateShareKey={view}" if view else page


def ui(args: argparse.Namespace) -> int:
    """Print each experiment's runs page, then become the MLflow UI server."""
    from tabflow.tracking.store import RUNS_VIEW_ID, RUNS_VIEW_TAG, connect, experiments

    cmd = ui_command(args.tracking_uri, args.host, args.port, workers=args.workers)
    base = f"http://{args.host}:{args.port}"
    found = experiments(connect(args.tracking_uri, create=False))
    print(f"MLflow UI on {base} (Ctrl-C stops it); runs of each experiment:")
    for exp in found:
        view = RUNS_VIEW_ID if RUNS_VIEW_TAG in exp.tags else None  # saved by its sweeps
        print(f"  {exp.name}: {runs_page(base, exp.experiment_id, view)}", flush=True)
    os.execve(cmd[0], cmd, server_env(args.tracking_uri, args.verbose))  # become the server


def server(args: argparse.Namespace) -> int:
    """Become a tracking server (optionally with basic auth)."""
    cmd = ui_command(args.backend_store_uri, args.host, args.port, args.artifacts_destination,
                     args.workers)
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
    os.execve(cmd[0], cmd, server_env(args.backend_store_uri, args.verbose))  # become it


def dashboard_command(storage: str, host: str, port: int, verbose: bool = False
                      ) -> list[str]:
    """Return the ``optuna-dashboard`` command for a study storage."""
    return [str(Path(sys.executable).parent / "optuna-dashboard"), storage, "--host", host,
            "--port", str(port), *(() if verbose else ("--quiet",))]


def dashboard(args: argparse.Namespace) -> int:
    """Become the Optuna dashboard."""
    cmd = dashboard_command(args.storage, args.host, args.port, args.verbose)
    print(f"Optuna dashboard on http://{args.host}:{args.port} for {args.storage} "
          f"(Ctrl-C stops it); each trial's user attributes hold its MLflow run id "
          f"(mlflow_run_id) and its metrics", flush=True)
    os.execve(cmd[0], cmd, server_env(args.tracking_uri, args.verbose))  # become the server


def serve_command(name: str, version: str, port: int) -> list[str]:
    """Return the ``mlflow models serve`` command for a registered model version."""
    return [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{name}/{version}",
            "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]


def server_env(tracking_uri: str, verbose: bool = False) -> dict[str, str]:
    """Return the environment for MLflow's servers.

    They start helpers by name (``uvicorn``), so this environment's ``bin`` must be on
    ``PATH`` even when the virtual environment is not activated. Unless ``verbose``,
    uvicorn (the server of ``mlflow server`` and ``mlflow models serve``) writes no access
    line per request: a few UI page views made hundreds. MLflow 3's server-side jobs (GenAI
    scorers and trace roll-ups, nothing a tabular sweep uses) stay off unless the
    environment turns them on: their runner and queue consumers doubled a server's
    processes (7 -> 15), its memory (1.3 -> 2.5 GB) and its start-up time.
    """
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    quiet = {} if verbose else {"UVICORN_ACCESS_LOG": "false"}
    return {JOBS: "false", **os.environ, **quiet, "MLFLOW_TRACKING_URI": tracking_uri,
            "PATH": f"{bin_dir}{os.pathsep}{path}" if path else bin_dir}


JOBS = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"  # MLflow's server-side job runner (on by default)


def serve(args: argparse.Namespace) -> int:
    """Become ``mlflow models serve`` for a registered model's alias."""
    from tabflow.tracking.models import read_mlmodel, unsafe_format
    from tabflow.tracking.registry import resolve_version
    from tabflow.tracking.store import connect

    store = connect(args.tracking_uri, create=False)
    version = resolve_version(store, args.name, args.alias)
    if version is None:
        print(f"error: {args.name} has no version at @{args.alias} (nor in the matching stage); "
              f"register one with a sweep and promote it: tabflow promote {args.name}",
              file=sys.stderr)
        return 2
    mlmodel = read_mlmodel(store, args.name, str(version.version))
    if mlmodel is None:
        print(f"error: {args.name} version {version.version}: its model files can't be read "
              f"(were mlruns/ or the artifact store moved or deleted?); roll production back "
              f"(tabflow rollback {args.name}) or re-run the sweep that registered it",
              file=sys.stderr)
        return 2
    why = unsafe_format(mlmodel)
    if why:  # the server would deserialize it: refuse what tabflow did not log
        print(f"error: {args.name} version {version.version} is not served: {why}; only models "
              f"tabflow logged are loaded (docs/security.md)", file=sys.stderr)
        return 2
    env = server_env(args.tracking_uri, args.verbose)
    cmd = serve_command(args.name, str(version.version), args.port)
    print(f"Serving models:/{args.name}@{args.alias} (version {version.version}) on "
          f"http://127.0.0.1:{args.port}/invocations", flush=True)
    os.execve(cmd[0], cmd, env)  # become the server: signals reach it directly
