"""``tabflow monitor``: check a registered version against a new batch of data.

The version's training profile says what its data looked like; the batch is read and
checked against it (bad input stops here, nothing recorded), tested for drift feature by
feature, and, when labels come with it, scored with the metrics of the version's test
score. The check is tracked as a run of the monitoring experiment, linked to the version,
whose tags then carry the last verdict. The exit status is the gate:
:data:`EXIT_CODES`.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tabflow.contract import TAG_DIGEST, lower_is_better, project_root
from tabflow.interrupts import deferred_interrupts
from tabflow.monitoring.batch import Batch, MonitorError, read_batch
from tabflow.monitoring.drift import DriftResult, detect_drift
from tabflow.monitoring.profile import Profile
from tabflow.monitoring.report import console_table, write_html
from tabflow.tracking.monitoring import (
    TAG_PROFILE,
    download_profile,
    record_check,
    registered_models,
    tag_verdict,
)
from tabflow.tracking.records import flatten
from tabflow.tracking.registry import aliases, model_version, resolve_version
from tabflow.tracking.store import Store

OK, DRIFT, DEGRADED, BOTH = "ok", "drift", "degraded", "drift+degraded"
# Metrics that are shares of rows, whose noise on n rows is about sqrt(p (1 - p) / n).
PROPORTIONS = ("accuracy", "precision", "recall", "f1")
# The exit status of `tabflow monitor` (1: an unexpected error; 2: bad input or usage).
EXIT_CODES = {OK: 0, DRIFT: 3, DEGRADED: 4, BOTH: 5}


@dataclass
class Performance:
    """The version's scores on the labelled batch against its test scores."""

    metric: str
    baseline: dict[str, float]
    new: dict[str, float]
    tolerance: float

    @property
    def change(self) -> float:
        """How much the gated metric moved (new minus baseline)."""
        return self.new[self.metric] - self.baseline[self.metric]

    @property
    def relative(self) -> bool:
        """Errors (rmse, mae, log loss) have the data's scale: their tolerance is relative."""
        return lower_is_better(self.metric)

    @property
    def allowed(self) -> float:
        """How much worse the gated metric may get: absolute for scores, relative for errors."""
        base = abs(self.baseline[self.metric])
        return self.tolerance * base if self.relative else self.tolerance

    @property
    def degraded(self) -> bool:
        """Whether the gated metric got worse by more than the tolerance allows."""
        worse = self.change if lower_is_better(self.metric) else -self.change
        return worse > self.allowed

    def margin(self, rows: int) -> float | None:
        """A rough 95% margin of the new score on ``rows`` rows (proportion metrics only).

        Small batches give noisy scores: a drop within this margin may be chance.
        """
        value = self.new[self.metric]
        if not self.metric.endswith(PROPORTIONS) or not 0 <= value <= 1 or rows == 0:
            return None
        return 1.96 * (value * (1 - value) / rows) ** 0.5

    def rows(self) -> list[list[Any]]:
        """Metric, baseline, new, change: one row per metric both have."""
        return [[k, f"{self.baseline[k]:.4f}", f"{v:.4f}", f"{v - self.baseline[k]:+.4f}"]
                for k, v in sorted(self.new.items()) if k in self.baseline]


@dataclass
class Check:
    """One monitoring check of a version against a batch."""

    name: str
    version: str
    alias: str | None
    batch: Batch
    drift: DriftResult
    performance: Performance | None
    run_id: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """ok, drift, degraded or drift+degraded."""
        degraded = self.performance is not None and self.performance.degraded
        return {(False, False): OK, (True, False): DRIFT, (False, True): DEGRADED,
                (True, True): BOTH}[(self.drift.dataset_drift, degraded)]

    @property
    def exit_code(self) -> int:
        """The gate: 0 when nothing is wrong (:data:`EXIT_CODES`)."""
        return EXIT_CODES[self.verdict]


def settings(overrides: list[str]) -> DictConfig:
    """The ``monitoring`` node as ``conf/`` composes it, with command-line overrides."""
    from tabflow.config import composed_node

    try:
        return composed_node("monitoring", overrides)
    except ValueError as e:
        raise MonitorError(str(e)) from e


