"""A fitted pipeline as an MLflow model: logged with skops, trusting exactly its own types."""

from __future__ import annotations

import warnings
from importlib import metadata
from typing import Any

from tabflow.tracking.store import Store, TrackingError

# Packages the logged model needs; pinned to the versions that trained it. Listing them
# explicitly avoids MLflow's requirement inference, which takes ~16 s per model.
MODEL_REQUIREMENTS = ("scikit-learn", "numpy", "pandas", "scipy", "skops")
# skops refuses types it does not know; we trust exactly the types our pipeline holds,
# and only from these packages.
TRUSTED_TYPE_PREFIXES = ("sklearn.", "numpy.", "scipy.")


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


# The column transformer's attributes that hold its columns (names, or their positions).
_COLUMN_LISTS = ("transformers", "transformers_", "_columns")


def compact_names(value: Any, depth: int = 0) -> Any:
    """A shallow copy of a fitted model whose column names and positions are NumPy arrays.

    skops writes a Python list, or an object array, one JSON object per element: the
    names of a 10,000-column table, which every fitted step keeps (``feature_names_in_``,
    the column transformer's column lists and positions), took 25 MB of JSON and 115 MB
    of memory while saving. As string and integer arrays they are stored as binary
    ``.npy`` files, in a fifth of the space and time. scikit-learn reads them the same
    way (it indexes and compares them elementwise); the model is not otherwise changed.
    """
    import copy

    import numpy as np

    def names(v: Any) -> Any:  # a list or object array of str, as a string array
        if isinstance(v, (list, np.ndarray)) and len(v) and all(type(x) is str for x in v):
            return np.asarray(v, dtype=str)
        return v

    if depth > 12:
        return value
    if isinstance(value, list):
        return [compact_names(v, depth + 1) for v in value]
    if type(value) is tuple:
        return tuple(compact_names(v, depth + 1) for v in value)
    if not (type(value).__module__.startswith("sklearn.") and hasattr(value, "__dict__")):
        return value
    attrs = {k: compact_names(v, depth + 1) for k, v in vars(value).items()}
    if "feature_names_in_" in attrs:
        attrs["feature_names_in_"] = names(attrs["feature_names_in_"])
    for key in _COLUMN_LISTS:  # (name, transformer, columns) tuples, or the columns alone
        if isinstance(attrs.get(key), list):
            attrs[key] = [(*t[:2], names(t[2]), *t[3:]) if type(t) is tuple and len(t) >= 3
                          else names(t) for t in attrs[key]]
    positions = attrs.get("_transformer_to_input_indices")
    if isinstance(positions, dict):
        attrs["_transformer_to_input_indices"] = {
            k: np.asarray(v, dtype=np.intp) if isinstance(v, list) and v
            and all(type(i) is int for i in v) else v for k, v in positions.items()}
    clone = copy.copy(value)
    clone.__dict__.update(attrs)
    return clone


def log_model(store: Store, run_id: str, model: Any, input_example: Any,
              tags: dict[str, str] | None = None) -> Any:
    """Log a fitted pipeline as the run's MLflow model (skops format, explicit requirements).

    The run is named by id, never made active: an active run would be ended (FINISHED)
    when logging is done, before the caller has finished with it.

    Args:
        store: The tracking store.
        run_id: The run the model belongs to.
        model: The fitted pipeline.
        input_example: A few raw rows (they give the model its signature).
        tags: Tags of the logged model (e.g. which trial it refits).

    Returns:
        MLflow's ``ModelInfo`` (``model_uri`` points at the logged model).
    """
    import mlflow

    requirements = [f"{pkg}=={metadata.version(pkg)}" for pkg in MODEL_REQUIREMENTS]
    # Created here, in the run's experiment (MLflow would use the process's current one);
    # it stays PENDING until its artifacts are complete.
    run = store.client.get_run(run_id)
    logged = store.client.create_logged_model(
        run.info.experiment_id, name="model", source_run_id=run_id, tags=tags,
        params=dict(run.data.params))
    with warnings.catch_warnings():
        # Class labels are integers; MLflow's hint about missing values in integer
        # columns concerns inputs with gaps, which this output can't have.
        warnings.filterwarnings("ignore", message="(?s).*Inferred schema contains integer")
        saved = compact_names(model)
        return mlflow.sklearn.log_model(
            saved, name="model", input_example=input_example, pip_requirements=requirements,
            serialization_format="skops", skops_trusted_types=trusted_types(saved),
            run_id=run_id, model_id=logged.model_id,
        )


