"""Champion against challenger: scored on rows neither trained on, with a paired test.

Two versions' test scores are only comparable on the same rows, and only when neither model
saw those rows in training. Another seed or new data gives another split, so one version's
test rows are often another's training rows: scored there, the champion looks better than
it is. The comparison set is therefore

    (challenger's test rows + champion's test rows) minus (rows either was trained on)

with rows matched by content (features and target), so it works across seeds and across
data that grew. Both models predict every row of it; the difference of the metric is then
judged by a paired bootstrap (rows resampled together for both models), whose 95% interval
decides, against the minimum effect ``margin``:

* PROMOTED: the whole interval lies above the margin;
* NOT BETTER: the whole interval lies below it (the challenger is worse, or short of it);
* NOT SIGNIFICANT: the interval straddles it; the rows can't tell the two apart.

An exact McNemar test (accuracy-like metrics) or a Wilcoxon signed-rank test on per-row
errors (regression) gives the p-value reported beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tabflow.config import Task
from tabflow.contract import lower_is_better

PROMOTED, NOT_BETTER, NOT_SIGNIFICANT = "PROMOTED", "NOT BETTER", "NOT SIGNIFICANT"
# Fewer comparison rows than this can't show a difference of a few rows: refused.
MIN_ROWS = 30
BOOTSTRAP_RESAMPLES = 2000
_PROBA_METRICS = ("roc_auc", "log_loss")


class NotComparableError(ValueError):
    """Two versions that can't be compared (other features or target, too few fair rows)."""


@dataclass(frozen=True)
class Rows:
    """One version's data as it was split: the rows it was trained on and tested on."""

    X_train: pd.DataFrame  # train + validation: the registered model was refit on both
    y_train: pd.Series
    X_test: pd.DataFrame
    y_test: pd.Series
    target: str
    task: Task


def row_keys(X: pd.DataFrame, y: pd.Series) -> np.ndarray:
    """A 64-bit hash of each row's content (features and target), independent of position."""
    frame = X.assign(**{"\0target": np.asarray(y)})
    return pd.util.hash_pandas_object(frame[sorted(frame.columns)], index=False).to_numpy()


def fair_rows(challenger: Rows, champion: Rows) -> tuple[pd.DataFrame, pd.Series, int]:
    """The rows neither version was trained on, from both versions' test splits.

    Returns:
        The features and target of the comparison rows, and how many test rows were left
        out because one of the two versions had trained on them.

    Raises:
        NotComparableError: If the versions have other features, target or task, or fewer than
            ``MIN_ROWS`` rows remain.
    """
    if challenger.task is not champion.task or challenger.target != champion.target:
        raise NotComparableError(
            f"not comparable: the staging version predicts {challenger.target!r} "
            f"({challenger.task.value}), production {champion.target!r} "
            f"({champion.task.value}); promote with --force if you mean to replace it")
    ours, theirs = list(challenger.X_test.columns), list(champion.X_test.columns)
    if sorted(ours) != sorted(theirs):
        missing = sorted(set(theirs) - set(ours)) + sorted(set(ours) - set(theirs))
        raise NotComparableError(
            f"not comparable: the two versions were trained on other columns (differing: "
            f"{missing[:8]}); register both on the same features, or promote with --force")
    X_test = pd.concat([challenger.X_test, champion.X_test[ours]], ignore_index=True)
    y_test = pd.concat([challenger.y_test, champion.y_test], ignore_index=True)
    keys = row_keys(X_test, y_test)
    trained = np.concatenate([row_keys(challenger.X_train, challenger.y_train),
                              row_keys(champion.X_train[ours], champion.y_train)])
    _, first = np.unique(keys, return_index=True)  # each distinct row once
    unique = np.zeros(len(keys), bool)
    unique[first] = True
    keep = unique & ~np.isin(keys, trained)
    dropped = int((unique & ~keep).sum())
    if keep.sum() < MIN_ROWS:
        raise NotComparableError(
            f"only {int(keep.sum())} test rows were seen by neither version in training "
            f"({dropped} were trained on by one of them); at least {MIN_ROWS} are needed "
            f"to compare them: register both from the same data and split.test_size, or "
            f"promote with --force")
    return X_test[keep].reset_index(drop=True), y_test[keep].reset_index(drop=True), dropped


@dataclass(frozen=True)
class Predictions:
    """What one model says about the comparison rows."""

    pred: np.ndarray
    proba: np.ndarray | None
    classes: np.ndarray | None


def predict(model: Any, X: pd.DataFrame, task: Task) -> Predictions:
    """A model's predictions (and class probabilities when it has them) on the rows."""
    if task is Task.classification and hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(X))
        classes = np.asarray(model.classes_)
        return Predictions(classes[proba.argmax(axis=1)], proba, classes)
    return Predictions(np.asarray(model.predict(X)), None, None)


