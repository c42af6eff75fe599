"""The sweep's end: pick the best trial, refit it, score it on test, register, report.

Called by the tracking callback once the sweeper is done (``on_multirun_end``, launching
process). When several sweep processes share a stored study, the last one to finish
does this, once, under the study's ``~register`` lock. Every MLflow call goes through
:mod:`tabflow.tracking`.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tabflow.contract import (
    CONFIG_FILE,
    RESULTS_FILE,
    TAG_DIGEST,
    TAG_STUDY,
    is_optuna_sweep,
    primary_objective,
)
from tabflow.locks import LOCK_SUFFIX, LockBusyError, running_trials, storage_lock
from tabflow.stores import optuna_storage
from tabflow.sweep_identity import study_name
from tabflow.tracking.failures import fail
from tabflow.tracking.models import log_model
from tabflow.tracking.parent import close_parent
from tabflow.tracking.queries import Best, best_trial_run
from tabflow.tracking.records import flatten, log_dataset, log_run_data
from tabflow.tracking.registry import create_version, set_alias
from tabflow.tracking.store import Store


@dataclass
class SweepRun:
    """The sweep being finished: where it is tracked and what it recorded."""

    store: Store
    config: DictConfig
    experiment_id: str
    parent_run_id: str
    provenance: dict[str, str]

    @property
    def objective(self) -> tuple[str, str]:
        """The metric and direction that rank its trials."""
        return primary_objective(self.config.objective.metric, self.config.objective.direction)


def finish(sweep: SweepRun) -> None:
    """Register the sweep's best model and close its parent run, once per study.

    Other sweep processes may share the study: the last one to finish registers the
    best model and closes the parent.
    """
    sweeper = sweep.config.hydra.sweeper
    if not is_optuna_sweep(sweep.config) or not sweeper.storage:
        _finish_closing_parent(sweep)
        return
    storage, study = optuna_storage(str(sweeper.storage)), study_name(sweep.config)
    running = running_trials(storage, study)
    if running:
        print(f"{running} trial(s) of study {study} still run in other sweep processes; "
              f"the last one to finish registers the best model")
        return
    try:
        with storage_lock(storage, f"{study}{LOCK_SUFFIX}register", wait_s=0):
            _finish_closing_parent(sweep)
    except LockBusyError:
        print(f"Another sweep process of study {study} is registering the best model")


def _finish_closing_parent(sweep: SweepRun) -> None:
    try:
        _summarise_and_register(sweep)
    except BaseException as e:
        sweep.store.client.set_terminated(sweep.parent_run_id, "FAILED")
        fail(f"the sweep's results could not be tracked: {e}", e)
    close_parent(sweep.store, sweep.parent_run_id, None)


def _summarise_and_register(sweep: SweepRun) -> None:
    store, config, parent = sweep.store, sweep.config, sweep.parent_run_id
    metric, direction = sweep.objective
    previous = store.client.get_run(parent).data.tags
    best, counts = best_trial_run(store, sweep.experiment_id, parent, metric, direction)
    unchanged = previous.get("best.run_id") == best.run_id and "registry.version" in previous
    summary = {f"trials_{status.lower()}": n for status, n in counts.items()}
    log_run_data(store, parent, metrics={f"best_{metric}": best.value, **summary},
                 tags={"best.run_id": best.run_id, "best.trial": best.trial})
    results = Path(config.hydra.sweep.dir) / RESULTS_FILE
    if results.exists():
        store.client.log_artifact(parent, str(results))
    print(f"Best trial {best.trial}: {metric}={best.value:.4f} (run {best.run_id}); "
          f"trials: {counts}")
    if config.registry.enabled and unchanged:
        print(f"The best trial is unchanged: {config.registry.model_name} version "
              f"{previous['registry.version']} stays registered")
    elif config.registry.enabled:
        register_best(sweep, best)


def _best_config(best: Best) -> DictConfig:
    cfg = OmegaConf.load(Path(best.output_dir) / CONFIG_FILE)
    assert isinstance(cfg, DictConfig)
    return cfg


def register_best(sweep: SweepRun, best: Best) -> None:
    """Refit the best trial's config on train + validation, score it on test, register it."""
    from tabflow.job import refit_final  # scikit-learn, only when registering

    store, config, parent = sweep.store, sweep.config, sweep.parent_run_id
    final = refit_final(_best_config(best))
    log_run_data(store, parent, metrics=final.metrics,
                 tags={TAG_DIGEST: final.dataset["digest"]})
    log_dataset(store, parent, final.dataset, "training")
    store.client.log_artifact(parent, str(Path(best.output_dir) / CONFIG_FILE), "best")
    start = time.perf_counter()
    info = log_model(store, parent, final.pipeline, final.input_example)
    name, alias = config.registry.model_name, config.registry.alias
    tags = {
        "sweep.parent_run_id": parent, "best.run_id": best.run_id, "best.trial": best.trial,
        "objective.metric": sweep.objective[0], "objective.value": str(best.value),
        TAG_DIGEST: final.dataset["digest"], **{k: str(v) for k, v in final.metrics.items()},
    }
    if "mlflow.source.git.commit" in sweep.provenance:
        tags["git.commit"] = sweep.provenance["mlflow.source.git.commit"]
    version = create_version(store, name, info, parent, tags)
    set_alias(store, name, alias, version)
    seconds = time.perf_counter() - start
    log_run_data(store, parent, metrics={"registration_time_s": seconds},
                 tags={"registry.model": name, "registry.version": version,
                       "registry.alias": alias})
    test = "  ".join(f"{k}={v:.4f}" for k, v in sorted(final.metrics.items()))
    print(f"Registered {name} version {version} as @{alias} in {seconds:.2f}s: "
          f"models:/{name}@{alias}\n  {test}")
    if config.evaluation.figures:
        report(sweep, best, final, name, version)
    if config.registry.auto_promote:
        from tabflow.lifecycle import promote, render

        print(render(promote(store, name, margin=config.registry.promote_margin)))


def report(sweep: SweepRun, best: Best, final: Any, name: str, version: str) -> None:
    """Attach the final model's and the sweep's figures and report.html to the parent."""
    from tabflow import plots

    store, config, parent = sweep.store, sweep.config, sweep.parent_run_id
    metric = sweep.objective[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "figures"
        figures = plots.model_figures(final.pipeline, final.X_test, final.y_test,
                                      final.task, "test", config.seed)
        if is_optuna_sweep(config):
            figures.update(plots.sweep_figures(str(config.hydra.sweeper.storage),
                                               study_name(config), metric))
        paths = plots.save_figures(figures, folder)
        run = store.client.get_run(parent)
        summary = {
            "study": run.data.tags.get(TAG_STUDY, ""),
            "best trial": best.trial, f"best {metric} (validation)": best.value,
            "best run": best.run_id,
            "trials": ", ".join(f"{k.removeprefix('trials_')}: {int(v)}"
                                for k, v in run.data.metrics.items() if k.startswith("trials_")),
            "registered": f"models:/{name}/{version} (@{config.registry.alias})",
            "dataset": f"{final.dataset['name']} ({final.dataset['digest'][:12]}, "
                       f"{final.dataset['n_rows']} rows)",
        }
        params = {k: v for k, v in flatten(OmegaConf.to_container(_best_config(best))).items()
                  if k.startswith(("model.", "preprocessing."))}
        page = plots.write_report(Path(tmp) / "report.html",
                                  f"Sweep report: {config.tracking.experiment}", summary,
                                  params, final.metrics, paths)
        store.client.log_artifacts(parent, str(folder), "figures")
        store.client.log_artifact(parent, str(page))
