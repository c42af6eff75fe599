"""The MLflow callback's hooks, driven in-process against a real SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from mlflow import MlflowClient
from omegaconf import DictConfig, open_dict, read_write

from tabflow import contract
from tabflow.callback import MlflowCallback


def with_output_dir(cfg: DictConfig, sweep_dir: Path, job: int) -> DictConfig:
    cfg = cfg.copy()
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.sweep.dir = str(sweep_dir)
        cfg.hydra.runtime.output_dir = str(sweep_dir / str(job))
        cfg.hydra.job.num = job
        cfg.hydra.overrides.task = ["sweep=narrow"]
    with open_dict(cfg):
        cfg.optuna_trial = job
    return cfg


@pytest.fixture(params=[False, True], ids=["logged-at-once", "logged-in-background"])
def sweep(request, compose_cfg, project_root) -> tuple[DictConfig, MlflowCallback]:
    """A sweep's parent run opened by the callback, and the config of its job 0."""
    cfg = with_output_dir(compose_cfg("sweep=narrow", f"tracking.async_logging={request.param}"),
                          project_root / "multirun", 0)
    callback = MlflowCallback()
    callback.on_multirun_start(cfg)
    return cfg, callback


def start_job(sweep: tuple[DictConfig, MlflowCallback]) -> str:
    cfg, callback = sweep
    callback.on_job_start(cfg, task_function=None)
    assert callback._job_run_id is not None
    return callback._job_run_id


def test_a_trial_that_cannot_be_logged_fails_the_sweep_loudly(sweep):
    cfg, callback = sweep
    run_id = start_job(sweep)
    out = Path(cfg.hydra.runtime.output_dir)
    contract.write_json(out / contract.METRICS_FILE, {"val_accuracy": 0.9})
    client = MlflowClient(cfg.tracking.uri)
    client.delete_run(run_id)  # a real fault: someone deletes the run mid-trial
    callback.on_job_end(cfg, JobReturn(status=JobStatus.COMPLETED, _return_value=0.9))
    callback.flush()  # the background writer logs the trial; the sweep's end waits for it

    error_file = out / contract.TRACKING_ERROR_FILE
    assert "logging the job to MLflow failed" in error_file.read_text()
    assert (out / contract.METRICS_FILE).exists()  # the result itself is kept
    with pytest.raises(SystemExit) as exit_info:
        callback.on_multirun_end(cfg)
    assert exit_info.value.code == 1
    assert client.get_run(callback.parent_run_id).info.status == "FAILED"


def test_a_failed_job_is_tracked_as_failed_with_its_error(sweep):
    cfg, callback = sweep
    run_id = start_job(sweep)
    callback.on_job_end(cfg, JobReturn(status=JobStatus.FAILED,
                                       _return_value=ValueError("boom: bad column")))
    callback.flush()
    run = MlflowClient(cfg.tracking.uri).get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "ValueError: boom: bad column"
    assert run.data.tags["mlflow.parentRunId"] == callback.parent_run_id


def test_ctrl_c_while_a_trial_is_logged_lands_after_its_record(sweep, monkeypatch):
    """A real SIGINT arriving mid-record: the run is closed whole, then the interrupt comes."""
    import os
    import signal

    from tabflow.tracking import jobs

    cfg, callback = sweep
    if cfg.tracking.async_logging:
        pytest.skip("a background writer records off the main thread, where no signal lands")
    run_id = start_job(sweep)
    out = Path(cfg.hydra.runtime.output_dir)
    contract.write_json(out / contract.METRICS_FILE, {"val_accuracy": 0.9})
    real = jobs.log_run_data

    def ctrl_c_then_log(*args, **kwargs):  # the signal comes while the record is written
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(jobs, "log_run_data", ctrl_c_then_log)
    with pytest.raises(KeyboardInterrupt):
        callback.on_job_end(cfg, JobReturn(status=JobStatus.COMPLETED, _return_value=0.9))
    run = MlflowClient(cfg.tracking.uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["val_accuracy"] == 0.9


def test_an_interrupted_sweep_leaves_the_parent_killed(sweep):
    cfg, callback = sweep
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        callback.on_multirun_end(cfg)  # Hydra calls it in a `finally`
    parent = MlflowClient(cfg.tracking.uri).get_run(callback.parent_run_id)
    assert parent.info.status == "KILLED"


def test_a_run_left_active_by_an_earlier_job_is_closed_not_reused(sweep):
    import mlflow

    cfg, callback = sweep
    leaked = mlflow.start_run(run_name="left-open").info.run_id  # job code forgot end_run
    run_id = start_job(sweep)
    assert mlflow.active_run() is None
    assert run_id != leaked
    callback.on_job_end(cfg, JobReturn(status=JobStatus.COMPLETED, _return_value=0.9))
    callback.flush()
    client = MlflowClient(cfg.tracking.uri)
    stale = client.get_run(leaked)
    assert stale.info.status == "FAILED"
    assert "left active by an earlier job" in stale.data.tags["error"]
    assert client.get_run(run_id).data.tags["mlflow.parentRunId"] == callback.parent_run_id


def test_starting_a_sweep_starts_no_background_imports(compose_cfg, project_root):
    """Imports in a second thread, beside a job's own, can fail a trial (issue 16)."""
    import threading

    cfg = with_output_dir(compose_cfg("sweep=narrow"), project_root / "multirun", 0)
    before = set(threading.enumerate())
    MlflowCallback().on_multirun_start(cfg)
    started = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not [t for t in started if "warm" in repr(getattr(t, "_target", ""))], started
    assert all(t.daemon for t in started)  # nothing of ours: MLflow's own helpers at most


def test_trials_are_logged_in_the_background_and_flushed_before_the_sweeps_end(sweep):
    """The launching process hands a trial's logging to a writer; the end waits for it."""
    cfg, callback = sweep
    run_id = start_job(sweep)
    out = Path(cfg.hydra.runtime.output_dir)
    contract.write_json(out / contract.METRICS_FILE, {"val_accuracy": 0.9})
    callback.on_job_end(cfg, JobReturn(status=JobStatus.COMPLETED, _return_value=0.9))
    # Handed to the writer (tracking.async_logging=true), not logged on the trial's path.
    assert (callback._writer is not None) == cfg.tracking.async_logging
    with pytest.raises(SystemExit):  # this sweep has no study: its end fails, after the flush
        callback.on_multirun_end(cfg)
    run = MlflowClient(cfg.tracking.uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["val_accuracy"] == 0.9


def test_a_worker_process_logs_its_trial_before_the_job_returns(sweep):
    cfg, callback = sweep
    callback.launcher_pid = -1  # as in a joblib or remote worker: not the launching process
    run_id = start_job(sweep)
    callback.on_job_end(cfg, JobReturn(status=JobStatus.COMPLETED, _return_value=0.9))
    assert callback._writer is None
    assert MlflowClient(cfg.tracking.uri).get_run(run_id).info.status == "FINISHED"
