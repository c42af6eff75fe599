"""Data loading, splitting, preprocessing and the model Pipeline, on real scikit-learn fits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from sklearn.pipeline import Pipeline

from tabflow.config import (
    CLASSIFICATION_METRICS,
    DatasetConfig,
    PreprocessingConfig,
    Source,
    Task,
)
from tabflow.data import DataError, Dataset, infer_columns, load_dataset
from tabflow.evaluation import compute_metrics
from tabflow.job import objective_value, refit_final, run_job
from tabflow.pipeline import build_estimator, build_pipeline
from tabflow.preprocessing import make_preprocessor
from tabflow.splits import split_dataset


def mixed_frame(n: int = 120, seed: int = 0) -> Dataset:
    """A small table like users bring: missing values and a categorical column."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({
        "num a": rng.normal(size=n),
        "num_b": rng.uniform(0, 100, size=n),
        "colour": rng.choice(["red", "green", "blue"], size=n).astype(object),
    })
    X.loc[::7, "num a"] = np.nan
    X.loc[::11, "colour"] = np.nan
    y = pd.Series((X["num_b"] > 50).astype(int), name="target")
    numeric, categorical = infer_columns(X)
    return Dataset("mixed", "test", Task.classification, X, y, numeric, categorical)


def prep_cfg(**kw):
    return OmegaConf.merge(OmegaConf.structured(PreprocessingConfig), {"name": "t", **kw})


def test_sklearn_dataset_loads_with_target_and_task(compose_cfg):
    ds = load_dataset(compose_cfg("dataset=wine").dataset)
    assert ds.X.shape == (178, 13)
    assert ds.y.name == "target" and ds.y.nunique() == 3
    assert ds.task is Task.classification
    assert ds.describe()["digest"] == load_dataset(compose_cfg("dataset=wine").dataset).digest


def test_digest_changes_with_the_data():
    a, b = mixed_frame(seed=0), mixed_frame(seed=1)
    assert a.digest != b.digest
    assert a.digest == mixed_frame(seed=0).digest


def test_unknown_loader_names_the_choices():
    cfg = OmegaConf.structured(DatasetConfig(name="x", source=Source.sklearn,
                                             loader="fetch_openml", task=Task.classification))
    with pytest.raises(DataError, match="load_breast_cancer"):
        load_dataset(cfg)


def test_split_sizes_stratification_and_seed(compose_cfg):
    cfg = compose_cfg()
    ds = load_dataset(cfg.dataset)
    s = split_dataset(ds, cfg.split, seed=1)
    n = len(ds.y)
    assert len(s.y_test) == pytest.approx(0.2 * n, abs=1)
    assert len(s.y_val) == pytest.approx(0.1 * n, abs=1)
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == n
    assert not set(s.X_train.index) & set(s.X_test.index)
    # Stratified: every split keeps the class balance.
    for part in (s.y_train, s.y_val, s.y_test):
        assert part.mean() == pytest.approx(ds.y.mean(), abs=0.03)
    again = split_dataset(ds, cfg.split, seed=1)
    assert list(again.X_val.index) == list(s.X_val.index)
    assert list(split_dataset(ds, cfg.split, seed=2).X_val.index) != list(s.X_val.index)


@pytest.mark.parametrize("scaler", ["standard", "minmax", "robust", "none"])
@pytest.mark.parametrize("encoder", ["onehot", "ordinal"])
def test_preprocessor_handles_missing_and_categorical(scaler, encoder):
    ds = mixed_frame()
    pre = make_preprocessor(prep_cfg(scaler=scaler, encoder=encoder),
                            ds.numeric_columns(), ds.categorical_columns())
    out = pre.fit_transform(ds.X)
    assert not np.isnan(out).any()
    n_cat = 3 if encoder == "onehot" else 1
    assert out.shape == (len(ds.X), 2 + n_cat)
    if scaler == "minmax":
        assert out[:, :2].min() >= 0 and out[:, :2].max() <= 1
    # Categories never seen in training don't crash prediction.
    unseen = ds.X.head(2).assign(colour=["purple", "black"])
    assert pre.transform(unseen).shape[0] == 2


def test_missing_indicator_adds_columns():
    ds = mixed_frame()
    plain = make_preprocessor(prep_cfg(), ds.numeric_columns(), ds.categorical_columns())
    flagged = make_preprocessor(prep_cfg(add_indicator=True), ds.numeric_columns(),
                                ds.categorical_columns())
    assert flagged.fit_transform(ds.X).shape[1] == plain.fit_transform(ds.X).shape[1] + 2


