"""Champion against challenger in process: fair rows, the paired test, the stage mirror."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from tabflow.comparison import (
    NOT_BETTER,
    NOT_SIGNIFICANT,
    PROMOTED,
    NotComparableError,
    Predictions,
    Rows,
    compare,
    fair_rows,
    row_keys,
)
from tabflow.config import DatasetConfig, Source, SplitConfig, Task
from tabflow.data import load_dataset
from tabflow.splits import split_dataset
from tabflow.tracking.registry import expected_stages, stage_problem


def cancer():
    return load_dataset(OmegaConf.structured(DatasetConfig(
        name="breast_cancer", source=Source.sklearn, loader="load_breast_cancer",
        task=Task.classification)))


def rows_of(ds, seed):
    s = split_dataset(ds, OmegaConf.structured(SplitConfig()), seed)
    return Rows(pd.concat([s.X_train, s.X_val]), pd.concat([s.y_train, s.y_val]), s.X_test,
                s.y_test, "target", ds.task)


def test_the_test_split_is_frozen_by_content_across_seeds():
    ds = cancer()
    a, b = rows_of(ds, 42), rows_of(ds, 11)
    assert set(a.X_test.index) == set(b.X_test.index)  # the same held-out rows
    assert a.y_test.mean() == pytest.approx(ds.y.mean(), abs=0.01)  # still stratified
    _, y, excluded = fair_rows(a, b)
    assert len(y) == len(a.y_test) and excluded == 0


def test_grown_data_is_compared_on_rows_neither_version_trained_on():
    ds = cancer()
    old = load_dataset(OmegaConf.structured(DatasetConfig(
        name="breast_cancer", source=Source.sklearn, loader="load_breast_cancer",
        task=Task.classification)))
    keep = np.random.default_rng(0).permutation(len(ds.y))[:400]
    from dataclasses import replace

    small = replace(old, X=old.X.iloc[keep].reset_index(drop=True),
                    y=old.y.iloc[keep].reset_index(drop=True))
    champion, challenger = rows_of(small, 42), rows_of(ds, 11)
    X, y, excluded = fair_rows(challenger, champion)
    seen = set(row_keys(champion.X_train, champion.y_train)) | \
        set(row_keys(challenger.X_train, challenger.y_train))
    assert not set(row_keys(X, y)) & seen  # no row either model was trained on
    assert excluded >= 0 and len(y) >= 30


def test_other_columns_or_targets_are_not_comparable():
    ds = cancer()
    a, b = rows_of(ds, 42), rows_of(ds, 11)
    narrower = Rows(b.X_train.iloc[:, :5], b.y_train, b.X_test.iloc[:, :5], b.y_test,
                    "target", ds.task)
    with pytest.raises(NotComparableError, match="trained on other columns"):
        fair_rows(a, narrower)
    other = Rows(b.X_train, b.y_train, b.X_test, b.y_test, "churned", ds.task)
    with pytest.raises(NotComparableError, match="predicts 'target'"):
        fair_rows(a, other)


def predictions(labels):
    return Predictions(np.asarray(labels), None, None)


def test_one_row_better_is_not_significant_and_a_clear_gain_is_promoted():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 114)
    champion = y.copy()
    champion[:6] = 1 - champion[:6]  # 6 mistakes
    one_better = champion.copy()
    one_better[0] = y[0]  # 5 mistakes: better by one row
    verdict = compare(pd.Series(y), predictions(one_better), predictions(champion),
                      Task.classification, "test_accuracy")
    assert verdict.verdict == NOT_SIGNIFICANT
    assert verdict.gain == pytest.approx(1 / 114) and verdict.low <= 0 <= verdict.high
    assert verdict.p_value == 1.0 and "McNemar" in verdict.test
    stump = y.copy()
    stump[:30] = 1 - stump[:30]
    clear = compare(pd.Series(y), predictions(champion), predictions(stump),
                    Task.classification, "test_accuracy")
    assert clear.verdict == PROMOTED and clear.low > 0 and clear.p_value < 0.001
    worse = compare(pd.Series(y), predictions(stump), predictions(champion),
                    Task.classification, "test_accuracy")
    assert worse.verdict == NOT_BETTER and worse.high < 0
    # The margin is a minimum effect the whole interval must clear.
    assert compare(pd.Series(y), predictions(champion), predictions(stump),
                   Task.classification, "test_accuracy", margin=0.5).verdict == NOT_BETTER


def test_regression_is_judged_on_errors_in_the_metrics_direction():
    rng = np.random.default_rng(1)
    y = rng.normal(size=200)
    good, bad = y + rng.normal(0, 0.1, 200), y + rng.normal(0, 1.0, 200)
    verdict = compare(pd.Series(y), predictions(good), predictions(bad), Task.regression,
                      "test_rmse")
    assert verdict.verdict == PROMOTED and verdict.gain > 0  # a lower RMSE is a gain
    assert "Wilcoxon" in verdict.test and verdict.p_value < 0.001


def test_the_stage_mirror_follows_the_aliases():
    assert expected_stages({"production": "1", "staging": "1"}) == {
        "Production": ["1"], "Staging": []}
    assert stage_problem("m", {"production": "1", "staging": "1"},
                         {"Production": ["1"]}) is None
    guide = stage_problem("m", {"production": "6"}, {"Production": ["6", "7"]})
    assert "@production is version 6 but stage Production holds 6, 7" in guide
    assert "models:/m/Production serves 7" in guide and "tabflow promote m --sync" in guide
    archived = stage_problem("m", {"production": "1", "staging": "2"},
                             {"Production": ["1"], "Archived": ["2"]})
    assert "@staging is version 2 but stage Staging holds no version" in archived
    assert stage_problem("g", {}, {"Production": ["1"]}) is None  # the guide's own way
