"""Schema of the ``monitoring`` config group (``conf/monitoring/``): thresholds and sizes."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class RetrainData(StrEnum):
    """What ``--retrain`` trains on."""

    auto = "auto"
    combined = "combined"  # the version's training data and the new batch
    new = "new"  # the new batch alone


@dataclass
class ProfileConfig:
    """What the training profile logged with each registered version keeps."""

    sample_rows: int = 5000  # reference rows kept for the numeric tests and the plots
    bins: int = 10  # quantile bins per numeric feature (PSI and plots)
    max_categories: int = 200  # most frequent categories kept per feature; the rest pooled


@dataclass
class DriftConfig:
    """When a feature, and the dataset, count as drifted."""

    # Either side smaller than this: tests with p-values (Kolmogorov-Smirnov, chi-square),
    # which account for sample size; both larger: distances, which don't flag trivia.
    small_sample: int = 1000
    p_value: float = 0.05
    wasserstein: float = 0.1  # Wasserstein distance in units of the training std
    jensen_shannon: float = 0.1
    missing_delta: float = 0.05  # a missing-rate change this large (and significant) drifts
    psi: float = 0.25  # a drifted feature with a PSI this large drifts the dataset alone
    dataset_share: float = 0.5  # dataset drift: at least this share of features drifted


@dataclass
class PerformanceConfig:
    """When the version's score on labelled new data counts as degraded."""

    metric: str | None = None  # default: the version's objective on test, e.g. test_accuracy
    # How much worse than its test score: absolute for scores (accuracy, f1, roc_auc, r2),
    # a fraction of the test score for errors (rmse, mae, log_loss: they have the data's scale).
    tolerance: float = 0.05


@dataclass
class RetrainConfig:
    """What ``tabflow monitor --retrain`` trains on."""

    # auto: old + new data after data drift (the old labels still hold); the new batch alone
    # after a performance drop, when it has at least min_new_rows rows (the old labels may
    # no longer hold). combined | new force one.
    data: RetrainData = RetrainData.auto
    min_new_rows: int = 500


@dataclass
class MonitoringConfig:
    """The ``monitoring`` node: profile sizes, drift and performance thresholds, retraining."""

    experiment: str = "{model}-monitoring"  # MLflow experiment of the monitoring runs
    alias: str = "production"  # the version monitored unless --alias / --version say
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
