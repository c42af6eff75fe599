"""A fresh clone, as a newcomer gets it: a sweep there is not "dirty", nor is the README's demo.

The clone's own `src/` runs (PYTHONPATH), with its stores in the clone's root, as the
README's commands put them; the monitoring demo's commands are read from the README itself.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.helpers.readme import quickstart_train_lines

pytestmark = pytest.mark.slow


def readme_demo() -> list[str]:
    """The README's monitoring demo: holdout, the line that shifts a feature, two monitors."""
    text = (REPO / "README.md").read_text()
    block = text.split("once with a feature shifted:", 1)[1].split("```bash", 1)[1]
    lines = block.split("```", 1)[0].strip().splitlines()
    return [re.sub(r"\s+#.*$", "", line) for line in lines]


def test_a_fresh_clones_sweep_and_the_readme_demo_leave_it_clean(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("TABFLOW_ROOT", "MLFLOW_TRACKING_URI")}
    env.update(PYTHONPATH=str(clone / "src"), PYTHONWARNINGS="ignore")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), cwd=clone, env=env, capture_output=True, text=True,
                              timeout=600)

    def status() -> str:
        return run("git", "status", "--porcelain").stdout

    sweep = run(sys.executable, "src/train.py", "-m", "model=rf", "sweep=narrow",
                "hydra.sweeper.n_trials=2", "evaluation.figures=false")
    assert sweep.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-2000:]
    assert status() == ""  # the stores, run dirs and caches are all ignored
    demo = readme_demo()
    assert [line.split()[:2] for line in demo] == [
        ["tabflow", "holdout"], ["python", "-c"], ["tabflow", "monitor"], ["tabflow", "monitor"]]
    done = [run(sys.executable, *(["-m", "tabflow"] if line.startswith("tabflow") else []),
                *shlex.split(line)[1:]) for line in demo]
    # As the README's comments say: rows written, OK, then DRIFT.
    assert [p.returncode for p in done] == [0, 0, 0, 3], [p.stderr[-1000:] for p in done]
    assert "rows it never trained on" in done[0].stdout
    # The batch held its labels: the version is scored on rows it never saw, as at its
    # registration (not flattered by rows it was trained on).
    assert "accuracy" in done[2].stdout and "-> OK (exit 0)" in done[2].stdout
    assert status() == ""
    again = run(sys.executable, "src/train.py", "-m", "model=rf", "sweep=narrow",
                "hydra.sweeper.n_trials=2", "evaluation.figures=false", "seed=1")
    assert again.returncode == 0, again.stderr[-2000:]
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{clone}/mlflow.db")
    experiment = client.get_experiment_by_name("breast_cancer")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert len(runs) == 6 and {r.data.tags["git.dirty"] for r in runs} == {"false"}
    head = run("git", "rev-parse", "HEAD").stdout.strip()
    assert {r.data.tags["mlflow.source.git.commit"] for r in runs} == {head}
    assert not any("git.diff_sha256" in r.data.tags for r in runs)
    assert Path(clone / "same.csv").exists()


# Budget flags a sweep line gets here (neither changes which study it is): 2 trials, no report.
SMALL_SWEEP = ("hydra.sweeper.n_trials=2", "evaluation.figures=false")


def test_every_quickstart_command_runs_in_order_on_a_fresh_clone(tmp_path):
    """The Quickstart as a newcomer runs it after the set-up's sweep, line by line.

    Sweeps run 2 trials without their report (unit/test_readme.py checks the trial counts
    and studies each comment promises, as written); the 100,000-row table is generated
    with 2,000 rows. Each line must exit 0 and print what its kind of command prints; the
    parallel example's re-run finds its study complete, as its comment says.
    """
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("TABFLOW_ROOT", "MLFLOW_TRACKING_URI")}
    env.update(PYTHONPATH=str(clone / "src"), PYTHONWARNINGS="ignore")

    def run(args: list[str]) -> str:
        proc = subprocess.run([sys.executable, *args], cwd=clone, env=env, capture_output=True,
                              text=True, timeout=600)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, (args, output[-3000:])
        return output

    main = run(["src/train.py", "-m", "model=rf", "sweep=wide", *SMALL_SWEEP])  # the set-up's
    assert "Registered breast_cancer version 1 as @staging" in main
    lines = quickstart_train_lines()
    assert len(lines) >= 15
    for line in lines:
        args = [a.replace("n_rows=100000", "n_rows=2000") for a in line.args[1:]
                if not a.startswith("hydra.sweeper.n_trials=")]  # SMALL_SWEEP sets it
        if "--cfg" in args or "--help" in args:
            assert "dataset:" in run(args)  # a config, or the help listing it
            continue
        sweep = "-m" in args
        output = run([*args, *SMALL_SWEEP] if sweep else args)
        if not sweep:
            assert re.search(r"validation\s+-?\d", output) and "MLflow run " in output, line
        elif args[1:] == ["-m", "model=rf", "sweep=wide"]:  # the set-up's own command again
            assert "it is complete (2 of 2 trials" in output, output[-2000:]
        else:
            assert "Best trial " in output and "Registered " in output, (line, output[-2000:])
        if "hydra.launcher.n_jobs=2" in args:  # "the same command again" finds it complete
            again = run([*args, *SMALL_SWEEP])
            assert "it is complete (2 of 2 trials" in again and "nothing to run" in again
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True,
                            text=True).stdout
    assert status == ""  # every store, run dir and cache the commands wrote is ignored