def metric_function(metric: str, task: Task) -> Callable[[np.ndarray, Predictions, np.ndarray],
                                                          float]:
    """``f(y, predictions, rows)``: the metric on a subset (or resample) of the rows."""
    from sklearn import metrics as skm

    from tabflow.evaluation import label_scores

    name = metric.split("_", 1)[1] if metric.startswith(("test_", "val_")) else metric
    if task is Task.regression:
        fns = {"rmse": skm.root_mean_squared_error, "mae": skm.mean_absolute_error,
               "r2": skm.r2_score}
        if name not in fns:
            raise NotComparableError(f"metric {metric!r} is not a regression metric; use one of "
                                f"{sorted(fns)}")
        fn = fns[name]
        return lambda y, p, rows: float(fn(y[rows], p.pred[rows]))
    if name in _PROBA_METRICS:
        def ranked(y: np.ndarray, p: Predictions, rows: np.ndarray) -> float:
            if p.proba is None or p.classes is None:
                raise NotComparableError(f"metric {metric!r} needs class probabilities, which a "
                                    f"version lacks; compare on test_accuracy")
            if name == "log_loss":
                return float(skm.log_loss(y[rows], p.proba[rows], labels=p.classes))
            if len(p.classes) == 2:
                return float(skm.roc_auc_score(y[rows], p.proba[rows, 1]))
            return float(skm.roc_auc_score(y[rows], p.proba[rows], multi_class="ovr",
                                           average="weighted", labels=p.classes))
        return ranked
    return lambda y, p, rows: label_scores(y[rows], p.pred[rows])[name]


@dataclass(frozen=True)
class Verdict:
    """The paired comparison of a challenger with a champion on the same rows."""

    metric: str
    rows: int
    excluded_rows: int  # test rows one of the two had trained on
    challenger_score: float
    champion_score: float
    gain: float  # how much better the challenger is (positive: better, either direction)
    low: float  # the gain's 95% bootstrap interval
    high: float
    p_value: float  # McNemar (exact) or Wilcoxon signed-rank
    test: str
    margin: float
    verdict: str


def compare(y: pd.Series, challenger: Predictions, champion: Predictions, task: Task,
            metric: str, margin: float = 0.0, seed: int = 0, excluded: int = 0) -> Verdict:
    """Judge the challenger against the champion on the same rows (see the module docstring).

    Args:
        y: The comparison rows' true values.
        challenger: The staging model's predictions on those rows.
        champion: The production model's predictions on the same rows.
        task: Classification or regression.
        metric: The test metric (``test_accuracy``, ``test_rmse``, ...).
        margin: The minimum gain that counts, in the metric's units.
        seed: Seed of the bootstrap resamples (the same inputs give the same interval).
        excluded: Test rows left out because one version had trained on them (reported).
    """
    fn = metric_function(metric, task)
    truth = np.asarray(y)
    n = len(truth)
    every = np.arange(n)
    sign = -1.0 if lower_is_better(metric) else 1.0
    a, b = fn(truth, challenger, every), fn(truth, champion, every)
    rng = np.random.default_rng(seed)
    gains = np.empty(BOOTSTRAP_RESAMPLES)
    for i in range(BOOTSTRAP_RESAMPLES):
        rows = rng.integers(0, n, n)
        try:
            gains[i] = sign * (fn(truth, challenger, rows) - fn(truth, champion, rows))
        except ValueError:  # a resample with one class: no ROC-AUC; leave it out
            gains[i] = np.nan
    low, high = (float(v) for v in np.nanpercentile(gains, [2.5, 97.5]))
    p_value, test = _paired_p(truth, challenger.pred, champion.pred, task)
    verdict = PROMOTED if low > margin else NOT_BETTER if high < margin else NOT_SIGNIFICANT
    return Verdict(metric=metric, rows=n, excluded_rows=excluded, challenger_score=a,
                   champion_score=b, gain=sign * (a - b), low=low, high=high, p_value=p_value,
                   test=test, margin=margin, verdict=verdict)


def _paired_p(y: np.ndarray, a: np.ndarray, b: np.ndarray, task: Task) -> tuple[float, str]:
    """The p-value of a paired test of the two models' per-row results."""
    from scipy import stats

    if task is Task.classification:
        right_a, right_b = a == y, b == y
        only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
        if only_a + only_b == 0:
            return 1.0, "McNemar (exact): no row told them apart"
        p = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
        return float(p), f"McNemar (exact): {only_a} rows right only by staging, {only_b} " \
                         f"only by production"
    errors_a, errors_b = np.abs(a - y), np.abs(b - y)
    if np.allclose(errors_a, errors_b):
        return 1.0, "Wilcoxon signed-rank on absolute errors: identical errors"
    return float(stats.wilcoxon(errors_a, errors_b).pvalue), \
        "Wilcoxon signed-rank on absolute errors"
