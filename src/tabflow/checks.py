"""Checks of the composed config and its data, run before any job.

Schemas catch typos and wrong types at composition. What they can't see (an
objective metric the task never computes, split sizes that leave no training
rows, a sweep without a search space) is checked here, in the launching process,
before tracking starts or a model is fitted. The dataset is loaded and split here
too, so bad data is reported before the first trial.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from tabflow.config import COST_METRICS, Direction, metric_names
from tabflow.contract import as_list, exit_cleanly, is_optuna_sweep, natural_direction

log = logging.getLogger(__name__)


# Fewer rows than these make scores meaningless; the command warns, naming the sizes.
MIN_TRAIN_ROWS, MIN_TEST_ROWS = 50, 10


class ConfigError(ValueError):
    """A composed config that would waste a run; the message says how to fix it."""


def check_objective(cfg: DictConfig) -> None:
    """Require validation metrics the task computes, each with a direction."""
    allowed = [f"val_{m}" for m in metric_names(cfg.dataset.task)] + list(COST_METRICS)
    metrics, directions = as_list(cfg.objective.metric), as_list(cfg.objective.direction)
    for metric in metrics:
        if metric not in allowed:
            raise ConfigError(
                f"objective.metric={metric!r} is not a validation metric of a "
                f"{cfg.dataset.task.value} dataset; use one of {allowed} "
                f"(the test split is scored once, by the final model, never optimised)"
            )
    bad = [d for d in directions if str(d) not in {d.value for d in Direction}]
    if bad or len(directions) != len(metrics):
        raise ConfigError(
            f"objective.direction={directions} must give minimize or maximize for each of "
            f"objective.metric={metrics}, e.g. objective.metric=[val_f1,fit_time_s] "
            f"objective.direction=[maximize,minimize]"
        )
    for metric, direction in zip(metrics, directions, strict=True):
        known = natural_direction(metric)
        if str(direction) != known:
            # The worst model would win and replace a better one at @staging.
            raise ConfigError(
                f"objective.direction={direction} contradicts objective.metric={metric}: "
                f"a {'lower' if known == Direction.minimize else 'higher'} {metric} is "
                f"better; use objective.direction={known}")


def check_split(cfg: DictConfig) -> None:
    """Require split fractions that leave rows in every partition."""
    test, val = cfg.split.test_size, cfg.split.val_size
    if not (0 < test < 1 and 0 < val < 1 and test + val < 1):
        raise ConfigError(
            f"split.test_size={test} and split.val_size={val} must each be in (0, 1) and "
            f"sum to less than 1, so that training rows remain"
        )


def check_search_space(cfg: DictConfig) -> None:
    """Require a non-empty search space whose keys exist in the config (sweeps only)."""
    choices = cfg.hydra.runtime.choices
    params = cfg.hydra.sweeper.get("params") or {}
    if not params:
        raise ConfigError(
            f"no search space for model={choices.get('model')} sweep={choices.get('sweep')}: "
            f"create conf/search_space/{choices.get('model')}/{choices.get('sweep')}.yaml "
            f"(or pick another sweep); otherwise every trial would be identical"
        )
    missing = [k for k in params if OmegaConf.select(cfg, str(k), default=_MISSING) is _MISSING]
    if missing:
        raise ConfigError(
            f"search space keys {missing} do not exist in the config; add them to "
            f"conf/model/{choices.get('model')}.yaml or fix the search space"
        )


_MISSING = object()


def check_ranges(cfg: DictConfig) -> None:
    """Refuse a range that runs backwards, in the search space or on the command line.

    Optuna would stop the sweep at its first trial with "low <= high must hold", after
    the parent run and the study were created.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep, RangeSweep

    params = cfg.hydra.sweeper.get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list(cfg.hydra.overrides.task)
    for override in OverridesParser.create().parse_overrides(lines):
        if not override.is_sweep_override():
            continue
        value = override.value()
        low: Any
        high: Any
        if isinstance(value, IntervalSweep):
            low, high = value.start, value.end
        elif isinstance(value, RangeSweep) and (value.step or 1) > 0:
            low, high = value.start, value.stop
        else:
            continue
        if low is not None and high is not None and low > high:
            raise ConfigError(
                f"{override.input_line}: the range runs backwards ({low:g} > {high:g}); write "
                f"the smaller bound first")


