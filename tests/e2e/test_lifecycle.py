"""From best trial to a model in production: report, promotion, rollback, serving.

Runs real sweeps, the `tabflow` command and an `mlflow models serve` process on localhost.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import matplotlib.image
import mlflow
import pytest

from tests.helpers import assert_ok, client_for, load_dataset_frame, run_train, runs_of
from tests.helpers import run_tabflow as tabflow
from tests.helpers.browser import CHROMIUM, screenshot
from tests.helpers.services import free_port, start_server, stop_server, wait_http

# Its tests share one sweep (the module-scoped fixture), on one worker (helpers/scheduling).
pytestmark = pytest.mark.slow
MODEL = "breast_cancer"


def sweep(root: Path, *extra: str) -> None:
    assert_ok(run_train(root, "-m", "model=rf", "sweep=narrow", "hydra.sweeper.n_trials=3",
                        *extra, report=True))


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory):
    """A store with two sweeps: versions 1 and 2 of the model, v1 promoted to production."""
    root = tmp_path_factory.mktemp("lifecycle")
    sweep(root)
    first = tabflow(root, "promote", MODEL)
    assert first.returncode == 0, first.stderr
    sweep(root, "seed=7")  # another study: a second version at @staging
    return root, first.stdout


def test_sweep_report_and_figures_are_on_the_parent_run(registry_root):
    root, _ = registry_root
    client, runs = runs_of(root)
    parent = next(r for r in runs if r.data.tags.get("tabflow.role") == "sweep")
    figures = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert {"confusion_matrix.png", "roc_curve.png", "precision_recall_curve.png",
            "permutation_importance.png", "optimization_history.png",
            "parallel_coordinate.png", "slice.png"} <= figures
    local = Path(mlflow.artifacts.download_artifacts(
        run_id=parent.info.run_id, artifact_path="report.html",
        tracking_uri=f"sqlite:///{root}/mlflow.db"))
    report = local.read_text()
    assert "Best parameters" in report and "model.n_estimators" in report
    # The task's own estimator only (a classification sweep has no use for the regressor).
    assert "model.classifier" in report and "model.regressor" not in report
    # The slice plot has room for each of the space's 2 parameters (3.2 inches at 110 dpi).
    slice_png = mlflow.artifacts.download_artifacts(
        run_id=parent.info.run_id, artifact_path="figures/slice.png",
        tracking_uri=f"sqlite:///{root}/mlflow.db")
    assert matplotlib.image.imread(slice_png).shape[1] >= 2 * 300
    if CHROMIUM:  # the page as a person sees it: looked at in test-artifacts/
        shot = screenshot(local.as_uri(), root / "profile", "sweep-report", "1200,4600")
        assert shot.stat().st_size > 50_000
    assert "test_accuracy" in report and report.count("data:image/png;base64,") >= 7
    assert parent.data.metrics["registration_time_s"] < 30


def test_first_promotion_needs_no_champion(registry_root):
    root, first = registry_root
    assert "PROMOTED to production: no production version yet" in first
    client = client_for(root)
    v1 = client.get_model_version(MODEL, "1")
    assert v1.current_stage == "Production"  # the guide's stage, mirrored from the alias
    record = json.loads(v1.tags["promotion.last"])
    assert record["promoted"] and record["champion"] is None


def test_promotion_compares_on_the_same_test_rows_and_respects_the_margin(registry_root):
    root, _ = registry_root
    client = client_for(root)
    assert str(client.get_model_version_by_alias(MODEL, "staging").version) == "2"
    refused = tabflow(root, "promote", MODEL, "--margin", "0.5")  # no model gains 0.5
    assert refused.returncode == 3, refused.stderr  # NOT BETTER: a gate's exit code
    assert "not promoted" in refused.stdout and "staging     version 2" in refused.stdout
    assert str(client.get_model_version_by_alias(MODEL, "production").version) == "1"
    for version in ("1", "2"):  # the comparison is recorded on both versions
        record = json.loads(client.get_model_version(MODEL, version).tags["promotion.last"])
        assert record["candidate"] == "2" and record["champion"] == "1"
        assert record["promoted"] is False and record["test_rows"] == 114

    forced = tabflow(root, "promote", MODEL, "--margin", "0.5", "--force")
    assert "PROMOTED to production" in forced.stdout and "forced" in forced.stdout
    assert str(client.get_model_version_by_alias(MODEL, "production").version) == "2"
    old = client.get_model_version(MODEL, "1")
    assert old.tags["lifecycle"] == "archived" and old.current_stage == "Archived"
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    staged = mlflow.pyfunc.load_model(f"models:/{MODEL}/Production")  # the guide's URI
    assert staged.metadata.model_uuid == mlflow.pyfunc.load_model(
        f"models:/{MODEL}@production").metadata.model_uuid

    back = tabflow(root, "rollback", MODEL)
    assert back.returncode == 0, back.stderr
    assert "rolled back from version 2 to version 1" in back.stdout
    assert str(client.get_model_version_by_alias(MODEL, "production").version) == "1"
    assert client.get_model_version(MODEL, "2").tags["lifecycle"] == "rolled_back"
    again = tabflow(root, "rollback", MODEL)
    assert again.returncode == 2 and "nothing to roll back to" in again.stderr


def test_runs_and_experiments_commands(registry_root):
    root, _ = registry_root
    listed = tabflow(root, "experiments")
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "SWEEPS", "LATEST", "SWEEP"]
    assert any(row.split()[1:3] == [MODEL, "2"] for row in rows), listed.stdout  # 2 sweeps
    top = tabflow(root, "runs", MODEL, "--top", "2")
    assert top.returncode == 0, top.stderr
    assert "RANK  TRIAL  VAL_ACCURACY  model.max_depth  model.n_estimators  RUN" in top.stdout
    lines = [ln for ln in top.stdout.splitlines() if ln.strip()[:1].isdigit()]
    assert len(lines) == 2 and "best run:" in top.stdout
    values = [float(ln.split()[2]) for ln in lines]
    assert values == sorted(values, reverse=True)
    client = client_for(root)
    best = client.get_run(lines[0].split()[-1])
    assert lines[0].split()[3:5] == [best.data.params["model.max_depth"],
                                     best.data.params["model.n_estimators"]]


def test_every_sweep_is_listed_and_reachable_by_its_views(registry_root, capsys, monkeypatch):
    """Two sweeps (seed 42, then seed 7): the older one is still there for runs and report."""
    from tabflow.cli import main

    root, _ = registry_root
    monkeypatch.setenv("TABFLOW_ROOT", str(root))
    uri = ["--tracking-uri", f"sqlite:///{root}/mlflow.db"]
    assert main([*uri, "sweeps", MODEL]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["SWEEP", "STARTED", "MODEL", "SPACE", "TRIALS", "BEST",
                              "VERSION", "STATUS", "STUDY"]
    newest, older = (r.split() for r in rows[:2])
    assert [newest[0], older[0]] == ["-1", "-2"] and newest[3:5] == ["rf", "narrow"]
    assert newest[5] == "3/3" and [newest[7], older[7]] == ["2", "1"]  # registered versions
    assert main([*uri, "runs", MODEL, "--sweep", "-2", "--top", "1"]) == 0
    assert older[-1] in capsys.readouterr().out  # the older sweep's study
    assert main([*uri, "report", MODEL, "--sweep", older[-1], "--out",
                 str(root / "older.html")]) == 0
    assert f"registered: models:/{MODEL}/1 (@staging)" in capsys.readouterr().out
    assert main([*uri, "runs", MODEL, "--sweep", "-9"]) == 1
    assert f"tabflow sweeps {MODEL} lists them" in capsys.readouterr().err


def test_views_read_a_sqlite_store_as_mlflow_does_without_importing_it(registry_root):
    """`tabflow experiments`, `sweeps` and `runs` read the tables; MLflow's client agrees."""
    import subprocess
    import sys

    from tabflow.tracking.lite import open_lite
    from tabflow.tracking.queries import best_first, ranked_trials, sweeps
    from tabflow.tracking.store import connect, experiments

    root, _ = registry_root
    uri = f"sqlite:///{root}/mlflow.db"
    lite, store = open_lite(uri), connect(uri, create=False)
    assert lite is not None
    assert [(e.experiment_id, e.name) for e in lite.experiments()] == [
        (e.experiment_id, e.name) for e in experiments(store)]
    exp_id = lite.experiment_id(MODEL)
    assert exp_id == store.client.get_experiment_by_name(MODEL).experiment_id

    def whole(run):
        return (run.info.run_id, run.info.run_name, run.info.status, run.info.start_time,
                run.data.tags, run.data.params, run.data.metrics)

    ours, theirs = lite.sweeps(exp_id), sweeps(store, exp_id)
    assert len(ours) == 2 and [whole(r) for r in ours] == [whole(r) for r in theirs]
    for parent in ours:
        trials = lite.trials(exp_id, parent.info.run_id)
        assert len(trials) == 3
        ranked = list(ranked_trials(store, exp_id, parent.info.run_id, "val_accuracy",
                                    "maximize"))
        assert [whole(r) for r in best_first(trials, "val_accuracy", "maximize")] == [
            whole(r) for r in ranked]
    code = ("import sys; from tabflow.cli import main; codes = [main(a) for a in "
            "(['experiments'], ['sweeps', 'breast_cancer'], ['runs', 'breast_cancer'])]; "
            "sys.exit(9 if 'mlflow' in sys.modules else max(codes))")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TABFLOW_ROOT":
                          str(root)}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # 9: MLflow was imported
    assert "best run:" in proc.stdout


