"""``tabflow upload``: track a sweep's jobs that could not be tracked when they ran.

Jobs write everything to their output dirs (see :mod:`tabflow.contract`); when the
tracking store was down they also wrote ``tracking_error.txt`` and no run id. Each such
job becomes a child run of the sweep's parent, logged by the same job logger as live
runs (:mod:`tabflow.tracking.jobs`), so nothing tells the two apart but the
``tabflow.uploaded`` tag.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from tabflow.contract import CONFIG_FILE, MLFLOW_RUN_FILE, RESULTS_FILE, TRACKING_ERROR_FILE
from tabflow.tracking.jobs import JobRecord, log_job_dir, open_job_run, read_outcome
from tabflow.tracking.provenance import PROVENANCE_PREFIXES
from tabflow.tracking.queries import latest_sweep
from tabflow.tracking.store import Store, TrackingError


def pending_jobs(sweep_dir: Path) -> list[Path]:
    """Return a sweep's job dirs that have results but no MLflow run, in trial order."""
    return sorted((d for d in sweep_dir.iterdir() if (d / CONFIG_FILE).exists()
                   and not (d / MLFLOW_RUN_FILE).exists()), key=lambda d: d.name)


def upload_sweep(store: Store, sweep_dir: Path) -> list[tuple[Path, str]]:
    """Track the jobs of a sweep that could not be tracked when they ran.

    Each untracked job dir becomes a child run of the sweep's parent (found by the study
    named in ``optimization_results.yaml``).

    Returns:
        ``(job dir, new run id)`` for each uploaded job.

    Raises:
        TrackingError: If the sweep dir has no results file or its parent run is unknown.
    """
    results = sweep_dir / RESULTS_FILE
    if not results.exists():
        raise TrackingError(f"{results} does not exist: is {sweep_dir} a sweep's output dir "
                            f"(multirun/<date>/<time>)?")
    summary = OmegaConf.load(results)
    pending = pending_jobs(sweep_dir)
    if not pending:
        return []
    experiment_name = str(JobRecord.read(pending[0]).job.tracking.experiment)
    experiment = store.client.get_experiment_by_name(experiment_name)
    parent = None if experiment is None else latest_sweep(
        store, str(experiment.experiment_id), study=str(summary.study_name))
    if parent is None:
        raise TrackingError(f"no parent run of study {summary.study_name!r} in experiment "
                            f"{experiment_name!r} at {store.uri}")
    provenance = {k: v for k, v in parent.data.tags.items()
                  if k.startswith(PROVENANCE_PREFIXES)}
    uploaded = []
    for out in pending:
        record = JobRecord.read(out)
        run_id = open_job_run(store, parent.info.experiment_id, record, parent.info.run_id,
                              provenance, uploaded=True)
        try:
            log_job_dir(store, run_id, record, *read_outcome(out))
        except BaseException:
            # Half-logged: leave the job pending, so that the next upload tracks it whole.
            (out / MLFLOW_RUN_FILE).unlink(missing_ok=True)
            raise
        error_file = out / TRACKING_ERROR_FILE
        if error_file.exists():  # keep what happened, out of the way of the next check
            error_file.rename(out / f"{TRACKING_ERROR_FILE}.uploaded")
        uploaded.append((out, run_id))
    return uploaded
