"""Dataclass schemas for the composed config, registered in Hydra's ConfigStore.

The schemas only declare names and types; every value lives in ``conf/``. Hydra
merges each YAML file onto its schema, so a typo (``seeed=1``) or a wrong type
(``seed=abc``, ``objective.direction=up``) fails at composition, before any job
runs. This module is imported by ``src/train.py`` before Hydra starts, so it must
stay cheap: no scikit-learn, pandas or MLflow imports here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from tabflow.contract import natural_direction
from tabflow.monitoring.settings import MonitoringConfig


class Task(StrEnum):
    """What the dataset asks a model to predict."""

    classification = "classification"
    regression = "regression"


class Direction(StrEnum):
    """Whether a larger or a smaller objective is better."""

    minimize = "minimize"
    maximize = "maximize"


class Scaler(StrEnum):
    """Scaler applied to numeric columns."""

    standard = "standard"
    minmax = "minmax"
    robust = "robust"
    none = "none"


class NumericImputer(StrEnum):
    """Statistic that fills missing numeric values."""

    mean = "mean"
    median = "median"


class Encoder(StrEnum):
    """Encoding of categorical columns."""

    onehot = "onehot"
    ordinal = "ordinal"


# Metric names follow the guide: `<split>_<metric>` (train_accuracy, val_f1, test_roc_auc).
# They are the contract between evaluation, the objective and MLflow, so they live here,
# where the config check can read them without importing scikit-learn.
CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1",
                          "precision_macro", "recall_macro", "f1_macro", "roc_auc", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")


# Per-trial measurements an objective may also use (e.g. minimise fit time).
COST_METRICS = ("fit_time_s", "predict_time_s", "model_size_bytes")


def metric_names(task: Task | str) -> tuple[str, ...]:
    """Return the bare metric names computed for a task (without split prefix)."""
    return CLASSIFICATION_METRICS if Task(task) is Task.classification else REGRESSION_METRICS


# Keys whose values must never be tracked or logged: they are replaced by REDACTED.
SECRET_KEY = re.compile(r"passw(or)?d|passwd|token|secret|api[_-]?key|credential", re.IGNORECASE)
REDACTED = "***REDACTED***"


def redact(node: Any) -> Any:
    """Return a plain dict / list with the values of secret-looking keys replaced.

    Keys naming a password, token, secret, API key or credentials are caught; their
    values (whole sub-trees included) become ``REDACTED``. Credentials belong in the
    environment (``MLFLOW_TRACKING_PASSWORD``, ``PGPASSWORD``), not in configs.
    """
    if isinstance(node, dict):
        return {k: REDACTED if SECRET_KEY.search(str(k)) and node[k] is not None
                else redact(node[k]) for k in node}
    if isinstance(node, list):
        return [redact(v) for v in node]
    return node


def redact_override(line: str) -> str:
    """Redact the value of a ``key=value`` command-line override with a secret-looking key."""
    key, sep, _ = line.partition("=")
    return f"{key}={REDACTED}" if sep and SECRET_KEY.search(key) else line


def loggable_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved job config as it may be logged and tracked: plain, secrets redacted."""
    if "hydra" not in cfg:  # a job's own config (Hydra hands the task one without its node)
        return redact(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True,
                                             enum_to_str=True))
    return redact(OmegaConf.to_container(job_config(cfg), enum_to_str=True))


def config_yaml(container: dict[str, Any]) -> str:
    """A plain config as YAML, exactly as ``OmegaConf.to_yaml`` writes it (without its copy)."""
    import yaml
    from omegaconf._utils import get_omega_conf_dumper

    return yaml.dump(container, Dumper=get_omega_conf_dumper(), default_flow_style=False,
                     allow_unicode=True, sort_keys=False)


def job_config(cfg: DictConfig) -> DictConfig:
    """Return the resolved job config without Hydra's own node."""
    # Resolve node by node: Hydra's own node holds values that only exist in some modes.
    return OmegaConf.create({
        str(key): OmegaConf.to_container(cfg[key], resolve=True, throw_on_missing=True)
        if OmegaConf.is_config(cfg[key]) else cfg[key]
        for key in cfg if key != "hydra"
    })


