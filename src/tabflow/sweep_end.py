"""The sweep's end: pick the best trial, refit it, score it on test, register, report.

Called by the tracking callback once the sweeper is done (``on_multirun_end``, launching
process). When several sweep processes share a stored study, the last one to finish
does this, once, under the study's ``~register`` lock. Every MLflow call goes through
:mod:`tabflow.tracking`.

It is a recoverable step: a process killed anywhere in it leaves what a re-run of the
same command finishes. The re-run breaks the dead process's locks at once, marks a
logged model it left PENDING as FAILED, adopts the logged model or the version it left
(a version of this sweep without its alias gets the alias), archives versions of this
sweep that lost their purpose, and closes the parent run FINISHED only once the version
holds its alias. ``TABFLOW_KILL_AT=<step>`` SIGKILLs the process at one of
:data:`KILL_POINTS`, for the tests that prove it.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hydra_plugins.tabflow_sweeper import best_trial
from hydra_plugins.tabflow_sweeper.locks import (
    LOCK_SUFFIX,
    LockBusyError,
    lock_timing,
    running_trials,
    storage_lock,
)
from hydra_plugins.tabflow_sweeper.stores import optuna_storage
from tabflow.contract import (
    ATTR_RUN_ID,
    CONFIG_FILE,
    RESULTS_FILE,
    TAG_DIGEST,
    exit_cleanly,
    interrupt_code,
    primary_objective,
)
from tabflow.tracking.failures import fail
from tabflow.tracking.models import (
    copy_model_to_run,
    fail_logged_model,
    log_model,
    logged_models_of,
    serving_line,
    serving_profile,
)
from tabflow.tracking.monitoring import log_profile
from tabflow.tracking.parent import close_parent
from tabflow.tracking.queries import Best, best_trial_run
from tabflow.tracking.records import flatten, log_dataset, log_run_data
from tabflow.tracking.registry import (
    TAG_BEST_RUN,
    TAG_SWEEP_PARENT,
    create_version,
    mirror_stage,
    registry_lock,
    set_alias,
    tag_version,
    versions_of_sweep,
)
from tabflow.tracking.retries import close_attempts, replaced_by_study
from tabflow.tracking.store import Store

KILL_AT = "TABFLOW_KILL_AT"  # fault injection for tests: SIGKILL at this step
KILL_POINTS = ("best_chosen", "refit", "model_logged", "version_created", "alias_set")
# ... and "report", reached only when the sweep writes its report (evaluation.figures).


def _step(name: str) -> None:
    """A named step of the sweep's end; the tests kill the process here for real."""
    if os.environ.get(KILL_AT) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class SweepRun:
    """The sweep being finished: where it is tracked and what it recorded."""

    store: Store
    config: DictConfig
    experiment_id: str
    parent_run_id: str
    provenance: dict[str, str]
    # The Optuna study's name, as the sweep's start computed it (None: not an Optuna sweep).
    study: str | None
    # False: a finished study re-run with nothing to run. Its parent keeps the record of
    # the sweep that ran (tags, metrics, end time); only a lost registration is mended.
    reopened: bool = True

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
    study = sweep.study
    if study is None or not sweeper.storage:
        _finish_closing_parent(sweep)
        return
    storage = optuna_storage(str(sweeper.storage))
    running = running_trials(storage, study)
    if running:
        print(f"{running} trial(s) of study {study} still run in other sweep processes; "
              f"the last one to finish registers the best model")
        return
    try:
        with storage_lock(storage, f"{study}{LOCK_SUFFIX}register", wait_s=0,
                          **lock_timing(sweeper.get("heartbeat"))):
            _finish_closing_parent(sweep)
    except LockBusyError:
        print(f"Another sweep process of study {study} is registering the best model")


def _stored_study(sweep: SweepRun) -> Any | None:
    """The sweep's Optuna study, or None for a sweep without a stored one."""
    import optuna

    sweeper = sweep.config.hydra.sweeper
    if sweep.study is None or not sweeper.storage:
        return None
    try:
        return optuna.load_study(study_name=sweep.study,
                                 storage=optuna_storage(str(sweeper.storage)))
    except KeyError:  # no study (a sweep that never started one)
        return None


def _close_replaced_attempts(sweep: SweepRun, study: Any) -> None:
    """Close the runs of attempts that retries replaced, before anything ranks the trials."""
    closed = close_attempts(sweep.store, sweep.experiment_id, sweep.parent_run_id,
                            replaced_by_study(study.get_trials(deepcopy=False)))
    if closed:
        print(f"{closed} run(s) of trials given up (their sweep process stopped beating) "
              f"closed as FAILED")


