"""Pruning without subprocesses: pruner configs, staged fits, reports to a real study."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pandas as pd
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from sklearn.datasets import make_classification

from hydra_plugins.tabflow_sweeper._pruning import (
    build_pruner,
    check_pruning,
    pruned_error,
)
from tabflow.config import Task
from tabflow.contract import INTERMEDIATE_FILE
from tabflow.job import _fold_reporter
from tabflow.pruning import ENV_STUDY, Reporter, reporter
from tabflow.stages import can_stage, fit_in_stages, stages
from tests.helpers import CONF

PRUNERS = sorted(p.stem for p in (CONF / "hydra" / "sweeper" / "pruner").glob("*.yaml"))


def test_every_pruner_option_composes_and_builds_an_optuna_pruner(compose_cfg):
    assert PRUNERS == ["hyperband", "median", "none", "percentile", "successive_halving",
                       "wilcoxon"]
    for name in PRUNERS:
        cfg = compose_cfg("sweep=narrow", f"hydra/sweeper/pruner={name}")
        pruner = build_pruner(cfg.hydra.sweeper.pruner)
        if name == "none":
            assert pruner is None
        else:
            assert isinstance(pruner, optuna.pruners.BasePruner), name
    cfg = compose_cfg("sweep=narrow", "hydra/sweeper/pruner=median",
                      "hydra.sweeper.pruner.n_startup_trials=2")
    assert build_pruner(cfg.hydra.sweeper.pruner)._n_startup_trials == 2


def test_only_optuna_pruners_are_built():
    with pytest.raises(Exception, match=r"not allowed|whitelist|execution"):
        build_pruner(OmegaConf.create({"_target_": "os.system", "command": "true"}))


def test_a_pruner_is_refused_for_several_objectives_or_no_storage():
    median = optuna.pruners.MedianPruner()
    with pytest.raises(ValueError, match="needs one objective"):
        check_pruning(median, ["maximize", "minimize"], "sqlite:///x.db")
    with pytest.raises(ValueError, match="needs a study storage"):
        check_pruning(median, ["maximize"], None)
    check_pruning(None, ["maximize", "minimize"], None)  # no pruner: anything goes


def test_a_pruned_job_is_told_apart_from_a_failed_one():
    pruned = JobReturn(status=JobStatus.FAILED, _return_value=optuna.TrialPruned("at 1"))
    failed = JobReturn(status=JobStatus.FAILED, _return_value=ValueError("bad"))
    assert isinstance(pruned_error(pruned), optuna.TrialPruned)
    assert pruned_error(failed) is None


# ----------------------------------------------------------------------------- stages
@pytest.fixture(scope="module")
def data():
    X, y = make_classification(600, 8, random_state=0)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(8)])
    return frame.iloc[:450], pd.Series(y[:450]), frame.iloc[450:], pd.Series(y[450:])


def pipeline(model):
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("preprocess", StandardScaler()), ("model", model)])


def test_stages_end_at_the_total():
    assert stages(120, 50) == [50, 100, 120]
    assert stages(100, 50) == [50, 100]
    assert stages(30, 50) == [30]


@pytest.mark.parametrize("family", ["RandomForestClassifier", "ExtraTreesClassifier",
                                    "GradientBoostingClassifier",
                                    "HistGradientBoostingClassifier"])
def test_a_model_fitted_in_stages_equals_one_fit_and_reports_each_stage(data, family):
    import sklearn.ensemble as ensemble

    X, y, X_val, y_val = data
    cls = getattr(ensemble, family)
    param = "max_iter" if family.startswith("Hist") else "n_estimators"
    kwargs = {param: 120, "random_state": 0}
    once = pipeline(cls(**kwargs)).fit(X, y)
    staged = pipeline(cls(**kwargs))
    assert can_stage(staged, 50)
    seen = []
    fit_in_stages(staged, X, y, X_val, y_val, Task.classification, 50, "val_accuracy",
                  lambda step, running, current, last: seen.append((step, current, last)))
    assert [(s, last) for s, _, last in seen] == [(50, False), (100, False), (120, True)]
    np.testing.assert_allclose(staged.predict_proba(X_val), once.predict_proba(X_val))
    assert staged.named_steps["model"].get_params()["warm_start"] is False
    assert seen[-1][1] == pytest.approx((once.predict(X_val) == y_val).mean())


def test_models_without_iterations_are_fitted_once(data):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    assert not can_stage(pipeline(LogisticRegression()), 50)
    assert not can_stage(pipeline(RandomForestClassifier(n_estimators=40)), 50)


def test_folds_report_the_running_mean_and_their_own_score():
    seen = []
    on_fold = _fold_reporter(lambda *a: seen.append(a), "val_accuracy", 2)
    on_fold(1, [{"val_accuracy": 0.8}])
    on_fold(2, [{"val_accuracy": 0.8}, {"val_accuracy": 0.9}])
    assert seen == [(1, 0.8, 0.8, False), (2, pytest.approx(0.85), 0.9, True)]


# ---------------------------------------------------------------------- the job's side
def test_a_job_reports_to_its_stored_trial_and_stops_when_pruned(tmp_path, monkeypatch):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    pruner = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1,
              "n_warmup_steps": 0}
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize",
                                pruner=build_pruner(OmegaConf.create(pruner)))
    first = study.ask()
    first.report(0.95, 1)
    first.report(0.95, 2)
    study.tell(first, 0.95)
    second = study.ask()  # the sweeper's side: the job reaches it by number
    monkeypatch.setenv(ENV_STUDY, "s")
    hydra_cfg = OmegaConf.create({"sweeper": {"pruner": pruner, "storage": storage}})
    cfg = OmegaConf.create({"optuna_trial": second.number,
                            "objective": {"metric": "val_accuracy"}})
    report = reporter(cfg, hydra_cfg, tmp_path)
    assert isinstance(report, Reporter) and not report.per_step
    report(1, 0.6, 0.6, last=True)  # a last step is never pruned: the result is complete
    with pytest.raises(optuna.TrialPruned, match=r"pruned at step 2: val_accuracy=0\.6000"):
        report(2, 0.6, 0.6)
    trial = study.trials[second.number]
    assert trial.intermediate_values == {1: 0.6, 2: 0.6}  # reported through the storage
    written = json.loads((tmp_path / INTERMEDIATE_FILE).read_text())
    assert written == {"metric": "val_accuracy", "values": [[1, 0.6], [2, 0.6]],
                       "pruned_at": 2}


def test_no_reporter_outside_a_pruned_sweep(tmp_path, monkeypatch):
    cfg = OmegaConf.create({"optuna_trial": 0, "objective": {"metric": "val_accuracy"}})
    monkeypatch.delenv(ENV_STUDY, raising=False)
    pruned_sweep = OmegaConf.create({"sweeper": {"pruner": {"_target_": "x"},
                                                 "storage": "sqlite:///x.db"}})
    assert reporter(cfg, pruned_sweep, tmp_path) is None  # no study named: not a sweep's job
    monkeypatch.setenv(ENV_STUDY, "s")
    assert reporter(cfg, OmegaConf.create({"sweeper": {"pruner": None}}), tmp_path) is None
    assert reporter(cfg, None, tmp_path) is None
