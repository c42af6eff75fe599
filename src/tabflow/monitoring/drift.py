"""Data drift, feature by feature, of a new batch against a version's training profile.

The test follows Evidently's data-drift preset, with one change:

* numeric features: Kolmogorov-Smirnov (p-value) when either side is small, else the
  Wasserstein distance in units of the training standard deviation;
* categorical features (and numeric ones with at most 5 distinct values): chi-square
  (p-value) when either side is small, else the Jensen-Shannon distance;
* for every feature: the population stability index (PSI), the change of its missing rate
  (drifted when large and significant) and categories never seen in training.

Evidently picks the test by the reference's size alone; here the smaller side decides,
because a distance between a 5,000-row reference and a 50-row batch is mostly noise,
while a p-value accounts for both sizes.

The dataset drifts when at least ``dataset_share`` of its features drift (Evidently's
rule), or when one feature's drift is *severe*: its test flags it and its PSI reaches
``psi`` (0.25: the credit-risk convention for a shift that needs action), or its missing
rate moved. Evidently's rule alone would let one broken column in thirty pass; a test
alone would raise false alarms (at p < 0.05, one feature in twenty by chance).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tabflow.monitoring.profile import DISCRETE_MAX, OTHER, Profile, bin_counts, format_value
from tabflow.monitoring.settings import DriftConfig

EPS = 1e-4  # smoothing of empty bins and unseen categories (as Evidently does)


@dataclass
class FeatureDrift:
    """One feature's drift: the test, its statistic, and why it drifted."""

    feature: str
    kind: str
    test: str
    statistic: float
    threshold: float
    drifted: bool
    psi: float
    missing_train: float
    missing_new: float
    p_value: float | None = None
    unseen: list[str] = field(default_factory=list)  # categories never seen in training
    reasons: list[str] = field(default_factory=list)
    severe: bool = False  # drifted enough to drift the dataset on its own


@dataclass
class DriftResult:
    """Every feature's drift and the dataset's verdict."""

    features: list[FeatureDrift]
    share: float
    threshold: float
    rows_train: int
    rows_new: int

    @property
    def drifted(self) -> list[FeatureDrift]:
        """The features that drifted."""
        return [f for f in self.features if f.drifted]

    @property
    def severe(self) -> list[FeatureDrift]:
        """The features whose drift alone drifts the dataset."""
        return [f for f in self.features if f.severe]

    @property
    def dataset_drift(self) -> bool:
        """Whether the share of drifted features reaches the threshold, or one is severe."""
        return bool(self.features) and (self.share >= self.threshold or bool(self.severe))

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data."""
        return {"dataset_drift": self.dataset_drift, "share": self.share,
                "severe": [f.feature for f in self.severe],
                "threshold": self.threshold, "rows_train": self.rows_train,
                "rows_new": self.rows_new, "features": [asdict(f) for f in self.features]}


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index between two count vectors over the same bins."""
    e = np.maximum(expected / max(expected.sum(), 1), EPS)
    a = np.maximum(actual / max(actual.sum(), 1), EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def _missing_changed(spec: dict[str, Any], new: pd.Series, cfg: DriftConfig
                     ) -> tuple[float, bool]:
    """The new missing rate, and whether the change is both large and significant."""
    from scipy.stats import norm

    p0, n0 = spec["missing_rate"], int(spec["count"] / max(1 - spec["missing_rate"], EPS))
    p1, n1 = float(new.isna().mean()), len(new)
    if abs(p1 - p0) < cfg.missing_delta:
        return p1, False
    pooled = (p0 * n0 + p1 * n1) / (n0 + n1)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n0 + 1 / n1)) or EPS
    return p1, bool(2 * norm.sf(abs(p1 - p0) / se) < cfg.p_value)