def _chosen_trial(study: Any) -> tuple[str, str | None] | None:
    """The trial the study holds best (the sweeper's one rule) and its MLflow run id."""
    trial = best_trial(study)
    return None if trial is None else (str(trial.number), trial.user_attrs.get(ATTR_RUN_ID))


def _finish_closing_parent(sweep: SweepRun) -> None:
    try:
        _summarise_and_register(sweep)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM while registering
        if sweep.reopened:
            close_parent(sweep.store, sweep.parent_run_id, e)
        exit_cleanly(f"Sweep interrupted ({e or 'Ctrl-C'}) while registering its best model. "
                     f"Re-run the same command to finish (the study is complete: it only "
                     f"registers)", e, code=interrupt_code(e), interrupted=True)
    except BaseException as e:
        if sweep.reopened:
            sweep.store.client.set_terminated(sweep.parent_run_id, "FAILED")
        fail(f"the sweep's results could not be tracked: {e}", e)
    if sweep.reopened:
        close_parent(sweep.store, sweep.parent_run_id, None)


def _summarise_and_register(sweep: SweepRun) -> None:
    store, config, parent = sweep.store, sweep.config, sweep.parent_run_id
    study = _stored_study(sweep)  # retries happen in stored studies only
    chosen = None
    if study is not None:
        _close_replaced_attempts(sweep, study)
        chosen = _chosen_trial(study)
    metric, direction = sweep.objective
    previous = store.client.get_run(parent).data.tags
    best, counts = best_trial_run(store, sweep.experiment_id, parent, metric, direction, chosen)
    # The same best trial, already registered under this name (a re-run, or a resume).
    same_best = previous.get("best.run_id") == best.run_id
    unchanged = same_best and "registry.version" in previous \
        and previous.get("registry.model") == config.registry.model_name
    lost = _registration_lost(sweep, previous["registry.version"]) \
        if unchanged and config.registry.enabled else None
    if sweep.reopened or not same_best or lost is not None:  # else its summary stands
        summary = {f"trials_{status.lower()}": n for status, n in counts.items()}
        log_run_data(store, parent, metrics={f"best_{metric}": best.value, **summary},
                     tags={"best.run_id": best.run_id, "best.trial": best.trial})
        results = Path(config.hydra.sweep.dir) / RESULTS_FILE
        if results.exists():
            store.client.log_artifact(parent, str(results))
    print(f"Best trial {best.trial}: {metric}={best.value:.4f} (run {best.run_id}); "
          f"trials: {counts}", flush=True)
    if best.tuned:
        print(f"  with {best.tuned}", flush=True)
    _step("best_chosen")
    if not config.registry.enabled:
        return
    if unchanged and lost is None:
        print(f"The best trial is unchanged: {config.registry.model_name} version "
              f"{previous['registry.version']} stays registered at @{config.registry.alias}")
        if config.evaluation.figures and not _has_report(sweep):
            _report_again(sweep, best, previous["registry.version"])
    else:
        if lost:
            print(f"The best trial is unchanged, but {config.registry.model_name} version "
                  f"{previous['registry.version']} {lost}: registering it again", flush=True)
        # A version taken over is still whole: point the alias back at it. Lost files: anew.
        register_best(sweep, best, adopt=lost is None or lost.startswith("no longer"))


def _has_report(sweep: SweepRun) -> bool:
    """Whether the parent run holds its report (a run killed while writing it has none)."""
    return any(a.path == "report.html" for a in
               sweep.store.client.list_artifacts(sweep.parent_run_id))


def _report_again(sweep: SweepRun, best: Best, version: str) -> None:
    """Write the report a registered sweep is missing (killed while writing it)."""
    from tabflow.job import refit_final

    print("Writing the sweep report it is missing (figures of the final model and the "
          "search, report.html) ...", flush=True)
    best_cfg = _best_config(best)
    report(sweep, best, best_cfg, refit_final(best_cfg), sweep.config.registry.model_name,
           version)


