"""A sweep's parent run: created once, shared by every process of its study, resumed.

Sweep processes that share a stored study elect one parent run: the first to take the
study's ``~parent`` lock creates it, the others find it and attach to it. A re-run of a
study reopens its parent and closes the trial runs a killed sweep left RUNNING; a re-run
of a finished study that has nothing to run leaves its parent as it was.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Any, NamedTuple

from omegaconf import DictConfig

from hydra_plugins.tabflow_sweeper import study_is_complete
from hydra_plugins.tabflow_sweeper.locks import (
    LOCK_SUFFIX,
    LockBusyError,
    lock_timing,
    pid_alive,
    storage_lock,
)
from hydra_plugins.tabflow_sweeper.stores import optuna_storage
from tabflow.config import redact_override
from tabflow.contract import (
    CODE_ROOT,
    HOST,
    MLFLOW_RUN_FILE,
    PID,
    PID_STARTED,
    TAG_ERROR,
    TAG_OUTPUT_DIR,
    TAG_OVERRIDES,
    TAG_PARENT,
    TAG_PRIMARY_DIRECTION,
    TAG_PRIMARY_METRIC,
    TAG_ROLE,
    TAG_STORAGE,
    TAG_STUDY,
    TAG_TRIAL,
    Interrupted,
    as_list,
    primary_objective,
)
from tabflow.sweep_identity import model_label, sweep_label
from tabflow.tracking.queries import latest_sweep, pages
from tabflow.tracking.records import choice_tags, log_run_data, sanitize_key
from tabflow.tracking.store import Store, save_runs_view

log = logging.getLogger(__name__)


def parent_tags(config: DictConfig, provenance: dict[str, str], study: str | None
                ) -> dict[str, str]:
    """Return a sweep's parent tags: settings that may change between runs of one study.

    Args:
        config: The sweep's config.
        provenance: The code and environment tags (``provenance_tags``).
        study: The Optuna study's name (None: not an Optuna sweep).
    """
    sweeper = config.hydra.sweeper
    metric, direction = primary_objective(config.objective.metric, config.objective.direction)
    tags = {
        **provenance, **choice_tags(config.hydra.runtime.choices),
        "choice.model": model_label(config),  # "families" when the sweep searches the model
        TAG_ROLE: "sweep",
        TAG_OVERRIDES: " ".join(map(redact_override, config.hydra.overrides.task)),
        TAG_PRIMARY_METRIC: metric, TAG_PRIMARY_DIRECTION: direction,
        "hydra.sweep_dir": str(Path(config.hydra.sweep.dir).resolve()),
        **{f"sweep.{k}": str(sweeper.get(k)) for k in
           ("n_trials", "timeout", "max_failure_rate", "n_jobs") if k in sweeper},
    }
    if study is not None:
        tags[TAG_STUDY] = study
        tags[TAG_STORAGE] = str(sweeper.storage)
    return tags


class Parent(NamedTuple):
    """The sweep's parent run, as this process found it."""

    run_id: str
    before: str | None  # its status before this sweep (None: created now)
    reopened: bool  # False: a finished study re-run with nothing to run; left as it was


def open_parent(store: Store, experiment_id: str, config: DictConfig,
                provenance: dict[str, str], study: str | None, space: dict[str, str]
                ) -> Parent:
    """Create the sweep's parent run, or attach to its study's.

    Args:
        store: The tracking store.
        experiment_id: The sweep's experiment.
        config: The sweep's config.
        provenance: The code and environment tags (``provenance_tags``).
        study: The Optuna study's name, as the sweeper names it (None: not an Optuna sweep).
        space: What the sweep searches (the plugin's ``search_space``).
    """
    tags = parent_tags(config, provenance, study)
    save_runs_view(store, experiment_id, [str(m) for m in as_list(config.objective.metric)],
                   [sanitize_key(k) for k in space])
    storage = config.hydra.sweeper.get("storage") if TAG_STUDY in tags else None
    if not storage:
        return _attach_or_create(store, experiment_id, config, tags, space)
    # Sweep processes sharing the study elect one parent run: the first to take the lock
    # creates it, the others find it and attach to it.
    with storage_lock(optuna_storage(str(storage)), f"{tags[TAG_STUDY]}{LOCK_SUFFIX}parent",
                      **lock_timing(config.hydra.sweeper.get("heartbeat"))):
        return _attach_or_create(store, experiment_id, config, tags, space)


def _attach_or_create(store: Store, experiment_id: str, config: DictConfig,
                      tags: dict[str, str], space: dict[str, str]) -> Parent:
    if TAG_STUDY in tags:
        previous = latest_sweep(store, experiment_id, tags[TAG_STUDY], tags[TAG_STORAGE])
        if previous is not None:
            before = str(previous.info.status)
            stored = tags[TAG_STORAGE] not in ("None", "")  # an in-memory study runs anew
            if before == "FINISHED" and stored and study_is_complete(
                    tags[TAG_STORAGE], tags[TAG_STUDY], int(config.hydra.sweeper.n_trials)):
                # Its record (tags, end time, metrics) stays that of the sweep that ran.
                return Parent(str(previous.info.run_id), before, reopened=False)
            return Parent(_reattach(store, experiment_id, previous, tags), before, True)
    sweeper = config.hydra.sweeper
    run = store.client.create_run(
        experiment_id, tags=tags,
        run_name=f"sweep-{sweep_label(config)}-{time.strftime('%Y%m%d-%H%M%S')}",
    )
    parent_run_id = str(run.info.run_id)
    params = {f"search_space.{sanitize_key(k)}": v for k, v in space.items()}
    params["sweep.sampler"] = str(sweeper.get("sampler", {}).get("_target_", ""))
    params["sweep.direction"] = str(sweeper.get("direction"))
    params["objective.metric"] = str(config.objective.metric)
    log_run_data(store, parent_run_id, params=params)
    lock = CODE_ROOT / "requirements.lock"
    if lock.exists():  # the pinned dependencies, for reproducing the environment
        store.client.log_artifact(parent_run_id, str(lock), "environment")
    log.info("MLflow parent run %s (experiment %r, %s)", parent_run_id,
             config.tracking.experiment, config.tracking.uri)
    return Parent(parent_run_id, None, True)


