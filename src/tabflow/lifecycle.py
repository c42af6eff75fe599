"""The model lifecycle: promote ``staging`` to ``production`` (champion / challenger), roll back.

Aliases are the source of truth (``models:/<name>@production``); every change is mirrored
to the deprecated stages, so the guide's ``models:/<name>/Production`` still resolves, and
recorded as tags on the versions involved. MLflow calls go through :mod:`tabflow.tracking`.
The sweep's own registration is :mod:`tabflow.sweep_end`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from tabflow.config import Task
from tabflow.contract import lower_is_better
from tabflow.tracking.models import load_model
from tabflow.tracking.registry import (
    mirror_stage,
    model_version,
    registry_lock,
    resolve_version,
    set_alias,
    tag_version,
)
from tabflow.tracking.store import Store, best_config

STAGING, PRODUCTION = "staging", "production"


class RegistryError(RuntimeError):
    """A lifecycle step that can't be done; the message says why and what to do."""


@dataclass
class Comparison:
    """The outcome of a promotion: both versions scored on the same held-out test rows."""

    model: str
    metric: str
    candidate: str
    candidate_score: float
    champion: str | None
    champion_score: float | None
    margin: float
    forced: bool
    promoted: bool
    reason: str
    test_rows: int
    dataset_digest: str
    at: str


def _test_split(store: Store, version: Any) -> tuple[Any, Any, Task, str]:
    """Rebuild the held-out test split the version was scored on, from its sweep's config."""
    from tabflow.splits import load_and_split

    parent = version.tags.get("sweep.parent_run_id")
    if not parent:
        raise RegistryError(f"version {version.version} has no sweep.parent_run_id tag: it "
                            f"was not registered by a tabflow sweep, so its test data is unknown")
    try:
        cfg = best_config(store, parent)
    except Exception as e:  # the store's artifacts were deleted or moved
        raise _artifacts_gone(version.name, str(version.version), e) from e
    ds, splits = load_and_split(cfg)
    return splits.X_test, splits.y_test, ds.task, ds.digest


def _artifacts_gone(name: str, version: str, error: Exception) -> RegistryError:
    first = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
    return RegistryError(f"{name} version {version}: its files can't be read ({first}); were "
                         f"mlruns/ or the artifact store moved or deleted? Roll production back "
                         f"(tabflow rollback {name}) or re-run the sweep that registered it")


def _score(store: Store, name: str, version: str, X: Any, y: Any, task: Task,
           metric: str) -> float:
    from tabflow.evaluation import compute_metrics

    try:
        model = load_model(f"models:/{name}/{version}")
    except Exception as e:
        raise _artifacts_gone(name, version, e) from e
    scores = compute_metrics(model, X, y, task, "test")
    if metric not in scores:
        raise RegistryError(f"metric {metric!r} is not computed for this model; choose one of "
                            f"{sorted(scores)}")
    return scores[metric]


def promote(store: Store, name: str, metric: str | None = None, margin: float = 0.0,
            force: bool = False) -> Comparison:
    """Promote the ``staging`` version to ``production`` if it beats the current one.

    Both versions are scored on the held-out test split of the staging version's sweep
    (the same rows for both). The staging version is promoted when there is no production
    version yet, when it is better by more than ``margin``, or when ``force`` is set. The
    comparison is recorded on both versions; a replaced production version is archived.

    Args:
        store: A tracking store connection (``tracking.store.connect``).
        name: The registered model.
        metric: The test metric to compare (default: the sweep's objective on test data,
            e.g. ``test_accuracy``).
        margin: How much better the candidate must be.
        force: Promote whatever the scores say.

    Returns:
        The comparison, with whether the candidate was promoted.

    Raises:
        RegistryError: If there is no staging version, or its test data can't be rebuilt.
    """
    with registry_lock(store, name):
        return _promote(store, name, metric, margin, force)