def _registration_lost(sweep: SweepRun, version: str) -> str | None:
    """What happened to the version this sweep registered, or None if it still holds its alias.

    A re-run must not say "stays registered" of a version that another sweep took the
    alias from, or whose model files were deleted.
    """
    from tabflow.tracking.models import model_files_exist
    from tabflow.tracking.registry import version_by_alias

    name, alias = sweep.config.registry.model_name, sweep.config.registry.alias
    held = version_by_alias(sweep.store, name, alias)
    if held is None or str(held.version) != str(version):
        now = f"version {held.version}" if held is not None else "no version"
        return f"no longer holds @{alias} ({now} does)"
    if not model_files_exist(sweep.store, name, str(version)):
        return "can't be read (its model files were moved or deleted)"
    return None


def _best_config(best: Best) -> DictConfig:
    cfg = OmegaConf.load(Path(best.output_dir) / CONFIG_FILE)
    assert isinstance(cfg, DictConfig)
    return cfg


def register_best(sweep: SweepRun, best: Best, adopt: bool = True) -> None:
    """Refit the best trial's config on train + validation, score it on test, register it.

    Resumable: what an interrupted run of the same sweep left (a logged model, a version
    without its alias) is adopted rather than made again, unless ``adopt`` is False (its
    files were lost: a new model and version are made).
    """
    from tabflow.job import main_metrics, refit_final  # scikit-learn, only when registering

    store, config, parent = sweep.store, sweep.config, sweep.parent_run_id
    name, alias = config.registry.model_name, config.registry.alias
    left_model = _models_left_behind(sweep, best) if adopt else None
    best_cfg = _best_config(best)
    final = refit_final(best_cfg)
    log_run_data(store, parent, metrics=final.metrics,
                 tags={TAG_DIGEST: final.dataset["digest"]})
    log_dataset(store, parent, final.dataset, "training")
    store.client.log_artifact(parent, str(Path(best.output_dir) / CONFIG_FILE), "best")
    _step("refit")
    start = time.perf_counter()
    info = left_model or log_model(
        store, parent, final.pipeline, final.input_example, tags={TAG_BEST_RUN: best.run_id})
    if left_model is None:  # the guide's runs:/<best run>/model resolves too
        copy_model_to_run(store, info.model_uri, sweep.experiment_id, best.run_id,
                          {TAG_BEST_RUN: best.run_id, "tabflow.copy_of": str(info.model_id)})
    _step("model_logged")
    tags = {
        TAG_SWEEP_PARENT: parent, TAG_BEST_RUN: best.run_id, "best.trial": best.trial,
        "objective.metric": sweep.objective[0], "objective.value": str(best.value),
        TAG_DIGEST: final.dataset["digest"], **{k: str(v) for k, v in final.metrics.items()},
    }
    if "mlflow.source.git.commit" in sweep.provenance:
        tags["git.commit"] = sweep.provenance["mlflow.source.git.commit"]
    with registry_lock(store, name):
        version = _adopted_version(sweep, best, name) if adopt else None
        if version is None:
            version = create_version(store, name, info, parent, tags)
            _step("version_created")
        set_alias(store, name, alias, version)
        _step("alias_set")
        _archive_left_behind(sweep, name, keep=version)
    profile_s = _log_profile(sweep, best_cfg, name, version)
    serving = serving_profile(store, f"models:/{name}/{version}", final.X_test)
    tag_version(store, name, version, serving)
    seconds = time.perf_counter() - start
    log_run_data(store, parent, metrics={"registration_time_s": seconds,
                                         "profile_time_s": profile_s},
                 tags={"registry.model": name, "registry.version": version,
                       "registry.alias": alias})
    print(f"Registered {name} version {version} as @{alias} in {seconds:.2f}s: "
          f"models:/{name}@{alias}\n  test:  {main_metrics(final.metrics, 'test')}  "
          f"(refit {final.metrics['refit_time_s']:.2f} s; every test metric is on the parent "
          f"run)\n  serving: {serving_line(serving)}", flush=True)
    if config.evaluation.figures:
        print("Writing the sweep report (figures of the final model and the search, "
              "report.html) ...", flush=True)
        report(sweep, best, best_cfg, final, name, version)
    if config.registry.auto_promote:
        from tabflow.lifecycle import promote, render

        budgets = OmegaConf.to_container(config.registry.budgets)
        assert isinstance(budgets, dict)
        print(render(promote(store, name, margin=config.registry.promote_margin,
                             budgets={str(k): v for k, v in budgets.items()})))


def _log_profile(sweep: SweepRun, best_cfg: DictConfig, name: str, version: str) -> float:
    """Log the version's training profile (what ``tabflow monitor`` compares new data with).

    Returns:
        The seconds it took.
    """
    from tabflow.monitoring.profile import profile_of

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = profile_of(best_cfg).save(Path(tmp) / "profile")
        log_profile(sweep.store, sweep.parent_run_id, folder, name, version)
    return time.perf_counter() - start


