"""`tabflow monitor` on a real registered model: drift, degradation, bad input, retraining.

One sweep registers penguins version 1 (numeric and categorical features, missing values)
and promotes it; the tests then run the `tabflow` command as a user would, on batches cut
from the real table, and read what MLflow recorded.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from pathlib import Path

import palmerpenguins
import pytest

from tests.helpers import assert_ok, client_for, run_train
from tests.helpers import run_tabflow as tabflow
from tests.helpers.browser import ARTIFACTS, CHROMIUM, browse, page_with
from tests.helpers.services import free_port, start_server, stop_server, wait_http

# Its tests share one sweep (the module-scoped fixture), on one worker (helpers/scheduling).
pytestmark = pytest.mark.slow
MODEL = "penguins"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """penguins version 1 at @production, with its training profile."""
    root = tmp_path_factory.mktemp("monitoring")
    assert_ok(run_train(root, "-m", "dataset=penguins", "model=logreg", "sweep=narrow",
                        "hydra.sweeper.n_trials=3", "evaluation.figures=false"))
    promoted = tabflow(root, "promote", MODEL)
    assert promoted.returncode == 0, promoted.stderr
    return root


def batch(root: Path, name: str, change=None, rows: int = 150, seed: int = 0) -> Path:
    """Rows drawn from the real table (the training distribution), then changed."""
    path = root / name
    if change == "empty":
        path.write_text("")
        return path
    frame = palmerpenguins.load_penguins().sample(rows, replace=True, random_state=seed)
    frame = frame.reset_index(drop=True)
    if change is not None:
        frame = change(frame)
    frame.to_csv(path, index=False)
    return path


def monitoring_runs(root: Path) -> list:
    client = client_for(root)
    exp = client.get_experiment_by_name(f"{MODEL}-monitoring")
    return [] if exp is None else client.search_runs([exp.experiment_id],
                                                     order_by=["attributes.start_time DESC"])


def test_the_training_distribution_passes_and_is_tracked(registry):
    out = tabflow(registry, "monitor", MODEL, str(batch(registry, "same.csv")))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "penguins version 1 (@production) against same.csv: 150 rows" in out.stdout
    assert "-> OK (exit 0)" in out.stdout and "accuracy" in out.stdout
    run = monitoring_runs(registry)[0]
    tags = run.data.tags
    assert (tags["monitoring.model"], tags["monitoring.version"], tags["monitoring.alias"],
            tags["monitoring.verdict"]) == (MODEL, "1", "production", "ok")
    assert run.info.status == "FINISHED" and run.data.metrics["drifted_features"] <= 1
    assert "drift.bill_length_mm.statistic" in run.data.metrics
    assert run.data.metrics["new_accuracy"] > 0.9  # scored with the test metrics
    client = client_for(registry)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"report.html",
                                                                       "drift.json"}
    assert run.inputs.dataset_inputs[0].dataset.digest == tags["dataset.digest"][:16]
    version = client.get_model_version(MODEL, "1")
    assert version.tags["monitoring.verdict"] == "ok"
    assert json.loads(version.tags["monitoring.last"])["run_id"] == run.info.run_id


def shift_bills(frame):
    return frame.assign(bill_length_mm=frame["bill_length_mm"] + 8)


def test_a_shifted_feature_is_drift_exit_3(registry):
    def unlabelled(frame):  # labels often come later: drift alone is checked
        return shift_bills(frame).drop(columns=["species"])

    out = tabflow(registry, "monitor", MODEL, str(batch(registry, "shift.csv", unlabelled)))
    assert out.returncode == 3, out.stdout + out.stderr
    assert "no labels in the batch: performance not scored" in out.stdout
    first = out.stdout.splitlines()[2]  # the table's first row: the worst feature
    assert first.split()[0] == "bill_length_mm" and "SEVERE" in first
    assert "-> DRIFT (exit 3)" in out.stdout
    assert client_for(registry).get_model_version(MODEL, "1").tags[
        "monitoring.verdict"] == "drift"


def test_a_new_category_and_missing_values_are_named(registry):
    def change(frame):
        frame.loc[:40, "island"] = "Anvers"
        frame.loc[:60, "flipper_length_mm"] = None
        return frame

    out = tabflow(registry, "monitor", MODEL, str(batch(registry, "odd.csv", change)))
    assert out.returncode == 3, out.stdout + out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines()[2:6]}
    assert "unseen: Anvers" in rows["island"]
    assert re.search(r"SEVERE .*missing \d\.\d% -> 4\d\.\d%", rows["flipper_length_mm"])


def test_flipped_labels_are_a_degradation_exit_4(registry):
    def flip(frame):
        order = {"Adelie": "Gentoo", "Gentoo": "Chinstrap", "Chinstrap": "Adelie"}
        frame.loc[:75, "species"] = frame.loc[:75, "species"].map(order)
        return frame

    out = tabflow(registry, "monitor", MODEL, str(batch(registry, "flip.csv", flip)))
    assert out.returncode == 4, out.stdout + out.stderr
    assert "test_accuracy: -0.4" in out.stdout and "DEGRADED" in out.stdout
    run = monitoring_runs(registry)[0]
    assert run.data.tags["monitoring.verdict"] == "degraded"
    assert run.data.metrics["change_accuracy"] < -0.3


def test_drift_and_degradation_together_exit_5(registry):
    def both(frame):
        frame = shift_bills(frame)
        frame["species"] = frame["species"].map(
            {"Adelie": "Gentoo", "Gentoo": "Chinstrap", "Chinstrap": "Adelie"})
        return frame

    out = tabflow(registry, "monitor", MODEL, str(batch(registry, "both.csv", both)))
    assert out.returncode == 5 and "-> DRIFT+DEGRADED (exit 5)" in out.stdout


@pytest.mark.parametrize(("args", "change", "message"), [
    ((MODEL,), lambda f: f.drop(columns=["island"]),
     "lacks column(s) the model was trained on: ['island']"),
    ((MODEL,), lambda f: f.assign(colour="x"),
     "has column(s) the model was not trained on: ['colour']"),
    ((MODEL,), lambda f: f.assign(body_mass_g="heavy"),
     "column 'body_mass_g' was numeric in training, but holds 'heavy'"),
    ((MODEL,), lambda f: f.assign(species="Emperor"),
     "holds classes the model never saw: ['Emperor']"),
    ((MODEL,), "empty", "holds no rows; nothing to monitor"),
    (("pinguins",), None, "no registered model named 'pinguins'"),
    ((MODEL, "--alias", "canary"), None, "penguins has no @canary version; its aliases: "
                                         "@production -> 1, @staging -> 1"),
    ((MODEL, "monitoring.drift.pvalue=0.1"), None, "Could not override "
                                                   "'monitoring.drift.pvalue'"),
])
def test_bad_input_is_one_line_and_records_nothing(registry, args, change, message, capsys,
                                                  monkeypatch):
    from tabflow.cli import main

    before = len(monitoring_runs(registry))
    path = batch(registry, "bad.csv", change)
    name, *rest = args
    # In this process (the command's own entry point): one import of MLflow for all cases.
    monkeypatch.setenv("TABFLOW_ROOT", str(registry))
    code = main(["--tracking-uri", f"sqlite:///{registry}/mlflow.db", "monitor", name,
                 str(path), *rest])
    out = capsys.readouterr()
    assert code == 2, out.out + out.err
    assert message in out.err and len(out.err.strip().splitlines()) == 1
    assert out.out == "" and len(monitoring_runs(registry)) == before


def test_labels_extra_columns_and_a_version_are_named_on_the_command_line(registry, capsys,
                                                                          monkeypatch):
    from tabflow.cli import main

    def renamed(frame):  # labels under another name, and a column the model never saw
        return frame.rename(columns={"species": "truth"}).assign(note="x")

    path = batch(registry, "named.csv", renamed)
    monkeypatch.setenv("TABFLOW_ROOT", str(registry))
    code = main(["--tracking-uri", f"sqlite:///{registry}/mlflow.db", "monitor", MODEL,
                 str(path), "--version", "1", "--labels", "truth", "--ignore-extra"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "penguins version 1 against named.csv" in out and "(@" not in out.splitlines()[0]
    assert "left out, not features of the model: note" in out
    assert "test_accuracy: " in out  # scored: the labels were found under --labels
    run = monitoring_runs(registry)[0]
    assert run.data.tags["monitoring.version"] == "1" and run.data.tags["monitoring.alias"] == ""


def test_a_version_without_a_profile_says_how_to_add_one(registry):
    client = client_for(registry)
    uri = client.get_model_version(MODEL, "1").tags["monitoring.profile"]
    client.delete_model_version_tag(MODEL, "1", "monitoring.profile")  # as before profiles
    try:
        out = tabflow(registry, "monitor", MODEL, str(batch(registry, "same.csv")))
        assert out.returncode == 2
        assert "has no training profile" in out.stderr
        assert "tabflow profile penguins --version 1" in out.stderr
        added = tabflow(registry, "profile", MODEL, "--version", "1")
        assert added.returncode == 0, added.stderr
        assert "training profile logged at runs:/" in added.stdout
        again = tabflow(registry, "monitor", MODEL, str(batch(registry, "same.csv")))
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        if "monitoring.profile" not in client.get_model_version(MODEL, "1").tags:
            client.set_model_version_tag(MODEL, "1", "monitoring.profile", uri)


def test_retrain_registers_a_warm_started_version_at_staging(registry):
    client = client_for(registry)
    v1 = client.get_model_version(MODEL, "1")
    parent = client.get_run(v1.tags["sweep.parent_run_id"])
    best = client.get_run(parent.data.tags["best.run_id"])
    def one_year(frame):  # the study's later years only: drift that the labels survive
        return frame.assign(year=2009)

    path = batch(registry, "drifted.csv", one_year, rows=200)
    out = tabflow(registry, "monitor", MODEL, str(path), "--retrain",
                  "--retrain-override", "hydra.sweeper.n_trials=2",
                  "--retrain-override", "evaluation.figures=false", timeout=600)
    assert out.returncode == 3, out.stdout + out.stderr  # the gate still reports the drift
    assert "Retraining penguins on combined data" in out.stdout
    assert "the old labels still hold" in out.stdout
    # Warm start: the first trial of the new sweep runs version 1's best parameters.
    assert f"Warm start: queued {{'model.C': {float(best.data.params['model.C'])!r}" \
        in out.stdout + out.stderr
    assert "Registered penguins version 2 as @staging" in out.stdout
    assert "version 2 is at @staging" in out.stdout and "tabflow promote penguins" in out.stdout
    aliases = {k: str(v) for k, v in client.get_registered_model(MODEL).aliases.items()}
    assert aliases["production"] == "1" and aliases["staging"] == "2"  # promotion is gated
    v2 = client.get_model_version(MODEL, "2")
    assert "monitoring.profile" in v2.tags  # the new version can be monitored in turn
    retrained = client.get_run(v2.tags["sweep.parent_run_id"])
    assert retrained.data.tags["choice.model"] == "logreg"  # the version's own configuration
    assert retrained.data.tags["dataset.digest"] != parent.data.tags["dataset.digest"]
    run = monitoring_runs(registry)[0]
    assert run.data.tags["monitoring.retrain.version"] == "2"
    assert run.data.tags["monitoring.retrain.data"] == "combined"
    # Promoting it compares the two on rows neither trained on, though version 2 trained
    # on more (the combined data) than version 1 did.
    promote = tabflow(registry, "promote", MODEL)
    assert promote.returncode in (0, 3, 4), promote.stdout + promote.stderr
    assert "held-out test rows neither version trained on" in promote.stdout
    record = json.loads(client.get_model_version(MODEL, "2").tags["promotion.last"])
    assert record["candidate"] == "2" and record["champion"] == "1"
    from tabflow.comparison import row_keys
    from tabflow.lifecycle import version_rows
    from tabflow.tracking.store import connect

    store = connect(f"sqlite:///{registry}/mlflow.db")
    (new, _), (old, _) = (version_rows(store, client.get_model_version(MODEL, v))
                          for v in ("2", "1"))
    trained = set(row_keys(new.X_train, new.y_train)) | set(row_keys(old.X_train, old.y_train))
    tested = set(row_keys(new.X_test, new.y_test)) | set(row_keys(old.X_test, old.y_test))
    assert record["test_rows"] == len(tested - trained) >= 30
    assert record["excluded_rows"] == len(tested & trained)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                    "(apt-get install chromium); .ci/run installs it")
def test_the_report_opens_from_the_ui_in_a_browser(registry, tmp_path):
    """The UI serves the check's report.html; Chromium renders its table and plots."""
    run = next(r for r in monitoring_runs(registry)
               if r.data.tags["monitoring.verdict"] != "ok")
    port = free_port()
    env = {**os.environ, "TABFLOW_ROOT": str(registry)}
    env.pop("MLFLOW_TRACKING_URI", None)
    server = start_server(["ui", "--port", str(port)], registry, env, tmp_path / "ui.log")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/health", server)
        exp = run.info.experiment_id
        view = (f"{base}/#/experiments/{exp}/runs/{run.info.run_id}/artifacts/report.html"
                f"?workflowType=machine_learning")
        page = page_with(view, tmp_path / "profile", "mlflow-html-iframe")
        assert "drift.json" in page  # the run's artifacts, listed...
        assert 'class="mlflow-html-iframe"' in page  # ...and report.html shown as a page
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "ui-monitoring-report.png"
        browse(view, tmp_path / "profile", "--window-size=1400,1000", f"--screenshot={shot}")
        assert shot.stat().st_size > 10_000
        # What the frame holds, served by the UI and rendered by the browser on its own.
        with urllib.request.urlopen(f"{base}/get-artifact?path=report.html&run_uuid="
                                    f"{run.info.run_id}") as response:
            served = tmp_path / "report.html"
            served.write_bytes(response.read())
        dom = browse(served.as_uri(), tmp_path / "profile", "--dump-dom")
        assert dom.count("<svg") == 7 and "Data drift per feature" in dom
        assert "Performance against the baseline" in dom
        assert f"version 1: {run.data.tags['monitoring.verdict']}" in dom
    finally:
        stop_server(server)


