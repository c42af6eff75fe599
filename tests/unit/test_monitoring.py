"""Monitoring without a tracking store: profiles, batch checks, drift tests, the report.

The data are real tables (penguins, breast cancer) and a seeded generator whose
distribution a test can shift one feature at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from tabflow.monitoring.batch import MonitorError, read_batch
from tabflow.monitoring.drift import detect_drift
from tabflow.monitoring.profile import OTHER, Profile, build_profile
from tabflow.monitoring.report import console_table, write_html
from tabflow.monitoring.settings import DriftConfig, ProfileConfig

DRIFT = OmegaConf.structured(DriftConfig)
NUMERIC = ["income", "age", "visits", "flag"]


def population(n: int, seed: int, *, shift: float = 0.0) -> pd.DataFrame:
    """Customers: income (skewed), age, visits (counts), a 0/1 flag and a plan, with gaps."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "income": rng.lognormal(10, 0.5, n),
        "age": rng.normal(40, 12, n) + shift * 12,
        "visits": rng.poisson(3, n).astype("int64"),
        "flag": rng.integers(0, 2, n).astype("int64"),
        "plan": rng.choice(["basic", "plus", "pro"], n, p=[0.6, 0.3, 0.1]).astype(object),
    })
    frame.loc[rng.random(n) < 0.05, "income"] = np.nan
    frame["churned"] = rng.integers(0, 2, n)
    return frame


def profile_of(frame: pd.DataFrame, **settings: int) -> Profile:
    X, y = frame.drop(columns="churned"), frame["churned"]
    return build_profile(X, y, numeric=NUMERIC, task="classification",
                         dataset={"name": "customers", "n_rows": len(X)},
                         ignored=["customer_id"], read={"sep": ","},
                         settings=ProfileConfig(**settings), seed=0)


@pytest.fixture(scope="module")
def profile() -> Profile:
    return profile_of(population(3000, seed=0))


def features(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns="churned")


# --------------------------------------------------------------------------- profiles
def test_profile_describes_each_feature_by_kind(profile):
    f = profile.features
    assert f["age"]["kind"] == "numeric" and f["plan"]["kind"] == "categorical"
    assert abs(f["age"]["mean"] - 40) < 1 and abs(f["income"]["missing_rate"] - 0.05) < 0.015
    assert sum(f["age"]["bin_counts"]) == 3000 and len(f["age"]["bin_edges"]) == 11
    assert set(f["plan"]["frequencies"]) == {"basic", "plus", "pro"}
    assert set(f["flag"]["frequencies"]) == {"0", "1"}  # few values: compared as categories
    assert profile.target == {"name": "churned", "task": "classification",
                              "classes": {"0": pytest.approx(1500, abs=100),
                                          "1": pytest.approx(1500, abs=100)}}


def test_profile_size_is_bounded_whatever_the_data(tmp_path):
    frame = population(20000, seed=1)
    frame["city"] = [f"city{i % 500}" for i in range(len(frame))]
    profile = profile_of(frame, sample_rows=1000, max_categories=50)
    assert len(profile.sample) == 1000 and profile.data["rows"] == 20000
    cities = profile.features["city"]["frequencies"]
    assert len(cities) == 51 and cities[OTHER] == 20000 - sum(
        v for k, v in cities.items() if k != OTHER)
    folder = profile.save(tmp_path / "profile")
    assert sum(p.stat().st_size for p in folder.iterdir()) < 200_000
    loaded = Profile.load(folder)
    assert loaded.data == profile.data
    pd.testing.assert_frame_equal(loaded.sample, profile.sample)


def test_a_profiles_sample_reads_back_with_every_dtype_and_from_the_older_format(tmp_path):
    """NumPy columns go to an array file, the others to Parquet; both come back as saved,
    in their order; a profile saved as one Parquet file (format 1) is still read."""
    import json

    sample = pd.DataFrame({
        "ratio": np.array([0.5, np.nan, 2.0], dtype="float32"), "plan": ["a", "b", None],
        "count": np.array([1, 2, 3], dtype="int64"), "flag": [True, False, True],
        "seen": pd.to_datetime(["2024-01-01", "2024-01-02", None]),
        "score": pd.array([1, None, 3], dtype="Int64"), "level": pd.Categorical(["x", "y", "x"]),
        "x 1": np.array([1.0, 2.0, 3.0])})
    profile = Profile({"format": 2, "features": {}}, sample)
    folder = profile.save(tmp_path / "profile")
    assert {p.name for p in folder.iterdir()} == {"profile.json", "reference.npz",
                                                  "reference.parquet"}
    pd.testing.assert_frame_equal(Profile.load(folder).sample, sample)
    numeric_only = Profile({"format": 2}, sample[["count", "ratio"]]).save(tmp_path / "numeric")
    assert not (numeric_only / "reference.parquet").exists()
    pd.testing.assert_frame_equal(Profile.load(numeric_only).sample, sample[["count", "ratio"]])
    old = tmp_path / "format1"  # as registered before: one Parquet file
    old.mkdir()
    (old / "profile.json").write_text(json.dumps({"format": 1, "features": {}}))
    sample.to_parquet(old / "reference.parquet", index=False)
    pd.testing.assert_frame_equal(Profile.load(old).sample, sample)
    (old / "profile.json").write_text(json.dumps({"format": 9}))
    with pytest.raises(ValueError, match="format 9 is not one of"):
        Profile.load(old)