class Source(StrEnum):
    """Where a dataset's rows come from."""

    sklearn = "sklearn"  # one of scikit-learn's bundled `load_*` sets
    penguins = "penguins"  # the Palmer penguins table of the palmerpenguins package
    file = "file"  # a CSV or Parquet file (under data/raw/ when relative)
    synthetic = "synthetic"  # make_classification / make_regression


@dataclass
class SyntheticConfig:
    """Size knobs of a synthetic dataset (``dataset=synthetic``)."""

    n_rows: int = 1000
    n_features: int = 10
    n_informative: int = 5
    n_categorical: int = 0  # of the features, how many become string categories
    n_classes: int = 2  # classification only
    missing_rate: float = 0.0  # fraction of feature cells set missing, at random
    noise: float = 0.0  # regression: std of the Gaussian noise on the target
    seed: int = 0


@dataclass
class DatasetConfig:
    """A dataset: where it comes from, its target column, its task and its columns."""

    name: str = MISSING
    source: Source = MISSING
    loader: str | None = None  # source=sklearn: e.g. load_breast_cancer
    path: str | None = None  # source=file: a .csv or .parquet file, from the cwd or data/raw/
    sep: str = ","  # source=file, CSV: the column separator (";" in many European files)
    decimal: str = "."  # CSV: the decimal mark ("," in many European files)
    encoding: str = "utf-8-sig"  # CSV: the text encoding (latin-1, cp1252, ...)
    thousands: str | None = None  # CSV: the thousands separator, if numbers have one (1,234.5)
    # Cells that mean "missing" beyond pandas' own (NA, N/A, null, empty): e.g. ["?", "-"]
    na_values: list[str] = field(default_factory=list)
    target: str | None = "target"
    task: Task = MISSING
    numeric: list[str] = field(default_factory=list)  # columns forced numeric
    categorical: list[str] = field(default_factory=list)  # columns forced categorical
    drop: list[str] = field(default_factory=list)  # columns left out
    id_columns: list[str] = field(default_factory=list)  # identifiers: never features
    # Features although every value is unique (otherwise such text or integer columns
    # are taken for row identifiers and left out, with a warning).
    keep: list[str] = field(default_factory=list)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class PreprocessingConfig:
    """How raw columns become model inputs (fitted inside the model Pipeline)."""

    name: str = MISSING
    numeric_imputer: NumericImputer = NumericImputer.median
    add_indicator: bool = False  # a 0/1 column per feature that had missing values
    scaler: Scaler = Scaler.standard
    encoder: Encoder = Encoder.onehot
    poly_degree: int = 1  # >1 adds polynomial terms of the numeric columns
    interaction_only: bool = False  # with poly_degree > 1: products only, no powers


@dataclass
class ModelConfig:
    """Base schema of a model family; subclasses add the typed hyperparameters.

    Every field that is not ``name``, ``classifier`` or ``regressor`` is passed to the
    estimator's constructor, so search-space keys (``model.max_depth``) map 1:1 onto
    scikit-learn arguments.
    """

    name: str = MISSING
    classifier: str = MISSING  # import path of the scikit-learn classifier
    regressor: str = MISSING  # import path of the scikit-learn regressor


@dataclass
class RandomForestConfig(ModelConfig):
    """Random forest hyperparameters (scikit-learn names)."""

    n_estimators: int = MISSING
    max_depth: int | None = MISSING
    min_samples_split: int = MISSING
    min_samples_leaf: int = MISSING
    max_features: Any = MISSING  # "sqrt", "log2", a float fraction, or null
    n_jobs: int | None = MISSING
    random_state: int | None = MISSING


@dataclass
class HistGradientBoostingConfig(ModelConfig):
    """Histogram gradient boosting hyperparameters (scikit-learn names)."""

    learning_rate: float = MISSING
    max_iter: int = MISSING
    max_depth: int | None = MISSING
    max_leaf_nodes: int | None = MISSING
    min_samples_leaf: int = MISSING
    l2_regularization: float = MISSING
    random_state: int | None = MISSING


