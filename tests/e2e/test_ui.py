"""The MLflow UI in a real browser: the sweep nested in the runs view, the registered model.

Needs Debian's `chromium` (no browser download); `.ci/run` installs it. The screenshots
are kept in test-artifacts/.
"""

from __future__ import annotations

import os

import pytest
from mlflow import MlflowClient

from tests.helpers import assert_ok, run_train
from tests.helpers.browser import CHROMIUM, page_with, screenshot
from tests.helpers.services import (
    free_port,
    job_runners,
    start_server,
    stop_server,
    wait_http,
)

pytestmark = pytest.mark.slow


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                    "(apt-get install chromium); .ci/run installs it")
def test_ui_shows_the_sweep_and_the_registered_model(tmp_path):
    assert_ok(run_train(tmp_path, "-m", "model=rf", "sweep=narrow", "hydra.sweeper.n_trials=3",
                        "registry.auto_promote=true"))
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("breast_cancer")
    parent = next(r for r in client.search_runs([exp.experiment_id])
                  if r.data.tags.get("tabflow.role") == "sweep")
    port = free_port()
    env = {**os.environ, "TABFLOW_ROOT": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = tmp_path / "ui.log"
    server = start_server(["ui", "--port", str(port)], tmp_path, env, log)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", server)
        assert not job_runners(server)  # MLflow's server-side (GenAI) jobs stay off
        base = f"http://127.0.0.1:{port}"
        runs_url = f"{base}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
        dom = page_with(runs_url, tmp_path / "profile", parent.info.run_name, "matching runs")
        assert parent.info.run_name in dom  # the sweep's parent run...
        assert "<strong>4</strong> matching runs" in dom  # ...with its 3 trials nested in it
        assert "Model training" in dom
        # The sweep saved a view of the runs table: its objective and tuned values as
        # columns, sorted by the objective (`tabflow ui` prints its address).
        view_url = f"{runs_url}&viewStateShareKey=tabflow"
        view = page_with(view_url, tmp_path / "profile", "val_accuracy", "model.max_depth",
                         size="2600,900")
        assert "tabflow: val_accuracy and tuned values" in view
        assert "val_accuracy" in view and "model.n_estimators" in view
        assert "Sort: val_accuracy" in view
        shot = screenshot(view_url, tmp_path / "profile", "ui-experiment-runs")
        assert shot.stat().st_size > 10_000
        # The list shows one alias per model ("+1" for more); the model's page shows all.
        models = page_with(f"{base}/#/models?workflowType=machine_learning",
                           tmp_path / "profile", "breast_cancer", "staging")
        assert "breast_cancer" in models and "staging" in models
        model_page = f"{base}/#/models/breast_cancer?workflowType=machine_learning"
        # registry.auto_promote=true: the first version went straight on to production.
        versions = page_with(model_page, tmp_path / "profile", "staging", "production")
        assert "staging" in versions and "production" in versions
        screenshot(model_page, tmp_path / "profile", "ui-registered-model")
    finally:
        stop_server(server)
    # Bound to localhost by default, and the runs page is announced in the model-training view.
    assert f"on http://127.0.0.1:{port}" in log.read_text()
    assert "workflowType=machine_learning&viewStateShareKey=tabflow" in log.read_text()
    # Page views write no access line per request (tabflow ui --verbose does).
    assert 'HTTP/1.1"' not in log.read_text()


def test_ui_binds_to_localhost_unless_asked_and_then_names_the_allowed_hosts():
    from tabflow.cli.servers import ui_command

    local = ui_command("sqlite:///x.db", "127.0.0.1", 5000)
    assert local[local.index("--host") + 1] == "127.0.0.1"
    assert "--allowed-hosts" not in local
    exposed = ui_command("sqlite:///x.db", "0.0.0.0", 5000)
    hosts = exposed[exposed.index("--allowed-hosts") + 1].split(",")
    assert "0.0.0.0:5000" in hosts and "*" not in hosts
    assert "--cors-allowed-origins" in exposed
