"""One job output dir becomes one MLflow run: the only job logger, live and after an outage.

The Hydra callback logs a job as it ends (:func:`log_job_dir`); ``tabflow upload`` logs
the jobs of a sweep whose tracking store was down, from their output dirs alone
(:func:`JobRecord.read`). Both go through the same functions, so a run logged either way
holds the same params, metrics, tags and artifacts.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hydra_plugins.tabflow_sweeper.locks import this_process
from tabflow.config import loggable_config, redact_override
from tabflow.contract import (
    CONFIG_FILE,
    DATASET_FILE,
    ERROR_FILE,
    FIGURES_DIR,
    HOST,
    HYDRA_DIR,
    INTERMEDIATE_FILE,
    METRICS_FILE,
    MLFLOW_RUN_FILE,
    MODEL_FILE,
    OVERRIDES_ARTIFACT,
    PID,
    PID_STARTED,
    PROCESS_FILE,
    TAG_DIGEST,
    TAG_ERROR,
    TAG_JOB_NUM,
    TAG_NOTE,
    TAG_OUTPUT_DIR,
    TAG_OVERRIDES,
    TAG_PARENT,
    TAG_PRUNED_AT,
    TAG_RETRY_OF,
    TAG_ROLE,
    TAG_TRIAL,
    TAG_TUNED,
    TAG_UPLOADED,
    TRIAL_KEY,
    read_json,
    write_json,
)
from tabflow.tracking.records import choice_tags, flatten, log_dataset, log_run_data
from tabflow.tracking.retries import link_retry, replaced_attempt
from tabflow.tracking.store import Store

# Run states a job's outcome maps to. KILLED: interrupted, not wrong (a resume retries it).
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"


@dataclass
class JobRecord:
    """What the logger needs of a job: its output dir, its config and Hydra's node.

    Attributes:
        out: The job's output dir.
        job: The job's config (the composed one live; ``config.yaml`` after the fact).
        hydra: Hydra's node for the job (choices, overrides, job number).
    """

    out: Path
    job: DictConfig
    hydra: DictConfig

    @classmethod
    def live(cls, config: DictConfig) -> JobRecord:
        """The record of the job running in this process (its composed config)."""
        return cls(Path(config.hydra.runtime.output_dir), config, config.hydra)

    @classmethod
    def read(cls, out: Path) -> JobRecord:
        """The record of a finished job, from its output dir (``config.yaml``, ``.hydra/``)."""
        job = OmegaConf.load(out / CONFIG_FILE)
        hydra = OmegaConf.load(out / HYDRA_DIR / "hydra.yaml").hydra
        assert isinstance(job, DictConfig) and isinstance(hydra, DictConfig)
        return cls(out, job, hydra)

    def params(self) -> dict[str, Any]:
        """The run's params: the job's ``config.yaml`` as written, else its config."""
        if (self.out / CONFIG_FILE).exists():  # the job wrote it: resolved and redacted
            import yaml

            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster
            return dict(yaml.load((self.out / CONFIG_FILE).read_text(), Loader=loader) or {})
        return loggable_config(self.job)

    @property
    def trial(self) -> Any:
        """The Optuna trial number, or None outside an Optuna sweep."""
        return self.job.get(TRIAL_KEY)

    @property
    def overrides(self) -> list[str]:
        """The job's command-line overrides, secrets redacted."""
        return [redact_override(str(o)) for o in self.hydra.overrides.task]

    def tuned(self, searched: list[str] | None = None) -> dict[str, str]:
        """This trial's values of the parameters its sweep searches, as the sweeper set them.

        The sweeper hands a trial its sampled values as overrides; those of the searched
        keys are the tuned ones (in a conditional space, only its family's).

        Args:
            searched: The sweep's dimensions (``search_space`` of the launching process's
                config, command-line ones included); None: ``hydra.sweeper.params``.
        """
        if searched is None:
            searched = list(OmegaConf.select(self.hydra, "sweeper.params", default=None) or {})
        keys = set(searched)
        found = {}
        for override in self.overrides:
            key, _, value = override.partition("=")
            if key.lstrip("+~") in keys:
                found[key.lstrip("+~")] = value
        return found

    @property
    def run_name(self) -> str:
        """``trial-<n>`` in a sweep, ``<model>-run`` for a single run."""
        if self.trial is not None:
            return f"trial-{self.trial}"
        return f"{self.job.model.name}-run"


def note_process(out: Path) -> None:
    """Record which process runs the job (its run's host and pid tags, live or uploaded)."""
    write_json(out / PROCESS_FILE, this_process())


def start_tags(record: JobRecord, parent_run_id: str | None, provenance: dict[str, str],
               uploaded: bool = False, searched: list[str] | None = None) -> dict[str, str]:
    """Return the tags a job's run is created with."""
    tags = {**provenance, TAG_OUTPUT_DIR: str(record.out.resolve()),
            TAG_ROLE: "trial" if parent_run_id else "run",
            TAG_OVERRIDES: " ".join(record.overrides)}
    process = read_json(record.out / PROCESS_FILE)
    tags.update({k: str(process[k]) for k in (HOST, PID, PID_STARTED) if k in process})
    if parent_run_id:
        tags[TAG_PARENT] = parent_run_id
        tags[TAG_JOB_NUM] = str(record.hydra.job.num)
    if record.trial is not None:
        tags[TAG_TRIAL] = str(record.trial)
        tuned = record.tuned(searched)
        if tuned:  # what sets this trial apart, where the UI shows it (its description)
            tags[TAG_TUNED] = tags[TAG_NOTE] = " ".join(f"{k}={v}" for k, v in tuned.items())
        attempt = None if uploaded else replaced_attempt()
        if attempt is not None:  # a retry: linked to the attempt it replaces
            tags[TAG_RETRY_OF] = attempt
    if uploaded:
        tags[TAG_UPLOADED] = "true"
    return tags


