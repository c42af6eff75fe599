"""What a trial's job returned, read from its return value or its output dir."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import Trial

from hydra_plugins.tabflow_sweeper._study import set_user_attrs
from hydra_plugins.tabflow_sweeper.contract import (
    ATTR_RUN_ID,
    ERROR_FILE,
    METRICS_FILE,
    MLFLOW_RUN_FILE,
    as_list,
    read_json,
)


def record_dir(trial: Trial, out: Path) -> dict[str, Any]:
    """Copy a job dir's finite metrics and MLflow run id onto its trial; return the metrics."""
    metrics = read_json(out / METRICS_FILE)
    attrs: dict[str, Any] = {name: value for name, value in metrics.items()
             if isinstance(value, (int, float)) and math.isfinite(value)}
    run_file = out / MLFLOW_RUN_FILE
    if run_file.exists():
        attrs[ATTR_RUN_ID] = run_file.read_text().strip()
    set_user_attrs(trial, attrs)
    return metrics


def record_outputs(trial: Trial, ret: JobReturn) -> None:
    """Copy the job's metrics and MLflow run id onto the trial as user attributes."""
    if ret.hydra_cfg is not None:
        record_dir(trial, Path(str(ret.hydra_cfg.hydra.runtime.output_dir)))


def finished_values(trial: Trial, out: Path, metric_names: list[str], n_directions: int
                    ) -> list[float] | None:
    """The objective of a trial whose job finished (per its output dir), else None.

    A batch whose launcher failed (a killed joblib worker) may hold trials that
    completed; their results are on disk and are kept rather than run again.
    """
    metrics = read_json(out / METRICS_FILE)
    if not metrics or (out / ERROR_FILE).exists():
        return None
    values = [metrics.get(str(n)) for n in metric_names]
    if len(values) != n_directions or not all(
            isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return None
    record_dir(trial, out)
    return [float(v) for v in values if v is not None]


def returned_values(ret: JobReturn, n_directions: int) -> list[float]:
    """Return a job's objective values; raise its error, or one for non-finite values."""
    if ret.status == JobStatus.FAILED:
        # The job's own exception. (Hydra's return_value getter raises it too, but also
        # logs an "Error executing job" line per trial; the progress line says it.)
        raise cast(BaseException, ret._return_value)
    result = ret.return_value
    values = [float(v) for v in as_list(result)]
    if len(values) != n_directions:
        raise ValueError(f"the job returned {len(values)} values for {n_directions} "
                         f"objectives")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(f"the objective is {bad[0]}; a trial must return finite values")
    return values