def _promote(store: Store, name: str, metric: str | None, margin: float,
             force: bool) -> Comparison:
    candidate = resolve_version(store, name, STAGING)
    if candidate is None:
        raise RegistryError(f"{name} has no @{STAGING} version; run a sweep first "
                            f"(python src/train.py -m ...)")
    champion = resolve_version(store, name, PRODUCTION)
    metric = metric or candidate.tags.get("objective.metric", "val_accuracy").replace(
        "val_", "test_", 1)
    X, y, task, digest = _test_split(store, candidate)
    cand_score = _score(store, name, candidate.version, X, y, task, metric)
    champ_score = None
    if champion is not None and champion.version == candidate.version:
        reason, promoted = "the staging version is already in production", False
    else:
        if champion is not None:
            champ_score = _score(store, name, champion.version, X, y, task, metric)
            gain = champ_score - cand_score if lower_is_better(metric) else \
                cand_score - champ_score
            better = gain > margin
            reason = (f"{'better' if better else 'not better'} by {gain:+.4f} "
                      f"(margin {margin})")
        else:
            better, reason = True, "no production version yet"
        promoted = better or force
        if force and not better:
            reason += "; promoted because forced"
    result = Comparison(
        model=name, metric=metric, candidate=str(candidate.version), candidate_score=cand_score,
        champion=str(champion.version) if champion else None, champion_score=champ_score,
        margin=margin, forced=force, promoted=promoted, reason=reason, test_rows=len(y),
        dataset_digest=digest, at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    record = json.dumps(asdict(result))
    tag_version(store, name, result.candidate, {"promotion.last": record})
    if champion is not None and result.champion != result.candidate:
        tag_version(store, name, str(champion.version), {"promotion.last": record})
    if promoted and result.champion != result.candidate:
        _move_production(store, name, result.candidate, result.champion)
    return result


def _move_production(store: Store, name: str, new: str, old: str | None) -> None:
    set_alias(store, name, PRODUCTION, new)
    tags = {"lifecycle": "production", "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if old is not None:
        tags["previous_production"] = old
        tag_version(store, name, old, {"lifecycle": "archived", "replaced_by": new})
        mirror_stage(store, name, old, "Archived")
    tag_version(store, name, new, tags)


def rollback(store: Store, name: str) -> tuple[str, str]:
    """Point ``production`` back at the version it replaced; return (from, to).

    Raises:
        RegistryError: If there is no production version or it replaced none.
    """
    with registry_lock(store, name):
        return _rollback(store, name)


def _rollback(store: Store, name: str) -> tuple[str, str]:
    current = resolve_version(store, name, PRODUCTION)
    if current is None:
        raise RegistryError(f"{name} has no @{PRODUCTION} version to roll back; nothing is in "
                            f"production yet (tabflow promote {name} puts @staging there)")
    previous = current.tags.get("previous_production")
    if not previous:
        raise RegistryError(f"{name} version {current.version} replaced no earlier "
                            f"production version; there is nothing to roll back to")
    set_alias(store, name, PRODUCTION, previous)
    before = model_version(store, name, previous).tags.get("previous_production")
    tag_version(store, name, previous, {"lifecycle": "production",
                                        "previous_production": before or ""})
    tag_version(store, name, str(current.version),
                {"lifecycle": "rolled_back", "rolled_back_to": previous})
    mirror_stage(store, name, str(current.version), "Archived")
    return str(current.version), previous


def render(result: Comparison) -> str:
    """Return a promotion's comparison as a small table for the terminal."""
    champion = (f"version {result.champion}: {result.champion_score:.4f}"
                if result.champion_score is not None else "none")
    verdict = "PROMOTED to production" if result.promoted else "not promoted"
    return (f"{result.model}: {result.metric} on {result.test_rows} held-out test rows "
            f"(dataset {result.dataset_digest[:12]})\n"
            f"  staging     version {result.candidate}: {result.candidate_score:.4f}\n"
            f"  production  {champion}\n"
            f"  -> {verdict}: {result.reason}")
