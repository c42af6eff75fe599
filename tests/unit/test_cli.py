"""The ``tabflow`` command line: parsing, help text, and how `runs` chooses its ranking."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest

from tabflow.cli import default_tracking_uri, parser
from tabflow.cli.servers import serve_command
from tabflow.cli.views import _ranking


def test_every_command_group_is_reachable():
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {"experiments", "runs", "report", "promote", "rollback",
                                "upload", "ui", "server", "dashboard", "serve"}


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


def test_serve_uses_this_environment_and_the_alias():
    cmd = serve_command("churn", "production", 8000)
    assert "models:/churn@production" in cmd
    assert cmd[cmd.index("--env-manager") + 1] == "local"
