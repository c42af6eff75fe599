"""Model Registry calls: versions, aliases, the mirrored stages, version tags.

The lifecycle logic (promote, roll back) is :mod:`tabflow.lifecycle`; the sweep's
registration is :mod:`tabflow.sweep_end`. Aliases are the source of truth; the deprecated
stages are mirrored so the guide's ``models:/<name>/Production`` URIs still resolve.
"""

from __future__ import annotations

import warnings
from typing import Any

from tabflow.tracking.store import Store

STAGE_OF_ALIAS = {"staging": "Staging", "production": "Production"}


def set_alias(store: Store, name: str, alias: str, version: str) -> None:
    """Point an alias at a version and mirror it to the matching (deprecated) stage."""
    store.client.set_registered_model_alias(name, alias, version)
    mirror_stage(store, name, version, STAGE_OF_ALIAS.get(alias))


def mirror_stage(store: Store, name: str, version: str, stage: str | None) -> None:
    """Set a version's deprecated stage (Staging, Production, Archived), if any."""
    if stage is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated; mirrored only
        store.client.transition_model_version_stage(name, version, stage)


def version_by_alias(store: Store, name: str, alias: str) -> Any:
    """Return the model version an alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return store.client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def model_version(store: Store, name: str, version: str) -> Any:
    """Return one model version."""
    return store.client.get_model_version(name, version)


def tag_version(store: Store, name: str, version: str, tags: dict[str, str]) -> None:
    """Set tags on a model version."""
    for key, value in tags.items():
        store.client.set_model_version_tag(name, version, key, value)


def create_version(store: Store, name: str, model_info: Any, run_id: str,
                   tags: dict[str, str]) -> str:
    """Register a logged model as a new version of ``name`` (created if needed).

    Args:
        store: The tracking store.
        name: The registered model's name.
        model_info: What ``models.log_model`` returned.
        run_id: The run the model was logged to.
        tags: The version's tags.

    Returns:
        The new version number.
    """
    from mlflow.exceptions import MlflowException

    # The client's calls, not mlflow.register_model: that one prints to stderr.
    try:
        store.client.create_registered_model(name)
    except MlflowException as e:
        if "ALREADY_EXISTS" not in str(e.error_code):
            raise
    mv = store.client.create_model_version(name, source=model_info.model_uri, run_id=run_id,
                                           tags=tags, model_id=model_info.model_id)
    return str(mv.version)