def test_profile_of_a_real_table_with_gaps_and_categories():
    import palmerpenguins

    frame = palmerpenguins.load_penguins().drop(columns="year")
    X, y = frame.drop(columns="species"), frame["species"]
    numeric = [c for c in X.columns if X[c].dtype.kind == "f"]
    profile = build_profile(X, y, numeric=numeric, task="classification", dataset={},
                            ignored=[], read={}, settings=ProfileConfig(), seed=0)
    assert profile.features["sex"]["missing_rate"] == pytest.approx(11 / 344)
    assert profile.features["island"]["frequencies"] == {"Biscoe": 168, "Dream": 124,
                                                         "Torgersen": 52}
    assert set(profile.target["classes"]) == {"Adelie", "Gentoo", "Chinstrap"}


# ------------------------------------------------------------------------------ drift
@pytest.mark.parametrize("rows", [300, 3000])
def test_the_same_distribution_is_no_drift_over_seeds(profile, rows):
    shares = []
    for seed in range(1, 9):
        result = detect_drift(profile, features(population(rows, seed=seed)), DRIFT)
        assert not result.dataset_drift, (seed, [f.reasons for f in result.drifted])
        assert not result.severe
        shares.append(result.share)
    assert np.mean(shares) <= 0.15  # features flagged by chance: ~p_value of them


def test_tests_are_chosen_by_kind_and_the_smaller_side(profile):
    small = {f.feature: f.test for f in
             detect_drift(profile, features(population(300, seed=5)), DRIFT).features}
    large = {f.feature: f.test for f in
             detect_drift(profile, features(population(3000, seed=5)), DRIFT).features}
    assert small == {"income": "kolmogorov-smirnov", "age": "kolmogorov-smirnov",
                     "visits": "kolmogorov-smirnov", "flag": "chi-square", "plan": "chi-square"}
    assert large == {"income": "wasserstein", "age": "wasserstein", "visits": "wasserstein",
                     "flag": "jensen-shannon", "plan": "jensen-shannon"}


@pytest.mark.parametrize("table", ["penguins", "breast_cancer"])
def test_real_tables_resampled_are_no_drift_over_seeds(table):
    """Profile a real table's training rows; batches resampled from the whole table."""
    if table == "penguins":
        import palmerpenguins

        frame = palmerpenguins.load_penguins().rename(columns={"species": "target"})
        frame["year"] = frame["year"].astype(str).astype(object)
    else:
        from sklearn.datasets import load_breast_cancer

        frame = load_breast_cancer(as_frame=True).frame
    train = frame.sample(frac=0.8, random_state=0)
    X = train.drop(columns="target")
    numeric = [c for c in X.columns if X[c].dtype.kind == "f"]
    profile = build_profile(X, train["target"], numeric=numeric, task="classification",
                            dataset={}, ignored=[], read={}, settings=ProfileConfig(), seed=0)
    for seed in range(8):
        batch = frame.sample(150, replace=True, random_state=seed).drop(columns="target")
        result = detect_drift(profile, batch.reset_index(drop=True), DRIFT)
        assert not result.dataset_drift, (table, seed, [f.reasons for f in result.drifted])


@pytest.mark.parametrize("rows", [300, 3000])
def test_a_shifted_mean_is_detected_and_named(profile, rows):
    result = detect_drift(profile, features(population(rows, seed=3, shift=0.75)), DRIFT)
    assert [f.feature for f in result.drifted] == ["age"]
    assert result.severe[0].feature == "age" and result.dataset_drift
    assert result.severe[0].psi > 0.25


def test_a_new_category_is_detected_and_named(profile):
    batch = features(population(300, seed=4))
    batch.loc[batch.index[:30], "plan"] = "enterprise"
    result = detect_drift(profile, batch, DRIFT)
    (plan,) = result.severe
    assert plan.feature == "plan" and plan.unseen == ["enterprise"]
    assert "unseen: enterprise" in plan.reasons and result.dataset_drift