def _models_left_behind(sweep: SweepRun, best: Best) -> Any:
    """Deal with the models an interrupted registration of this sweep logged.

    Models left PENDING (never finished) are marked FAILED; a finished model of this best
    trial is returned, to be registered instead of logging another.
    """
    models = logged_models_of(sweep.store, sweep.experiment_id, sweep.parent_run_id)
    pending = [m.model_id for m in models if str(m.status) == "PENDING"]
    for model_id in pending:
        fail_logged_model(sweep.store, model_id)
    if pending:
        print(f"Marked {len(pending)} logged model(s) left unfinished by an interrupted "
              f"registration as FAILED: {', '.join(pending)}", flush=True)
    ready = [m for m in models
             if str(m.status) == "READY" and m.tags.get(TAG_BEST_RUN) == best.run_id]
    if not ready:
        return None
    print(f"Adopting logged model {ready[-1].model_id}, left by an interrupted registration",
          flush=True)
    return SimpleNamespace(model_uri=ready[-1].model_uri, model_id=ready[-1].model_id)


def _adopted_version(sweep: SweepRun, best: Best, name: str) -> str | None:
    """The version an interrupted registration created for this best trial, if any."""
    mine = [v for v in versions_of_sweep(sweep.store, name, sweep.parent_run_id)
            if v.tags.get(TAG_BEST_RUN) == best.run_id]
    if not mine:
        return None
    version = str(mine[-1].version)
    if not mine[-1].aliases:
        print(f"Adopting {name} version {version}, registered by an interrupted run of this "
              f"sweep", flush=True)
    return version


def _archive_left_behind(sweep: SweepRun, name: str, keep: str) -> None:
    """Archive this sweep's other versions that hold no alias (and say which)."""
    stale = [str(v.version) for v in versions_of_sweep(sweep.store, name, sweep.parent_run_id)
             if str(v.version) != keep and not v.aliases and v.current_stage != "Archived"]
    for version in stale:
        mirror_stage(sweep.store, name, version, "Archived")
        tag_version(sweep.store, name, version,
                    {"lifecycle": "archived", "replaced_by": keep})
    if stale:
        print(f"Archived {name} version(s) {', '.join(stale)} of this sweep, left without an "
              f"alias (replaced by version {keep})", flush=True)


def report(sweep: SweepRun, best: Best, best_cfg: DictConfig, final: Any, name: str,
           version: str) -> None:
    """Attach the final model's and the sweep's figures and report.html to the parent."""
    from tabflow import plots

    store, config, parent = sweep.store, sweep.config, sweep.parent_run_id
    metric = sweep.objective[0]
    _step("report")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "figures"
        figures = plots.model_figures(final.pipeline, final.X_test, final.y_test,
                                      final.task, "test", config.seed)
        if sweep.study is not None:
            figures.update(plots.sweep_figures(str(config.hydra.sweeper.storage),
                                               sweep.study, metric))
        paths = plots.save_figures(figures, folder)
        run = store.client.get_run(parent)
        summary = {
            "study": sweep.study or "",
            "best trial": best.trial, f"best {metric} (validation)": best.value,
            "best run": best.run_id,
            "trials": ", ".join(f"{k.removeprefix('trials_')}: {int(v)}"
                                for k, v in run.data.metrics.items() if k.startswith("trials_")),
            "registered": f"models:/{name}/{version} (@{config.registry.alias})",
            "dataset": f"{final.dataset['name']} ({final.dataset['digest'][:12]}, "
                       f"{final.dataset['n_rows']} rows)",
        }
        from tabflow.estimators import RESERVED_MODEL_KEYS, role

        # The model's settings, naming only the class this task uses (not its twin).
        unused = {f"model.{k}" for k in RESERVED_MODEL_KEYS - {"name", role(final.task)}}
        params = {k: v for k, v in flatten(OmegaConf.to_container(best_cfg)).items()
                  if k.startswith(("model.", "preprocessing.")) and k not in unused}
        page = plots.write_report(Path(tmp) / "report.html",
                                  f"Sweep report: {config.tracking.experiment}", summary,
                                  params, final.metrics, paths)
        store.client.log_artifacts(parent, str(folder), "figures")
        store.client.log_artifact(parent, str(page))