def test_retrain_refuses_a_planted_override_before_anything_is_recorded(registry, tmp_path,
                                                                         capsys, monkeypatch):
    """A tag anyone with write access to the store can set is data: its code is refused."""
    from tabflow.cli import main

    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "keep.txt").write_text("still here")
    client = client_for(registry)
    parent = client.get_model_version(MODEL, "1").tags["sweep.parent_run_id"]
    recorded = client.get_run(parent).data.tags["hydra.overrides"]
    planted = (f"{recorded} model.classifier=sklearn.datasets.clear_data_home "
               f"+model.data_home={canary}")
    client.set_tag(parent, "hydra.overrides", planted)
    before, files = len(monitoring_runs(registry)), sorted((registry / "data").rglob("*"))
    try:
        monkeypatch.setenv("TABFLOW_ROOT", str(registry))
        code = main(["--tracking-uri", f"sqlite:///{registry}/mlflow.db", "monitor", MODEL,
                     str(batch(registry, "planted.csv")), "--retrain"])
    finally:
        client.set_tag(parent, "hydra.overrides", recorded)
    out = capsys.readouterr()
    assert code == 2, out.out + out.err
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and f"run {parent}, tag hydra.overrides" in lines[0]
    assert "'model.classifier=sklearn.datasets.clear_data_home'" in lines[0]
    assert out.out == "" and len(monitoring_runs(registry)) == before
    assert sorted((registry / "data").rglob("*")) == files  # no retraining table written
    assert (canary / "keep.txt").read_text() == "still here"


