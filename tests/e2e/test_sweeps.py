"""Sweeps as people run them for hours: samplers, families, resume after a kill, budgets,
failing trials, warm start. Each runs `python src/train.py -m ...` in a subprocess."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.helpers import TRAIN, assert_ok, run_train, runs_of

pytestmark = pytest.mark.slow


def study_of(root: Path, parent) -> optuna.Study:
    return optuna.load_study(study_name=parent.data.tags["optuna.study"],
                             storage=f"sqlite:///{root}/optuna.db")


def by_role(runs, role):
    return [r for r in runs if r.data.tags.get("tabflow.role") == role]


def results_of(root: Path) -> dict:
    (path,) = root.glob("multirun/*/*/optimization_results.yaml")
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize(("sampler", "extra"), [
    ("random", []),
    ("cmaes", []),
    ("qmc", []),
    ("gp", []),
    ("grid", ["model.n_estimators=choice(50,100)", "model.max_depth=choice(3,6)"]),
    ("nsgaii", ["objective.metric=[val_f1,fit_time_s]"]),  # directions follow the metrics
])
def test_each_sampler_runs_a_sweep(tmp_path, sampler, extra):
    env = {}
    if sampler == "gp" and importlib.util.find_spec("torch") is None:
        # CI keeps torch out of the venv (.ci/run): only this test's sweep imports it.
        torch_path = os.environ.get("TABFLOW_TEST_TORCH_PATH", "")
        if not (Path(torch_path) / "torch").is_dir():
            pytest.skip("the GP sampler needs torch: pip install -e '.[gp]'")
        env["PYTHONPATH"] = torch_path
    proc = run_train(tmp_path, "-m", "model=rf", "sweep=narrow", "hydra.sweeper.n_trials=4",
                     f"hydra/sweeper/sampler={sampler}", "registry.enabled=false", *extra,
                     env=env)
    assert_ok(proc)
    _, runs = runs_of(tmp_path)
    (parent,) = by_role(runs, "sweep")
    study = study_of(tmp_path, parent)
    assert study.user_attrs["sampler"].lower().startswith(sampler[:3])
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 4 and len(by_role(runs, "trial")) == 4
    if sampler == "grid":  # the 2 x 2 grid, each point once
        points = {(t.params["model.n_estimators"], t.params["model.max_depth"]) for t in complete}
        assert points == {(50, 3), (50, 6), (100, 3), (100, 6)}
    if sampler == "nsgaii":
        assert len(study.directions) == 2
        assert all(len(t.values) == 2 for t in complete)
        assert results_of(tmp_path)["solutions"]


def test_families_sweep_searches_each_family_in_its_own_space(tmp_path):
    proc = run_train(tmp_path, "-m", "sweep=families", "hydra.sweeper.n_trials=10")
    assert_ok(proc)
    client, runs = runs_of(tmp_path)
    (parent,) = by_role(runs, "sweep")
    study = study_of(tmp_path, parent)
    families = set()
    for trial in study.trials:
        family = trial.params["model"]
        families.add(family)
        # Only the chosen family's hyperparameters were sampled, under its own name.
        assert {k.split(":")[0] for k in trial.params if k != "model"} <= {family}
    assert len(families) >= 3
    for child in by_role(runs, "trial"):
        trial = study.trials[int(child.data.tags["optuna.trial"])]
        assert child.data.params["model.name"] == trial.params["model"]
        for key, value in trial.params.items():
            if ":" in key:
                assert child.data.params[key.split(":", 1)[1]] == str(value)
        # Its tuned values are exactly what Optuna sampled for it: its family's dimensions.
        tuned = dict(pair.split("=", 1) for pair in child.data.tags["tabflow.tuned"].split())
        assert tuned == {k.split(":", 1)[-1]: str(v) for k, v in trial.params.items()}
    version = client.get_model_version_by_alias("breast_cancer", "staging")
    best = client.get_run(version.tags["best.run_id"])
    assert best.data.params["model.name"] == study.best_trial.params["model"]
    assert f"  with model={study.best_trial.params['model']}" in proc.stdout
    assert parent.data.params["search_space.model"].startswith("choice(")
    assert "rf: " in parent.data.params["search_space.model.n_estimators"]  # conditional


def launch(root: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "TABFLOW_ROOT": str(root), "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with (root / "first-run.log").open("w") as log:
        return subprocess.Popen([sys.executable, str(TRAIN), *args], cwd=root, env=env,
                                stdout=log, stderr=subprocess.STDOUT)


def trial_states(db: Path) -> list[str]:
    """Read trial states straight from the SQLite file, read-only.

    Opening it with Optuna would create its schema, racing the sweep that is doing the same.
    """
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return [row[0] for row in conn.execute("SELECT state FROM trials")]
    except sqlite3.Error:  # not created yet, or being written
        return []


def wait_for_complete_trials(root: Path, n: int, proc: subprocess.Popen, limit: float = 120):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, ("the sweep ended before it could be interrupted:\n"
                                     + (root / "first-run.log").read_text()[-3000:])
        states = trial_states(root / "optuna.db")
        if states.count("COMPLETE") >= n and "RUNNING" in states:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} trials completed in {limit}s")


# Trials of about a second each, so that a kill lands in the middle of one.
SLOW_SWEEP = ("-m", "dataset=synthetic", "dataset.synthetic.n_rows=40000", "model=rf",
              "sweep=narrow", "hydra.sweeper.n_trials=6")


# SIGINT and SIGTERM take one path (SIGTERM raises like Ctrl-C; its exit code and one-line
# message are checked by test_sweep_end's SIGTERM test): SIGINT in process, SIGTERM with workers.
# Open (issue 28/30): once in four CI runs (stop 36) the SIGTERM-with-workers case ended
# with 6 COMPLETE trials but 5 FINISHED runs after the resume. Not reproduced since (it
# passed in every CI run after, and 5 of 5 copies run side by side on 2 cores). Two causes
# that fit were closed in stop 38: a killed worker's pid given to another process before
# the resume (runs now record the process's start time), and a job file cut off mid-write
# (job files are now written whole or not at all). Kept as xfail until it stays green.
FLAKY_RESUME = pytest.mark.xfail(strict=False, reason="issue 30: after a SIGTERM with warm "
                                 "workers, a complete trial's run was once left unfinished")


@pytest.mark.parametrize(("sig", "workers"), [
    (signal.SIGKILL, 1), (signal.SIGINT, 1),
    pytest.param(signal.SIGTERM, 2, marks=FLAKY_RESUME)],
    ids=["SIGKILL", "SIGINT", "SIGTERM-2-workers"])
def test_killed_sweep_resumes_to_the_configured_total(tmp_path, sig, workers):
    proc = launch(tmp_path, *SLOW_SWEEP, f"hydra.launcher.n_jobs={workers}")
    try:
        wait_for_complete_trials(tmp_path, 2, proc)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0

    resumed = run_train(tmp_path, *SLOW_SWEEP, f"hydra.launcher.n_jobs={workers}")
    assert_ok(resumed)
    assert "Resuming study" in resumed.stdout + resumed.stderr

    client, runs = runs_of(tmp_path, "synthetic")
    (parent,) = by_role(runs, "sweep")  # the same parent run, reattached
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["tabflow.resumes"] == "1"
    study = study_of(tmp_path, parent)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    interrupted = [t for t in study.trials if t.user_attrs.get("tabflow.interrupted")]
    assert len(complete) == 6  # the configured total, not 6 more
    # In process, the signal cuts the running trial short; workers may finish theirs while
    # the sweep stops (a loaded machine), and then it says nothing was lost.
    assert interrupted or (workers > 1 and "nothing is lost" in
                           (tmp_path / "first-run.log").read_text())
    retried = {t.user_attrs.get("tabflow.retry_of") for t in study.trials} - {None}
    assert {t.number for t in interrupted} <= retried  # each interrupted trial ran again
    children = by_role(runs, "trial")
    finished = [c for c in children if c.info.status == "FINISHED"]
    if len(finished) != 6:
        # An xfail's message is never printed; a warning reaches CI's log (issue 30's flake).
        warnings.warn(UserWarning("resume left unfinished runs:\n"
                                  + run_table(children, study, tmp_path, resumed)), stacklevel=1)
    assert len(finished) == 6, run_table(children, study, tmp_path, resumed)
    assert {c.info.status for c in children} - {"FINISHED"} <= {"FAILED", "KILLED"}
    assert sorted(int(c.data.tags["optuna.trial"]) for c in finished) == sorted(
        t.number for t in complete)
    assert not [c for c in children if c.info.status == "RUNNING"]
    nums = sorted(int(c.data.tags["hydra.job.num"]) for c in children)
    assert len(set(nums)) == len(nums)  # job numbers continued, none reused
    assert len(client.search_model_versions("name='synthetic'")) == 1


def run_table(children, study, root: Path, resumed) -> str:
    """What a failed resume left: each trial run and trial, and both sweeps' output."""
    from hydra_plugins.tabflow_sweeper.locks import pid_alive

    rows = [f"run trial={c.data.tags.get('optuna.trial')} job={c.data.tags.get('hydra.job.num')}"
            f" {c.info.status} pid={c.data.tags.get('tabflow.pid')} "
            f"(alive now: {pid_alive(int(c.data.tags.get('tabflow.pid', '0')))}) "
            f"error={c.data.tags.get('error', '')[:200]}" for c in children]
    rows += [f"trial {t.number} {t.state.name} {t.user_attrs}" for t in study.trials]
    return "\n".join([*rows, (root / "first-run.log").read_text()[-3000:],
                      (resumed.stdout + resumed.stderr)[-3000:]])


