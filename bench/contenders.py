"""What a user would run instead of the framework, on the very same workload.

    python bench/contenders.py raw    --out r.json dataset=breast_cancer model=rf sweep=wide
    python bench/contenders.py search --out s.json dataset=breast_cancer model=rf sweep=wide

Both compose the same Hydra config as ``src/train.py`` (so data, split, preprocessing,
estimator, search space, objective and sampler seed are identical), then:

* ``raw``: a plain Optuna ask/tell loop in this process, in-memory storage, no tracking;
  the practical limit for the framework.
* ``raw-mlflow``: the same loop as a user of the guide writes it: a parent MLflow run,
  and a nested run per trial with its params and validation metrics (SQLite store).
* ``search``: scikit-learn's ``RandomizedSearchCV`` with the same number of candidates and a
  ``PredefinedSplit`` (train rows fit, validation rows score), so it makes as many fits.

Each ends by refitting the best parameters on train + validation and scoring the test
split, as the framework's final model does, and writes a JSON summary to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

START = time.perf_counter()  # the imports below are part of what each contender costs
REPO = Path(__file__).resolve().parents[1]


def compose(overrides: list[str]) -> Any:
    """Compose conf/train.yaml as a sweep job would see it (with the Hydra node)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from tabflow.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), job_name="bench",
                               version_base=None):
        cfg = hydra_compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def distributions(cfg: Any) -> dict[str, Any]:
    """Optuna distributions of the sweep's search space, parsed as the sweeper parses them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override

    params = cfg.hydra.sweeper.params or {}
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return {o.key_or_group: create_optuna_distribution_from_override(o) for o in parsed}


def scorer(metric: str, task: str) -> Any:
    """The validation metric as ``f(y_true, y_pred)``; only the framework's defaults."""
    from sklearn import metrics

    name = metric.removeprefix("val_")
    known = {"accuracy": metrics.accuracy_score, "rmse": metrics.root_mean_squared_error,
             "mae": metrics.mean_absolute_error, "r2": metrics.r2_score}
    if name not in known:
        sys.exit(f"contenders.py knows the metrics {sorted(known)}, not {metric!r}")
    return known[name]


def run_raw(cfg: Any, prepared: Any) -> dict[str, Any]:
    """The ask/tell loop, as in Optuna's own examples."""
    import optuna

    ds, splits, pipeline = prepared
    score = scorer(cfg.objective.metric, ds.task.value)
    dists = distributions(cfg)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=cfg.objective.direction,
                                sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    fit_s = 0.0
    for _ in range(int(cfg.hydra.sweeper.n_trials)):
        trial = study.ask(dists)
        pipeline.set_params(**{k.replace(".", "__"): v for k, v in trial.params.items()})
        t0 = time.perf_counter()
        pipeline.fit(splits.X_train, splits.y_train)
        fit_s += time.perf_counter() - t0
        study.tell(trial, float(score(splits.y_val, pipeline.predict(splits.X_val))))
    pipeline.set_params(**{k.replace(".", "__"): v for k, v in study.best_params.items()})
    return {"best_val": study.best_value, "fit_s": fit_s, "trials": len(study.trials),
            **final_test(pipeline, splits, score)}


def guide_metrics(y: Any, pred: Any) -> dict[str, float]:
    """The validation metrics the guide logs per trial, computed as it computes them."""
    from sklearn import metrics

    return {"val_accuracy": metrics.accuracy_score(y, pred),
            "val_precision": metrics.precision_score(y, pred, average="weighted",
                                                     zero_division=0),
            "val_recall": metrics.recall_score(y, pred, average="weighted", zero_division=0),
            "val_f1": metrics.f1_score(y, pred, average="weighted", zero_division=0)}


