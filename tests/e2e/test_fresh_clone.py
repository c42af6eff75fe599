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
