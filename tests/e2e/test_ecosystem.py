"""The tools users bring: the exploration notebook, the Optuna dashboard, shell completion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from tests.helpers import REPO, TRAIN, assert_ok, run_train
from tests.helpers.browser import CHROMIUM, page_with, screenshot
from tests.helpers.services import free_port, start_server, stop_server, wait_http

# Its tests share one sweep (the module-scoped fixture), on one worker (helpers/scheduling).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def swept_root(tmp_path_factory):
    """A project root holding one small, registered sweep."""
    root = tmp_path_factory.mktemp("ecosystem")
    out = run_train(root, "-m", "model=rf", "sweep=narrow", "hydra.sweeper.n_trials=4",
                    "model.n_estimators=30")
    assert_ok(out)
    (root / "sweep.log").write_text(out.stdout + out.stderr)
    return root


def test_sweep_logs_are_quiet_by_default_and_verbose_on_request(swept_root, tmp_path):
    quiet = (swept_root / "sweep.log").read_text()
    assert quiet.count("| 4/4 |") == 1 and "Registered breast_cancer version 1" in quiet
    for noise in ("INFO mlflow", "Launching 1 jobs", "A new study created",
                  "Successfully registered model", "[tabflow.job][INFO]"):
        assert noise not in quiet, noise
    out = run_train(tmp_path, "-m", "model=logreg", "sweep=narrow", "hydra.sweeper.n_trials=1",
                    "registry.enabled=false", "hydra.verbose=true", fresh_store=True)
    assert_ok(out)
    verbose = out.stdout + out.stderr
    assert "Creating initial MLflow database tables" in verbose  # MLflow's INFO
    metric_lines = [line for line in verbose.splitlines() if "[tabflow.job][DEBUG] - " in line]
    assert any("fit_time_s=" in line for line in metric_lines)  # every trial's metrics


def test_exploration_notebook_runs_top_to_bottom_on_a_sweep(swept_root, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("TABFLOW_ROOT", str(swept_root))  # the kernel inherits it
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel draws inline
    nb = nbformat.read(REPO / "notebooks" / "exploration.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []))
    assert "breast_cancer: 569 rows, 30 features (classification)" in text
    assert "IProgress not found" not in text  # no red warning box from tqdm
    assert "4 trials, objective val_accuracy" in text
    assert "registered: models:/breast_cancer/1 (@staging)" in text
    figures = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if o.get("output_type") == "display_data" and "image/png" in o["data"]]
    assert len(figures) >= 3  # class balance, distributions, trial comparison
    assert not [o for c in nb.cells for o in c.get("outputs", [])
                if o.get("output_type") == "error"]


def test_optuna_dashboard_shows_the_study_with_mlflow_run_ids(swept_root):
    port = free_port()
    env = {**os.environ, "TABFLOW_ROOT": str(swept_root)}
    proc = start_server(["dashboard", "--port", str(port)], swept_root, env,
                        swept_root / "dashboard.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/api/studies", proc)
        with urllib.request.urlopen(f"{base}/api/studies", timeout=10) as r:
            (study,) = json.load(r)["study_summaries"]
        assert study["study_name"].startswith("breast_cancer-rf-narrow-")  # readable name
        with urllib.request.urlopen(f"{base}/api/studies/{study['study_id']}?after=0",
                                    timeout=10) as r:
            trials = json.load(r)["trials"]
        assert len(trials) == 4
        for trial in trials:
            attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
            assert len(attrs["mlflow_run_id"]) == 32 and float(attrs["fit_time_s"]) > 0
        with urllib.request.urlopen(f"{base}/dashboard", timeout=10) as r:
            assert r.status == 200
        if CHROMIUM:  # the study's page as a person sees it: looked at in test-artifacts/
            page = f"{base}/dashboard/studies/{study['study_id']}"
            dom = page_with(page, swept_root / "profile", study["study_name"])
            assert study["study_name"] in dom
            shot = screenshot(page, swept_root / "profile", "optuna-dashboard")
            assert shot.stat().st_size > 10_000
    finally:
        stop_server(proc)


def test_shell_completion_is_hydras(tmp_path):
    out = subprocess.run([sys.executable, str(TRAIN), "-sc", "install=bash"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "complete -o nospace -o default -F" in out.stdout
    query = subprocess.run([sys.executable, str(TRAIN), "-sc", "query=bash"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "COMP_LINE": f"python {TRAIN} mod",
                                "COMP_POINT": "100"})
    assert query.returncode == 0 and "model=" in query.stdout
