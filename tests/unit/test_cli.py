"""The ``tabflow`` command line: parsing, help text, and how `runs` chooses its ranking."""

from __future__ import annotations

import argparse
import re
from types import SimpleNamespace

import pytest

from tabflow.cli import default_tracking_uri, parser
from tabflow.cli.servers import serve_command
from tabflow.cli.views import _ranking


def test_every_command_group_is_reachable():
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {"experiments", "sweeps", "runs", "report", "promote", "rollback",
                                "monitor", "profile", "holdout", "upload", "unlock", "ui",
                                "server", "dashboard", "serve"}


def test_help_is_plain_text(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["--help"])
    text = capsys.readouterr().out
    assert "tabflow promote breast_cancer" in text and "``" not in text and ":mod:" not in text


def test_arguments_parse_as_documented():
    args = parser().parse_args(["--tracking-uri", "sqlite:///x.db", "promote", "churn",
                                "--margin", "0.01", "--force"])
    assert (args.tracking_uri, args.name, args.margin, args.force) == (
        "sqlite:///x.db", "churn", 0.01, True)
    assert parser().parse_args(["runs", "wine"]).top == 5


def test_the_store_defaults_to_the_project_root(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("TABFLOW_ROOT", str(tmp_path))
    assert default_tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert default_tracking_uri() == "http://127.0.0.1:5000"


def _parent(tags=None, params=None):
    return SimpleNamespace(data=SimpleNamespace(tags=tags or {}, params=params or {}))


@pytest.mark.parametrize(("argv", "parent", "expected"), [
    # the sweep's own objective and direction
    ([], _parent({"objective.primary_metric": "val_rmse",
                  "objective.primary_direction": "minimize"}), ("val_rmse", "minimize")),
    # another metric: its own direction
    (["--metric", "val_log_loss"], _parent(), ("val_log_loss", "minimize")),
    (["--metric", "val_f1"], _parent(), ("val_f1", "maximize")),
    (["--ascending"], _parent({"objective.primary_metric": "val_accuracy",
                               "objective.primary_direction": "maximize"}),
     ("val_accuracy", "minimize")),
])
def test_runs_ranks_as_the_sweep_did_unless_told_otherwise(argv, parent, expected):
    args = parser().parse_args(["runs", "exp", *argv])
    assert _ranking(args, parent) == expected


def test_serve_uses_this_environment_and_the_resolved_version():
    cmd = serve_command("churn", "3", 8000)
    assert "models:/churn/3" in cmd
    assert cmd[cmd.index("--env-manager") + 1] == "local"


@pytest.mark.parametrize("argv", [["experiments"], ["runs", "x"], ["report", "x"],
                                  ["promote", "x"], ["rollback", "x"], ["serve", "x"],
                                  ["holdout", "x"], ["upload", "multirun"]])
def test_commands_on_an_empty_project_create_no_store(tmp_path, capsys, argv):
    from tabflow.cli import main

    db = tmp_path / "mlflow.db"
    with pytest.raises(SystemExit) as info:
        main(["--tracking-uri", f"sqlite:///{db}", *argv])
    assert info.value.code == 1
    assert f"no tracking store at {db}" in capsys.readouterr().err
    assert not db.exists()


def test_serving_with_nothing_in_production_names_promote(tmp_path, capsys):
    from tabflow.cli import main
    from tabflow.tracking.store import connect

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    connect(uri).client.create_registered_model("churn")
    assert main(["--tracking-uri", uri, "serve", "churn"]) == 2
    err = capsys.readouterr().err
    assert "churn has no version at @production" in err and "tabflow promote churn" in err


def test_holdout_names_what_it_can_write_and_what_is_missing(tmp_path, capsys):
    from tabflow.cli import main
    from tabflow.tracking.store import connect

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["--tracking-uri", uri, "holdout", "churn", "--out", "rows.xlsx"]) == 2
    assert "write a .csv or .parquet file" in capsys.readouterr().err
    connect(uri).client.create_registered_model("churn")
    assert main(["--tracking-uri", uri, "holdout", "churn"]) == 2
    assert "churn" in capsys.readouterr().err
    assert not (tmp_path / "churn-holdout.csv").exists()


