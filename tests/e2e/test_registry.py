"""A registry a team can trust: fair, significant promotion; one truth; what will serve.

Real sweeps and the `tabflow` command on one project: breast_cancer version 1 (seed 42) in
production, version 2 (the same configuration, seed 11) at staging. Each test reads it or
works on a registered model name of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import mlflow
import pytest

from tabflow.tracking.models import SERVING_TAGS
from tests.helpers import REPO, assert_ok, client_for, load_dataset_frame, project_env, run_train
from tests.helpers import run_tabflow as tabflow
from tests.helpers.services import free_port

# Its tests share the two sweeps of the fixture, on one worker (helpers/scheduling).
pytestmark = pytest.mark.slow
MODEL = "breast_cancer"
SWEEP = ("-m", "model=rf", "sweep=narrow", "hydra.sweeper.n_trials=2",
         "evaluation.figures=false")
ONE_TRIAL = (*SWEEP[:-2], "hydra.sweeper.n_trials=1", "evaluation.figures=false")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Version 1 (seed 42) promoted to production; version 2 (seed 11) at staging."""
    root = tmp_path_factory.mktemp("registry")
    assert_ok(run_train(root, *SWEEP))
    assert tabflow(root, "promote", MODEL).returncode == 0
    assert_ok(run_train(root, *SWEEP, "seed=11"))
    return root


def test_another_seed_is_compared_on_rows_neither_version_trained_on(project):
    client = client_for(project)
    v1 = client.get_model_version(MODEL, "1")
    out = tabflow(project, "promote", MODEL)
    assert out.returncode == 4, out.stdout + out.stderr  # NOT SIGNIFICANT
    assert "114 held-out test rows neither version trained on" in out.stdout
    assert "NOT SIGNIFICANT, not promoted" in out.stdout and "95% interval" in out.stdout
    record = json.loads(client.get_model_version(MODEL, "2").tags["promotion.last"])
    # The champion is scored on rows it never saw: exactly its own recorded test score,
    # not the inflated one its training rows gave it before.
    assert record["champion_score"] == pytest.approx(float(v1.tags["test_accuracy"]))
    assert record["excluded_rows"] == 0 and record["test_rows"] == 114
    assert record["low"] <= 0 <= record["high"] and record["verdict"] == "NOT SIGNIFICANT"
    assert "McNemar" in record["test"] and 0 <= record["p_value"] <= 1
    runs = mlflow.MlflowClient(f"sqlite:///{project}/mlflow.db").search_runs(
        [client.get_experiment_by_name(f"{MODEL}-lifecycle").experiment_id])
    recorded = [r for r in runs if r.data.tags.get("candidate") == "2"]
    assert recorded and recorded[0].data.tags["verdict"] == "NOT SIGNIFICANT"
    assert {"gain", "low", "high", "p_value"} <= set(recorded[0].data.metrics)


def test_serving_costs_are_version_tags_and_a_budget_refuses(project, tmp_path):
    client = client_for(project)
    tags = client.get_model_version(MODEL, "2").tags
    assert set(SERVING_TAGS) <= set(tags)
    assert 0 < float(tags["serving.latency_p50_ms_1row"]) <= float(
        tags["serving.latency_p95_ms_1row"])
    assert float(tags["serving.artifact_mb"]) > 0 and float(tags["serving.peak_memory_mb"]) > 0
    # A clearly better challenger (a forest) against a stump, under a latency budget first.
    name = "stump_vs_forest"
    assert_ok(run_train(project, *SWEEP, f"registry.model_name={name}",
                        "model.max_depth=choice(1)", "model.n_estimators=choice(1)"))
    assert tabflow(project, "promote", name).returncode == 0
    assert_ok(run_train(project, *SWEEP, f"registry.model_name={name}"))
    over = tabflow(project, "promote", name, "registry.budgets.latency_p95_ms_1row=0.001")
    assert over.returncode == 5, over.stdout + over.stderr
    assert "OVER BUDGET, not promoted" in over.stdout and "latency_p95_ms_1row=" in over.stdout
    assert "serving: p50/p95" in over.stdout  # both versions' numbers, side by side
    better = tabflow(project, "promote", name)
    assert better.returncode == 0, better.stdout + better.stderr
    assert "PROMOTED to production: the whole interval lies above the margin 0" in better.stdout
    assert str(client.get_model_version_by_alias(name, "production").version) == "2"
    wrong = tabflow(project, "promote", name, "seed=1")
    assert wrong.returncode == 2 and "only registry settings" in wrong.stderr
    # A challenger trained on other columns can't be compared: one line, nothing changes.
    assert_ok(run_train(project, *SWEEP, f"registry.model_name={name}",
                        'dataset.drop=["mean radius"]'))
    other = tabflow(project, "promote", name)
    assert other.returncode == 2, other.stdout + other.stderr
    assert "not comparable: the two versions were trained on other columns" in other.stderr
    assert "'mean radius'" in other.stderr and "Traceback" not in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1
    assert str(client.get_model_version_by_alias(name, "production").version) == "2"


