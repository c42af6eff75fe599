"""The allow-lists in process: estimators, sweeper hooks and classes, replays, stored models."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from hydra_plugins.tabflow_sweeper import HookError, check_sweeper_settings
from tabflow.config import Task
from tabflow.estimators import EstimatorError, build_estimator, resolve_estimator
from tabflow.replay import ReplayError, changes_code, check_replayed
from tabflow.tracking.models import unsafe_format
from tests.helpers import group_options


@pytest.mark.parametrize("path", [
    "sklearn.datasets.clear_data_home",  # deletes the directory it is given
    "sklearn.datasets.dump_svmlight_file",  # writes the file it is given
    "sklearn.utils.gen_batches", "sklearn.set_config",  # functions
    "sklearn.datasets",  # a module
    "sklearn.preprocessing.StandardScaler",  # a class, no predict
    "sklearn.ensemble._forest.RandomForestClassifier",  # a private path
    "os.system", "builtins.eval", "tests.helpers.TinyClassifier",  # not listed
])
def test_only_estimator_classes_are_admitted(path):
    with pytest.raises(EstimatorError, match=f"model.classifier={path}"):
        resolve_estimator(path, Task.classification)


def test_the_task_must_match_and_listed_classes_are_admitted():
    model = OmegaConf.create({"name": "rf", "classifier": "sklearn.ensemble.RandomForestRegressor",
                              "regressor": "sklearn.ensemble.RandomForestClassifier"})
    with pytest.raises(EstimatorError, match="is not a classifier"):
        build_estimator(model, Task.classification)
    with pytest.raises(EstimatorError, match="is not a regressor"):
        build_estimator(model, Task.regression)
    mine = "tests.helpers.TinyClassifier"
    assert resolve_estimator(mine, Task.classification, [mine]).__name__ == "TinyClassifier"
    with pytest.raises(EstimatorError, match=r"estimators\.extra"):  # exact paths only
        resolve_estimator(mine, Task.classification, ["tests.helpers"])


def test_an_unknown_argument_is_refused_with_the_accepted_ones(compose_cfg):
    cfg = compose_cfg("model=rf", "+model.data_home=/tmp")
    with pytest.raises(EstimatorError, match=r"takes no argument 'data_home'; its arguments "
                                             r"are \['bootstrap', 'ccp_alpha'"):
        build_estimator(cfg.model, Task.classification)
    # A family key its sibling takes is the family's (SVR has no random_state): not refused.
    svm = compose_cfg("model=svm").model
    assert "random_state" not in build_estimator(svm, Task.regression).get_params()
    assert build_estimator(svm, Task.classification).random_state == 42


def samplers() -> list[str]:
    """The sampler options hydra-optuna-sweeper registers (hydra/sweeper/sampler=...)."""
    import hydra_plugins.hydra_optuna_sweeper.config  # noqa: F401  (registers them)
    from hydra.core.config_store import ConfigStore

    return sorted(n.removesuffix(".yaml") for n in
                  ConfigStore.instance().list("hydra/sweeper/sampler") if "motpe" not in n)


@pytest.mark.parametrize("sampler", samplers())
def test_every_sampler_the_sweeper_ships_is_admitted(compose_cfg, sampler):
    cfg = compose_cfg("sweep=narrow", f"hydra/sweeper/sampler={sampler}")
    check_sweeper_settings(cfg.hydra.sweeper)


@pytest.mark.parametrize("pruner", group_options("hydra/sweeper/pruner"))
def test_every_pruner_option_is_admitted(compose_cfg, pruner):
    check_sweeper_settings(compose_cfg("sweep=narrow", f"hydra/sweeper/pruner={pruner}")
                           .hydra.sweeper)


@pytest.mark.parametrize(("override", "message"), [
    ("hydra.sweeper.study_namer=builtins.print", "is not a declared hook"),
    ("+hydra.sweeper.custom_search_space=os.system", "is not a declared hook"),
    ("hydra.sweeper.sampler._target_=optuna.samplers._tpe.sampler.TPESampler",
     "is not an Optuna sampler class"),
    ("hydra.sweeper.sampler._target_=optuna.pruners.MedianPruner",
     "is not an Optuna sampler class"),
    ("+hydra.sweeper.sampler.independent_sampler._target_=optuna.samplers._base.BaseSampler",
     "independent_sampler._target_"),
    # Declared, but named by no setting: nothing imports or calls it.
    ("hydra.sweeper.hooks=[tabflow.sweep_identity.study_name,builtins.print]", None),
])
def test_sweeper_settings_name_declared_hooks_and_optuna_classes_only(compose_cfg, override,
                                                                      message):
    cfg = compose_cfg("sweep=narrow", override)
    if message is None:
        check_sweeper_settings(cfg.hydra.sweeper)
        return
    with pytest.raises(HookError, match=message):
        check_sweeper_settings(cfg.hydra.sweeper)


def test_a_declared_hook_must_be_a_function(compose_cfg):
    cfg = compose_cfg("sweep=narrow", "hydra.sweeper.hooks=[collections.OrderedDict]",
                      "hydra.sweeper.study_namer=collections.OrderedDict")
    with pytest.raises(HookError, match="is a type, not a function"):
        check_sweeper_settings(cfg.hydra.sweeper)


@pytest.mark.parametrize(("key", "code"), [
    ("model.classifier", True), ("+model.regressor", True), ("model._target_", True),
    ("hydra.callbacks.x._target_", True), ("hydra/launcher", True), ("hydra.sweeper.hooks", True),
    ("estimators.extra", True), ("hydra.searchpath", True), ("hydra.job.env_set.PATH", True),
    ("model.n_estimators", False), ("hydra/sweeper/sampler", False), ("model", False),
    ("hydra.sweeper.n_trials", False), ("dataset.path", False),
])
def test_which_overrides_change_code(key, code):
    assert changes_code(key) is code


def test_replayed_overrides_may_repeat_the_config_files_but_not_change_code(project_root):
    safe = ["model=rf", "sweep=wide", "hydra.sweeper.n_trials=5",
            "model.classifier=sklearn.ensemble.RandomForestClassifier"]  # what rf.yaml says
    assert check_replayed(safe, "run r1, tag hydra.overrides") == safe
    for bad in ("model.classifier=sklearn.ensemble.ExtraTreesClassifier",
                "hydra/launcher=joblib", "~model.classifier",
                "+hydra.callbacks.x._target_=tabflow.checks.ConfigCheck"):
        with pytest.raises(ReplayError, match=re.escape(
                f"run r1, tag hydra.overrides: the stored override '{bad}' changes what code")):
            check_replayed(["model=rf", bad], "run r1, tag hydra.overrides")


def test_a_stored_model_not_logged_by_tabflow_is_not_deserialized():
    ours = {"flavors": {"sklearn": {"serialization_format": "skops",
                                    "skops_trusted_types": ["sklearn.tree._tree.Tree"]}}}
    assert unsafe_format(ours) is None
    pickled = {"flavors": {"sklearn": {"serialization_format": "cloudpickle"}}}
    assert "stored as cloudpickle, not skops" in str(unsafe_format(pickled))
    widened = {"flavors": {"sklearn": {"serialization_format": "skops",
                                       "skops_trusted_types": ["builtins.eval"]}}}
    assert "builtins.eval" in str(unsafe_format(widened))
    assert "no scikit-learn model" in str(unsafe_format({"flavors": {"python_function": {}}}))
