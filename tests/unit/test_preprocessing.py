"""What every preprocessing variant does to data, fitted on training rows only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tabflow.data import load_dataset
from tabflow.preprocessing import make_preprocessor
from tabflow.splits import split_dataset
from tests.helpers import CUSTOMERS, group_options

NUMERIC = ["age", "monthly charges ($)", "tenure months"]


@pytest.fixture
def customers(compose_cfg):
    """The shipped churn table, split as a run splits it."""
    def _load(variant: str, *overrides: str):
        cfg = compose_cfg("dataset=csv", f"dataset.path={CUSTOMERS}", "dataset.target=churned",
                          "dataset.id_columns=[Customer ID]", f"preprocessing={variant}",
                          *overrides)
        ds = load_dataset(cfg.dataset)
        splits = split_dataset(ds, cfg.split, cfg.seed)
        pre = make_preprocessor(cfg.preprocessing, ds.numeric_columns(),
                                ds.categorical_columns())
        out = pre.fit(splits.X_train).transform(splits.X_train)
        frame = pd.DataFrame(out, columns=pre.get_feature_names_out())
        return cfg, ds, splits, pre, frame
    return _load


@pytest.mark.parametrize("variant", group_options("preprocessing"))
def test_every_variant_imputes_from_training_rows_only(customers, variant):
    cfg, ds, splits, pre, frame = customers(variant)
    imputer = pre.named_transformers_["numeric"].named_steps["impute"]
    stat = cfg.preprocessing.numeric_imputer.value  # mean or median
    expected = getattr(splits.X_train[NUMERIC], stat)()
    np.testing.assert_allclose(imputer.statistics_, expected)
    # No leakage: the statistics are not those of all rows (validation and test included).
    assert not np.allclose(imputer.statistics_, getattr(ds.X[NUMERIC], stat)())
    assert not frame.isna().any().any()  # nothing missing reaches the model
    mode = pre.named_transformers_["categorical"].named_steps["impute"].statistics_
    assert list(mode) == [splits.X_train[c].mode()[0] for c in ("contract", "region")]


@pytest.mark.parametrize(("variant", "check"), [
    ("standard", lambda col: abs(col.mean()) < 1e-9 and abs(col.std(ddof=0) - 1) < 1e-9),
    ("minmax", lambda col: col.min() == pytest.approx(0) and col.max() == pytest.approx(1)),
    ("robust", lambda col: abs(col.median()) < 1e-9),
])
def test_scalers_transform_numeric_columns(customers, variant, check):
    *_, frame = customers(variant)
    assert check(frame["tenure months"])


def test_none_leaves_numbers_as_they_are(customers):
    _, _, splits, _, frame = customers("none")
    observed = splits.X_train["tenure months"].to_numpy()
    np.testing.assert_allclose(frame["tenure months"].to_numpy(), observed)
    assert set(frame["contract"]) <= {0.0, 1.0, 2.0}  # ordinal codes
    assert "region" in frame.columns and "region_north" not in frame.columns


def test_onehot_makes_one_column_per_category(customers):
    *_, frame = customers("standard")
    assert {"contract_month-to-month", "contract_one-year", "contract_two-year",
            "region_east", "region_north", "region_south", "region_west"} <= set(frame.columns)
    onehot = frame[[c for c in frame.columns if c.startswith("region_")]]
    assert (onehot.sum(axis=1) == 1).all()


def test_robust_adds_missing_indicators(customers):
    _, _, splits, _, frame = customers("robust")
    indicators = {c for c in frame.columns if c.startswith("missingindicator_")}
    assert indicators == {"missingindicator_age", "missingindicator_contract"}
    np.testing.assert_array_equal(frame["missingindicator_age"],
                                  splits.X_train["age"].isna().astype(float))


def test_poly_adds_powers_and_products(customers):
    *_, frame = customers("poly")
    assert {"age^2", "age tenure months", "tenure months^2"} <= set(frame.columns)
    *_, interactions = customers("poly", "preprocessing.interaction_only=true")
    assert "age tenure months" in interactions.columns
    assert "age^2" not in interactions.columns


def test_unknown_categories_at_predict_time_do_not_crash(customers):
    _, _, splits, pre, _ = customers("standard")
    rows = splits.X_test.head(3).assign(region=["mars", "venus", None])
    out = pd.DataFrame(pre.transform(rows), columns=pre.get_feature_names_out())
    assert (out[[c for c in out.columns if c.startswith("region_")]].sum(axis=1)
            <= 1).all()


def test_bad_poly_degree_is_refused(compose_cfg):
    cfg = compose_cfg("preprocessing=poly", "preprocessing.poly_degree=0")
    with pytest.raises(ValueError, match="poly_degree=0 must be >= 1"):
        make_preprocessor(cfg.preprocessing, ["a"], [])