def find_version(store: Store, name: str, alias: str | None, version: str | None) -> Any:
    """The version to monitor; an unknown model, alias or version says what exists."""
    known = aliases(store, name)
    if known is None:
        models = registered_models(store)
        raise MonitorError(f"no registered model named {name!r} at {store.uri}; registered: "
                           f"{models or 'none (a sweep registers one: python src/train.py -m)'}")
    if version is not None:
        try:
            return model_version(store, name, version)
        except Exception as e:
            raise MonitorError(f"{name} has no version {version!r}") from e
    assert alias is not None
    found = resolve_version(store, name, alias)
    if found is None:
        shown = ", ".join(f"@{a} -> {v}" for a, v in sorted(known.items())) or "none"
        hint = f" (tabflow promote {name} sets it)" if alias == "production" else ""
        raise MonitorError(f"{name} has no @{alias} version{hint}; its aliases: {shown}; "
                           f"pass --alias or --version")
    return found


def load_profile(store: Store, name: str, version: Any, tmp: Path) -> Profile:
    """The version's training profile; a version without one says how to add it."""
    uri = version.tags.get(TAG_PROFILE)
    if not uri:
        raise MonitorError(f"{name} version {version.version} has no training profile (it was "
                           f"registered before profiles were logged); add one with: tabflow "
                           f"profile {name} --version {version.version}")
    try:
        return Profile.load(download_profile(store, uri, tmp))
    except Exception as e:
        raise MonitorError(f"{name} version {version.version}: its training profile ({uri}) "
                           f"can't be read ({type(e).__name__}: {e}); rebuild it with: "
                           f"tabflow profile {name} --version {version.version}") from e


def _performance(name: str, version: Any, batch: Batch, profile: Profile,
                 cfg: DictConfig) -> Performance:
    from tabflow.config import Task
    from tabflow.evaluation import compute_metrics
    from tabflow.tracking.models import load_model

    assert batch.y is not None
    model = load_model(f"models:/{name}/{version.version}")
    task = Task(profile.target["task"])
    new = compute_metrics(model, batch.X, batch.y, task, "test")
    baseline = {k: float(v) for k, v in version.tags.items()
                if k.startswith("test_") and re.fullmatch(r"-?[\d.eE+-]+", v)}
    metric = cfg.metric or version.tags.get("objective.metric", "val_accuracy").replace(
        "val_", "test_", 1)
    if metric not in new or metric not in baseline:
        raise MonitorError(f"monitoring.performance.metric={metric!r} is not among the "
                           f"version's test scores {sorted(baseline)}")
    return Performance(metric, baseline, new, float(cfg.tolerance))


# A feature's metrics are `drift.<key>.<stat>`; MLflow takes at most 250 characters.
MAX_KEY = 200


def metric_keys(features: list[str]) -> dict[str, str]:
    """Return each feature's key in metric names: unique, and a name MLflow accepts.

    A name MLflow takes as it is stays itself. Any other (symbols MLflow refuses, or too
    long) becomes its safe characters, shortened, plus 8 hex digits of its SHA-256, so that
    ``a=b`` and ``a,b`` never share metrics. The monitoring run's ``drift.json`` lists the
    mapping (``metric_keys``).
    """
    keys: dict[str, str] = {}
    for name in features:
        safe = re.sub(r"[^\w\-. ]", "_", name)
        if safe != name or len(name) > MAX_KEY or not name.strip(" ."):
            digest = hashlib.sha256(name.encode()).hexdigest()[:8]
            safe = f"{safe[:60]}-{digest}"
        keys[name] = safe
    if len(set(keys.values())) < len(keys):  # a plain name equal to another's escaped one
        keys = {n: f"{k}-{hashlib.sha256(n.encode()).hexdigest()[:8]}" for n, k in keys.items()}
    return keys