def test_the_guides_stage_call_is_named_and_sync_mends_it(project):
    client = client_for(project)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client.transition_model_version_stage(MODEL, "2", "Production")  # the guide's call
    staged = {str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'")
              if v.current_stage == "Production"}
    assert staged == {"1", "2"}  # MLflow's archive_existing_versions defaults to False
    # `tabflow serve` says so before it becomes the server (it serves @production, v1).
    serve = subprocess.Popen([sys.executable, "-m", "tabflow", "serve", MODEL, "--port",
                              str(free_port())], cwd=project, env=project_env(project),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert serve.stderr is not None and serve.stdout is not None
        line = serve.stderr.readline()
        assert "(version 1)" in serve.stdout.readline()
    finally:
        serve.kill()
        serve.wait()
    assert line.startswith("warning: ")
    assert "@production is version 1 but stage Production holds 1, 2" in line
    assert f"models:/{MODEL}/Production serves 2" in line and "--sync" in line
    mended = tabflow(project, "promote", MODEL, "--sync")
    assert mended.returncode == 0 and "version 2: stage Production -> Staging" in mended.stdout
    after = tabflow(project, "promote", MODEL, "--sync")
    assert "the stages already follow the aliases" in after.stdout
    assert "warning:" not in tabflow(project, "promote", MODEL, "--margin", "1").stderr


def test_the_guides_registration_snippet_runs_as_written(project):
    mlflow.set_tracking_uri(f"sqlite:///{project}/mlflow.db")
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(MODEL)
    runs = client.search_runs(experiment_ids=[experiment.experiment_id],
                              filter_string="metrics.val_accuracy > 0.9")
    best_run = max(runs, key=lambda r: r.data.metrics["val_accuracy"])
    registered = mlflow.register_model(model_uri=f"runs:/{best_run.info.run_id}/model",
                                       name="RandomForest-Classifier")
    model = mlflow.pyfunc.load_model(f"models:/RandomForest-Classifier/{registered.version}")
    assert best_run.data.tags["tabflow.role"] == "trial"
    assert len(model.predict(load_dataset_frame().head(3))) == 3


def test_a_rerun_whose_version_was_taken_over_registers_again(project, tmp_path):
    root = tmp_path / "shared"
    root.mkdir()
    args = (*ONE_TRIAL, "registry.model_name=shared")
    assert_ok(run_train(root, *args))
    assert_ok(run_train(root, *args, "seed=3"))  # another sweep takes @staging
    again = run_train(root, *args)
    assert_ok(again)
    assert "version 1 no longer holds @staging (version 2 does): registering it again" \
        in again.stdout
    assert "stays registered" not in again.stdout
    assert str(client_for(root).get_model_version_by_alias("shared", "staging").version) == "1"
    # Its files deleted: registered anew, not "stays registered".
    for model_dir in (root / "mlruns").rglob("MLmodel"):
        model_dir.unlink()
    gone = run_train(root, *args)
    assert_ok(gone)
    assert "can't be read (its model files were moved or deleted): registering it again" \
        in gone.stdout
    assert str(client_for(root).get_model_version_by_alias("shared", "staging").version) == "3"


def test_the_pipeline_script_stops_at_its_first_failing_gate(tmp_path):
    env_root = tmp_path / "ci"
    env_root.mkdir()
    env = {**os.environ, "TABFLOW_ROOT": str(env_root), "PYTHON": sys.executable,
           "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_TRACKING_URI", None)
    script = REPO / "deploy" / "pipeline.sh"

    def pipeline(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(script), *args], env=env, capture_output=True,
                              text=True, timeout=600)

    first = pipeline("train", "cancer", *ONE_TRIAL[1:])
    assert first.returncode == 0, first.stdout + first.stderr
    assert "== gate: tabflow promote cancer" in first.stderr and "PROMOTED" in first.stdout
    second = pipeline("train", "cancer", *ONE_TRIAL[1:], "seed=11")
    assert second.returncode == 4, second.stdout + second.stderr  # NOT SIGNIFICANT: stop
    batch = tmp_path / "batch.csv"
    load_dataset_frame().sample(100, random_state=0).to_csv(batch, index=False)
    nightly = pipeline("monitor", "cancer", str(batch))
    assert nightly.returncode == 0, nightly.stdout + nightly.stderr
    assert "== monitor: tabflow monitor cancer" in nightly.stderr
    assert pipeline("deploy").returncode == 2
    import yaml

    workflow = yaml.safe_load((REPO / "deploy" / "github-actions.yml").read_text())
    steps = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert any(s.startswith("deploy/pipeline.sh train ") for s in steps)
    assert any(s.startswith("deploy/pipeline.sh monitor ") for s in steps)