def test_a_spike_of_missing_values_is_detected_and_named(profile):
    batch = features(population(300, seed=6))
    batch.loc[batch.sample(frac=0.3, random_state=0).index, "visits"] = np.nan
    result = detect_drift(profile, batch, DRIFT)
    (visits,) = result.severe
    assert visits.feature == "visits" and visits.missing_new == pytest.approx(0.3, abs=0.01)
    assert any(r.startswith("missing 0.0% -> 30.0%") for r in visits.reasons)
    assert result.dataset_drift


def test_thresholds_come_from_config(profile):
    batch = features(population(300, seed=3, shift=0.75))
    lax = OmegaConf.merge(DRIFT, {"p_value": 1e-300, "psi": 100.0})
    assert not detect_drift(profile, batch, lax).dataset_drift
    strict_share = OmegaConf.merge(DRIFT, {"psi": 100.0, "dataset_share": 0.2})
    assert detect_drift(profile, batch, strict_share).dataset_drift  # 1 of 5 features


def test_a_feature_entirely_missing_in_the_batch_drifts(profile):
    batch = features(population(300, seed=7))
    batch["age"] = np.nan
    (age,) = detect_drift(profile, batch, DRIFT).drifted
    assert age.feature == "age" and age.test == "missing rate" and age.severe


# ------------------------------------------------------------------------- new batches
@pytest.fixture
def write(tmp_path):
    def _write(frame: pd.DataFrame, name: str = "batch.csv") -> Path:
        path = tmp_path / name
        frame.to_csv(path, index=False) if name.endswith(".csv") else \
            frame.to_parquet(path, index=False)
        return path
    return _write


def test_a_batch_is_typed_as_training_and_takes_the_target_as_labels(profile, write):
    frame = population(50, seed=8).assign(customer_id=range(50))
    batch = read_batch(write(frame), profile)
    assert batch.ignored == ["customer_id"]  # a known non-feature: left out quietly
    assert list(batch.X.columns) == list(profile.features) and batch.y is not None
    assert batch.X["plan"].dtype == object and batch.X["age"].dtype == "float64"
    unlabeled = read_batch(write(features(frame), "b.parquet"), profile)
    assert unlabeled.y is None and unlabeled.rows == 50


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f.drop(columns=["age"]), "lacks column(s) the model was trained on: ['age']"),
    (lambda f: f.assign(promo="x"), "has column(s) the model was not trained on: ['promo']; "
                                    "drop them, or pass --ignore-extra"),
    (lambda f: f.assign(age=["unknown", *list(f["age"][1:])]),
     "column 'age' was numeric in training, but holds 'unknown'"),
    (lambda f: f.assign(churned=[7, *list(f["churned"][1:])]), "holds classes the model "
                                                               "never saw: ['7']"),
    (lambda f: f.iloc[:0], "holds no rows; nothing to monitor"),
])
def test_bad_batches_get_one_line_naming_the_fix(profile, write, change, message):
    with pytest.raises(MonitorError) as e:
        read_batch(write(change(population(40, seed=9))), profile)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_extra_columns_can_be_ignored_and_labels_named(profile, write):
    frame = population(40, seed=9).assign(promo="x").rename(columns={"churned": "outcome"})
    batch = read_batch(write(frame), profile, labels="outcome", ignore_extra=True)
    assert batch.ignored == ["promo"] and batch.y is not None and batch.y.name == "churned"
    with pytest.raises(MonitorError, match="no column 'label' for --labels"):
        read_batch(write(frame), profile, labels="label", ignore_extra=True)
    with pytest.raises(MonitorError, match="retraining needs the true outcomes"):
        read_batch(write(frame.drop(columns="outcome")), profile, ignore_extra=True,
                   require_labels=True)


def test_unreadable_or_missing_files_are_refused(profile, tmp_path):
    with pytest.raises(MonitorError, match="no such file"):
        read_batch(tmp_path / "nope.csv", profile)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(MonitorError, match=r"unsupported file type '\.json'"):
        read_batch(tmp_path / "x.json", profile)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(MonitorError, match="holds no rows"):
        read_batch(tmp_path / "empty.csv", profile)


# ----------------------------------------------------------------------------- report
def test_console_table_and_report_name_the_drifted_features(profile):
    batch = features(population(300, seed=3, shift=0.75))
    result = detect_drift(profile, batch, DRIFT)
    table = console_table(result)
    first = table.splitlines()[1]
    assert first.split()[0] == "age" and "SEVERE" in first
    page = write_html("Monitoring", {"model": "m"}, result, [], profile, batch)
    assert page.count("<svg") == 5 and "age (drifted)" in page
    assert "No labels given" in page