def _record(store: Store, check: Check, profile: Profile, cfg: DictConfig) -> str:
    drift = check.drift
    metrics: dict[str, float] = {"drift_share": drift.share,
                                 "drifted_features": float(len(drift.drifted)),
                                 "rows": float(check.batch.rows)}
    keys = metric_keys([f.feature for f in drift.features])
    for f in drift.features:
        key = f"drift.{keys[f.feature]}"
        metrics.update({f"{key}.statistic": f.statistic, f"{key}.psi": f.psi,
                        f"{key}.missing": f.missing_new, f"{key}.drifted": float(f.drifted)})
        if f.p_value is not None:
            metrics[f"{key}.p_value"] = f.p_value
    perf = check.performance
    if perf is not None:
        for k, v in perf.new.items():
            metrics[k.replace("test_", "new_", 1)] = v
            if k in perf.baseline:
                metrics[k.replace("test_", "change_", 1)] = v - perf.baseline[k]
    title = f"Monitoring {check.name} version {check.version}: {check.verdict}"
    summary = {"model": f"models:/{check.name}/{check.version}"
                        + (f" (@{check.alias})" if check.alias else ""),
               "batch": f"{check.batch.path} ({check.batch.rows} rows)",
               "verdict": check.verdict,
               "drifted features": f"{len(drift.drifted)} of {len(drift.features)}; the "
                                   f"dataset drifts at {drift.threshold:.0%}, or with one "
                                   f"severe feature ("
                                   + (", ".join(f.feature for f in drift.severe) or "none")
                                   + ")",
               "training rows": drift.rows_train}
    dataset = {"name": check.batch.path.stem, "source": str(check.batch.path.resolve()),
               "digest": check.batch.digest, "n_rows": check.batch.rows,
               "n_features": check.batch.X.shape[1],
               "schema": {str(c): str(t) for c, t in check.batch.X.dtypes.items()}}
    result = {"verdict": check.verdict, "drift": drift.as_dict(),
              "performance": None if perf is None else
              {"metric": perf.metric, "baseline": perf.baseline, "new": perf.new,
               "tolerance": perf.tolerance, "degraded": perf.degraded},
              "ignored_columns": check.batch.ignored,
              "metric_keys": {n: k for n, k in keys.items() if n != k}}
    return record_check(
        store, experiment=str(cfg.experiment).format(model=check.name), root=project_root(),
        run_name=f"{check.name} v{check.version} {check.batch.path.name}",
        tags={"monitoring.model": check.name, "monitoring.version": check.version,
              "monitoring.alias": check.alias or "", "monitoring.verdict": check.verdict,
              "monitoring.batch": str(check.batch.path.resolve()),
              TAG_DIGEST: check.batch.digest, "tabflow.role": "monitor"},
        params={k: v for k, v in flatten(OmegaConf.to_container(cfg, resolve=True)).items()
                if not k.startswith(("profile.", "retrain."))},
        metrics=metrics,
        files={"report.html": write_html(title, summary, drift, perf.rows() if perf else [],
                                         profile, check.batch.X),
               "drift.json": json.dumps(result, indent=1, default=str)},
        dataset=dataset)


def monitor(store: Store, name: str, path: Path, cfg: DictConfig, alias: str | None = None,
            version: str | None = None, labels: str | None = None,
            ignore_extra: bool = False, require_labels: bool = False
            ) -> tuple[Check, Profile]:
    """Check a registered version against a new batch; track the check; tag the version.

    Args:
        store: The tracking store.
        name: The registered model.
        path: The new batch (CSV or Parquet), written like the training data.
        cfg: The ``monitoring`` node (thresholds, experiment).
        alias: The alias naming the version (default ``cfg.alias``: production).
        version: A version number instead of an alias.
        labels: The batch's column of true outcomes (default: the training target's
            column, when the batch has it).
        ignore_extra: Leave out columns the model was not trained on instead of refusing.
        require_labels: Refuse a batch without labels (``--retrain`` needs them).

    Returns:
        The check (drift, performance, verdict, its run id) and the version's profile.

    Raises:
        MonitorError: Before anything is recorded, if the model, version, profile or batch
            can't be used; the message says how to fix it.
    """
    alias = None if version is not None else (alias or str(cfg.alias))
    found = find_version(store, name, alias, version)
    with tempfile.TemporaryDirectory() as tmp:
        profile = load_profile(store, name, found, Path(tmp))
    batch = read_batch(Path(path), profile, labels, ignore_extra, require_labels)
    drift = detect_drift(profile, batch.X, cfg.drift)
    perf = (_performance(name, found, batch, profile, cfg.performance)
            if batch.y is not None else None)
    check = Check(name, str(found.version), alias, batch, drift, perf)
    with deferred_interrupts():  # the check's run and the version's verdict land together
        check.run_id = _record(store, check, profile, cfg)
        tag_verdict(store, name, check.version, check.verdict, check.run_id,
                    {"drifted": [f.feature for f in drift.drifted][:20],
                     "batch": str(batch.path.name), "rows": batch.rows})
    return check, profile