def test_ctrl_c_during_retraining_closes_every_run_and_trial(registry):
    """Ctrl-C while the retraining sweep fits: one line, exit 130, nothing left RUNNING."""
    import signal
    import subprocess
    import sys
    import time

    import optuna

    from tests.helpers import project_env

    client = client_for(registry)
    before = dict(client.get_registered_model(MODEL).aliases)
    experiment = client.get_experiment_by_name(MODEL).experiment_id
    running = "attributes.status = 'RUNNING' and tags.`tabflow.role` = 'trial'"
    path = batch(registry, "drifted-again.csv", lambda f: f.assign(year=2009), rows=200)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tabflow", "monitor", MODEL, str(path), "--retrain",
         "--retrain-override", "hydra.sweeper.n_trials=50",
         "--retrain-override", "evaluation.figures=false"],
        cwd=registry, env=project_env(registry), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not client.search_runs([experiment], running) and proc.poll() is None:
            assert time.monotonic() < deadline, "no retraining trial started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends (the sweep is in its own session)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("Interrupted (signal SIGINT): tabflow "
                                                   "monitor stopped")
    for exp in (experiment, client.get_experiment_by_name(f"{MODEL}-monitoring").experiment_id):
        assert not client.search_runs([exp], "attributes.status = 'RUNNING'")
    storage = f"sqlite:///{registry}/optuna.db"
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert dict(client.get_registered_model(MODEL).aliases) == before
    assert monitoring_runs(registry)[0].data.tags["monitoring.retrain.status"] == "130"
