"""What a run records: params, metrics and tags in batches, and its dataset input.

Hydra's keys are not all keys MLflow accepts; :func:`sanitize_key` makes them so, in
this one place.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

from tabflow.tracking.store import Store

_KEY_BAD_CHARS = re.compile(r"[^\w\-. /]")
MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value (the whole value is in config.yaml)
MAX_TAG_VALUE = 8000  # and on a tag value


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
        items[sanitize_key(prefix[:-1])] = str(node)[:MAX_PARAM_VALUE]
    return items


def choice_tags(choices: Any) -> dict[str, str]:
    """Return Hydra's config-group choices (dataset, model, ...) as ``choice.<group>`` tags.

    Args:
        choices: ``hydra.runtime.choices`` of a composed config (Hydra's own groups,
            ``hydra/...``, are left out).
    """
    return {sanitize_key(f"choice.{k!s}"): str(v) for k, v in dict(choices).items()
            if not str(k).startswith("hydra/")}


# MLflow's limits on one log_batch call (mlflow.utils.validation).
MAX_PARAMS_A_BATCH = MAX_TAGS_A_BATCH = 100
MAX_METRICS_A_BATCH = MAX_ENTITIES_A_BATCH = 1000


def batches(params: list[Any], tags: list[Any], metrics: list[Any]
            ) -> Iterator[tuple[list[Any], list[Any], list[Any]]]:
    """Split params, tags and metrics into the fewest ``log_batch`` calls MLflow accepts.

    Each call holds at most 100 params, 100 tags and 1,000 metrics, 1,000 in all: a
    trial's ~90 params, ~10 tags and ~30 metrics go in one call (one store transaction)
    instead of one call per kind.
    """
    while params or tags or metrics:
        p, t = params[:MAX_PARAMS_A_BATCH], tags[:MAX_TAGS_A_BATCH]
        m = metrics[:min(MAX_METRICS_A_BATCH, MAX_ENTITIES_A_BATCH - len(p) - len(t))]
        yield p, t, m
        params, tags, metrics = params[len(p):], tags[len(t):], metrics[len(m):]


def log_run_data(store: Store, run_id: str, params: dict[str, str] | None = None,
                 metrics: dict[str, float] | None = None,
                 tags: dict[str, str] | None = None) -> None:
    """Log params, metrics and tags in as few requests as MLflow's batch limits allow."""
    from mlflow.entities import Metric, Param, RunTag

    ts = int(time.time() * 1000)
    param_list = [Param(k, v) for k, v in (params or {}).items()]
    tag_list = [RunTag(k, str(v)[:MAX_TAG_VALUE]) for k, v in (tags or {}).items()]
    metric_list = [Metric(k, float(v), ts, 0) for k, v in (metrics or {}).items()]
    for p, t, m in batches(param_list, tag_list, metric_list):
        store.client.log_batch(run_id, params=p, tags=t, metrics=m)


def _column_type(dtype: str) -> str:
    """Map a pandas dtype name to an MLflow column type."""
    if dtype.startswith("float"):
        return "double"
    if dtype.startswith(("int", "uint")):
        return "long"
    return "boolean" if dtype == "bool" else "string"


def log_dataset(store: Store, run_id: str, dataset: dict[str, Any], context: str) -> None:
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
    inputs = [DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])]
    try:
        store.client.log_inputs(run_id, datasets=inputs)
    except Exception as e:
        # Two sweep processes logging the experiment's first use of a dataset race to create
        # its row (MLflow looks it up, then inserts); the loser's insert breaks the unique
        # key. The row is there now, so the second try links the run to it.
        if "unique" not in str(e).lower() or "datasets" not in str(e):
            raise
        store.client.log_inputs(run_id, datasets=inputs)