def test_servers_write_access_lines_only_when_verbose(monkeypatch):
    from tabflow.cli import servers

    assert servers.server_env("sqlite:///x.db")["UVICORN_ACCESS_LOG"] == "false"
    monkeypatch.delenv("UVICORN_ACCESS_LOG", raising=False)
    assert "UVICORN_ACCESS_LOG" not in servers.server_env("sqlite:///x.db", verbose=True)
    args = parser().parse_args(["dashboard", "--verbose"])
    assert "--quiet" not in servers.dashboard_command(args.storage, args.host, args.port,
                                                      args.verbose)
    assert parser().parse_args(["serve", "m"]).verbose is False


def test_servers_start_no_job_runner_unless_the_environment_asks(monkeypatch):
    from tabflow.cli import servers

    monkeypatch.delenv(servers.JOBS, raising=False)
    assert servers.server_env("sqlite:///x.db")[servers.JOBS] == "false"
    monkeypatch.setenv(servers.JOBS, "true")  # the user's choice stands
    assert servers.server_env("sqlite:///x.db")[servers.JOBS] == "true"


def test_the_ui_starts_few_workers_on_a_small_machine(monkeypatch):
    from tabflow.cli import servers

    monkeypatch.setattr(servers.os, "cpu_count", lambda: 2)
    assert servers.default_workers() == 1
    cmd = servers.ui_command("sqlite:///x.db", "127.0.0.1", 5000, workers=1)
    assert cmd[cmd.index("--workers") + 1] == "1"
    assert parser().parse_args(["ui", "--workers", "3"]).workers == 3


def test_downloads_print_no_progress_bars(tmp_path, monkeypatch):
    from tabflow.tracking.store import connect

    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    connect(f"sqlite:///{tmp_path}/mlflow.db")
    import os

    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"


def test_unlock_lists_held_locks_and_clears_only_a_stale_one_unless_forced(tmp_path, capsys):
    """A lock of another host's clock an hour ahead, and one whose holder stopped beating."""
    import time

    import optuna

    from hydra_plugins.tabflow_sweeper.stores import optuna_storage
    from tabflow.cli import main
    from tests.helpers import client_for, seed_store

    seed_store(tmp_path)
    storage_url = f"sqlite:///{tmp_path}/optuna.db"
    storage = optuna_storage(storage_url)
    ahead = time.time() + 3600
    lock_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "s-1~ask")
    for key, value in {"holder_host": "elsewhere", "holder_pid": 7, "acquired_at": ahead,
                       "beat_at": ahead}.items():
        storage.set_study_user_attr(lock_id, key, value)
    client_for(tmp_path).create_registered_model("churn~lock", tags={
        "holder_host": "elsewhere", "holder_pid": "9", "acquired_at": str(time.time() - 600)})
    cli = ["--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "unlock",
           "--storage", storage_url]

    assert main(cli) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2
    # An hour ahead, less the moments the test took to get here (3599 under load).
    assert re.match(r"s-1~ask  held by elsewhere:7, last beat 3(600|5\d\d) s in the future",
                    listed[0]), listed[0]
    assert listed[0].endswith("live")
    assert "churn~lock  held by elsewhere:9, last beat 600 s ago" in listed[1]
    assert "STALE (silent for 600 s, more than 60 s): tabflow unlock churn~lock" in listed[1]

    assert main([*cli[:2], "unlock", "s-1~ask", "--storage", storage_url]) == 2
    err = capsys.readouterr().err
    assert "which may still be running" in err and "tabflow unlock s-1~ask --force" in err
    assert main([*cli[:2], "unlock", "churn~lock", "--storage", storage_url]) == 0
    assert "Removed lock churn~lock" in capsys.readouterr().out
    assert main([*cli[:2], "unlock", "s-1~ask", "--storage", storage_url, "--force"]) == 0
    assert main(cli) == 0
    assert capsys.readouterr().out.strip().endswith("No locks are held")
    assert main([*cli[:2], "unlock", "nope~ask", "--storage", storage_url]) == 2
