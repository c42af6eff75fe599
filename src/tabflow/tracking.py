"""MLflow tracking as a Hydra callback: the only module that talks to MLflow.

Where each hook runs and what it does:

* ``on_multirun_start`` (launching process): creates or upgrades the tracking store
  once, before any job (parallel jobs would race on its schema migrations), sets the
  experiment and opens the sweep's parent run.
* ``on_job_start`` / ``on_job_end`` (the job's process: in-process, a joblib worker or
  a remote host): open a child run under the parent, then log the job's output-dir
  contract (:mod:`tabflow.artifacts`) and close it FINISHED or FAILED.
* ``on_multirun_end`` (launching process): picks the best child, refits it on
  train + validation, scores it once on test, logs and registers the model, sets the
  alias, and closes the parent.
* ``on_run_start`` / ``on_run_end``: a single run is one standalone MLflow run.

Hydra turns exceptions raised in callbacks into warnings, so a sweep could "succeed"
with nothing tracked. Here every tracking failure is recorded and ends the command
with a non-zero exit and a clear message (``SystemExit`` passes through Hydra).
MLflow is imported lazily: importing it takes seconds, and ``--help`` must not pay.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from tabflow import artifacts
from tabflow.config import as_list, loggable_config, redact_override

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

# Tag names this project sets; users filter runs on them (`tags.tabflow.role = 'sweep'`).
TAG_ROLE = "tabflow.role"  # "sweep" (parent), "trial" (child) or "run" (single run)
TAG_TRIAL = "optuna.trial"
TAG_STUDY = "optuna.study"
TAG_STORAGE = "optuna.storage"
TAG_OVERRIDES = "hydra.overrides"
TAG_OUTPUT_DIR = "hydra.output_dir"
TAG_JOB_NUM = "hydra.job.num"
TAG_DIGEST = "dataset.digest"
TAG_ERROR = "error"
TAG_HOST, TAG_PID = "tabflow.host", "tabflow.pid"  # the process that ran a trial

# Packages the logged model needs; pinned to the versions that trained it. Listing them
# explicitly avoids MLflow's requirement inference, which takes ~16 s per model.
MODEL_REQUIREMENTS = ("scikit-learn", "numpy", "pandas", "scipy", "skops")
# skops refuses types it does not know; we trust exactly the types our pipeline holds,
# and only from these packages.
TRUSTED_TYPE_PREFIXES = ("sklearn.", "numpy.", "scipy.")

# The checkout this code runs from: its commit and lock file are recorded with every sweep.
CODE_ROOT = Path(__file__).resolve().parents[2]

_KEY_BAD_CHARS = re.compile(r"[^\w\-. /]")
_MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value (the whole value is in config.yaml)
_MAX_TAG_VALUE = 8000  # and on a tag value
SEARCH_PAGE = 100  # runs per search request: bounds memory in sweeps of thousands of trials


class TrackingError(RuntimeError):
    """Tracking failed; the message names what and how to fix it."""


def sanitize_key(key: str) -> str:
    """Return a key MLflow accepts as a param or tag name.

    Hydra produces keys MLflow rejects: ``search_space/rf@hydra.sweeper.params``
    (choices) and ``+foo`` / ``~foo`` (overrides).
    """
    key = key.replace("@", "_at_").lstrip("+~")
    return _KEY_BAD_CHARS.sub("_", key)


def flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """Flatten a nested dict or list into ``{"a.b.c": "value"}`` with sanitized keys."""
    items: dict[str, str] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            items.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(node, list) and any(isinstance(v, (dict, list)) for v in node):
        for i, v in enumerate(node):
            items.update(flatten(v, f"{prefix}{i}."))
    else:
        items[sanitize_key(prefix[:-1])] = str(node)[:_MAX_PARAM_VALUE]
    return items


def git_info(root: Path) -> dict[str, str]:
    """Return the commit of the code and whether the work tree has uncommitted changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": commit, "git.dirty": str(bool(dirty)).lower()}


def environment_tags() -> dict[str, str]:
    """Return the Python version and the versions of the packages that shape results."""
    tags = {"env.python": sys.version.split()[0]}
    for pkg in ("scikit-learn", "numpy", "pandas", "hydra-core", "hydra-optuna-sweeper",
                "optuna", "mlflow"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            tags[f"env.{pkg}"] = metadata.version(pkg)
    return tags


def choice_tags(cfg: DictConfig) -> dict[str, str]:
    """Return Hydra's config-group choices (dataset, model, ...) as ``choice.<group>`` tags."""
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    assert isinstance(choices, dict)
    return {sanitize_key(f"choice.{k!s}"): str(v) for k, v in choices.items()
            if not str(k).startswith("hydra/")}


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _now_ms() -> int:
    return int(time.time() * 1000)


_SCHEMA_RACE = ("already exists", "UNIQUE constraint failed", "database is locked",
                "no such table", "duplicate column", "alembic")


@dataclass
class _Store:
    """A connection to the tracking store, made once per process."""

    uri: str
    client: MlflowClient


def connect(uri: str) -> _Store:
    """Connect to a tracking store, creating or upgrading it if needed.

    Raises:
        TrackingError: If the store can't be reached or opened.
    """
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
        # MLflow retries a dead server for minutes per call by default; a sweep whose
        # server died should keep fitting (results stay on disk for `tabflow upload`).
        for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"),
                            ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                            ("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")):
            os.environ.setdefault(name, value)
    import mlflow
    from mlflow import MlflowClient

    from tabflow.study import ForeignDatabaseError, check_sqlite_store, sqlite_init_lock

    try:
        check_sqlite_store(uri, "experiments", "MLflow tracking store")
    except ForeignDatabaseError as e:
        raise TrackingError(str(e)) from e
    for attempt in range(6):
        try:
            # Opening the store creates it and runs its schema migrations. Done here, in the
            # launching process, it can't race with this sweep's own jobs; other sweep
            # processes on the same SQLite file wait on a file lock.
            with sqlite_init_lock(uri):
                mlflow.set_tracking_uri(uri)
                client = MlflowClient(uri)
                client.search_experiments(max_results=1)
            break
        except Exception as e:
            # Sweep processes started together on a fresh database race on its schema
            # set-up; the losers see half-made tables and succeed a moment later.
            racing = any(m in str(e) for m in _SCHEMA_RACE)
            if not uri.startswith(("http:", "https:")) and racing and attempt < 5:
                time.sleep(0.5 * (attempt + 1))
                continue
            raise TrackingError(
                f"cannot open the MLflow tracking store {uri!r}: {type(e).__name__}: {e}. "
                f"Check tracking.uri / MLFLOW_TRACKING_URI (a server must be running, "
                f"e.g. `mlflow server --host 127.0.0.1 --port 5000`)"
            ) from e
    return _Store(uri, client)