# ---------------------------------------------------------------------------- retrain
def test_the_retraining_command_parses_and_warm_starts_conditional_parameters(profile,
                                                                              tmp_path):
    import optuna
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from tabflow.monitoring.retrain import command

    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    best = {"model": "logreg", "logreg:model.C": 0.5, "logreg:preprocessing.scaler": "robust"}
    study.add_trial(optuna.trial.create_trial(params=best, value=0.9, distributions={
        "model": CategoricalDistribution(["rf", "logreg"]),
        "logreg:model.C": FloatDistribution(0.01, 10, log=True),
        "logreg:preprocessing.scaler": CategoricalDistribution(["standard", "robust"])}))
    tags = {"hydra.overrides": "experiment=penguins_families dataset=penguins "
                               "dataset.categorical=[year] registry.alias=x seed=3",
            "optuna.study": "s", "optuna.storage": storage, "best.trial": "0"}
    check = type("C", (), {"name": "my model", "version": "1"})()
    cfg = OmegaConf.create({"dataset": {"name": "customers"}})
    overrides = command(check, profile, tags, "/data/it's new.parquet", cfg, ["age"],
                        ["hydra.sweeper.n_trials=2"])
    parsed = {o.key_or_group: o.value() for o in
              OverridesParser.create().parse_overrides(overrides)}
    assert parsed["hydra.sweeper.enqueue"] == [best]  # the best trial runs first
    assert parsed["experiment"] == "penguins_families" and parsed["seed"] == 3
    assert parsed["dataset"] == "csv" and parsed["dataset.path"] == "/data/it's new.parquet"
    assert "dataset.categorical" not in parsed  # the original dataset's settings are replaced
    assert parsed["registry.model_name"] == "my model" and parsed["registry.alias"] == "staging"
    assert parsed["dataset.keep"] == ["age"] and parsed["hydra.sweeper.n_trials"] == 2


def test_secret_overrides_stop_the_retraining_with_the_fix(profile):
    from tabflow.monitoring.retrain import command

    check = type("C", (), {"name": "m", "version": "2"})()
    with pytest.raises(MonitorError, match="had secret overrides"):
        command(check, profile, {"hydra.overrides": "model=rf db.password=***REDACTED***"},
                "x.parquet", OmegaConf.create({"dataset": {"name": "m"}}), [], [])


@pytest.mark.parametrize(("verdict", "rows", "setting", "expected"), [
    ("drift", 100, "auto", "combined"),
    ("degraded", 800, "auto", "new"),
    ("drift+degraded", 800, "auto", "new"),
    ("degraded", 100, "auto", "combined"),
    ("drift", 100, "new", "new"),
])
def test_what_retraining_trains_on(verdict, rows, setting, expected):
    from tabflow.monitoring.retrain import choose_data

    check = type("C", (), {"verdict": verdict,
                           "batch": type("B", (), {"rows": rows})()})()
    choice, why = choose_data(check, setting, 500)  # type: ignore[arg-type]
    assert choice.value == expected and why


# ------------------------------------------------------------------------ performance
@pytest.mark.parametrize(("metric", "baseline", "new", "degraded"), [
    ("test_accuracy", 0.95, 0.91, False),  # scores: 0.05 absolute
    ("test_accuracy", 0.95, 0.89, True),
    ("test_r2", 0.47, 0.40, True),
    ("test_rmse", 53.0, 55.0, False),  # errors: 5% of the test score (2.65)
    ("test_rmse", 53.0, 56.0, True),
    ("test_log_loss", 0.10, 0.104, False),
])
def test_degradation_is_absolute_for_scores_and_relative_for_errors(metric, baseline, new,
                                                                     degraded):
    from tabflow.monitoring.monitor import Performance

    perf = Performance(metric, {metric: baseline}, {metric: new}, 0.05)
    assert perf.degraded is degraded
    assert (perf.margin(400) is None) == (not metric.endswith("accuracy"))


def test_metric_keys_from_column_names_are_unique_and_valid_for_mlflow():
    from mlflow.utils.validation import _validate_metric_name

    from tabflow.monitoring.monitor import metric_keys

    names = ["age", "monthly charges ($)", "a=b", "a,b", "x" * 300, "y" * 300, "..", "ü-1"]
    keys = metric_keys(names)
    assert len(set(keys.values())) == len(names)  # a=b and a,b no longer share metrics
    assert keys["age"] == "age" and keys["ü-1"] == "ü-1"  # names MLflow takes stay
    for key in keys.values():
        for stat in ("statistic", "psi", "p_value", "missing", "drifted"):
            _validate_metric_name(f"drift.{key}.{stat}")  # raises on a key MLflow refuses
    assert metric_keys(names) == keys  # the same names get the same keys in every check