def _reattach(store: Store, experiment_id: str, parent: Any, tags: dict[str, str]) -> str:
    """Continue a study's parent run: reopen it and close what a killed sweep left open."""
    parent_run_id = str(parent.info.run_id)
    resumes = int(parent.data.tags.get("tabflow.resumes", "0")) + 1
    store.client.update_run(parent_run_id, status="RUNNING")
    log_run_data(store, parent_run_id, tags={**tags, "tabflow.resumes": str(resumes)})
    running = pages(store, experiment_id, f"tags.`{TAG_PARENT}` = '{parent_run_id}' "
                                          f"and attributes.status = 'RUNNING'")
    # Runs of live processes belong to other sweep processes sharing the study; those
    # of dead ones died with their sweep (e.g. SIGKILL). Another host's can't be told.
    stale = [r for r in running if _process_gone(r.data.tags)]
    finished = reconcile_stale(store, stale, tags)
    log.info("Resuming MLflow parent run %s (resume %d%s%s)", parent_run_id, resumes,
             f"; {len(stale) - finished} interrupted trial run(s) closed as FAILED"
             if len(stale) > finished else "",
             f"; {finished} finished trial run(s) logged from their job dirs"
             if finished else "")
    return parent_run_id


def reconcile_stale(store: Store, stale: list[Any], tags: dict[str, str]) -> int:
    """Close the trial runs a killed sweep left RUNNING; return how many finished.

    A trial the study counts as COMPLETE finished its job: its run, cut short while the
    background writer logged it, is logged again from its job dir and closed FINISHED.
    The others were interrupted: FAILED, and the sweep retries their trials. So is a run
    whose job dir names another run as its own (the job was uploaded again after its
    store went away mid-job): one finished run per trial.
    """
    from tabflow.tracking.jobs import FINISHED, JobRecord, log_job_dir, read_outcome

    complete: set[str] = set()
    if stale and TAG_STUDY in tags and tags.get(TAG_STORAGE) not in (None, "None", ""):
        import optuna

        study = optuna.load_study(study_name=tags[TAG_STUDY],
                                  storage=optuna_storage(tags[TAG_STORAGE]))
        complete = {str(t.number) for t in study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))}
    finished = 0
    for run in stale:
        out = Path(run.data.tags.get(TAG_OUTPUT_DIR, ""))
        recorded = out / MLFLOW_RUN_FILE
        owner = recorded.read_text().strip() if recorded.is_file() else run.info.run_id
        if owner != run.info.run_id:
            # The job was tracked again in another run (`tabflow upload` after its store
            # went away mid-job): that run holds it; this one is a dead first attempt.
            log_run_data(store, run.info.run_id, tags={
                TAG_ERROR: f"interrupted: its job was tracked again in run {owner}"})
            store.client.set_terminated(run.info.run_id, "FAILED")
            continue
        if run.data.tags.get(TAG_TRIAL) in complete and out.is_dir() \
                and read_outcome(out)[0] == FINISHED:
            log_job_dir(store, run.info.run_id, JobRecord.read(out), FINISHED, None)
            finished += 1
            continue
        log_run_data(store, run.info.run_id,
                     tags={TAG_ERROR: "interrupted: the sweep was killed; the trial is retried"})
        store.client.set_terminated(run.info.run_id, "FAILED")
    return finished


def _process_gone(tags: dict[str, str]) -> bool:
    """Whether the process that opened a run (per its host and pid tags) has ended."""
    if tags.get(HOST) != socket.gethostname():
        return HOST not in tags  # untagged runs predate these tags: treat as ours
    return not pid_alive(int(tags.get(PID, "0")), tags.get(PID_STARTED))


def close_parent(store: Store, parent_run_id: str, error: BaseException | None,
                 before: str | None = None) -> None:
    """Close a parent run: FINISHED, or KILLED / FAILED with the error that ended the sweep.

    A re-run that could not start (another process held the study's lock) leaves a
    finished parent as it was: nothing of the sweep it records changed.
    """
    if error is None or (before == "FINISHED" and _lock_busy(error)):
        store.client.set_terminated(parent_run_id, "FINISHED")
        return
    status = "KILLED" if isinstance(error, (KeyboardInterrupt, Interrupted)) else "FAILED"
    log_run_data(store, parent_run_id, tags={TAG_ERROR: f"{type(error).__name__}: {error}"[:5000]})
    store.client.set_terminated(parent_run_id, status)


def _lock_busy(error: BaseException | None) -> bool:
    while error is not None:
        if isinstance(error, LockBusyError):
            return True
        error = error.__cause__
    return False
