"""The sweeper in a Hydra app that is not tabflow's: `hydra/sweeper=tabflow_optuna`.

A small app of the test's own (a function of two parameters, no tabflow config, no
`optuna_trial` key) sweeps with the plugin, as a Hydra user would run it; the same app
with upstream's `hydra/sweeper=optuna` gives the same trial parameters for the same seed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

pytestmark = pytest.mark.slow

APP = '''
import json, os, signal, time

import hydra
import optuna
from hydra.core.hydra_config import HydraConfig


@hydra.main(config_path=".", config_name="config")
def main(cfg):
    if cfg.fail_above is not None and cfg.x > cfg.fail_above:
        raise ValueError(f"x={cfg.x} is too large")
    time.sleep(cfg.sleep)
    out = HydraConfig.get().runtime.output_dir
    with open(os.path.join(out, "job.json"), "w") as f:  # what the job was given
        json.dump({"trial": os.environ.get("OPTUNA_TRIAL_NUMBER"), "x": cfg.x, "y": cfg.y}, f)
    value = (cfg.x - 2) ** 2 + cfg.y
    return (value, abs(cfg.x)) if cfg.two else value


main()
# Whatever ran the sweep put back what it changed in this process.
print("after:", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL,
      optuna.logging.get_verbosity(), flush=True)
'''
CONFIG = "x: 0.0\ny: 0\nsleep: 0.0\nfail_above: null\ntwo: false\n"
SPACE = '''
def extend(cfg, trial):
    """A custom search space: y's range depends on x."""
    trial.suggest_int("y", 0, 3 if trial.params["x"] > 0 else 1)