def logged_models_of(store: Store, experiment_id: str, run_id: str) -> list[Any]:
    """Return the models logged to a run (any status), oldest first."""
    found = store.client.search_logged_models([experiment_id],
                                              filter_string=f"source_run_id = '{run_id}'")
    return sorted(found, key=lambda m: m.creation_timestamp)


def fail_logged_model(store: Store, model_id: str) -> None:
    """Mark a logged model that will never be finished (its process died) as FAILED."""
    from mlflow.entities import LoggedModelStatus

    store.client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)


def read_mlmodel(store: Store, name: str, version: str) -> dict[str, Any] | None:
    """A registered version's ``MLmodel`` file as data, or None when it can't be read."""
    import tempfile
    from pathlib import Path

    import mlflow

    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}/MLmodel", dst_path=tmp,
                tracking_uri=store.uri)
            found = read_yaml(Path(path))
    except Exception:
        return None
    return found if isinstance(found, dict) else None


def model_files_exist(store: Store, name: str, version: str) -> bool:
    """Whether a registered version's model files can still be read (its MLmodel file)."""
    return read_mlmodel(store, name, version) is not None


def unsafe_format(mlmodel: dict[str, Any]) -> str | None:
    """Why a stored model must not be deserialized here, or None when it may be.

    Loading a model runs whatever its file tells the unpickler to. A model tabflow logged
    is skops, trusting only scikit-learn, NumPy and SciPy types; the store is shared, so a
    model whose ``MLmodel`` says otherwise (pickle, cloudpickle, a wider trust list) was
    not logged by tabflow and is refused (docs/security.md).
    """
    flavor = (mlmodel.get("flavors") or {}).get("sklearn") or {}
    fmt = flavor.get("serialization_format")
    if fmt != "skops":
        return f"it is stored as {fmt or 'no scikit-learn model'}, not skops"
    foreign = [t for t in flavor.get("skops_trusted_types") or []
               if not str(t).startswith(TRUSTED_TYPE_PREFIXES)]
    if foreign:
        return f"its skops file trusts types from outside {TRUSTED_TYPE_PREFIXES}: {foreign}"
    return None


def load_model(uri: str) -> Any:
    """Load a registered scikit-learn pipeline (``models:/<name>/<version>``).

    Raises:
        TrackingError: If its files say it is not a model tabflow logged (``unsafe_format``).
    """
    import tempfile
    from pathlib import Path

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        why = unsafe_format(read_yaml(local / "MLmodel") or {})
        if why:
            raise TrackingError(f"{uri} is not loaded: {why}; only models tabflow logged are "
                                f"deserialized (docs/security.md)")
        return mlflow.sklearn.load_model(str(local))


# Version tags of what serving the model costs, measured at registration (serving_profile).
SERVING_TAGS = ("serving.latency_p50_ms_1row", "serving.latency_p95_ms_1row",
                "serving.latency_p50_ms_1000rows", "serving.latency_p95_ms_1000rows",
                "serving.peak_memory_mb", "serving.artifact_mb")


def read_yaml(path: Any) -> Any:
    """Parse a YAML file safely, with libyaml where it is there.

    An MLmodel file holds the model's signature: a column per feature, so 2 s of pure-Python
    parsing on a 10,000-column table, where libyaml takes a tenth of that.
    """
    import yaml

    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


LATENCY_BUDGET_S = 3.0  # per latency measurement (1 row, 1,000 rows)
# The "1,000 rows" batch holds at most this many cells: on a table wider than 1,000
# columns fewer rows are predicted and the latency scaled to 1,000 rows (a 1,000 x 10,000
# batch took 300 MB more than a 50-column sweep's peak).
SERVING_BATCH_CELLS = 1_000_000


