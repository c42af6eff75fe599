"""Model Registry calls: versions, aliases, the mirrored stages, version tags, the lock.

The lifecycle logic (promote, roll back) is :mod:`tabflow.lifecycle`; the sweep's
registration is :mod:`tabflow.sweep_end`. Aliases are the source of truth; the deprecated
stages are mirrored so the guide's ``models:/<name>/Production`` URIs still resolve: the
version an alias points at takes the alias's stage, and any other version in that stage
is archived, so exactly one version is in stage Production iff ``production`` is set.

Every change of a model's aliases happens under :func:`registry_lock`, so promote,
rollback and a sweep's registration of one model never interleave.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

from hydra_plugins.tabflow_sweeper.locks import (
    HOLDER_BEAT,
    HOLDER_HOST,
    HOLDER_PID,
    HOLDER_SINCE,
    LOCK_SUFFIX,
    Mutex,
    hold,
)
from tabflow.tracking.store import Store

STAGE_OF_ALIAS = {"staging": "Staging", "production": "Production"}
TAG_SWEEP_PARENT = "sweep.parent_run_id"  # on a version: the sweep that registered it
TAG_BEST_RUN = "best.run_id"  # on a version and its logged model: the trial it refits


def set_alias(store: Store, name: str, alias: str, version: str) -> None:
    """Point an alias at a version and mirror it to the matching (deprecated) stage."""
    store.client.set_registered_model_alias(name, alias, version)
    mirror_stage(store, name, version, STAGE_OF_ALIAS.get(alias))


def mirror_stage(store: Store, name: str, version: str, stage: str | None) -> None:
    """Set a version's deprecated stage (Staging, Production, Archived), if any.

    Staging and Production hold one version each: the version that held it is archived.
    """
    if stage is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated; mirrored only
        store.client.transition_model_version_stage(name, version, stage)
        if stage not in STAGE_OF_ALIAS.values():
            return
        # By hand: MLflow's archive_existing_versions=True fails on PostgreSQL (it compares
        # the integer version column with a string).
        for other in store.client.search_model_versions(f"name = '{name}'"):
            if str(other.version) != str(version) and other.current_stage == stage:
                store.client.transition_model_version_stage(name, str(other.version),
                                                            "Archived")


def version_by_alias(store: Store, name: str, alias: str) -> Any:
    """Return the model version an alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return store.client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def resolve_version(store: Store, name: str, alias: str) -> Any:
    """Return the version an alias means, or None.

    The alias wins. Without it, ``staging`` and ``production`` fall back to the newest
    version in the matching stage: the guide's ``transition_model_version_stage(name, v,
    "Production")`` sets the stage only, and every tabflow command must see it. When the
    stages disagree with the aliases, one warning line says so (:func:`stage_problem`).
    """
    import sys

    version = version_by_alias(store, name, alias)
    stage = STAGE_OF_ALIAS.get(alias)
    if stage is None:
        return version
    stages = stages_of(store, name)
    problem = stage_problem(name, aliases(store, name) or {}, stages)
    if problem:  # one line, every time a command reads production or staging
        print(f"warning: {problem}", file=sys.stderr, flush=True)
    staged = stages.get(stage, [])
    if version is not None or not staged:
        return version
    return store.client.get_model_version(name, staged[-1])


def aliases(store: Store, name: str) -> dict[str, str] | None:
    """A registered model's aliases (alias -> version), or None if there is no such model."""
    from mlflow.exceptions import MlflowException

    try:
        model = store.client.get_registered_model(name)
    except MlflowException:
        return None
    return {str(k): str(v) for k, v in (model.aliases or {}).items()}


def stages_of(store: Store, name: str) -> dict[str, list[str]]:
    """The versions of ``name`` in each (deprecated) stage, oldest first."""
    from mlflow.exceptions import MlflowException

    try:
        found = store.client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return {}
    stages: dict[str, list[str]] = {}
    for v in sorted(found, key=lambda v: int(v.version)):
        stages.setdefault(str(v.current_stage), []).append(str(v.version))
    return stages


def expected_stages(aliases: dict[str, str]) -> dict[str, list[str]]:
    """The stages the aliases imply: each alias's version in its stage, Production first."""
    production, staging = aliases.get("production"), aliases.get("staging")
    return {"Production": [production] if production else [],
            "Staging": [staging] if staging and staging != production else []}


def stage_problem(name: str, aliases: dict[str, str], stages: dict[str, list[str]]
                  ) -> str | None:
    """Why the mirrored stages disagree with the aliases (the source of truth), or None.

    The guide's ``transition_model_version_stage`` (``archive_existing_versions=False``)
    or another tool can put a second version in stage Production: then
    ``mlflow models serve -m models:/NAME/Production`` serves the newest of them, while
    ``@production`` names another. Without aliases, one version per stage is the guide's
    own way and no problem.
    """
    expected = expected_stages(aliases)
    for alias, stage in reversed(STAGE_OF_ALIAS.items()):  # production's first
        actual = stages.get(stage, [])
        if alias not in aliases and len(actual) <= 1:
            continue
        if actual != expected[stage]:
            serves = actual[-1] if actual else "nothing"
            return (f"{name}: @{alias} is version {aliases.get(alias, 'unset')} but stage "
                    f"{stage} holds {', '.join(actual) or 'no version'} (changed outside "
                    f"tabflow?); models:/{name}/{stage} serves {serves}. Make the stages "
                    f"follow the aliases: tabflow promote {name} --sync")
    return None