'''
SEARCH = ["x=interval(-5,5)", "y=range(0,3)"]


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "config.yaml").write_text(CONFIG)
    (tmp_path / "app_space.py").write_text(SPACE)
    return tmp_path


def _cmd(app: Path, *args: str, sweeper: str = "tabflow_optuna") -> list[str]:
    storage = f"sqlite:///{app}/{'ours' if sweeper == 'tabflow_optuna' else 'upstream'}.db"
    return [sys.executable, str(app / "app.py"), "-m", f"hydra/sweeper={sweeper}",
            f"hydra.sweeper.storage={storage}", "hydra.sweeper.sampler.seed=1", *args]


def sweep(app: Path, *args: str, sweeper: str = "tabflow_optuna", ok: bool = True
          ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TABFLOW", "MLFLOW"))}
    proc = subprocess.run(_cmd(app, *args, sweeper=sweeper), cwd=app, env=env,
                          capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def study(app: Path, name: str = "ours") -> optuna.Study:
    (study_name,) = [n for n in optuna.get_all_study_names(f"sqlite:///{app}/{name}.db")
                     if "~" not in n]
    return optuna.load_study(study_name=study_name, storage=f"sqlite:///{app}/{name}.db")


def states(s: optuna.Study) -> dict[str, int]:
    found: dict[str, int] = {}
    for t in s.trials:
        found[t.state.name] = found.get(t.state.name, 0) + 1
    return found


def test_plain_tpe_gives_upstreams_trials_and_each_job_its_number(app):
    ours = sweep(app, "hydra.sweeper.n_trials=6", *SEARCH)
    sweep(app, "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=1", *SEARCH,
          sweeper="optuna")
    mine, theirs = study(app), study(app, "upstream")
    assert [t.params for t in mine.trials] == [t.params for t in theirs.trials]
    assert [t.values for t in mine.trials] == [t.values for t in theirs.trials]
    assert mine.study_name.startswith("app-")  # named by the sweep's identity
    import json

    jobs = sorted((app / "multirun").glob("*/*/*/job.json"))
    given = {json.loads(p.read_text())["trial"]: p.parent.name for p in jobs}
    assert {k: v for k, v in given.items() if k is not None} == {str(n): str(n)
                                                                 for n in range(6)}
    assert "after: True 20" in ours.stdout  # SIGTERM and Optuna's log level put back


def test_multi_objective_sweeps_match_upstream(app):
    args = ("hydra.sweeper.n_trials=5", "two=true", "hydra.sweeper.direction=[minimize,minimize]",
            *SEARCH)
    sweep(app, *args)
    sweep(app, *args, "hydra.sweeper.n_jobs=1", sweeper="optuna")
    mine, theirs = study(app), study(app, "upstream")
    assert [t.values for t in mine.trials] == [t.values for t in theirs.trials]
    assert all(len(t.values) == 2 for t in mine.trials)


def test_a_grid_is_swept_to_exhaustion_once(app):
    proc = sweep(app, "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=50",
                 "x=choice(1,2,3)", "y=range(0,2)")
    s = study(app)
    assert states(s) == {"COMPLETE": 6}
    assert {(t.params["x"], t.params["y"]) for t in s.trials} == {
        (x, y) for x in (1, 2, 3) for y in (0, 1)}
    assert "Grid sampler: 6 trials cover the grid" in proc.stdout + proc.stderr
    sweep(app, "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=50",
          "x=choice(1,2,3)", "y=range(0,2)")  # again: the grid is done, nothing reruns
    assert states(study(app)) == {"COMPLETE": 6}


def test_a_custom_search_space_runs_and_a_fixed_parameter_it_suggests_is_refused(app):
    custom = ("hydra.sweeper.n_trials=4", "x=interval(-5,5)",
              "hydra.sweeper.custom_search_space=app_space.extend")
    # Ours runs only a declared hook: a bare dotted path is refused before the sweep.
    undeclared = sweep(app, *custom, ok=False)
    assert undeclared.returncode == 2 and "is not a declared hook" in undeclared.stderr
    declared = (*custom, "hydra.sweeper.hooks=[app_space.extend]")
    sweep(app, *declared)
    sweep(app, *custom, "hydra.sweeper.n_jobs=1", sweeper="optuna")
    mine, theirs = study(app), study(app, "upstream")
    assert all(set(t.params) == {"x", "y"} for t in mine.trials)
    assert [t.params for t in mine.trials] == [t.params for t in theirs.trials]
    for db in ("ours", "upstream"):
        (app / f"{db}.db").unlink()
    jobs = len(list((app / "multirun").glob("*/*/*/job.json")))
    refused = sweep(app, *declared, "y=2", ok=False)
    assert refused.returncode == 1
    assert "Overlapping fixed parameters and search space parameters found: ['y']" \
        in refused.stderr
    upstream = sweep(app, *custom, "y=2", sweeper="optuna", ok=False)
    assert "Overlapping fixed parameters" in upstream.stderr  # upstream refuses it too
    assert len(list((app / "multirun").glob("*/*/*/job.json"))) == jobs  # no job ran


def test_failures_under_the_failure_rate_are_recorded_and_the_sweep_goes_on(app):
    sweep(app, "hydra.sweeper.n_trials=8", "hydra.sweeper.max_failure_rate=0.9",
          "fail_above=-2", *SEARCH)
    s = study(app)
    failed = [t for t in s.trials if t.state.name == "FAIL"]
    assert failed and len(s.trials) == 8
    assert all("is too large" in t.user_attrs["tabflow.error"] for t in failed)


def test_a_killed_sweep_resumes_to_its_exact_total(app):
    cmd = _cmd(app, "hydra.sweeper.n_trials=6", "sleep=0.6", *SEARCH)
    proc = subprocess.Popen(cmd, cwd=app, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "| 2/6 |" in line:
            break
    time.sleep(0.3)  # the third trial is running
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    sweep(app, "hydra.sweeper.n_trials=6", "sleep=0.6", *SEARCH)
    assert states(study(app)).get("COMPLETE") == 6


def test_a_timeout_stops_starting_trials(app):
    proc = sweep(app, "hydra.sweeper.n_trials=100", "hydra.sweeper.timeout=2", "sleep=0.5",
                 *SEARCH)
    assert 1 <= states(study(app))["COMPLETE"] < 10
    assert "Timeout of 2.0s reached" in proc.stdout + proc.stderr


def test_a_warm_start_runs_first_and_a_users_subdir_is_kept(app):
    sweep(app, "hydra.sweeper.n_trials=3", "hydra.sweeper.enqueue=[{x: 1.5, y: 2}]",
          "hydra.sweep.subdir=job_${hydra.job.num}", *SEARCH)
    assert study(app).trials[0].params == {"x": 1.5, "y": 2}
    dirs = {p.parent.name for p in (app / "multirun").glob("*/*/*/job.json")}
    assert dirs == {"job_0", "job_1", "job_2"}


def test_two_processes_share_one_study(app):
    cmd = _cmd(app, "hydra.sweeper.n_trials=8", "sleep=0.3", *SEARCH)
    procs = [subprocess.Popen(cmd, cwd=app, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]
    s = study(app)
    assert states(s) == {"COMPLETE": 8}
    assert len({t.user_attrs["tabflow.pid"] for t in s.trials}) == 2