def test_report_command_writes_the_latest_sweeps_report(registry_root):
    root, _ = registry_root
    out = tabflow(root, "report", MODEL, "--out", str(root / "r.html"))
    assert out.returncode == 0, out.stderr
    assert "best trial" in out.stdout and "test_accuracy=" in out.stdout
    assert f"registered: models:/{MODEL}/2 (@staging)" in out.stdout  # the latest sweep's
    html = (root / "r.html").read_text()
    assert "<html" in html.lower() and "Sweep report" in html
    missing = tabflow(root, "report", "no_such_experiment")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr


def test_a_sweep_whose_trials_all_fail_leaves_the_registry_as_it_was(registry_root):
    """Every trial fails: the sweep exits non-zero with a summary, registers nothing, and
    the versions at @staging and @production (and their stages) stay where they were."""
    root, _ = registry_root
    client = client_for(root)

    def registry() -> dict[str, tuple[str, str]]:
        return {alias: (str(v.version), v.current_stage) for alias in ("staging", "production")
                for v in [client.get_model_version_by_alias(MODEL, alias)]}

    before = registry()
    versions = len(client.search_model_versions(f"name='{MODEL}'"))
    # Another experiment, same registered model: the other tests' "latest sweep" stays put.
    out = run_train(root, "-m", "model=rf", "sweep=narrow", "hydra.sweeper.n_trials=3",
                    "model.max_features=bogus", "tracking.experiment=all_fail")
    assert out.returncode != 0
    assert "Sweep aborted: 3 of 3 trials failed" in out.stderr
    assert "Traceback" not in out.stderr
    _, runs = runs_of(root, "all_fail")
    assert {r.data.tags["tabflow.role"]: r.info.status for r in runs
            if r.data.tags["tabflow.role"] == "sweep"} == {"sweep": "FAILED"}
    assert registry() == before
    assert len(client.search_model_versions(f"name='{MODEL}'")) == versions


