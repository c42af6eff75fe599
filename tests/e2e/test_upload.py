"""`tabflow upload` logs a job dir exactly as the live callback did: one job logger.

A real sweep is tracked live; then its job dirs are made to look as a tracking outage
leaves them (results on disk, no run id) and `tabflow upload` tracks them again, under
the same parent. Each trial's two runs must hold the same record.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tabflow.contract import MLFLOW_RUN_FILE, RESULTS_FILE, TAG_TRIAL, TAG_UPLOADED
from tests.helpers import assert_ok, run_train, runs_of

pytestmark = pytest.mark.slow


def artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def record(client, run) -> dict:
    inputs = [(d.dataset.name, d.dataset.digest, d.dataset.schema, d.dataset.source,
               [(t.key, t.value) for t in d.tags]) for d in run.inputs.dataset_inputs]
    return {"status": run.info.status, "name": run.info.run_name,
            "params": run.data.params, "metrics": run.data.metrics,
            "tags": {k: v for k, v in run.data.tags.items() if k != TAG_UPLOADED},
            "artifacts": artifact_paths(client, run.info.run_id), "inputs": inputs}


def test_uploaded_runs_hold_what_live_runs_hold(project_root):
    assert_ok(run_train(project_root, "-m", "model=logreg", "sweep=narrow",
                        "hydra.sweeper.n_trials=3", "evaluation.trial_figures=true",
                        "registry.enabled=false"))
    sweep_dir = next(project_root.glob(f"multirun/*/*/{RESULTS_FILE}")).parent
    client, runs = runs_of(project_root)
    live = {r.data.tags[TAG_TRIAL]: r for r in runs if r.data.tags.get("tabflow.role") == "trial"}
    assert sorted(live) == ["0", "1", "2"]

    # What an outage leaves: every result on disk, no run id.
    for run_file in sweep_dir.glob(f"*/{MLFLOW_RUN_FILE}"):
        run_file.unlink()
    proc = subprocess.run([sys.executable, "-m", "tabflow", "--tracking-uri",
                           f"sqlite:///{project_root}/mlflow.db", "upload", str(sweep_dir)],
                          capture_output=True, text=True, timeout=300, cwd=project_root)
    assert_ok(proc)
    assert "Uploaded 3 job(s)" in proc.stdout

    client, runs = runs_of(project_root)
    uploaded = {r.data.tags[TAG_TRIAL]: r for r in runs if r.data.tags.get(TAG_UPLOADED)}
    assert sorted(uploaded) == ["0", "1", "2"]
    for trial, run in live.items():
        expected, got = record(client, run), record(client, uploaded[trial])
        for field, value in expected.items():
            differ = (set(value.items()) ^ set(got[field].items()) if isinstance(value, dict)
                      else (value, got[field]))
            assert got[field] == value, f"trial {trial}: {field} differs: {differ}"
        assert {"overrides.yaml", "config.yaml", "dataset.json"} <= got["artifacts"]
        assert any(a.startswith("figures/") for a in got["artifacts"])
        assert Path(got["tags"]["hydra.output_dir"]) == sweep_dir / trial