def profile_version(store: Store, name: str, alias: str | None, version: str | None
                    ) -> tuple[str, str]:
    """Build and log the training profile of a version registered without one.

    The training rows are rebuilt from the config of the sweep's best trial, as the
    final refit used them. Returns the version and where its profile now is.
    """
    from tabflow.monitoring.profile import profile_of
    from tabflow.tracking.monitoring import log_profile
    from tabflow.tracking.registry import TAG_SWEEP_PARENT
    from tabflow.tracking.store import best_config

    found = find_version(store, name, alias, version)
    parent = found.tags.get(TAG_SWEEP_PARENT)
    if not parent:
        raise MonitorError(f"{name} version {found.version} was not registered by a tabflow "
                           f"sweep (no {TAG_SWEEP_PARENT} tag): its training data is unknown")
    try:
        cfg = best_config(store, parent)
    except Exception as e:
        raise MonitorError(f"{name} version {found.version}: the config of its training run "
                           f"can't be read ({type(e).__name__}); were mlruns/ or the artifact "
                           f"store moved?") from e
    with tempfile.TemporaryDirectory() as tmp:
        folder = profile_of(cfg).save(Path(tmp) / "profile")
        uri = log_profile(store, parent, folder, name, str(found.version))
    return str(found.version), uri


def render(check: Check) -> str:
    """The console summary: what was checked, the drift table, performance, the verdict."""
    drift = check.drift
    lines = [f"{check.name} version {check.version}"
             + (f" (@{check.alias})" if check.alias else "")
             + f" against {check.batch.path.name}: {check.batch.rows} rows "
               f"(trained on {drift.rows_train})"]
    if check.batch.ignored:
        lines.append(f"  left out, not features of the model: {', '.join(check.batch.ignored)}")
    lines.append(console_table(drift))
    lines.append(f"  drifted features: {len(drift.drifted)} of {len(drift.features)} "
                 f"({drift.share:.0%}; the dataset drifts at {drift.threshold:.0%} or with one "
                 f"severe feature"
                 + (f": {', '.join(f.feature for f in drift.severe)})" if drift.severe else ")"))
    perf = check.performance
    if perf is not None:
        lines.append(f"  {'metric (test)':<24}{'baseline':>10}{'new':>10}{'change':>10}")
        lines += [f"  {m.removeprefix('test_'):<24}{b:>10}{n:>10}{c:>10}"
                  for m, b, n, c in perf.rows()]
        margin = perf.margin(check.batch.rows)
        noise = (f"; the new score's 95% margin on {check.batch.rows} rows: ±{margin:.3f}"
                 if margin is not None else "")
        lines.append(f"  {perf.metric}: {perf.change:+.4f} against the baseline "
                     f"(tolerance {perf.tolerance:g}"
                     + (f" of the baseline: {perf.allowed:.4g}" if perf.relative else "")
                     + f"{noise}): "
                     + ("DEGRADED" if perf.degraded else "within tolerance"))
    else:
        lines.append("  no labels in the batch: performance not scored (--labels COLUMN)")
    lines.append(f"-> {check.verdict.upper()} (exit {check.exit_code}); tracked as run "
                 f"{check.run_id}")
    return "\n".join(lines)
