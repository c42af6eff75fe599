"""The MLflow UI in a real browser: the sweep nested in the runs view, the registered model.

Needs Debian's `chromium` (no browser download); `.ci/run` installs it. The screenshots
are kept in test-artifacts/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.helpers import REPO, assert_ok, run_train
from tests.helpers.services import free_port, start_server, stop_server, wait_http

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / "test-artifacts"
# Headless flags that keep Chromium off the network (this machine has none) and sandboxed
# in a fresh profile.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=20000"]


def browse(url: str, profile: Path, *extra: str) -> str:
    out = subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *extra, url],
                         capture_output=True, text=True, timeout=120)
    return out.stdout


def page_with(url: str, profile: Path, *needles: str, tries: int = 4) -> str:
    """Return the rendered page once it shows every needle (the UI loads data lazily)."""
    dom = ""
    for _ in range(tries):
        dom = browse(url, profile, "--dump-dom")
        if all(n in dom for n in needles):
            break
    return dom


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
        base = f"http://127.0.0.1:{port}"
        runs_url = f"{base}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
        dom = page_with(runs_url, tmp_path / "profile", parent.info.run_name, "matching runs")
        assert parent.info.run_name in dom  # the sweep's parent run...
        assert "<strong>4</strong> matching runs" in dom  # ...with its 3 trials nested in it
        assert "Model training" in dom
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "ui-experiment-runs.png"
        browse(runs_url, tmp_path / "profile", "--window-size=1400,900", f"--screenshot={shot}")
        assert shot.stat().st_size > 10_000
        # The list shows one alias per model ("+1" for more); the model's page shows all.
        models = page_with(f"{base}/#/models?workflowType=machine_learning",
                           tmp_path / "profile", "breast_cancer", "staging")
        assert "breast_cancer" in models and "staging" in models
        model_page = f"{base}/#/models/breast_cancer?workflowType=machine_learning"
        # registry.auto_promote=true: the first version went straight on to production.
        versions = page_with(model_page, tmp_path / "profile", "staging", "production")
        assert "staging" in versions and "production" in versions
        browse(model_page, tmp_path / "profile", "--window-size=1400,900",
               f"--screenshot={ARTIFACTS / 'ui-registered-model.png'}")
    finally:
        stop_server(server)
    # Bound to localhost by default, and the runs page is announced in the model-training view.
    assert f"on http://127.0.0.1:{port}" in log.read_text()
    assert "workflowType=machine_learning" in log.read_text()
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