def open_job_run(store: Store, experiment_id: str, record: JobRecord,
                 parent_run_id: str | None, provenance: dict[str, str],
                 uploaded: bool = False, searched: list[str] | None = None) -> str:
    """Create the job's run and note its id in the job dir; return the id."""
    tags = start_tags(record, parent_run_id, provenance, uploaded, searched)
    run = store.client.create_run(experiment_id, tags=tags, run_name=record.run_name)
    record.out.mkdir(parents=True, exist_ok=True)
    (record.out / MLFLOW_RUN_FILE).write_text(run.info.run_id)
    link_retry(store, experiment_id, parent_run_id, tags)  # a retry closes its attempt's run
    return str(run.info.run_id)


def write_outcome(out: Path, error: BaseException | None) -> tuple[str, str | None]:
    """Write how a job ended into its dir; return its run state and error summary.

    A failed job's traceback goes to ``error.txt``; the state and summary join the
    process record, where ``tabflow upload`` reads them (:func:`read_outcome`).
    """
    status, summary = FINISHED, None
    if error is not None and is_pruned(error):  # stopped early by the sweep's pruner
        status, summary = KILLED, f"{type(error).__name__}: {error}"
    elif error is not None:
        summary = f"{type(error).__name__}: {error}"[:5000]
        status = KILLED if isinstance(error, (KeyboardInterrupt, SystemExit)) else FAILED
        (out / ERROR_FILE).write_text("".join(traceback.format_exception(error)))
    write_json(out / PROCESS_FILE, {**read_json(out / PROCESS_FILE), "status": status,
                                    "error": summary})
    return status, summary


def is_pruned(error: BaseException) -> bool:
    """Whether a job ended because its trial's pruner stopped it (``optuna.TrialPruned``)."""
    return type(error).__name__ == "TrialPruned"


def _intermediate(store: Store, run_id: str, out: Path) -> dict[str, str]:
    """Log the scores a job reported to its pruner as a metric's history; return tags."""
    from mlflow.entities import Metric

    reported = read_json(out / INTERMEDIATE_FILE)
    if not reported:
        return {}
    key = f"intermediate_{reported['metric']}"
    now = int(time.time() * 1000)
    history = [Metric(key, float(v), now, int(step)) for step, v in reported["values"]]
    for start in range(0, len(history), 1000):
        store.client.log_batch(run_id, metrics=history[start:start + 1000])
    pruned = reported.get("pruned_at")
    return {} if pruned is None else {TAG_PRUNED_AT: str(pruned)}


def read_outcome(out: Path) -> tuple[str, str | None]:
    """Return a job's run state and error summary, as :func:`write_outcome` left them.

    A job whose process died before it could say (a killed worker) failed unless its
    metrics are there.
    """
    process = read_json(out / PROCESS_FILE)
    if "status" in process:
        return str(process["status"]), process.get("error")
    if (out / METRICS_FILE).exists() and not (out / ERROR_FILE).exists():
        return FINISHED, None
    return FAILED, "the job ended before it recorded its outcome"


def log_job_dir(store: Store, run_id: str, record: JobRecord, status: str,
                error: str | None, log_model: bool = False) -> None:
    """Log a job dir's config, metrics, dataset and files to its run, then close the run.

    Args:
        store: The tracking store.
        run_id: The job's run (:func:`open_job_run`).
        record: The job.
        status: The run's final state (:func:`write_outcome` or :func:`read_outcome`).
        error: The error summary of a failed job, for the run's ``error`` tag.
        log_model: Log the job's fitted pipeline (single runs) as the run's model.
    """
    out = record.out
    tags = choice_tags(record.hydra.runtime.choices)
    dataset = read_json(out / DATASET_FILE)
    if dataset:
        tags.update({TAG_DIGEST: dataset["digest"], "dataset.source": dataset["source"],
                     "dataset.shape": f"{dataset['n_rows']}x{dataset['n_features']}"})
        if dataset.get("ids_left_out"):  # row identifiers found in the data, not features
            tags["dataset.ids_left_out"] = ", ".join(dataset["ids_left_out"])
        log_dataset(store, run_id, dataset, "training")
    tags.update(_intermediate(store, run_id, out))
    if error is not None and TAG_PRUNED_AT not in tags:
        tags[TAG_ERROR] = error
    log_run_data(store, run_id, params=flatten(record.params()),
                 metrics=read_json(out / METRICS_FILE), tags=tags)
    for name in (CONFIG_FILE, DATASET_FILE, ERROR_FILE):
        if (out / name).exists():
            store.client.log_artifact(run_id, str(out / name))
    # The command-line overrides, secrets redacted (Hydra's own copy keeps them).
    store.client.log_text(run_id, OmegaConf.to_yaml(record.overrides), OVERRIDES_ARTIFACT)
    if (out / FIGURES_DIR).is_dir():
        store.client.log_artifacts(run_id, str(out / FIGURES_DIR), FIGURES_DIR)
    if log_model and status == FINISHED and (out / MODEL_FILE).exists():
        _log_job_model(store, run_id, record)
    store.client.set_terminated(run_id, status)


def _log_job_model(store: Store, run_id: str, record: JobRecord) -> None:
    import joblib

    from tabflow.data import load_dataset
    from tabflow.tracking.models import log_model

    model = joblib.load(record.out / MODEL_FILE)  # our own file, written by this job
    X = load_dataset(record.job.dataset, record.job.paths.data).X  # cached by the job
    log_model(store, run_id, model, X.head(5))