def test_help_is_there_for_every_command(tmp_path):
    for command in ("promote", "rollback", "runs", "experiments", "ui", "serve", "server",
                    "dashboard", "upload", "report"):
        out = tabflow(tmp_path, command, "--help")
        assert out.returncode == 0 and "usage: tabflow" in out.stdout


def test_served_model_answers_like_the_in_process_one(registry_root):
    root, _ = registry_root
    port = free_port()
    env = {**os.environ, "TABFLOW_ROOT": str(root),
           "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"}
    proc = start_server(["serve", MODEL, "--port", str(port)], root, env, root / "serve.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc)
        rows = load_dataset_frame().sample(20, random_state=0)
        body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split"))})
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                         data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            served = json.loads(response.read())["predictions"]
    finally:
        stop_server(proc)
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    local = mlflow.pyfunc.load_model(f"models:/{MODEL}@production").predict(rows)
    assert served == list(local)


def test_serving_answers_bad_requests_with_4xx_and_unseen_categories_with_predictions(
        tmp_path):
    """Missing column, wrong type: a 4xx naming the problem. Extra column, unseen category:
    a valid prediction (the one-hot encoder ignores unknown values). Never a 500."""
    assert_ok(run_train(tmp_path, "-m", "dataset=penguins", "model=logreg", "sweep=narrow",
                        "hydra.sweeper.n_trials=2"))
    assert tabflow(tmp_path, "promote", "penguins").returncode == 0
    port = free_port()
    env = {**os.environ, "TABFLOW_ROOT": str(tmp_path),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    proc = start_server(["serve", "penguins", "--port", str(port)], tmp_path, env,
                        tmp_path / "serve.log")
    good = {"island": "Biscoe", "bill_length_mm": 45.2, "bill_depth_mm": 14.8,
            "flipper_length_mm": 212.0, "body_mass_g": 5200.0, "sex": "female",
            "year": "2008"}

    def ask(row: dict) -> tuple[int, dict]:
        body = json.dumps({"dataframe_records": [row]}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc)
        status, answer = ask(good)
        assert status == 200 and answer["predictions"] == ["Gentoo"]
        missing = {k: v for k, v in good.items() if k != "bill_length_mm"}
        status, answer = ask(missing)
        assert 400 <= status < 500 and "bill_length_mm" in json.dumps(answer)
        status, answer = ask({**good, "flipper_length_mm": "very long"})
        assert 400 <= status < 500 and "flipper_length_mm" in json.dumps(answer)
        status, answer = ask({**good, "colour": "black and white"})
        assert status == 200 and answer["predictions"] == ["Gentoo"]
        status, answer = ask({**good, "island": "Atlantis"})
        assert status == 200 and answer["predictions"][0] in {"Adelie", "Chinstrap", "Gentoo"}
        assert proc.poll() is None  # still serving
    finally:
        stop_server(proc)


def promote_interrupted(root: Path, tmp_path: Path, at: str):
    """`tabflow promote` on a copy of the store, with Ctrl-C arriving as ``at`` is called.

    The moment is injected (the signal is sent from inside the process), so it is the same
    on every run: ``_predict`` while the versions are compared, ``tag_version`` in the
    middle of the writes.
    """
    import sqlite3
    import subprocess
    import sys

    from tests.helpers import project_env

    copy = tmp_path / "copy"
    copy.mkdir()
    with sqlite3.connect(root / "mlflow.db") as src, sqlite3.connect(copy / "mlflow.db") as dst:
        src.backup(dst)
    client = client_for(copy)
    code = (f"import os, signal, sys\nimport tabflow.lifecycle as lc\nreal = lc.{at}\n"
            f"def hit(*a, **k):\n    os.kill(os.getpid(), signal.SIGINT)\n"
            f"    return real(*a, **k)\nlc.{at} = hit\nfrom tabflow.cli import main\n"
            f"sys.exit(main(['promote', '{MODEL}', '--force']))\n")  # staging moves up
    proc = subprocess.run([sys.executable, "-c", code], cwd=copy, env=project_env(copy),
                          capture_output=True, text=True, timeout=300)
    return proc, client


@pytest.mark.parametrize(("at", "promoted"), [("_predict", False), ("tag_version", True)])
def test_ctrl_c_during_promote_leaves_the_registry_unchanged_or_complete(
        registry_root, tmp_path, at, promoted):
    root, _ = registry_root
    before = client_for(root).get_registered_model(MODEL).aliases
    recorded = client_for(root).get_model_version(MODEL, str(before["staging"])).tags.get(
        "promotion.last")  # the other tests of this module may have promoted it already
    proc, client = promote_interrupted(root, tmp_path, at)
    assert proc.returncode == 130, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Interrupted (signal SIGINT): tabflow "
                                                   "promote stopped"), proc.stderr
    assert "PROMOTED" not in proc.stdout  # never a verdict and then an interrupted exit
    aliases = client.get_registered_model(MODEL).aliases
    assert aliases == ({**before, "production": before["staging"]} if promoted else before)
    record = client.get_model_version(MODEL, str(before["staging"])).tags.get("promotion.last")
    if promoted:  # the record and the alias went together
        assert record != recorded and json.loads(record)["forced"]
    else:
        assert record == recorded
    names = [m.name for m in client.search_registered_models()]
    assert names == [MODEL]  # its lock was released
    exp = client.get_experiment_by_name(f"{MODEL}-lifecycle")
    runs = client.search_runs([exp.experiment_id])
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len(runs) - len(client_for(root).search_runs([exp.experiment_id])) == int(promoted)