@dataclass
class GradientBoostingConfig(ModelConfig):
    """Gradient boosting hyperparameters (scikit-learn names)."""

    learning_rate: float = MISSING
    n_estimators: int = MISSING
    max_depth: int | None = MISSING
    min_samples_split: int = MISSING
    min_samples_leaf: int = MISSING
    subsample: float = MISSING
    random_state: int | None = MISSING


@dataclass
class LogisticRegressionConfig(ModelConfig):
    """Logistic regression (classification) / ridge (regression) hyperparameters."""

    C: float = MISSING
    max_iter: int = MISSING
    random_state: int | None = MISSING


@dataclass
class SVMConfig(ModelConfig):
    """Support vector machine hyperparameters (scikit-learn names)."""

    C: float = MISSING
    kernel: str = MISSING
    gamma: Any = MISSING  # "scale", "auto" or a positive float
    random_state: int | None = MISSING


@dataclass
class KNNConfig(ModelConfig):
    """k-nearest-neighbours hyperparameters (scikit-learn names)."""

    n_neighbors: int = MISSING
    weights: str = MISSING
    p: int = MISSING


@dataclass
class SplitConfig:
    """Train / validation / test split; sizes are fractions of the whole dataset."""

    test_size: float = 0.2
    val_size: float = 0.1
    stratify: bool = True


@dataclass
class ObjectiveConfig:
    """The value the sweep optimises: a validation metric and a direction."""

    # A metric name, or a list of them for a multi-objective sweep ([val_f1, fit_time_s]);
    # checked in tabflow.checks.
    metric: Any = MISSING
    # Derived from the metric in conf/train.yaml (${direction_of:...}); a value given by
    # hand is checked against it.
    direction: Any = MISSING
    # The default metric per task, which `metric` interpolates in conf/train.yaml.
    by_task: dict[str, str] = field(default_factory=dict)


@dataclass
class CVConfig:
    """Cross-validation as the objective, instead of the single validation split."""

    # null (auto): `auto_folds`-fold CV when a classification validation split has fewer
    # than `min_val_rows` rows (its accuracy moves in coarse steps: trials tie), else the
    # validation split; 0: always the validation split; k >= 2: always k-fold CV.
    folds: int | None = None
    shuffle: bool = True  # shuffle (seeded) before cutting folds
    auto_folds: int = 3
    min_val_rows: int = 200


@dataclass
class EvaluationConfig:
    """Figures and the sweep report."""

    figures: bool = True  # final model and sweep figures, and the report, on the parent run
    trial_figures: bool = False  # figures of every trial's model too (slower sweeps)
    stage_size: int = 50  # with a pruner: iterations between a forest's / booster's scores


@dataclass
class TrackingConfig:
    """Where and how runs are tracked in MLflow."""

    enabled: bool = True
    uri: str = MISSING
    experiment: str = MISSING
    log_model: bool = True  # single runs: log the fitted pipeline as the run's model
    # Sequential sweeps: log a finished trial in the background while the next one runs
    # (off by default: on 2 cores the writer slows the fits as much as it saves).
    async_logging: bool = False


@dataclass
class BudgetsConfig:
    """Serving budgets a challenger must meet to be promoted; None: no budget."""

    latency_p95_ms_1row: float | None = None
    latency_p95_ms_1000rows: float | None = None
    peak_memory_mb: float | None = None
    artifact_mb: float | None = None


@dataclass
class RegistryConfig:
    """What happens to a sweep's best configuration in the Model Registry."""

    enabled: bool = True
    model_name: str = MISSING
    alias: str = "staging"
    auto_promote: bool = False  # promote staging to production when it beats production
    # The minimum gain the whole 95% interval must clear (tabflow.comparison).
    promote_margin: float = 0.0
    budgets: BudgetsConfig = field(default_factory=BudgetsConfig)


@dataclass
class EstimatorsConfig:
    """Estimator classes admitted besides scikit-learn's own (docs/security.md)."""

    # Exact import paths of classes (xgboost.XGBClassifier, mypkg.models.MyRegressor);
    # each must be a scikit-learn-compatible estimator. Nothing else is ever imported.
    extra: list[str] = field(default_factory=list)


