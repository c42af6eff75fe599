"""MLflow calls of monitoring: a version's training profile, monitoring runs, their tags."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from tabflow.tracking.records import log_dataset, log_run_data
from tabflow.tracking.registry import tag_version
from tabflow.tracking.store import Store, ensure_experiment

TAG_PROFILE = "monitoring.profile"  # on a version: runs:/<run>/profile, its training profile
TAG_LAST = "monitoring.last"  # on a version: the last check's verdict, date and run (JSON)
TAG_VERDICT, TAG_AT = "monitoring.verdict", "monitoring.at"
PROFILE_DIR = "profile"


def log_profile(store: Store, run_id: str, folder: Path, name: str, version: str) -> str:
    """Log a profile folder as the run's ``profile/`` artifacts and point the version at it."""
    store.client.log_artifacts(run_id, str(folder), PROFILE_DIR)
    uri = f"runs:/{run_id}/{PROFILE_DIR}"
    tag_version(store, name, version, {TAG_PROFILE: uri})
    return uri


def download_profile(store: Store, uri: str, dst: Path) -> Path:
    """Download a version's profile folder (``runs:/<run>/profile``) into ``dst``."""
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst),
                                                    tracking_uri=store.uri))


def registered_models(store: Store) -> list[str]:
    """The names of the registered models, for messages that list them."""
    return sorted(m.name for m in store.client.search_registered_models()
                  if not m.name.endswith("~lock"))


def record_check(store: Store, *, experiment: str, root: Path, run_name: str,
                 tags: dict[str, str], params: dict[str, str], metrics: dict[str, float],
                 files: dict[str, str], dataset: dict[str, Any] | None) -> str:
    """Track one check (monitoring, or a promotion's comparison) as a finished run; its id.

    Args:
        store: The tracking store.
        experiment: The monitoring experiment (created if needed).
        root: The project root (anchors a SQLite store's artifacts).
        run_name: The run's name.
        tags: Tags naming the model, version, alias and the verdict.
        params: The thresholds the check used.
        metrics: Per-feature drift statistics, the drifted share, performance.
        files: Artifacts by file name (the HTML report, the full result as JSON).
        dataset: The batch's lineage record, logged as the run's input (None: none).
    """
    experiment_id = ensure_experiment(store, experiment, root)
    run = store.client.create_run(experiment_id, run_name=run_name, tags=tags)
    run_id = str(run.info.run_id)
    try:
        log_run_data(store, run_id, params=params, metrics=metrics)
        if dataset is not None:
            log_dataset(store, run_id, dataset, "monitoring")
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in files.items():
                (Path(tmp) / name).write_text(text)
            store.client.log_artifacts(run_id, tmp)
    except BaseException as e:
        store.client.set_terminated(run_id, "KILLED" if isinstance(e, KeyboardInterrupt)
                                    else "FAILED")
        raise
    store.client.set_terminated(run_id, "FINISHED")
    return run_id


def tag_verdict(store: Store, name: str, version: str, verdict: str, run_id: str,
                summary: dict[str, Any]) -> None:
    """Record a check's verdict on the version it checked."""
    at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    tag_version(store, name, version, {
        TAG_VERDICT: verdict, TAG_AT: at,
        TAG_LAST: json.dumps({"verdict": verdict, "at": at, "run_id": run_id, **summary}),
    })