def test_changed_experiment_starts_a_new_study(tmp_path):
    base = ("-m", "model=rf", "sweep=narrow", "hydra.sweeper.n_trials=2",
            "registry.enabled=false")
    assert_ok(run_train(tmp_path, *base))
    assert_ok(run_train(tmp_path, *base, "hydra.sweeper.n_trials=3"))  # same study, 1 more
    client, runs = runs_of(tmp_path)
    (before,) = by_role(runs, "sweep")
    logged = client.get_metric_history(before.info.run_id, "trials_finished")
    # The same command again, or one asking for fewer trials: the study is complete, it
    # says so, and the parent run keeps the record of the sweep that ran.
    for n in (3, 1):
        again = run_train(tmp_path, *base, f"hydra.sweeper.n_trials={n}")
        assert_ok(again)
        line = next(x for x in (again.stdout + again.stderr).splitlines() if "complete" in x)
        assert f"it is complete (3 {'of 3 trials' if n == 3 else 'trials, 1 asked for'}, " \
               f"best trial" in line and "hydra.sweeper.study_name=" in line, line
        assert " of 1 " not in line
        after = client.get_run(before.info.run_id)
        assert (after.info.status, after.info.end_time) == ("FINISHED", before.info.end_time)
        assert after.data.tags == before.data.tags  # sweep.n_trials=3, resumes, sweep dir
        assert after.data.metrics == before.data.metrics
        assert client.get_metric_history(before.info.run_id, "trials_finished") == logged
    assert_ok(run_train(tmp_path, *base, "preprocessing=minmax"))     # another experiment
    _, runs = runs_of(tmp_path)
    parents = by_role(runs, "sweep")
    assert len(parents) == 2
    sizes = sorted(len(study_of(tmp_path, p).trials) for p in parents)
    assert sizes == [2, 3]