@dataclass
class PathsConfig:
    """Project folders; ``root`` anchors every relative store and data path."""

    root: str = MISSING
    data: str = MISSING


@dataclass
class TrainConfig:
    """The primary config of ``src/train.py``."""

    dataset: DatasetConfig = MISSING
    preprocessing: PreprocessingConfig = MISSING
    model: Any = MISSING  # validated by the per-family schema the model YAML extends
    estimators: EstimatorsConfig = field(default_factory=EstimatorsConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    # Threads per fit for libraries that use OpenMP/BLAS (hgb, numpy); null = one for a
    # table below threads_single_below cells (rows x features), else one per core, or the
    # cores divided among parallel trials under the joblib launcher.
    threads: int | None = None
    threads_single_below: int = 1_000_000
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    seed: int = 42
    # Set by the tabflow Optuna sweeper on every trial; null outside a sweep.
    optuna_trial: int | None = None


MODEL_SCHEMAS: dict[str, type[ModelConfig]] = {
    "rf": RandomForestConfig,
    "extra_trees": RandomForestConfig,  # the same arguments as a random forest
    "hgb": HistGradientBoostingConfig,
    "gb": GradientBoostingConfig,
    "logreg": LogisticRegressionConfig,
    "svm": SVMConfig,
    "knn": KNNConfig,
}


def file_stem(path: str | None, default: str = "csv") -> str:
    """``${file_stem:${.path}}`` in conf/: a file dataset is named after its file.

    ``data/raw/churn.csv`` -> ``churn``, so that two files get two experiments and two
    registered models; ``dataset.name`` overrides it.
    """
    return Path(str(path)).stem if path else default


def direction_of(metric: Any) -> str | list[str]:
    """``${direction_of:${.metric}}`` in conf/: the direction each metric is optimised in.

    Derived from the one list of metrics where smaller is better
    (:data:`tabflow.contract.LOWER_IS_BETTER`); a list of metrics gives a list.
    """
    if isinstance(metric, str):
        return natural_direction(metric)
    return [natural_direction(str(m)) for m in metric]


# tabflow's resolvers, by the name conf/ calls them.
RESOLVERS: dict[str, Callable[..., Any]] = {"file_stem": file_stem, "direction_of": direction_of}


def register_resolvers() -> None:
    """Register tabflow's OmegaConf resolvers (:data:`RESOLVERS`) once in this process.

    Called where tabflow sets itself up, not at import: by :func:`register_configs`
    (the command's process) and by the tracking callback wherever a launcher builds or
    unpickles it (a worker process resolves the same interpolations).
    """
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_resolver(name, resolver)


def composed_node(node: str, overrides: list[str]) -> DictConfig:
    """One node of ``conf/train.yaml`` as composed, with ``<node>.*`` overrides only.

    The settings of commands outside a sweep (``monitoring`` for ``tabflow monitor``,
    ``registry`` for ``tabflow promote``) come from the same files a sweep reads.

    Raises:
        ValueError: For an override of another node, or one that does not compose; the
            message names it.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tabflow.contract import CODE_ROOT

    wrong = [o for o in overrides if not o.lstrip("+~").startswith(f"{node}.")]
    if wrong:
        raise ValueError(f"only {node} settings can be overridden here, e.g. "
                         f"{node}.KEY=VALUE; not {wrong}")
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str((CODE_ROOT / "conf").resolve())):
        try:
            cfg = compose("train", overrides=list(overrides))
        except Exception as e:
            raise ValueError(f"bad {node} override: " + "; ".join(
                line.strip() for line in str(e).splitlines()[:3] if line.strip())) from e
    GlobalHydra.instance().clear()
    found = cfg[node]
    assert isinstance(found, DictConfig)
    return found


def register_configs() -> None:
    """Register the schemas so ``conf/`` files can extend them by name, and the resolvers."""
    register_resolvers()
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig, provider="tabflow", replace=True)
    for name, schema in MODEL_SCHEMAS.items():
        cs.store(group="schema/model", name=name, node=schema, provider="tabflow", replace=True)