def sync_stages(store: Store, name: str) -> list[str]:
    """Make the mirrored stages follow the aliases again; return what changed, one line each.

    Each alias's version takes its stage (Production first); any other version left in
    Staging or Production while that alias is set is archived.
    """
    held, stages = aliases(store, name) or {}, stages_of(store, name)
    now = {v: stage for stage, versions in stages.items() for v in versions}
    wanted = {v: stage for stage, versions in expected_stages(held).items() for v in versions}
    for alias, stage in STAGE_OF_ALIAS.items():
        if alias in held:
            for v in stages.get(stage, []):
                wanted.setdefault(v, "Archived")
    changed = []
    for version, stage in sorted(wanted.items(), key=lambda item: int(item[0])):
        if now.get(version) != stage:
            mirror_stage(store, name, version, stage)
            changed.append(f"version {version}: stage {now.get(version, 'None')} -> {stage}")
    return changed


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


def versions_of_sweep(store: Store, name: str, parent_run_id: str) -> list[Any]:
    """Return the versions of ``name`` that a sweep registered, oldest first."""
    from mlflow.exceptions import MlflowException

    try:
        found = store.client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return []
    mine = sorted((v for v in found if v.tags.get(TAG_SWEEP_PARENT) == parent_run_id),
                  key=lambda v: int(v.version))
    # Searches leave a version's aliases out; a version read whole has them.
    return [store.client.get_model_version(name, str(v.version)) for v in mine]


def registry_lock(store: Store, name: str, wait_s: float = 300.0
                  ) -> contextlib.AbstractContextManager[None]:
    """Serialise changes to a registered model's aliases among processes and machines.

    The lock is a registered model named ``<name>~lock`` (creating a name is atomic in
    every MLflow backend, a tracking server included), tagged with its holder; it exists
    only while held. A holder on this host whose process is gone loses it at once, any
    other once it stopped beating for a minute (the sweeper's ``locks``). A command that
    has to wait says for whom.
    """
    from mlflow.exceptions import MlflowException

    lock = f"{name}{LOCK_SUFFIX}lock"

    def create(record: dict[str, Any]) -> Any:
        try:
            store.client.create_registered_model(
                lock, tags={k: str(v) for k, v in record.items()},
                description=f"held by tabflow while it changes {name}'s aliases")
        except MlflowException as e:
            # On SQLite, MLflow answers a taken name by looking the holder up; a holder that
            # released it in between makes that lookup fail: taken a moment ago, free now.
            if e.error_code in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                return None
            raise
        return str(record[HOLDER_SINCE])

    def inspect() -> tuple[Any, dict[str, Any]] | None:
        try:
            tags = store.client.get_registered_model(lock).tags
        except MlflowException:
            return None
        record: dict[str, Any] = {k: tags[k] for k in
                                  (HOLDER_HOST, HOLDER_PID, HOLDER_SINCE, HOLDER_BEAT)
                                  if k in tags}
        return tags.get(HOLDER_SINCE), record

    def remove(since: Any) -> None:
        found = inspect()
        if found is not None and found[0] == since:  # that holder's lock, not a newer one
            with contextlib.suppress(MlflowException):
                store.client.delete_registered_model(lock)

    def beat(since: Any, record: dict[str, Any]) -> None:
        found = inspect()
        if found is not None and found[0] == since:  # still this holder's lock
            for key, value in record.items():
                store.client.set_registered_model_tag(lock, key, str(value))

    def announce(holder: dict[str, Any]) -> None:
        print(f"Waiting for another command changing {name}'s aliases "
              f"({holder.get(HOLDER_HOST, '?')}:{holder.get(HOLDER_PID, '?')})", flush=True)

    return hold(Mutex(create, inspect, remove, beat), lock, wait_s, on_wait=announce)


def registry_locks(store: Store) -> list[tuple[str, dict[str, Any]]]:
    """The registry locks held now (``<model>~lock``): each one's name and holder record."""
    suffix = f"{LOCK_SUFFIX}lock"
    return [(m.name, dict(m.tags)) for m in store.client.search_registered_models()
            if m.name.endswith(suffix)]


def remove_registry_lock(store: Store, lock: str) -> bool:
    """Delete a registry lock by name; False if there is none."""
    from mlflow.exceptions import MlflowException

    if not lock.endswith(f"{LOCK_SUFFIX}lock"):
        return False  # never a model that isn't a lock
    try:
        store.client.delete_registered_model(lock)
    except MlflowException:
        return False
    return True
