"""Every config option composes; schemas and checks reject bad input before any job."""

from __future__ import annotations

import itertools

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf, open_dict, read_write
from sklearn.base import is_classifier, is_regressor

from tabflow.checks import check_config
from tabflow.config import MODEL_SCHEMAS, Task, job_config
from tabflow.pipeline import build_estimator
from tests.helpers import group_options

DATASETS = group_options("dataset")
PREPROCESSING = group_options("preprocessing")
MODELS = group_options("model")
SWEEPS = [s for s in group_options("sweep") if s != "none"]


def test_groups_offer_what_the_readme_promises() -> None:
    assert {"breast_cancer", "wine"} <= set(DATASETS)
    assert {"standard", "minmax"} <= set(PREPROCESSING)
    assert {"rf", "hgb"} <= set(MODELS)
    assert {"narrow", "wide"} <= set(SWEEPS)


COMBINATIONS = sorted(
    {(d, "standard", "rf") for d in DATASETS}
    | {("breast_cancer", p, "rf") for p in PREPROCESSING}
    | {(d, "standard", m) for m in MODELS for d in ("breast_cancer", "diabetes")}
)


@pytest.mark.parametrize(("dataset", "preprocessing", "model"), COMBINATIONS)
def test_every_option_composes_and_resolves(compose_cfg, dataset, preprocessing, model):
    cfg = compose_cfg(f"dataset={dataset}", f"preprocessing={preprocessing}", f"model={model}")
    resolved = job_config(cfg)  # raises on a missing value or a broken interpolation
    assert resolved.dataset.name == dataset
    assert resolved.preprocessing.name == preprocessing
    assert resolved.model.name == model
    assert Task(resolved.dataset.task) in (Task.classification, Task.regression)
    check_config(cfg, sweeping=False)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("task", list(Task))
def test_every_model_resolves_by_task_and_takes_the_seed(compose_cfg, model, task):
    assert model in MODEL_SCHEMAS, f"add a schema for model={model} in tabflow.config"
    cfg = compose_cfg(f"model={model}", "seed=7")
    estimator = build_estimator(cfg.model, task)
    assert (is_classifier if task is Task.classification else is_regressor)(estimator)
    kind = "classifier" if task is Task.classification else "regressor"
    assert type(estimator).__name__ == cfg.model[kind].rsplit(".", 1)[1]
    if "random_state" in estimator.get_params():
        assert estimator.get_params()["random_state"] == 7


PER_MODEL_SWEEPS = [s for s in SWEEPS if s != "families"]


@pytest.mark.parametrize(("model", "sweep"), list(itertools.product(MODELS, PER_MODEL_SWEEPS)))
def test_every_model_and_sweep_has_a_search_space_over_existing_keys(compose_cfg, model, sweep):
    # `optional` in the defaults list would silently skip a missing file: identical trials.
    cfg = compose_cfg(f"model={model}", f"sweep={sweep}")
    params = cfg.hydra.sweeper.params
    assert params, f"conf/search_space/{model}/{sweep}.yaml is missing or empty"
    for key in params:
        assert key.startswith("model.") or key.startswith("preprocessing.")
        assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", key
    check_config(cfg, sweeping=True)


@pytest.mark.parametrize("sweep", SWEEPS)
def test_sweep_settings_follow_seed_and_objective(compose_cfg, sweep):
    cfg = compose_cfg(f"sweep={sweep}", "seed=3", "objective.direction=minimize",
                      "objective.metric=val_f1")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("TabflowOptunaSweeper")
    assert sweeper.sampler.seed == 3
    assert str(sweeper.direction) == "minimize"
    assert sweeper.n_trials > 0
    assert str(sweeper.storage).startswith("sqlite:///")
    assert str(sweeper.storage).endswith("/optuna.db")


def test_wide_searches_more_than_narrow(compose_cfg):
    narrow = compose_cfg("model=rf", "sweep=narrow").hydra.sweeper
    wide = compose_cfg("model=rf", "sweep=wide").hydra.sweeper
    assert len(wide.params) > len(narrow.params)
    assert wide.n_trials > narrow.n_trials


def test_hgb_wide_searches_hgb_space(compose_cfg):
    params = compose_cfg("model=hgb", "sweep=wide").hydra.sweeper.params
    assert "model.learning_rate" in params
    assert "model.n_estimators" not in params


def test_stores_default_to_the_project_root(compose_cfg, project_root):
    cfg = compose_cfg()
    assert cfg.tracking.uri == f"sqlite:///{project_root}/mlflow.db"
    assert cfg.registry.alias == "staging"