def run_raw_mlflow(cfg: Any, prepared: Any) -> dict[str, Any]:
    """The ask/tell loop with one nested MLflow run per trial, as the guide logs them."""
    import mlflow
    import optuna

    ds, splits, pipeline = prepared
    score = scorer(cfg.objective.metric, ds.task.value)
    dists = distributions(cfg)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    mlflow.set_tracking_uri(f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    mlflow.set_experiment("bench")
    study = optuna.create_study(direction=cfg.objective.direction,
                                sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    fit_s = 0.0
    with mlflow.start_run(run_name="sweep"):
        for _ in range(int(cfg.hydra.sweeper.n_trials)):
            trial = study.ask(dists)
            pipeline.set_params(**{k.replace(".", "__"): v for k, v in trial.params.items()})
            t0 = time.perf_counter()
            pipeline.fit(splits.X_train, splits.y_train)
            fit = time.perf_counter() - t0
            fit_s += fit
            pred = pipeline.predict(splits.X_val)
            value = float(score(splits.y_val, pred))
            with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
                mlflow.log_params(trial.params)
                extra = guide_metrics(splits.y_val, pred) if ds.task.value == "classification" \
                    else {}
                mlflow.log_metrics({**extra, cfg.objective.metric: value, "fit_time_s": fit})
            study.tell(trial, value)
    pipeline.set_params(**{k.replace(".", "__"): v for k, v in study.best_params.items()})
    return {"best_val": study.best_value, "fit_s": fit_s, "trials": len(study.trials),
            **final_test(pipeline, splits, score)}


def run_search(cfg: Any, prepared: Any) -> dict[str, Any]:
    """RandomizedSearchCV over the same space with one predefined train/validation split."""
    import numpy as np
    import pandas as pd
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from scipy import stats
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import PredefinedSplit, RandomizedSearchCV

    ds, splits, pipeline = prepared
    space: dict[str, Any] = {}
    for key, d in distributions(cfg).items():
        name = key.replace(".", "__")
        if isinstance(d, CategoricalDistribution):
            space[name] = list(d.choices)
        elif isinstance(d, IntDistribution):
            space[name] = stats.randint(d.low, d.high + 1)
        elif isinstance(d, FloatDistribution):
            space[name] = (stats.loguniform(d.low, d.high) if d.log
                           else stats.uniform(d.low, d.high - d.low))
    maximize = str(cfg.objective.direction) == "maximize"
    score = scorer(cfg.objective.metric, ds.task.value)
    X = pd.concat([splits.X_train, splits.X_val])
    y = pd.concat([splits.y_train, splits.y_val])
    fold = np.r_[np.full(len(splits.y_train), -1), np.zeros(len(splits.y_val), dtype=int)]
    search = RandomizedSearchCV(pipeline, space, n_iter=int(cfg.hydra.sweeper.n_trials),
                                scoring=make_scorer(score, greater_is_better=maximize),
                                cv=PredefinedSplit(fold), refit=False, random_state=cfg.seed)
    search.fit(X, y)
    pipeline.set_params(**search.best_params_)
    best = float(search.best_score_) * (1 if maximize else -1)
    return {"best_val": best, "fit_s": float(np.sum(search.cv_results_["mean_fit_time"])),
            "trials": len(search.cv_results_["params"]),
            **final_test(pipeline, splits, score)}


def final_test(pipeline: Any, splits: Any, score: Any) -> dict[str, float]:
    """Refit on train + validation and score the test split, as the framework does."""
    import pandas as pd

    t0 = time.perf_counter()
    pipeline.fit(pd.concat([splits.X_train, splits.X_val]),
                 pd.concat([splits.y_train, splits.y_val]))
    refit = time.perf_counter() - t0
    return {"test": float(score(splits.y_test, pipeline.predict(splits.X_test))),
            "refit_s": refit}


CONTENDERS = {"raw": run_raw, "raw-mlflow": run_raw_mlflow, "search": run_search}


def main() -> None:
    """Run one contender and write its summary."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("contender", choices=list(CONTENDERS))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()

    sys.path.insert(0, str(REPO / "src"))
    from tabflow.job import prepare

    cfg = compose(args.overrides)
    prepared = prepare(cfg)
    result = CONTENDERS[args.contender](cfg, prepared)
    result["wall_in_process_s"] = time.perf_counter() - START
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