def _check_server(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast when a tracking server is down (MLflow's own retries take minutes)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
            pass
    except (urllib.error.URLError, OSError) as e:
        raise TrackingError(
            f"the MLflow tracking server at {uri} is not reachable ({e}). Start it, e.g. "
            f"`mlflow server --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 "
            f"--port 5000`, or unset MLFLOW_TRACKING_URI to use the local SQLite store"
        ) from e


def ensure_experiment(store: _Store, name: str, root: Path) -> str:
    """Return the id of the named experiment, creating it if needed."""
    experiment = store.client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    artifact_location = None
    if store.uri.startswith("sqlite:"):
        # MLflow would put artifacts under ./mlruns of whatever the cwd is; anchor them.
        artifact_location = (root / "mlruns").resolve().as_uri()
    # Open the UI on the classic model-training view, not the GenAI one.
    tags = {"mlflow.experimentKind": "custom_model_development"}
    try:
        return str(store.client.create_experiment(name, artifact_location, tags))
    except Exception:
        # Another process created it between our lookup and create.
        experiment = store.client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def log_run_data(store: _Store, run_id: str, params: dict[str, str] | None = None,
                 metrics: dict[str, float] | None = None,
                 tags: dict[str, str] | None = None) -> None:
    """Log params, metrics and tags in as few requests as MLflow's batch limits allow."""
    from mlflow.entities import Metric, Param, RunTag

    ts = _now_ms()
    param_list = [Param(k, v) for k, v in (params or {}).items()]
    tag_list = [RunTag(k, str(v)[:_MAX_TAG_VALUE]) for k, v in (tags or {}).items()]
    metric_list = [Metric(k, float(v), ts, 0) for k, v in (metrics or {}).items()]
    # MLflow accepts at most 100 params+tags and 1000 metrics per batch.
    for chunk in _chunks(param_list, 100):
        store.client.log_batch(run_id, params=chunk)
    for chunk in _chunks(tag_list, 100):
        store.client.log_batch(run_id, tags=chunk)
    for chunk in _chunks(metric_list, 1000):
        store.client.log_batch(run_id, metrics=chunk)


def _column_type(dtype: str) -> str:
    """Map a pandas dtype name to an MLflow column type."""
    if dtype.startswith("float"):
        return "double"
    if dtype.startswith(("int", "uint")):
        return "long"
    return "boolean" if dtype == "bool" else "string"


def log_dataset(store: _Store, run_id: str, dataset: dict[str, Any], context: str) -> None:
    """Record a dataset as an MLflow dataset input of a run (the run's *Datasets used*).

    Args:
        store: The tracking store.
        run_id: The run that used the data.
        dataset: The lineage record a job writes (``Dataset.describe``): name, source,
            digest, shape and schema.
        context: How the run used it, e.g. ``training``.
    """
    from mlflow.entities import Dataset, DatasetInput, InputTag

    schema = {"mlflow_colspec": [{"name": name, "type": _column_type(dtype), "required": True}
                                 for name, dtype in dataset["schema"].items()]}
    entity = Dataset(
        # MLflow caps a dataset digest at 36 characters; the full one is the run's tag.
        name=dataset["name"], digest=dataset["digest"][:16],
        source_type="local" if dataset["source"].startswith("/") else "code",
        source=json.dumps({"uri": dataset["source"]}), schema=json.dumps(schema),
        profile=json.dumps({"num_rows": dataset["n_rows"],
                            "num_elements": dataset["n_rows"] * dataset["n_features"]}),
    )
    store.client.log_inputs(run_id, datasets=[DatasetInput(
        entity, tags=[InputTag("mlflow.data.context", context)])])


# ------------------------------------------------------------------ registry primitives
# The lifecycle logic lives in tabflow.registry; these are the MLflow calls it needs.
# Aliases are the source of truth; the deprecated stages are mirrored so the guide's
# `models:/<name>/Production` URIs still resolve.
STAGE_OF_ALIAS = {"staging": "Staging", "production": "Production"}


def set_alias(store: _Store, name: str, alias: str, version: str) -> None:
    """Point an alias at a version and mirror it to the matching (deprecated) stage."""
    store.client.set_registered_model_alias(name, alias, version)
    mirror_stage(store, name, version, STAGE_OF_ALIAS.get(alias))


def mirror_stage(store: _Store, name: str, version: str, stage: str | None) -> None:
    """Set a version's deprecated stage (Staging, Production, Archived), if any."""
    if stage is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated; mirrored only
        store.client.transition_model_version_stage(name, version, stage)


def version_by_alias(store: _Store, name: str, alias: str) -> Any:
    """Return the model version an alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return store.client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def model_version(store: _Store, name: str, version: str) -> Any:
    """Return one model version."""
    return store.client.get_model_version(name, version)


def tag_version(store: _Store, name: str, version: str, tags: dict[str, str]) -> None:
    """Set tags on a model version."""
    for key, value in tags.items():
        store.client.set_model_version_tag(name, version, key, value)


def load_model(uri: str) -> Any:
    """Load a registered scikit-learn pipeline (``models:/<name>/<version>``)."""
    import mlflow

    return mlflow.sklearn.load_model(uri)


def download_artifact(store: _Store, run_id: str, path: str) -> Path:
    """Download one artifact of a run and return its local path."""
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                    tracking_uri=store.uri))


def search(store: _Store, experiment: str, filter_string: str = "",
           order_by: list[str] | None = None, max_results: int = 10) -> list[Any]:
    """Search runs of an experiment by name with MLflow's own filter syntax."""
    return list(store.client.search_runs([experiment_id_of(store, experiment)],
                                         filter_string=filter_string, order_by=order_by or [],
                                         max_results=max_results))


def experiment_id_of(store: _Store, name: str) -> str:
    """Return the id of the experiment with this name.

    Raises:
        TrackingError: If the store has no such experiment.
    """
    exp = store.client.get_experiment_by_name(name)
    if exp is None:
        raise TrackingError(f"no experiment named {name!r} at {store.uri}")
    return str(exp.experiment_id)


def latest_sweep(store: _Store, experiment_id: str, study: str | None = None,
                 storage: str | None = None) -> Any:
    """Return an experiment's latest sweep parent run (of a study, in a storage), or None."""
    conditions = [f"tags.`{TAG_ROLE}` = 'sweep'"]
    if study is not None:
        conditions.append(f"tags.`{TAG_STUDY}` = '{study}'")
    if storage is not None:
        conditions.append(f"tags.`{TAG_STORAGE}` = '{storage}'")
    runs = store.client.search_runs([experiment_id], filter_string=" and ".join(conditions),
                                    order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def experiments(store: _Store) -> list[Any]:
    """Return every experiment of the store."""
    return list(store.client.search_experiments())


def trusted_types(model: Any) -> list[str]:
    """Return the exact types skops must trust to save and load ``model``.

    Raises:
        TrackingError: If the model holds a type from outside scikit-learn, NumPy or SciPy.
    """
    import skops.io

    # Dumping a 300-tree forest with skops takes seconds; its types are those of one tree.
    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(_one_of_each(model)))
    foreign = [t for t in untrusted if not t.startswith(TRUSTED_TYPE_PREFIXES)]
    if foreign:
        raise TrackingError(f"the model holds types skops should not trust: {foreign}")
    return list(untrusted)


# Ensemble members of these modules all hold the same types, so one stands for all.
_MEMBER_MODULES = ("sklearn.tree.", "sklearn.ensemble._hist_gradient_boosting.")


def _one_of_each(value: Any, depth: int = 0) -> Any:
    """A shallow copy of a fitted model whose tree ensembles keep a single member.

    It holds exactly the types of the original, so skops lists the same untrusted types,
    in a fraction of the time. Only homogeneous sequences of tree objects are cut.
    """
    import copy

    import numpy as np

    if depth > 12:
        return value
    if isinstance(value, (list, tuple, np.ndarray)) and len(value) > 1:
        flat = list(value.flat) if isinstance(value, np.ndarray) else list(value)
        kinds = {type(v) for v in flat}
        if len(kinds) == 1 and next(iter(kinds)).__module__.startswith(_MEMBER_MODULES):
            return value[:1]  # same container type, one member
    if isinstance(value, list):
        return [_one_of_each(v, depth + 1) for v in value]
    if type(value) is tuple:
        return tuple(_one_of_each(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return {k: _one_of_each(v, depth + 1) for k, v in value.items()}
    if type(value).__module__.startswith("sklearn.") and hasattr(value, "__dict__"):
        clone = copy.copy(value)
        clone.__dict__.update({k: _one_of_each(v, depth + 1) for k, v in vars(value).items()})
        return clone
    return value


def log_model(store: _Store, run_id: str, model: Any, input_example: Any) -> Any:
    """Log a fitted pipeline as the run's MLflow model (skops format, explicit requirements).

    Returns:
        MLflow's ``ModelInfo`` (``model_uri`` points at the logged model).
    """
    import mlflow

    requirements = [f"{pkg}=={metadata.version(pkg)}" for pkg in MODEL_REQUIREMENTS]
    with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        # Class labels are integers; MLflow's hint about missing values in integer
        # columns concerns inputs with gaps, which this output can't have.
        warnings.filterwarnings("ignore", message=".*Inferred schema contains integer")
        return mlflow.sklearn.log_model(
            model, name="model", input_example=input_example, pip_requirements=requirements,
            serialization_format="skops", skops_trusted_types=trusted_types(model),
        )


def _read_config(path: Path) -> DictConfig:
    cfg = OmegaConf.load(path)
    assert isinstance(cfg, DictConfig)
    return cfg


@dataclass
class _Best:
    run_id: str
    trial: str
    value: float
    output_dir: str


@dataclass
class MlflowCallback(Callback):
    """Hydra callback that tracks runs and sweeps in MLflow and registers the best model.

    It takes no arguments: every setting is read from the composed config in each hook
    (``tracking``, ``registry``, ``objective``), which avoids ``${hydra:...}``
    interpolations in callback parameters (callbacks are built before HydraConfig).
    State set in the launching process (parent run, experiment) reaches joblib or
    remote workers because launchers pickle the callbacks after ``on_multirun_start``.
    """

    experiment_id: str | None = None
    parent_run_id: str | None = None
    run_tags: dict[str, str] = field(default_factory=dict)
    last_run_id: str | None = None
    _job_run_id: str | None = field(default=None, repr=False)
    _store: _Store | None = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_store"] = None  # a client is per process
        state["_job_run_id"] = None
        return state

    def _connect(self, config: DictConfig) -> _Store:
        if not config.hydra.get("verbose"):
            # Before MLflow's import, which reads it: its INFO lines (schema set-up, model
            # registration) are noise next to the sweep's own; hydra.verbose=true shows them.
            os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        if self._store is None or self._store.uri != config.tracking.uri:
            self._store = connect(config.tracking.uri)
        return self._store

    def _start(self, config: DictConfig) -> _Store:
        """Open the store and experiment and collect the tags shared by every run."""
        store = self._connect(config)
        root = Path(config.paths.root)
        self.experiment_id = ensure_experiment(store, config.tracking.experiment, root)
        self.run_tags = {**git_info(CODE_ROOT), **environment_tags()}
        return store

    # ---------------------------------------------------------------- single run
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Open the store before the job, so a bad URI stops the run before any fit."""
        if config.tracking.enabled:
            _loud(lambda: self._start(config), "could not start tracking")

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Fail the command if the job's tracking failed."""
        if not config.tracking.enabled or self.experiment_id is None:
            return
        out = Path(config.hydra.runtime.output_dir)
        _loud(lambda: _raise_tracking_errors([out / artifacts.TRACKING_ERROR_FILE]),
              "the run was not fully tracked")
        if self.last_run_id:
            print(f"MLflow run {self.last_run_id} in experiment "
                  f"{config.tracking.experiment!r} at {config.tracking.uri}")

    # ---------------------------------------------------------------------- sweep
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Open the store once and the sweep's parent run."""
        if config.tracking.enabled:
            _loud(lambda: self._open_parent(config), "could not start tracking the sweep")
            if config.registry.enabled:
                # Registration's imports take seconds; load them while the trials run
                # (trials under the basic launcher leave a core idle), not after.
                threading.Thread(target=_warm_registration_imports, daemon=True).start()

    def _open_parent(self, config: DictConfig) -> None:
        store = self._start(config)
        assert self.experiment_id is not None
        sweeper = config.hydra.sweeper
        # Settings that may change between runs of one study are tags; params are fixed.
        tags = {
            **self.run_tags, **choice_tags(config),
            TAG_ROLE: "sweep",
            TAG_OVERRIDES: " ".join(map(redact_override, config.hydra.overrides.task)),
            "hydra.sweep_dir": str(Path(config.hydra.sweep.dir).resolve()),
            **{f"sweep.{k}": str(sweeper.get(k)) for k in
               ("n_trials", "timeout", "max_failure_rate", "n_jobs") if k in sweeper},
        }
        if "study_name" in sweeper:
            from tabflow.study import LOCK_SUFFIX, optuna_storage, storage_lock, study_name

            tags[TAG_STUDY] = study_name(config)
            tags[TAG_STORAGE] = str(sweeper.storage)
            if sweeper.storage:
                # Sweep processes sharing the study elect one parent run: the first to
                # take the lock creates it, the others find it and attach to it.
                with storage_lock(optuna_storage(str(sweeper.storage)),
                                  f"{tags[TAG_STUDY]}{LOCK_SUFFIX}parent"):
                    self._attach_or_create_parent(store, config, tags)
                return
        self._attach_or_create_parent(store, config, tags)

    def _attach_or_create_parent(self, store: _Store, config: DictConfig,
                                 tags: dict[str, str]) -> None:
        assert self.experiment_id is not None
        sweeper = config.hydra.sweeper
        choices = config.hydra.runtime.choices
        if TAG_STUDY in tags:
            previous = latest_sweep(store, str(self.experiment_id), tags[TAG_STUDY],
                                    tags[TAG_STORAGE])
            if previous is not None:
                self._reattach(store, previous, tags)
                return
        run = store.client.create_run(
            self.experiment_id, tags=tags,
            run_name=f"sweep-{choices.get('model')}-{choices.get('sweep')}-"
                     f"{time.strftime('%Y%m%d-%H%M%S')}",
        )
        self.parent_run_id = run.info.run_id
        params = {f"search_space.{sanitize_key(str(k))}": str(v)
                  for k, v in (sweeper.get("params") or {}).items()}
        params["sweep.sampler"] = str(sweeper.get("sampler", {}).get("_target_", ""))
        params["sweep.direction"] = str(sweeper.get("direction"))
        params["objective.metric"] = str(config.objective.metric)
        log_run_data(store, self.parent_run_id, params=params)
        lock = CODE_ROOT / "requirements.lock"
        if lock.exists():  # the pinned dependencies, for reproducing the environment
            store.client.log_artifact(self.parent_run_id, str(lock), "environment")
        log.info("MLflow parent run %s (experiment %r, %s)", self.parent_run_id,
                 config.tracking.experiment, config.tracking.uri)

    def _reattach(self, store: _Store, parent: Any, tags: dict[str, str]) -> None:
        """Continue a study's parent run: reopen it and close what a killed sweep left open."""
        self.parent_run_id = parent.info.run_id
        resumes = int(parent.data.tags.get("tabflow.resumes", "0")) + 1
        store.client.update_run(self.parent_run_id, status="RUNNING")
        log_run_data(store, self.parent_run_id, tags={**tags, "tabflow.resumes": str(resumes)})
        running = _pages(store, str(self.experiment_id),
                         f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' "
                         f"and attributes.status = 'RUNNING'")
        # Runs of live processes belong to other sweep processes sharing the study; those
        # of dead ones died with their sweep (e.g. SIGKILL). Another host's can't be told.
        stale = [r for r in running if _process_gone(r.data.tags)]
        for run in stale:
            log_run_data(store, run.info.run_id,
                         tags={TAG_ERROR: "interrupted: the sweep was killed; the trial is "
                                          "retried"})
            store.client.set_terminated(run.info.run_id, "FAILED")
        log.info("Resuming MLflow parent run %s (resume %d%s)", self.parent_run_id, resumes,
                 f"; {len(stale)} interrupted trial run(s) closed as FAILED" if stale else "")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Register the best trial's model and close the parent run."""
        if not config.tracking.enabled or self.parent_run_id is None:
            return
        # This hook runs in a `finally`: an exception in flight means the sweep failed.
        error = sys.exc_info()[1]
        store = self._connect(config)
        if error is not None:
            status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            log_run_data(store, self.parent_run_id,
                         tags={TAG_ERROR: f"{type(error).__name__}: {error}"[:5000]})
            store.client.set_terminated(self.parent_run_id, status)
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            _raise_tracking_errors(sorted(sweep_dir.glob(f"**/{artifacts.TRACKING_ERROR_FILE}")))
        except BaseException as e:
            with contextlib.suppress(Exception):  # the store may be what failed
                store.client.set_terminated(self.parent_run_id, "FAILED")
            _exit(f"the sweep's results could not be tracked: {e}\nNothing computed is lost. "
                  f"Once the tracking store is back, upload them and register the best model:"
                  f"\n  tabflow --tracking-uri {config.tracking.uri} upload {sweep_dir}"
                  f"\n  and re-run this command (the study is complete: it only registers)",
                  e)
        sweeper = config.hydra.sweeper
        if "study_name" not in sweeper or not sweeper.storage:
            self._finish(store, config, sweep_dir)
            return
        from tabflow.study import (
            LOCK_SUFFIX,
            LockBusyError,
            optuna_storage,
            running_trials,
            storage_lock,
            study_name,
        )

        # Other sweep processes may share the study: the last one to finish registers the
        # best model, once, and closes the parent.
        storage, study = optuna_storage(str(sweeper.storage)), study_name(config)
        running = running_trials(storage, study)
        if running:
            print(f"{running} trial(s) of study {study} still run in other sweep processes; "
                  f"the last one to finish registers the best model")
            return
        try:
            with storage_lock(storage, f"{study}{LOCK_SUFFIX}register", wait_s=0):
                self._finish(store, config, sweep_dir)
        except LockBusyError:
            print(f"Another sweep process of study {study} is registering the best model")

    def _finish(self, store: _Store, config: DictConfig, sweep_dir: Path) -> None:
        assert self.parent_run_id is not None
        try:
            self._finish_sweep(store, config, sweep_dir)
        except BaseException as e:
            store.client.set_terminated(self.parent_run_id, "FAILED")
            _exit(f"the sweep's results could not be tracked: {e}", e)
        store.client.set_terminated(self.parent_run_id, "FINISHED")

    def _best_child(self, store: _Store, config: DictConfig) -> tuple[_Best, dict[str, int]]:
        metric, direction = primary_objective(config)
        return best_trial_run(store, str(self.experiment_id), str(self.parent_run_id), metric,
                              direction)

    def _finish_sweep(self, store: _Store, config: DictConfig, sweep_dir: Path) -> None:
        assert self.parent_run_id is not None
        metric = primary_objective(config)[0]
        previous = store.client.get_run(self.parent_run_id).data.tags
        best, counts = self._best_child(store, config)
        unchanged = (previous.get("best.run_id") == best.run_id
                     and "registry.version" in previous)
        summary = {f"trials_{status.lower()}": n for status, n in counts.items()}
        log_run_data(store, self.parent_run_id,
                     metrics={f"best_{metric}": best.value, **summary},
                     tags={"best.run_id": best.run_id, "best.trial": best.trial})
        results = sweep_dir / "optimization_results.yaml"
        if results.exists():
            store.client.log_artifact(self.parent_run_id, str(results))
        print(f"Best trial {best.trial}: {metric}={best.value:.4f} (run {best.run_id}); "
              f"trials: {counts}")
        if config.registry.enabled and unchanged:
            print(f"The best trial is unchanged: {config.registry.model_name} version "
                  f"{previous['registry.version']} stays registered")
        elif config.registry.enabled:
            self._register(store, config, best)

    def _register(self, store: _Store, config: DictConfig, best: _Best) -> None:
        from tabflow.job import refit_final  # scikit-learn, only when registering

        assert self.parent_run_id is not None
        best_cfg = _read_config(Path(best.output_dir) / artifacts.CONFIG_FILE)
        final = refit_final(best_cfg)
        log_run_data(store, self.parent_run_id, metrics=final.metrics,
                     tags={TAG_DIGEST: final.dataset["digest"]})
        log_dataset(store, self.parent_run_id, final.dataset, "training")
        store.client.log_artifact(self.parent_run_id,
                                  str(Path(best.output_dir) / artifacts.CONFIG_FILE), "best")
        start = time.perf_counter()
        info = log_model(store, self.parent_run_id, final.pipeline, final.input_example)
        name, alias = config.registry.model_name, config.registry.alias
        version = self._register_version(store, info, name, config, best, final)
        set_alias(store, name, alias, version)
        seconds = time.perf_counter() - start
        log_run_data(store, self.parent_run_id, metrics={"registration_time_s": seconds},
                     tags={"registry.model": name, "registry.version": version,
                           "registry.alias": alias})
        test = "  ".join(f"{k}={v:.4f}" for k, v in sorted(final.metrics.items()))
        print(f"Registered {name} version {version} as @{alias} in {seconds:.2f}s: "
              f"models:/{name}@{alias}\n  {test}")
        if config.evaluation.figures:
            self._report(store, config, best, final, name, version)
        if config.registry.auto_promote:
            from tabflow.registry import promote, render

            print(render(promote(store, name, margin=config.registry.promote_margin)))

    def _report(self, store: _Store, config: DictConfig, best: _Best, final: Any, name: str,
                version: str) -> None:
        """Attach the final model's and the sweep's figures and report.html to the parent."""
        import tempfile

        from tabflow import plots

        assert self.parent_run_id is not None
        sweeper = config.hydra.sweeper
        metric = primary_objective(config)[0]
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "figures"
            figures = plots.model_figures(final.pipeline, final.X_test, final.y_test,
                                          final.task, "test", config.seed)
            if "study_name" in sweeper:
                from tabflow.study import study_name

                figures.update(plots.sweep_figures(str(sweeper.storage), study_name(config),
                                                   metric))
            paths = plots.save_figures(figures, folder)
            parent = store.client.get_run(self.parent_run_id)
            summary = {
                "study": parent.data.tags.get(TAG_STUDY, ""),
                "best trial": best.trial, f"best {metric} (validation)": best.value,
                "best run": best.run_id,
                "trials": ", ".join(f"{k.removeprefix('trials_')}: {int(v)}"
                                    for k, v in parent.data.metrics.items()
                                    if k.startswith("trials_")),
                "registered": f"models:/{name}/{version} (@{config.registry.alias})",
                "dataset": f"{final.dataset['name']} ({final.dataset['digest'][:12]}, "
                           f"{final.dataset['n_rows']} rows)",
            }
            params = {k: v for k, v in flatten(
                OmegaConf.to_container(_read_config(Path(best.output_dir) /
                                                    artifacts.CONFIG_FILE))).items()
                      if k.startswith(("model.", "preprocessing."))}
            report = plots.write_report(Path(tmp) / "report.html",
                                        f"Sweep report: {config.tracking.experiment}", summary,
                                        params, final.metrics, paths)
            store.client.log_artifacts(self.parent_run_id, str(folder), "figures")
            store.client.log_artifact(self.parent_run_id, str(report))

    def _register_version(self, store: _Store, info: Any, name: str, config: DictConfig,
                          best: _Best, final: Any) -> str:
        from mlflow.exceptions import MlflowException

        tags = {
            "sweep.parent_run_id": str(self.parent_run_id),
            "best.run_id": best.run_id,
            "best.trial": best.trial,
            "objective.metric": primary_objective(config)[0],
            "objective.value": str(best.value),
            TAG_DIGEST: final.dataset["digest"],
            **{k: str(v) for k, v in final.metrics.items()},
        }
        if "mlflow.source.git.commit" in self.run_tags:
            tags["git.commit"] = self.run_tags["mlflow.source.git.commit"]
        # The client's calls, not mlflow.register_model: that one prints to stderr.
        try:
            store.client.create_registered_model(name)
        except MlflowException as e:
            if "ALREADY_EXISTS" not in str(e.error_code):
                raise
        mv = store.client.create_model_version(name, source=info.model_uri,
                                               run_id=self.parent_run_id, tags=tags,
                                               model_id=info.model_id)
        return str(mv.version)

    # ------------------------------------------------------------------------ jobs
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Open the job's run: a child of the sweep's parent, or a standalone run."""
        self._job_run_id = None
        close_leaked_run("an earlier job in this process")
        if not config.tracking.enabled or self.experiment_id is None:
            return
        out = Path(config.hydra.runtime.output_dir)
        try:
            store = self._connect(config)
            trial = config.get("optuna_trial")
            tags = {**self.run_tags, TAG_OUTPUT_DIR: str(out.resolve()),
                    TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid()),
                    TAG_ROLE: "trial" if self.parent_run_id else "run",
                    TAG_OVERRIDES: " ".join(map(redact_override,
                                                config.hydra.overrides.task))}
            if self.parent_run_id:
                tags["mlflow.parentRunId"] = self.parent_run_id
                tags[TAG_JOB_NUM] = str(config.hydra.job.num)
            if trial is not None:
                tags[TAG_TRIAL] = str(trial)
            name = f"trial-{trial}" if trial is not None else f"{config.model.name}-run"
            run = store.client.create_run(str(self.experiment_id), tags=tags, run_name=name)
            self._job_run_id = run.info.run_id
            out.mkdir(parents=True, exist_ok=True)
            (out / artifacts.MLFLOW_RUN_FILE).write_text(run.info.run_id)
        except Exception as e:
            _record_job_error(out, "opening the job's MLflow run", e)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """Log the job's outputs and close its run FINISHED or FAILED."""
        num = config.hydra.job.get("num")
        close_leaked_run("this job" if num is None else f"job {num}")
        run_id, self._job_run_id = self._job_run_id, None
        if run_id is None:
            return
        self.last_run_id = run_id
        out = Path(config.hydra.runtime.output_dir)
        try:
            store = self._connect(config)
            self._log_job(store, config, run_id, out, job_return)
        except Exception as e:
            _record_job_error(out, "logging the job to MLflow", e)
            # Half-logged: `tabflow upload` tracks the job again, in a complete run.
            (out / artifacts.MLFLOW_RUN_FILE).unlink(missing_ok=True)
            try:
                store = self._connect(config)
                store.client.set_terminated(run_id, "FAILED")
            except Exception:
                pass  # the error file already says what happened

    def _log_job(self, store: _Store, config: DictConfig, run_id: str, out: Path,
                 job_return: JobReturn) -> None:
        resolved = OmegaConf.to_container(loggable_config(config))
        dataset = artifacts.read_json(out / artifacts.DATASET_FILE)
        tags = choice_tags(config)
        if dataset:
            tags.update({TAG_DIGEST: dataset["digest"], "dataset.source": dataset["source"],
                         "dataset.shape": f"{dataset['n_rows']}x{dataset['n_features']}"})
            log_dataset(store, run_id, dataset, "training")
        failed = job_return.status != JobStatus.COMPLETED
        status = "FAILED" if failed else "FINISHED"
        if failed:
            error = job_return._return_value
            tags[TAG_ERROR] = f"{type(error).__name__}: {error}"[:5000]
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                status = "KILLED"  # interrupted, not wrong: a resumed sweep retries it
            if isinstance(error, BaseException):
                (out / artifacts.ERROR_FILE).write_text(
                    "".join(traceback.format_exception(error)))
        log_run_data(store, run_id, params=flatten(resolved),
                     metrics=artifacts.read_json(out / artifacts.METRICS_FILE), tags=tags)
        _log_job_files(store, run_id, out)
        # The command-line overrides, secrets redacted (Hydra's own copy keeps them).
        store.client.log_text(run_id, OmegaConf.to_yaml(
            [redact_override(o) for o in config.hydra.overrides.task]), "overrides.yaml")
        if (out / artifacts.FIGURES_DIR).is_dir():
            store.client.log_artifacts(run_id, str(out / artifacts.FIGURES_DIR),
                                       artifacts.FIGURES_DIR)
        model_file = out / artifacts.MODEL_FILE
        if not failed and config.tracking.log_model and model_file.exists():
            import joblib

            from tabflow.data import load_dataset

            # Our own file, written by this job moments ago.
            model = joblib.load(model_file)
            X = load_dataset(config.dataset, config.paths.data).X  # cached by the job
            log_model(store, run_id, model, X.head(5))
        store.client.set_terminated(run_id, status)


def _log_job_files(store: _Store, run_id: str, out: Path) -> None:
    """Attach a job dir's resolved config, dataset description and error, where present."""
    for name in (artifacts.CONFIG_FILE, artifacts.DATASET_FILE, artifacts.ERROR_FILE):
        if (out / name).exists():
            store.client.log_artifact(run_id, str(out / name))


def upload_sweep(store: _Store, sweep_dir: Path) -> list[tuple[Path, str]]:
    """Track the jobs of a sweep that could not be tracked when they ran.

    Jobs write everything to their output dirs (see :mod:`tabflow.artifacts`); when the
    tracking store was down they also wrote ``tracking_error.txt`` and no run id. Each
    such job becomes a child run of the sweep's parent (found by the study named in
    ``optimization_results.yaml``), with its params, metrics, dataset and files.

    Returns:
        ``(job dir, new run id)`` for each uploaded job.

    Raises:
        TrackingError: If the sweep dir has no results file or its parent run is unknown.
    """
    results = sweep_dir / "optimization_results.yaml"
    if not results.exists():
        raise TrackingError(f"{results} does not exist: is {sweep_dir} a sweep's output dir "
                            f"(multirun/<date>/<time>)?")
    summary = OmegaConf.load(results)
    pending = sorted(
        (d for d in sweep_dir.iterdir() if (d / artifacts.CONFIG_FILE).exists()
         and not (d / artifacts.MLFLOW_RUN_FILE).exists()), key=lambda d: d.name)
    if not pending:
        return []
    config = _read_config(pending[0] / artifacts.CONFIG_FILE)
    experiment = store.client.get_experiment_by_name(str(config.tracking.experiment))
    parent = None if experiment is None else latest_sweep(
        store, str(experiment.experiment_id), study=str(summary.study_name))
    if parent is None:
        raise TrackingError(f"no parent run of study {summary.study_name!r} in experiment "
                            f"{config.tracking.experiment!r} at {store.uri}")
    uploaded = []
    for out in pending:
        job = _read_config(out / artifacts.CONFIG_FILE)
        trial = job.get("optuna_trial")
        failed = (out / artifacts.ERROR_FILE).exists() or not (
            out / artifacts.METRICS_FILE).exists()
        tags = {**{k: v for k, v in parent.data.tags.items()
                   if k.startswith(("mlflow.source.", "env."))},
                TAG_ROLE: "trial", "mlflow.parentRunId": parent.info.run_id,
                TAG_OUTPUT_DIR: str(out.resolve()), "tabflow.uploaded": "true"}
        if trial is not None:
            tags[TAG_TRIAL] = str(trial)
        run = store.client.create_run(parent.info.experiment_id, tags=tags,
                                      run_name=f"trial-{trial}")
        dataset = artifacts.read_json(out / artifacts.DATASET_FILE)
        if dataset:
            log_dataset(store, run.info.run_id, dataset, "training")
        log_run_data(store, run.info.run_id,
                     params=flatten(OmegaConf.to_container(job)),
                     metrics=artifacts.read_json(out / artifacts.METRICS_FILE))
        _log_job_files(store, run.info.run_id, out)
        store.client.set_terminated(run.info.run_id, "FAILED" if failed else "FINISHED")
        (out / artifacts.MLFLOW_RUN_FILE).write_text(run.info.run_id)
        error_file = out / artifacts.TRACKING_ERROR_FILE
        if error_file.exists():  # keep what happened, out of the way of the next check
            error_file.rename(out / f"{artifacts.TRACKING_ERROR_FILE}.uploaded")
        uploaded.append((out, run.info.run_id))
    return uploaded


def _warm_registration_imports() -> None:
    """Import what registering and reporting the final model needs (see on_multirun_start)."""
    with contextlib.suppress(Exception):  # only a head start: registration imports anyway
        import mlflow.pyfunc
        import mlflow.sklearn  # noqa: F401
        import skops.io  # noqa: F401

        import tabflow.plots  # noqa: F401


def best_trial_run(store: _Store, experiment_id: str, parent_run_id: str, metric: str,
                   direction: str) -> tuple[_Best, dict[str, int]]:
    """Find a sweep's best finished trial run and count its trials by status.

    Args:
        store: The connected tracking store.
        experiment_id: The sweep's experiment.
        parent_run_id: The sweep's parent run.
        metric: The objective metric, e.g. ``val_accuracy``.
        direction: ``maximize`` or ``minimize``.

    Returns:
        The best run (ties go to the earliest trial, as in Optuna's ``best_trial``) and
        ``{status: count}`` over all the sweep's trial runs.

    Raises:
        TrackingError: If no trial finished with the metric.
    """
    trials = (f"tags.`mlflow.parentRunId` = '{parent_run_id}' "
              f"and tags.`{TAG_ROLE}` = 'trial'")
    # Page through the runs: MLflow loads every run whole (params, tags, metrics), and a
    # 1,000-trial sweep read at once costs ~150 MB at the very end of the sweep.
    counts: dict[str, int] = {}
    for run in _pages(store, experiment_id, trials):
        counts[run.info.status] = counts.get(run.info.status, 0) + 1
    order = "DESC" if direction == "maximize" else "ASC"
    # The store sorts (NaN and missing metrics last); a NaN or infinite objective is a
    # failed trial and must never rank as the best, whatever the store made of it.
    best = next((r for r in _pages(store, experiment_id,
                                   f"{trials} and attributes.status = 'FINISHED'",
                                   [f"metrics.`{metric}` {order}", "attributes.start_time ASC"])
                 if math.isfinite(r.data.metrics.get(metric, math.nan))), None)
    if best is None:
        raise TrackingError(f"no trial finished with {metric}: {counts or 'no trials'}; "
                            f"nothing is registered")
    return _Best(best.info.run_id, best.data.tags.get(TAG_TRIAL, "?"),
                 best.data.metrics[metric], best.data.tags.get(TAG_OUTPUT_DIR, "")), counts


def _pages(store: _Store, experiment_id: str, filter_string: str,
           order_by: list[str] | None = None) -> Iterator[Any]:
    """Yield the runs a search finds, one page of ``SEARCH_PAGE`` runs in memory at a time."""
    token = None
    while True:
        page = store.client.search_runs([experiment_id], filter_string=filter_string,
                                        order_by=order_by, max_results=SEARCH_PAGE,
                                        page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def primary_objective(config: DictConfig) -> tuple[str, str]:
    """Return the metric and direction that rank trials (the first of several objectives)."""
    return (str(as_list(config.objective.metric)[0]),
            str(as_list(config.objective.direction)[0]))


def _process_gone(tags: dict[str, str]) -> bool:
    """Whether the process that opened a run (per its host and pid tags) has ended."""
    from tabflow.study import pid_alive

    if tags.get(TAG_HOST) != socket.gethostname():
        return TAG_HOST not in tags  # untagged runs predate these tags: treat as ours
    return not pid_alive(int(tags.get(TAG_PID, "0")))


def _record_job_error(out: Path, what: str, error: BaseException) -> None:
    """Leave a job's tracking failure where the launching process will find it."""
    message = f"{what} failed: {type(error).__name__}: {error}"
    log.error("%s", message)
    out.mkdir(parents=True, exist_ok=True)
    (out / artifacts.TRACKING_ERROR_FILE).write_text(
        f"{message}\n\n{''.join(traceback.format_exception(error))}")


def _raise_tracking_errors(files: list[Path]) -> None:
    errors = [f"{f.parent}: {f.read_text().splitlines()[0]}" for f in files if f.exists()]
    if errors:
        raise TrackingError(
            f"{len(errors)} job(s) could not be tracked; their results are in their output "
            f"dirs:\n  " + "\n  ".join(errors))


def close_leaked_run(culprit: str) -> list[str]:
    """End the MLflow runs that job code left active in this process, as FAILED.

    The callback names its runs by id and never uses MLflow's active run. A run that job
    code opened with ``mlflow.start_run()`` and never ended would otherwise outlive its job:
    in a reused worker (joblib's workers run many jobs) the next ``mlflow.start_run`` fails
    or nests under it, and MLflow's exit hook ends it FINISHED, as if it had succeeded.

    Args:
        culprit: Who left it open, for the warning and the run's ``error`` tag.

    Returns:
        The ids of the runs closed.
    """
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:  # never imported here: nothing can be active
        return []
    closed: list[str] = []
    # Never raises: Hydra turns a callback's exception into a warning and skips the rest
    # of the hook, which would leave the job's own run untracked.
    try:
        while (run := mlflow.active_run()) is not None and len(closed) < 100:
            closed.append(run.info.run_id)
            log.warning("MLflow run %s was left active by %s (mlflow.start_run without "
                        "end_run); closing it as FAILED so that no later job logs into it",
                        run.info.run_id, culprit)
            with contextlib.suppress(Exception):  # a courtesy; ending it is what matters
                mlflow.set_tag(TAG_ERROR, f"left active by {culprit}; closed by tabflow")
            mlflow.end_run("FAILED")  # pops it first, even if the store then fails
    except Exception as e:
        log.warning("an MLflow run left active could not be closed: %s", e)
    return closed


def _exit(message: str, error: BaseException | None = None) -> None:
    print(f"Tracking error: {message}", file=sys.stderr)
    if error is not None and os.environ.get("HYDRA_FULL_ERROR") == "1":
        traceback.print_exception(error)  # Hydra's own switch for full tracebacks
    raise SystemExit(1) from error


def _loud(action: Any, what: str) -> None:
    """Run a tracking action; on failure stop the command with a clear message."""
    try:
        action()
    except Exception as e:
        _exit(f"{what}: {e}", e)