def test_tracking_uri_honours_mlflow_env(compose_cfg, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert compose_cfg().tracking.uri == "http://127.0.0.1:5000"
    assert compose_cfg("tracking.uri=sqlite:///x.db").tracking.uri == "sqlite:///x.db"


def test_command_line_overrides_reach_the_job(compose_cfg):
    cfg = compose_cfg("dataset=wine", "preprocessing=minmax", "model.max_depth=8",
                      "preprocessing.scaler=robust")
    resolved = job_config(cfg)
    assert resolved.model.max_depth == 8
    assert resolved.preprocessing.scaler == "robust"
    assert resolved.dataset.name == "wine"


@pytest.mark.parametrize(("override", "needle"), [
    ("seeed=1", "Did you mean: 'seed'"),                 # typo at top level
    ("model.max_dept=3", "max_depth"),                   # typo in a model knob
    ("seed=abc", "'abc'"),                               # wrong type
    ("model.n_estimators=many", "'many'"),               # wrong type in the model schema
    ("preprocessing.scaler=zscore", "robust"),
    ("model=xgboost", "xgboost"),                        # unknown option
])
def test_bad_overrides_fail_at_composition_with_a_message(compose_cfg, override, needle):
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg(override)
    message = f"{info.value} {info.value.__cause__}"
    assert needle in message


def test_logreg_c_becomes_ridge_alpha_for_regression(compose_cfg):
    cfg = compose_cfg("model=logreg", "model.C=2.0")
    assert build_estimator(cfg.model, Task.classification).C == 2.0
    assert build_estimator(cfg.model, Task.regression).alpha == 0.25


def test_families_sweep_covers_every_family_with_its_own_space(compose_cfg):
    cfg = compose_cfg("sweep=families")
    sweeper = cfg.hydra.sweeper
    assert set(sweeper.params) == {"model"}
    families = sweeper.params.model.removeprefix("choice(").removesuffix(")").split(", ")
    assert sorted(families) == MODELS
    assert set(sweeper.conditional_params) == set(MODELS)
    for family in MODELS:
        space = sweeper.conditional_params[family]
        assert space, family
        family_cfg = compose_cfg(f"model={family}")
        for key in space:
            assert OmegaConf.select(family_cfg, key, default="<missing>") != "<missing>", key
    check_config(cfg, sweeping=True)


@pytest.mark.parametrize("experiment", group_options("experiment"))
def test_named_experiments_compose_and_fix_their_choices(compose_cfg, experiment):
    cfg = compose_cfg(f"experiment={experiment}")
    assert cfg.hydra.runtime.choices.experiment == experiment
    check_config(cfg, sweeping=cfg.hydra.sweeper._target_.endswith("TabflowOptunaSweeper"))


def test_penguins_families_experiment(compose_cfg):
    cfg = compose_cfg("experiment=penguins_families")
    choices = cfg.hydra.runtime.choices
    assert (choices.dataset, choices.preprocessing, choices.sweep) == (
        "penguins", "robust", "families")
    assert cfg.hydra.sweeper.n_trials == 60 and cfg.hydra.sweeper.timeout == 600
    assert cfg.hydra.sweeper.params.model.startswith("choice(")


def test_scale_out_presets_take_addresses_from_the_environment(compose_cfg, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "s3cret")
    monkeypatch.setenv("PGHOST", "db.internal")
    monkeypatch.setenv("TABFLOW_OPTUNA_DB", "studies")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    cfg = compose_cfg("sweep=narrow", "hydra/sweeper/storage=postgres", "tracking=server")
    assert cfg.hydra.sweeper.storage == "postgresql://postgres@db.internal:5432/studies"
    assert cfg.tracking.uri == "http://mlflow.internal:5000"
    assert "s3cret" not in OmegaConf.to_yaml(cfg.hydra.sweeper, resolve=True)  # libpq reads it
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert compose_cfg("tracking=server").tracking.uri == "http://127.0.0.1:5000"
    assert compose_cfg("sweep=narrow").hydra.sweeper.storage.startswith("sqlite:///")


def test_a_file_dataset_is_named_after_its_file(compose_cfg):
    cfg = compose_cfg("dataset=csv", "dataset.path=data/raw/churn.csv", "dataset.target=y")
    assert (cfg.dataset.name, cfg.tracking.experiment, cfg.registry.model_name) == (
        "churn", "churn", "churn")
    named = compose_cfg("dataset=csv", "dataset.path=churn.csv", "dataset.name=customers")
    assert named.registry.model_name == "customers"


def test_a_families_sweep_is_named_as_one(compose_cfg):
    from tabflow.sweep_identity import model_label, sweep_label

    families = compose_cfg("sweep=families")
    assert (model_label(families), sweep_label(families)) == ("families", "families")
    swept = compose_cfg("sweep=narrow")
    with read_write(swept.hydra), open_dict(swept.hydra):
        swept.hydra.overrides.task.append("model=choice(rf,hgb)")  # as `-m` would pass it
    assert model_label(swept) == "families"
    assert sweep_label(compose_cfg("model=hgb", "sweep=wide")) == "hgb-wide"


def test_figures_on_or_off_is_the_same_study(compose_cfg):
    from tabflow.sweep_identity import identity

    base = identity(compose_cfg("sweep=narrow"), "digest")
    assert identity(compose_cfg("sweep=narrow", "evaluation.figures=false",
                                "evaluation.trial_figures=true"), "digest") == base
    assert identity(compose_cfg("sweep=narrow", "evaluation.stage_size=10"), "digest") != base
    # The objective is what it resolves to: naming the default direction by hand, or
    # editing another task's default metric, is the same study; another metric is not.
    assert identity(compose_cfg("sweep=narrow", "objective.direction=maximize",
                                "objective.by_task.regression=val_mae"), "digest") == base
    assert identity(compose_cfg("sweep=narrow", "objective.metric=val_f1"), "digest") != base


@pytest.mark.parametrize(("overrides", "direction"), [
    ([], "maximize"),                                  # val_accuracy
    (["dataset=diabetes"], "minimize"),                # val_rmse
    (["objective.metric=val_log_loss"], "minimize"),
    (["dataset=diabetes", "objective.metric=val_r2"], "maximize"),
    (["objective.metric=[val_f1,fit_time_s]"], ["maximize", "minimize"]),
])
def test_the_objectives_direction_follows_from_its_metric(compose_cfg, overrides, direction):
    # One fact per metric (tabflow.contract.LOWER_IS_BETTER): no direction to repeat by hand,
    # and the sweeper optimises the one derived.
    cfg = compose_cfg("sweep=narrow", *overrides)
    assert OmegaConf.to_container(cfg.objective, resolve=True)["direction"] == direction
    assert OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)["direction"] == direction
    check_config(cfg, sweeping=True)  # a derived direction never contradicts its metric