def test_preprocessing_is_fitted_on_training_rows_only(compose_cfg):
    cfg = compose_cfg()
    ds = load_dataset(cfg.dataset)
    s = split_dataset(ds, cfg.split, cfg.seed)
    pipe = build_pipeline(cfg, ds).fit(s.X_train, s.y_train)
    scaler = pipe.named_steps["preprocess"].named_transformers_["numeric"].named_steps["scale"]
    np.testing.assert_allclose(scaler.mean_, s.X_train.mean())
    assert not np.allclose(scaler.mean_, ds.X.mean())


def test_estimator_follows_task_and_refuses_foreign_classes(compose_cfg):
    model = compose_cfg("model=rf").model
    assert type(build_estimator(model, Task.classification)).__name__ == "RandomForestClassifier"
    assert type(build_estimator(model, Task.regression)).__name__ == "RandomForestRegressor"
    evil = OmegaConf.merge(OmegaConf.to_container(model), {"classifier": "os.system"})
    with pytest.raises(ValueError, match="not a scikit-learn class"):
        build_estimator(evil, Task.classification)


def test_metrics_are_named_split_metric_and_scored_correctly():
    ds = mixed_frame()
    pipe = Pipeline([("preprocess", make_preprocessor(prep_cfg(), ds.numeric_columns(),
                                                      ds.categorical_columns())),
                     ("model", build_estimator(OmegaConf.create({
                         "name": "rf", "classifier": "sklearn.ensemble.RandomForestClassifier",
                         "regressor": "x", "n_estimators": 20, "random_state": 0}),
                         Task.classification))])
    pipe.fit(ds.X, ds.y)
    m = compute_metrics(pipe, ds.X, ds.y, Task.classification, "train")
    assert set(m) == {f"train_{name}" for name in CLASSIFICATION_METRICS}
    pred = pipe.predict(ds.X)
    assert m["train_accuracy"] == pytest.approx((pred == ds.y).mean())
    recalls = [(pred[ds.y == c] == c).mean() for c in (0, 1)]
    assert m["train_balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert m["train_recall_macro"] == pytest.approx(np.mean(recalls))
    proba = pipe.predict_proba(ds.X)[np.arange(len(ds.y)), ds.y]
    assert m["train_log_loss"] == pytest.approx(-np.log(np.clip(proba, 1e-15, 1)).mean())
    reg = compute_metrics(_Constant(ds.y.mean()), ds.X, ds.y.astype(float), Task.regression,
                          "val")
    assert reg["val_r2"] == pytest.approx(0.0)
    assert reg["val_rmse"] == pytest.approx(ds.y.std(ddof=0))


class _Constant:
    def __init__(self, value: float):
        self.value = value

    def predict(self, X):
        return np.full(len(X), self.value)


def test_run_job_writes_the_output_contract(compose_cfg, tmp_path):
    cfg = compose_cfg("model.n_estimators=20")
    metrics = run_job(cfg, tmp_path / "job", save_model=True)
    assert {"train_accuracy", "val_accuracy", "val_f1", "fit_time_s"} <= set(metrics)
    for name in ("metrics.json", "dataset.json", "config.yaml", "model.joblib"):
        assert (tmp_path / "job" / name).exists(), name
    saved = OmegaConf.load(tmp_path / "job" / "config.yaml")
    assert "hydra" not in saved and saved.model.n_estimators == 20
    assert objective_value(metrics, "val_accuracy") == metrics["val_accuracy"]


def test_objective_refuses_missing_and_non_finite_values():
    with pytest.raises(KeyError, match="val_f1"):
        objective_value({"val_accuracy": 1.0}, "val_f1")
    with pytest.raises(ValueError, match="nan"):
        objective_value({"val_accuracy": float("nan")}, "val_accuracy")


def test_refit_final_uses_train_and_val_and_scores_test(compose_cfg):
    cfg = compose_cfg("model.n_estimators=20")
    final = refit_final(cfg)
    assert set(final.metrics) >= {"test_accuracy", "test_roc_auc", "refit_time_s"}
    ds = load_dataset(cfg.dataset)
    s = split_dataset(ds, cfg.split, cfg.seed)
    assert final.pipeline.named_steps["model"].n_features_in_ == ds.X.shape[1]
    assert len(final.pipeline.named_steps["preprocess"].transform(s.X_test)) == len(s.X_test)
    assert list(final.input_example.columns) == list(ds.X.columns)
