"""Nothing runs that wasn't meant to: payloads through `src/train.py` as an attacker types them.

Each payload names code in a config value (an override, an experiment file, a sweeper
hook). Each must be refused in one line with exit 2 before anything exists: no store, no
run dir, and the canary directory it aims at survives.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import REPO, run_train

pytestmark = pytest.mark.slow


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A directory with a file that every payload below would delete or overwrite."""
    target = tmp_path / "canary"
    target.mkdir()
    (target / "keep.txt").write_text("still here")
    return target


PAYLOADS = {
    # sklearn.datasets.clear_data_home(data_home=...) deletes the directory it is given.
    "clear_data_home": ["model.classifier=sklearn.datasets.clear_data_home",
                        "+model.data_home={canary}"],
    # Other callables under sklearn. that are not estimators.
    "dump_svmlight_file": ["model.classifier=sklearn.datasets.dump_svmlight_file",
                           "+model.f={canary}/keep.txt"],
    "set_config": ["model.classifier=sklearn.set_config"],
    "a transformer": ["model.classifier=sklearn.preprocessing.StandardScaler"],
    "a regressor for a classification task": [
        "model.classifier=sklearn.ensemble.RandomForestRegressor"],
    "an argument the estimator does not take": ["+model.data_home={canary}"],
    "a _target_ in the job config": ["+model._target_=shutil.rmtree", "+model.path={canary}"],
    "an experiment file": ["hydra.searchpath=[file://{conf}]", "experiment=evil"],
    "an experiment file's _target_": ["hydra.searchpath=[file://{conf}]",
                                      "experiment=evil_target"],
    "a callback": ["+hydra.callbacks.evil._target_=shutil.rmtree",
                   "+hydra.callbacks.evil.path={canary}"],
    "a study namer": ["-m", "sweep=narrow", "hydra.sweeper.study_namer=shutil.rmtree"],
    "a custom search space": ["-m", "sweep=narrow",
                              "+hydra.sweeper.custom_search_space=builtins.print"],
    "a sampler": ["-m", "sweep=narrow",
                  "hydra.sweeper.sampler._target_=sklearn.datasets.clear_data_home",
                  "+hydra.sweeper.sampler.data_home={canary}"],
    "a swept estimator": ["-m", "sweep=narrow",
                          "model.classifier=choice(sklearn.ensemble.RandomForestClassifier,"
                          "sklearn.datasets.clear_data_home)"],
}
EXPERIMENTS = {
    "evil": "# @package _global_\nmodel:\n  classifier: sklearn.datasets.clear_data_home\n",
    # The schemas refuse unknown keys in files; `objective.metric` takes any value.
    "evil_target": "# @package _global_\nobjective:\n  metric:\n    _target_: shutil.rmtree\n"
                   "    path: {canary}\n",
    "evil_callback": "# @package _global_\nhydra:\n  callbacks:\n    evil:\n"
                     "      _target_: shutil.rmtree\n      path: {canary}\n",
}


def experiments(tmp_path: Path, canary: Path) -> Path:
    """A config dir with the experiment files above (added with hydra.searchpath)."""
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    for name, text in EXPERIMENTS.items():
        (conf / f"{name}.yaml").write_text(text.format(canary=canary))
    return conf.parent


@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_a_payload_is_refused_in_one_line_before_anything_exists(payload, tmp_path, canary):
    conf = experiments(tmp_path, canary)
    root = tmp_path / "project"
    root.mkdir()
    args = [a.format(canary=canary, conf=conf) for a in PAYLOADS[payload]]
    proc = run_train(root, *args, fresh_store=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and lines[0].startswith("Config error: "), proc.stderr
    assert (canary / "keep.txt").read_text() == "still here"
    assert list(root.iterdir()) == []  # no store, no run dir, no cache


def test_a_callback_in_an_experiment_file_meets_hydras_whitelist(tmp_path, canary):
    """Hydra builds callbacks before any of ours runs: its own refusal, nothing created."""
    root = tmp_path / "project"
    root.mkdir()
    proc = run_train(root, f"hydra.searchpath=[file://{experiments(tmp_path, canary)}]",
                     "experiment=evil_callback", fresh_store=True)
    assert proc.returncode != 0
    assert "Target 'shutil.rmtree' is not in the Hydra execution whitelist" in proc.stderr
    assert (canary / "keep.txt").read_text() == "still here"
    assert list(root.iterdir()) == []


def test_every_family_and_a_listed_estimator_of_our_own_still_train(tmp_path):
    """The allow-list admits what it should: a user-listed class outside scikit-learn."""
    root = tmp_path / "project"
    root.mkdir()
    proc = run_train(root, "model=logreg", "model.classifier=tests.helpers.TinyClassifier",
                     "estimators.extra=[tests.helpers.TinyClassifier]", "cv.folds=0",
                     "tracking.enabled=false", env={"PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # A single run prints its validation scores in its table of main metrics.
    assert re.search(r"validation\s+0\.\d{4}", proc.stdout + proc.stderr)