def sweep_candidates(cfg: DictConfig) -> list[tuple[str, str, Any]]:
    """``(override, key, value)`` for the ends of every swept range and each choice."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    params = cfg.hydra.sweeper.get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list(cfg.hydra.overrides.task)
    found: list[tuple[str, str, Any]] = []
    for override in OverridesParser.create().parse_overrides(lines):
        if not override.is_sweep_override() or override.input_line is None:
            continue
        value = override.value()
        values: list[Any]
        if isinstance(value, ChoiceSweep):
            values = list(value.list)
        elif isinstance(value, IntervalSweep):
            values = [value.start, value.end]
        elif isinstance(value, RangeSweep) and value.stop is not None:
            step = value.step or 1
            last = value.stop - step if isinstance(value.stop, int) and isinstance(step, int) \
                else float(value.stop) - float(step)
            values = [value.start, last]
        else:
            continue
        key = override.get_key_element().lstrip("+~")
        found += [(override.input_line, key, v) for v in values if v is not None]
    return found


def check_swept_values(cfg: DictConfig) -> None:
    """Give every value a sweep may try the checks a single run's value gets.

    Each choice and each end of a range is set on the schema's typed node (``choice(a,b)``
    for an integer is refused as composition would refuse ``model.max_depth=a``), and for
    model keys the estimator validates it (scikit-learn's own parameter constraints:
    ``n_estimators`` >= 1), so a value that would fail every trial fails before the first.
    """
    from omegaconf.errors import OmegaConfBaseException

    from tabflow.config import Task
    from tabflow.estimators import build_estimator

    task = Task(cfg.dataset.task)
    extra = list(cfg.get("estimators", {}).get("extra") or [])
    for line, key, value in sweep_candidates(cfg):
        top, _, rest = key.partition(".")
        if top not in cfg or top == "hydra" or not rest:
            continue
        node = cfg[top]
        schema = OmegaConf.get_type(node)
        plain = OmegaConf.to_container(node, resolve=True)
        try:
            trial: Any = OmegaConf.create(plain)
            if isinstance(schema, type) and hasattr(schema, "__dataclass_fields__"):
                trial = OmegaConf.structured(schema)
                OmegaConf.set_struct(trial, False)  # keys added with +model.<key> stay
                trial = OmegaConf.merge(trial, plain)
            OmegaConf.update(trial, rest, value, merge=False)
        except OmegaConfBaseException as e:
            raise ConfigError(f"{line}: {key}={value!r} can't be used: "
                              f"{str(e).splitlines()[0]}") from e
        if top != "model":
            continue
        try:
            estimator = build_estimator(trial, task, extra)
            validate = getattr(estimator, "_validate_params", None)
            if validate is not None:
                validate()
        except ValueError as e:  # scikit-learn's InvalidParameterError is a ValueError
            if f"'{rest}' parameter" not in str(e):
                continue  # another (fixed) value's fault: its trials report it as they run
            raise ConfigError(f"{line}: {key}={value!r} would fail every trial that tries it: "
                              f"{str(e).splitlines()[0]}") from e


def check_settings(cfg: DictConfig, sweeping: bool) -> None:
    """Refuse seeds, CV folds and timeouts no run could use, naming a valid value."""
    if not 0 <= int(cfg.seed) < 2**32:
        raise ConfigError(f"seed={cfg.seed}: a seed must be between 0 and 2**32 - 1 "
                          f"(NumPy's range), e.g. seed=42")
    folds = cfg.cv.folds
    if folds is not None and (folds < 0 or folds == 1):
        raise ConfigError(f"cv.folds={folds}: use cv.folds=0 (score on the validation split), "
                          f"k >= 2 (k-fold CV, e.g. cv.folds=5), or null (automatic)")
    timeout = cfg.hydra.sweeper.get("timeout") if sweeping else None
    if timeout is not None and float(timeout) <= 0:
        raise ConfigError(f"hydra.sweeper.timeout={timeout}: a timeout is a positive number "
                          f"of seconds (e.g. hydra.sweeper.timeout=600), or null for none")


def check_budget(cfg: DictConfig) -> None:
    """Require at least one trial."""
    n_trials = cfg.hydra.sweeper.get("n_trials")
    if n_trials is not None and n_trials < 1:
        raise ConfigError(f"hydra.sweeper.n_trials={n_trials}: a sweep needs at least one "
                          f"trial; set hydra.sweeper.n_trials=20 (or leave it to the sweep "
                          f"option: sweep=narrow|wide|families)")


def targets(cfg: DictConfig) -> list[str]:
    """The keys of every ``_target_`` in the job's config (Hydra's own node excluded)."""
    found: list[str] = []

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                child = f"{key}.{k}" if key else str(k)
                if k == "_target_":
                    found.append(child)
                else:
                    walk(v, child)

    walk({k: OmegaConf.to_container(cfg[k], resolve=False) if OmegaConf.is_config(cfg[k])
          else cfg[k] for k in cfg if k != "hydra"}, "")
    return found


def check_code(cfg: DictConfig, sweeping: bool) -> None:
    """Refuse any setting that names code no allow-list admits (docs/security.md).

    The estimator classes (composed and swept) and, for sweeps, the sampler, pruner and
    hooks; before any store, run or study exists.
    """
    from hydra_plugins.tabflow_sweeper import HookError, check_sweeper_settings
    from tabflow.estimators import EstimatorError, check_model

    for key in targets(cfg):
        raise ConfigError(f"{key}={OmegaConf.select(cfg, key)}: tabflow instantiates nothing "
                          f"from the job's config; name an estimator with model.classifier / "
                          f"model.regressor (docs/security.md)")
    try:
        check_model(cfg)
        if sweeping:
            check_sweeper_settings(cfg.hydra.sweeper)
    except (EstimatorError, HookError) as e:
        raise ConfigError(str(e)) from e


TABFLOW_LAUNCHER = "hydra_plugins.tabflow_launcher.tabflow_launcher.TabflowLauncher"


def check_parallelism(cfg: DictConfig) -> None:
    """Refuse fewer than one worker, or more workers than cores (tabflow's launcher).

    tabflow's launcher starts one warm process per worker: 999 of them on 2 cores start no
    trial for minutes and take gigabytes. Refused rather than capped: Hydra requires every
    job's launcher settings to equal the sweep's, so the command line must say the number.
    """
    import os

    cores = os.cpu_count() or 1
    launcher = cfg.hydra.get("launcher") or {}
    ours = launcher.get("_target_") == TABFLOW_LAUNCHER
    for node, name in ((launcher, "hydra.launcher.n_jobs"),
                       (cfg.hydra.get("sweeper") or {}, "hydra.sweeper.n_jobs")):
        value = node.get("n_jobs")
        if value is None or (not ours and name == "hydra.launcher.n_jobs"):
            continue  # joblib's -1 (all cores) is its own convention
        if int(value) < 1:
            raise ConfigError(f"{name}={value}: a sweep needs at least one worker; use "
                              f"{name}=1 (one at a time) up to {name}={cores}")
    if ours and int(launcher.get("n_jobs") or 1) > cores:
        raise ConfigError(f"hydra.launcher.n_jobs={launcher.get('n_jobs')} is more than this "
                          f"machine's {cores} cores: each worker is a process holding its own "
                          f"memory, and past the cores it only waits; use "
                          f"hydra.launcher.n_jobs={cores}")


# A warm worker's memory, measured (bench/wide.py, a 50-column sweep: ~600 MB with
# scikit-learn, MLflow and matplotlib loaded), plus room for the copies of the table a
# fit makes (preprocessing, folds, the estimator's own).
WORKER_MB, TABLE_COPIES = 600.0, 10


def available_mb() -> float | None:
    """The memory this machine can give new processes (Linux's MemAvailable), in MB."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def check_memory(cfg: DictConfig, table_mb: float) -> None:
    """Refuse more parallel workers than the machine's free memory can hold.

    Raises:
        ConfigError: Naming the estimate per worker, the memory free, and an ``n_jobs``
            that fits.
    """
    launcher = cfg.hydra.get("launcher") or {}
    n_jobs = int(launcher.get("n_jobs") or 1) if launcher.get("_target_") == \
        TABFLOW_LAUNCHER else 1
    free = available_mb()
    if n_jobs < 2 or free is None:
        return
    per_worker = WORKER_MB + TABLE_COPIES * table_mb
    if n_jobs * per_worker > free:
        fits = max(1, int(free // per_worker))
        raise ConfigError(
            f"hydra.launcher.n_jobs={n_jobs}: each worker needs about {per_worker:,.0f} MB "
            f"(a process with scikit-learn and MLflow, and room for {TABLE_COPIES} copies of "
            f"the {table_mb:,.0f} MB table), {n_jobs * per_worker:,.0f} MB in all, and "
            f"{free:,.0f} MB are free; use hydra.launcher.n_jobs={fits}")


def check_config(cfg: DictConfig, sweeping: bool) -> None:
    """Run every check; raise :class:`ConfigError` on the first problem."""
    check_code(cfg, sweeping)  # before any other: nothing a config names runs unchecked
    check_objective(cfg)
    check_split(cfg)
    check_settings(cfg, sweeping)
    if sweeping:
        check_budget(cfg)
        check_search_space(cfg)
        check_ranges(cfg)
        check_parallelism(cfg)
        check_swept_values(cfg)


def check_data(cfg: DictConfig, sweeping: bool = True) -> None:
    """Load, check and split the dataset once, before any job.

    Bad data then stops the command with a clear message before a trial starts, and the
    cleaned table and split are cached in data/ for the jobs to reuse.
    """
    # pandas and scikit-learn load here, not at start-up (--help stays fast).
    from tabflow.job import cv_folds, describe_scoring
    from tabflow.splits import load_and_split

    ds, splits = load_and_split(cfg)
    log.info("dataset %s: %d rows, %d numeric and %d categorical features, digest %s",
             ds.name, len(ds.y), len(ds.numeric), len(ds.categorical), ds.digest[:12])
    check_memory(cfg, float(ds.X.memory_usage(deep=True).sum()) / 2**20)
    val_rows = len(splits.y_val)
    folds = cv_folds(cfg.cv, ds.task, val_rows)
    if folds and folds >= 2:
        import pandas as pd

        pool = pd.concat([splits.y_train, splits.y_val])
        most = int(pool.value_counts().min()) if ds.task.value == "classification" \
            else len(pool)
        if folds > most:
            what = "the rarest class has" if ds.task.value == "classification" else "there are"
            raise ConfigError(f"cv.folds={folds}: {what} only {most} rows in train + "
                              f"validation, fewer than the folds; use at most "
                              f"cv.folds={max(2, most)}, or cv.folds=0 (the validation split)")
    if sweeping:  # a single run has no trials to score; its line says what it fits on
        log.info("%s", describe_scoring(folds, cfg.cv, val_rows))
    train_rows, test_rows = len(splits.y_train), len(splits.y_test)
    if train_rows < MIN_TRAIN_ROWS or test_rows < MIN_TEST_ROWS:
        log.warning("the split leaves %d training, %d validation and %d test rows: too few to "
                    "fit and compare models (scores of 1.0 on a handful of rows mean nothing); "
                    "use more data, or smaller split.test_size=%s / split.val_size=%s",
                    train_rows, val_rows, test_rows, cfg.split.test_size, cfg.split.val_size)


def _fail(kind: str, error: Exception) -> None:
    # Hydra turns exceptions raised in callbacks into warnings; SystemExit passes through.
    exit_cleanly(f"{kind} error: {error}", error, code=2)


def check_stores(cfg: DictConfig, sweeping: bool) -> None:
    """Refuse SQLite store files that are read-only, damaged or belong to something else."""
    from hydra_plugins.tabflow_sweeper.stores import check_sqlite_store

    if cfg.tracking.enabled:  # a sweep checks the file's integrity before it writes
        check_sqlite_store(str(cfg.tracking.uri), "experiments", "MLflow tracking store",
                           integrity=sweeping)
    if sweeping and cfg.hydra.sweeper.get("storage"):
        check_sqlite_store(str(cfg.hydra.sweeper.storage), "studies", "Optuna study storage",
                           integrity=True)


# What a sweep writes to disk, measured on the bundled sets: about 0.1 MB a trial (its job
# dir, its rows in both stores), plus room for the registered model, its report and the
# data caches. A disk that fills mid-sweep stops it (resumable); this says so up front.
BASE_MB, PER_TRIAL_MB = 50.0, 0.1


class DiskSpaceError(RuntimeError):
    """Too little free space for a sweep to write its job dirs, stores and model."""


def check_free_space(cfg: DictConfig) -> None:
    """Refuse a sweep the disk can't hold, naming the MB it needs and the MB that are free.

    Raises:
        DiskSpaceError: If a filesystem the sweep writes to (its job dirs, the project root
            with its SQLite stores) has less free space than the estimate.
    """
    import shutil

    n_trials = cfg.hydra.sweeper.get("n_trials") or 100
    needed = BASE_MB + PER_TRIAL_MB * int(n_trials)
    seen: set[int] = set()
    for place in (Path(str(cfg.hydra.sweep.dir)).absolute(), Path(str(cfg.paths.root))):
        existing = next(p for p in (place, *place.parents) if p.exists())
        device = existing.stat().st_dev
        if device in seen:
            continue
        seen.add(device)
        free = shutil.disk_usage(existing).free / 2**20
        if free < needed:
            raise DiskSpaceError(
                f"the sweep needs about {needed:.0f} MB free on {existing} (the job dirs and "
                f"store rows of {n_trials} trials, the registered model and its report); "
                f"{free:.0f} MB are free. Free some space, or point hydra.sweep.dir and the "
                f"stores (TABFLOW_ROOT) at another disk")


def _check_all(config: DictConfig, sweeping: bool) -> None:
    from hydra_plugins.tabflow_sweeper.stores import ForeignDatabaseError
    from tabflow.sources import DataError  # imported here: pandas loads only once a run starts

    try:
        check_config(config, sweeping=sweeping)
    except ConfigError as e:
        _fail("Config", e)
    try:
        check_stores(config, sweeping=sweeping)
    except ForeignDatabaseError as e:
        _fail("Store", e)
    if sweeping:
        try:
            check_free_space(config)
        except DiskSpaceError as e:
            _fail("Disk", e)
    try:
        check_data(config, sweeping)
    except DataError as e:
        _fail("Data", e)
    except ConfigError as e:
        _fail("Config", e)


class ConfigCheck(Callback):
    """Hydra callback that stops a run or sweep with a clear message on a bad config."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check a single run's config and data; hint at ``-m`` when a sweep was selected."""
        _check_all(config, sweeping=False)
        if config.hydra.runtime.choices.get("sweep") not in (None, "none"):
            log.warning("sweep=%s selected without -m: running one job with the default "
                        "hyperparameters; add -m to sweep", config.hydra.runtime.choices.sweep)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check a sweep's config and data before the sweeper or tracking starts."""
        _check_all(config, sweeping=is_optuna_sweep(config))
