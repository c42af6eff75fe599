"""The job output-dir contract: what a job writes and the tracking callback reads.

Jobs never talk to MLflow. They leave small files in their Hydra output dir; the
callback turns them into MLflow params, metrics and artifacts. Results therefore
survive a tracking outage, and any launcher (in-process, joblib, remote) works.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.json"
DATASET_FILE = "dataset.json"
CONFIG_FILE = "config.yaml"  # the job's resolved config, without the hydra node
MODEL_FILE = "model.joblib"  # single runs only: the fitted pipeline
TRACKING_ERROR_FILE = "tracking_error.txt"
MLFLOW_RUN_FILE = "mlflow_run_id.txt"  # the job's MLflow run, for the sweeper's records
ERROR_FILE = "error.txt"  # a failed job's exception and traceback
FIGURES_DIR = "figures"  # trial figures, when evaluation.trial_figures is on


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a JSON file, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON file written by :func:`write_json`; empty when the file is missing."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data