def test_timeout_stops_starting_trials(tmp_path):
    start = time.monotonic()
    proc = run_train(tmp_path, *SLOW_SWEEP[:-1], "hydra.sweeper.n_trials=200",
                     "hydra.sweeper.timeout=4")
    assert_ok(proc)
    assert time.monotonic() - start < 60
    results = results_of(tmp_path)
    assert results["stopped_by_timeout"] is True
    assert 1 <= results["trials_by_state"]["COMPLETE"] < 200
    client, _ = runs_of(tmp_path, "synthetic")
    assert client.get_model_version_by_alias("synthetic", "staging")


def test_failing_trials_are_recorded_and_the_sweep_goes_on(tmp_path):
    # oob_score=true passes scikit-learn's parameter checks (`bogus` is refused before the
    # first trial now) and fails at fit time: out-of-bag scores need bootstrap=true.
    proc = run_train(tmp_path, "-m", "model=rf", "sweep=narrow", "hydra.sweeper.n_trials=8",
                     "+model.bootstrap=false", "+model.oob_score=choice(false,true)",
                     "hydra.sweeper.max_failure_rate=0.9")
    assert_ok(proc)
    output = proc.stdout + proc.stderr
    assert "trial(s) failed" in output and "ValueError" in output
    client, runs = runs_of(tmp_path)
    (parent,) = by_role(runs, "sweep")
    study = study_of(tmp_path, parent)
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert failed and all(t.params["+model.oob_score"] is True for t in failed)
    assert all("bootstrap=True" in t.user_attrs["tabflow.error"] for t in failed)
    failed_runs = [c for c in by_role(runs, "trial") if c.info.status == "FAILED"]
    assert len(failed_runs) == len(failed)
    for run in failed_runs:
        assert "error.txt" in {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "bootstrap=True" in run.data.tags["error"]
    results = results_of(tmp_path)
    assert {f["trial"] for f in results["failures"]} == {t.number for t in failed}
    assert results["best_mlflow_run_id"] == parent.data.tags["best.run_id"]
    assert client.get_model_version_by_alias("breast_cancer", "staging")


def test_too_many_failures_abort_with_a_summary(tmp_path):
    proc = run_train(tmp_path, "-m", "model=rf", "sweep=narrow", "hydra.sweeper.n_trials=20",
                     "model.max_features=bogus")
    assert proc.returncode != 0
    assert "Sweep aborted: 5 of 5 trials failed, more than max_failure_rate=0.5" in proc.stderr
    assert "{'InvalidParameterError': 5}" in proc.stderr  # the summary names the error
    # One clean message: a config every trial fails with is not a bug.
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr
    _, runs = runs_of(tmp_path)
    (parent,) = by_role(runs, "sweep")
    assert parent.info.status == "FAILED"
    assert "Sweep aborted" in parent.data.tags["error"]
    assert len(by_role(runs, "trial")) == 5  # stopped once the rate could be judged
    full = run_train(tmp_path, "-m", "model=rf", "sweep=narrow", "hydra.sweeper.n_trials=1",
                     "model.max_features=bogus", "seed=1", env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode == 1 and "Traceback" in full.stderr
    assert "SweepAbortedError" in full.stderr


def test_warm_start_tries_the_model_defaults_and_given_sets_first(tmp_path):
    proc = run_train(tmp_path, "-m", "model=rf", "sweep=narrow", "hydra.sweeper.n_trials=3",
                     "hydra.sweeper.enqueue_defaults=true",
                     "hydra.sweeper.enqueue=[{model.n_estimators:60,model.max_depth:4}]",
                     "registry.enabled=false")
    assert_ok(proc)
    _, runs = runs_of(tmp_path)
    study = study_of(tmp_path, by_role(runs, "sweep")[0])
    first, second, _ = study.trials
    assert first.params["model.n_estimators"] == 100  # rf.yaml's own value
    assert second.params == {"model.n_estimators": 60, "model.max_depth": 4}
    output = proc.stdout + proc.stderr
    assert "trial 0 val_accuracy=" in output and "| 3/3 |" in output and "ETA" in output