def _categorical(spec: dict[str, Any], new: pd.Series, small: bool, cfg: DriftConfig
                 ) -> tuple[str, float, float | None, float, float, list[str]]:
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency

    frequencies: dict[str, int] = spec["frequencies"]
    values = new.dropna().map(format_value)
    counts = values.value_counts()
    seen = set(frequencies)
    unseen = [str(c) for c in counts.index if c not in seen]
    if OTHER in seen:  # categories pooled in the profile can't be told from unseen ones
        counts = counts.rename(lambda c: c if c in seen else OTHER).groupby(level=0).sum()
        unseen = []
    keys = sorted(seen | set(counts.index))
    ref = np.array([frequencies.get(k, 0) for k in keys], dtype=float)
    cur = np.array([counts.get(k, 0) for k in keys], dtype=float)
    drift_psi = psi(ref, cur)
    if small:
        # Two samples, not new counts against fixed training shares: the training counts
        # are a sample too, and treating them as exact raises false alarms.
        table = np.vstack([ref, cur])
        stat, p, _, _ = chi2_contingency(table[:, table.sum(axis=0) > 0], correction=False)
        return "chi-square", float(stat), float(p), cfg.p_value, drift_psi, unseen
    distance = float(jensenshannon(ref / ref.sum(), cur / cur.sum()))
    return "jensen-shannon", distance, None, cfg.jensen_shannon, drift_psi, unseen


def _numeric(spec: dict[str, Any], reference: pd.Series, new: pd.Series, small: bool,
             cfg: DriftConfig) -> tuple[str, float, float | None, float, float]:
    from scipy.stats import ks_2samp, wasserstein_distance

    ref = reference.dropna().to_numpy(dtype=float)
    cur = new.dropna().to_numpy(dtype=float)
    edges = np.asarray(spec["bin_edges"])
    drift_psi = psi(np.asarray(spec["bin_counts"], dtype=float), bin_counts(cur, edges))
    if small:
        stat, p = ks_2samp(ref, cur)
        return "kolmogorov-smirnov", float(stat), float(p), cfg.p_value, drift_psi
    distance = wasserstein_distance(ref, cur) / (spec["std"] or 1.0)
    return "wasserstein", float(distance), None, cfg.wasserstein, drift_psi


def feature_drift(name: str, spec: dict[str, Any], reference: pd.Series, new: pd.Series,
                  cfg: DriftConfig) -> FeatureDrift:
    """Test one feature of a new batch against its training profile."""
    missing_new, missing_drift = _missing_changed(spec, new, cfg)
    present = int(new.notna().sum())
    unseen: list[str] = []
    if spec["count"] == 0 or present == 0:  # all missing on one side: only the rate speaks
        test, stat, p, threshold, drift_psi = "missing rate", missing_new, None, \
            cfg.missing_delta, 0.0
        value_drift = False
    else:
        small = min(spec["count"], present) <= cfg.small_sample
        if spec["kind"] == "categorical" or ("frequencies" in spec
                                             and spec.get("unique", 0) <= DISCRETE_MAX):
            test, stat, p, threshold, drift_psi, unseen = _categorical(spec, new, small, cfg)
        else:
            test, stat, p, threshold, drift_psi = _numeric(spec, reference, new, small, cfg)
        value_drift = p < threshold if p is not None else stat >= threshold
    reasons = []
    if value_drift:
        reasons.append(f"{test} {'p' if p is not None else 'distance'}="
                       f"{p if p is not None else stat:.3g}")
    if missing_drift:
        reasons.append(f"missing {spec['missing_rate']:.1%} -> {missing_new:.1%}")
    if unseen:
        reasons.append(f"unseen: {', '.join(unseen[:5])}{' ...' if len(unseen) > 5 else ''}")
    severe = missing_drift or (value_drift and drift_psi >= cfg.psi)
    return FeatureDrift(name, spec["kind"], test, stat, threshold,
                        value_drift or missing_drift, drift_psi, spec["missing_rate"],
                        missing_new, p, unseen, reasons, severe)


def detect_drift(profile: Profile, X: pd.DataFrame, cfg: DriftConfig) -> DriftResult:
    """Test every feature of a new batch against a version's training profile.

    Args:
        profile: The version's training profile.
        X: The new batch's features, typed as in training (:func:`.batch.read_batch`).
        cfg: ``monitoring.drift``: thresholds.

    Returns:
        Per-feature results and the share of drifted features.
    """
    results = [feature_drift(name, spec, profile.sample[name], X[name], cfg)
               for name, spec in profile.features.items()]
    share = sum(r.drifted for r in results) / len(results) if results else 0.0
    return DriftResult(results, share, cfg.dataset_share, int(profile.data["rows"]), len(X))