def serving_profile(store: Store, uri: str, rows: Any, repeats: int = 20) -> dict[str, str]:
    """What serving a registered model costs, measured on the model as it will be served.

    The pyfunc model is loaded from the store (what ``mlflow models serve`` loads), then
    timed on 1-row and 1,000-row predicts: p50 and p95 over ``repeats`` (a fifth as many
    for 1,000 rows), or as many as fit in :data:`LATENCY_BUDGET_S` (at least 3). Peak
    memory is Python's peak allocation (tracemalloc, NumPy included)
    while loading it and predicting 1,000 rows; the artifact size is its files' bytes.

    Args:
        store: The tracking store.
        uri: The version, ``models:/<name>/<version>``.
        rows: Raw rows (a DataFrame) to predict on; sampled with replacement to 1,000
            (fewer on a wide table: :data:`SERVING_BATCH_CELLS`).
        repeats: How many 1-row predicts are timed.

    Returns:
        The version tags (:data:`SERVING_TAGS`), as strings; ``serving.batch_rows`` too
        when the batch had fewer than 1,000 rows.

    Raises:
        TrackingError: If the stored model is not one tabflow logged (``unsafe_format``).
    """
    import tempfile
    import time
    import tracemalloc
    from pathlib import Path

    import mlflow
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp,
                                                         tracking_uri=store.uri))
        why = unsafe_format(read_yaml(local / "MLmodel") or {})
        if why:
            raise TrackingError(f"{uri} is not loaded: {why} (docs/security.md)")
        size = sum(f.stat().st_size for f in local.rglob("*") if f.is_file())
        batch_rows = max(1, min(1000, SERVING_BATCH_CELLS // max(1, rows.shape[1])))
        one, many = rows.head(1), rows.sample(batch_rows, replace=True, random_state=0)
        tracemalloc.start()
        try:
            model = mlflow.pyfunc.load_model(str(local))
            model.predict(many)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    def latencies(batch: Any, n: int) -> tuple[float, float]:
        # At most n predicts, and no more than LATENCY_BUDGET_S of them (at least 3): MLflow
        # checks each call's input column by column, ~1 s a call on 10,000 columns.
        seconds: list[float] = []
        while len(seconds) < n and (len(seconds) < 3 or sum(seconds) < LATENCY_BUDGET_S):
            start = time.perf_counter()
            model.predict(batch)
            seconds.append(time.perf_counter() - start)
        p50, p95 = np.percentile(seconds, [50, 95]) * 1000
        return float(p50), float(p95)

    one_ms = latencies(one, repeats)
    many_ms = tuple(ms * 1000 / batch_rows for ms in latencies(many, max(3, repeats // 5)))
    values = (*one_ms, *many_ms, peak / 2**20, size / 2**20)
    tags = {tag: f"{value:.3f}" for tag, value in zip(SERVING_TAGS, values, strict=True)}
    if batch_rows < 1000:  # measured on fewer rows, scaled: say so
        tags["serving.batch_rows"] = str(batch_rows)
    return tags


def serving_line(tags: dict[str, str]) -> str:
    """The serving costs of a version, as one short line (tags of :func:`serving_profile`)."""
    if "serving.latency_p95_ms_1row" not in tags:
        return "not measured"
    return (f"p50/p95 {float(tags['serving.latency_p50_ms_1row']):.1f}/"
            f"{float(tags['serving.latency_p95_ms_1row']):.1f} ms a row, "
            f"{float(tags['serving.latency_p50_ms_1000rows']):.1f}/"
            f"{float(tags['serving.latency_p95_ms_1000rows']):.1f} ms per 1,000 rows, "
            f"peak {float(tags['serving.peak_memory_mb']):.1f} MB, "
            f"{float(tags['serving.artifact_mb']):.2f} MB of files")


def copy_model_to_run(store: Store, model_uri: str, experiment_id: str, run_id: str,
                      tags: dict[str, str]) -> str:
    """Give another run the same logged model files, so ``runs:/<run_id>/model`` resolves.

    The guide registers ``runs:/<best run>/model``, where the best run is a trial; trials
    log no model of their own (it would cost a model per trial), so the best trial's run
    gets the registered model's files: its configuration refit on train + validation.

    Returns:
        The new logged model's id.
    """
    import tempfile

    import mlflow
    from mlflow.entities import LoggedModelStatus

    logged = store.client.create_logged_model(experiment_id, name="model",
                                              source_run_id=run_id, tags=tags)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp,
                                                        tracking_uri=store.uri)
            store.client.log_model_artifacts(logged.model_id, local)
    except BaseException:
        store.client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    store.client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return str(logged.model_id)
