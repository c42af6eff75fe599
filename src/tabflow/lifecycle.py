"""The model lifecycle: promote ``staging`` to ``production`` (champion / challenger), roll back.

Aliases are the source of truth (``models:/<name>@production``); every change is mirrored
to the deprecated stages, so the guide's ``models:/<name>/Production`` still resolves, and
recorded as tags on the versions involved. MLflow calls go through :mod:`tabflow.tracking`.
The sweep's own registration is :mod:`tabflow.sweep_end`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tabflow.comparison import (
    NOT_BETTER,
    PROMOTED,
    NotComparableError,
    Predictions,
    Rows,
    Verdict,
    compare,
    fair_rows,
    metric_function,
    predict,
)
from tabflow.config import Task
from tabflow.interrupts import deferred_interrupts
from tabflow.tracking.models import SERVING_TAGS, load_model
from tabflow.tracking.registry import (
    aliases,
    mirror_stage,
    model_version,
    registry_lock,
    resolve_version,
    set_alias,
    tag_version,
)
from tabflow.tracking.store import Store, best_config

if TYPE_CHECKING:
    from omegaconf import DictConfig

STAGING, PRODUCTION = "staging", "production"
OVER_BUDGET = "OVER BUDGET"


class RegistryError(RuntimeError):
    """A lifecycle step that can't be done; the message says why and what to do."""


@dataclass
class Comparison:
    """The outcome of a promotion: both versions on test rows neither was trained on."""

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
    verdict: str = PROMOTED  # PROMOTED, NOT BETTER, NOT SIGNIFICANT, OVER BUDGET
    gain: float | None = None  # staging's gain over production (positive: better)
    low: float | None = None  # the gain's 95% paired-bootstrap interval
    high: float | None = None
    p_value: float | None = None
    test: str = ""
    excluded_rows: int = 0  # test rows one of the two versions was trained on
    serving: dict[str, dict[str, str]] = field(default_factory=dict)  # version -> tags
    over_budget: list[str] = field(default_factory=list)
    run_id: str = ""  # the comparison's run in the <name>-lifecycle experiment


def version_rows(store: Store, version: Any) -> tuple[Rows, str]:
    """Rebuild a version's data as it was split, from its sweep's config: (rows, digest)."""
    rows, digest, _ = version_data(store, version)
    return rows, digest


def version_data(store: Store, version: Any) -> tuple[Rows, str, DictConfig]:
    """A version's data as it was split, its digest, and the config that read it."""
    import pandas as pd

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
    rows = Rows(X_train=pd.concat([splits.X_train, splits.X_val]),
                y_train=pd.concat([splits.y_train, splits.y_val]),
                X_test=splits.X_test, y_test=splits.y_test, target=str(cfg.dataset.target),
                task=ds.task)
    return rows, ds.digest, cfg


def _artifacts_gone(name: str, version: str, error: Exception) -> RegistryError:
    first = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
    return RegistryError(f"{name} version {version}: its files can't be read ({first}); were "
                         f"mlruns/ or the artifact store moved or deleted? Roll production back "
                         f"(tabflow rollback {name}) or re-run the sweep that registered it")


def _predict(name: str, version: str, X: Any, task: Task) -> Predictions:
    try:
        model = load_model(f"models:/{name}/{version}")
    except Exception as e:
        raise _artifacts_gone(name, version, e) from e
    return predict(model, X, task)


def over_budget(serving: dict[str, str], budgets: dict[str, float | None]) -> list[str]:
    """The budgets (``registry.budgets``) a version's measured serving costs exceed."""
    over = []
    for key, limit in budgets.items():
        tag = f"serving.{key}"
        if limit is not None and tag in serving and float(serving[tag]) > float(limit):
            over.append(f"{key}={float(serving[tag]):g} > {float(limit):g}")
    return over


def promote(store: Store, name: str, metric: str | None = None, margin: float = 0.0,
            force: bool = False, budgets: dict[str, float | None] | None = None
            ) -> Comparison:
    """Promote the ``staging`` version to ``production`` if it is significantly better.

    Both versions predict the test rows that neither was trained on
    (``comparison.fair_rows``); a paired bootstrap gives the gain's 95% interval, and the
    staging version is promoted when the whole interval clears ``margin`` (PROMOTED), when
    there is no production version yet, or when ``force`` is set. A version over one of
    the serving ``budgets`` is not promoted (OVER BUDGET). The comparison is recorded on
    both versions and as a run of the ``<name>-lifecycle`` experiment; a replaced
    production version is archived.

    Args:
        store: A tracking store connection (``tracking.store.connect``).
        name: The registered model.
        metric: The test metric to compare (default: the sweep's objective on test data,
            e.g. ``test_accuracy``).
        margin: The minimum gain, in the metric's units.
        force: Promote whatever the scores say.
        budgets: Serving budgets (``registry.budgets``); None: none.

    Returns:
        The comparison, with its verdict and whether the candidate was promoted.

    Raises:
        RegistryError: If there is no staging version, its test data can't be rebuilt, or
            the two versions can't be compared (and ``force`` is not set).
    """
    with registry_lock(store, name):
        return _promote(store, name, metric, margin, force, budgets or {})


def _promote(store: Store, name: str, metric: str | None, margin: float, force: bool,
             budgets: dict[str, float | None]) -> Comparison:
    candidate = resolve_version(store, name, STAGING)
    if candidate is None:
        raise RegistryError(f"{name} has no @{STAGING} version; run a sweep first "
                            f"(python src/train.py -m ...)")
    champion = resolve_version(store, name, PRODUCTION)
    metric = metric or candidate.tags.get("objective.metric", "val_accuracy").replace(
        "val_", "test_", 1)
    rows, digest = version_rows(store, candidate)
    cand, champ = str(candidate.version), str(champion.version) if champion else None
    serving = {cand: _serving(candidate)}
    over = over_budget(serving[cand], budgets)
    verdict: Verdict | None = None
    if champ is not None and champ == cand:
        X, y = rows.X_test, rows.y_test
        score = metric_function(metric, rows.task)
        cand_score = score(np.asarray(y), _predict(name, cand, X, rows.task),
                           np.arange(len(y)))
        reason, promoted, label = "the staging version is already in production", False, \
            "ALREADY IN PRODUCTION"
        champ_score: float | None = cand_score
    else:
        if champion is not None:
            assert champ is not None
            serving[champ] = _serving(champion)
            champ_rows, _ = version_rows(store, champion)
            try:
                X, y, excluded = fair_rows(rows, champ_rows)
                verdict = compare(y, _predict(name, cand, X, rows.task),
                                  _predict(name, champ, X, rows.task), rows.task, metric,
                                  margin, excluded=excluded)
            except NotComparableError as e:
                if not force:
                    raise RegistryError(f"{name} versions {cand} and {champ} are {e}") from e
                X, y = rows.X_test, rows.y_test
                reason, label, promoted = f"{e}; promoted because forced", PROMOTED, True
                cand_score = metric_function(metric, rows.task)(
                    np.asarray(y), _predict(name, cand, X, rows.task), np.arange(len(y)))
                champ_score = None
            else:
                cand_score, champ_score = verdict.challenger_score, verdict.champion_score
                label = verdict.verdict
                reason = _reason(verdict)
        else:
            X, y = rows.X_test, rows.y_test
            cand_score = metric_function(metric, rows.task)(
                np.asarray(y), _predict(name, cand, X, rows.task), np.arange(len(y)))
            champ_score, label, reason = None, PROMOTED, "no production version yet"
        if over and label == PROMOTED:
            label, reason = OVER_BUDGET, f"{reason}; over the serving budget: {', '.join(over)}"
        promoted = label == PROMOTED or force
        if force and label != PROMOTED:
            reason += "; promoted because forced"
    result = Comparison(
        model=name, metric=metric, candidate=cand, candidate_score=cand_score,
        champion=champ, champion_score=champ_score, margin=margin, forced=force,
        promoted=promoted, reason=reason, test_rows=len(y), dataset_digest=digest,
        at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), verdict=label,
        gain=verdict.gain if verdict else None, low=verdict.low if verdict else None,
        high=verdict.high if verdict else None,
        p_value=verdict.p_value if verdict else None, test=verdict.test if verdict else "",
        excluded_rows=verdict.excluded_rows if verdict else 0, serving=serving,
        over_budget=over)
    with deferred_interrupts():  # the record, the tags and the aliases land together
        result.run_id = _record(store, result)
        record = json.dumps(asdict(result))
        tag_version(store, name, cand, {"promotion.last": record, "promotion.verdict": label})
        if champ is not None and champ != cand:
            tag_version(store, name, champ, {"promotion.last": record})
        if promoted and champ != cand:
            _move_production(store, name, cand, champ)
    return result


def _serving(version: Any) -> dict[str, str]:
    return {k: v for k, v in version.tags.items() if k in SERVING_TAGS}


def _reason(v: Verdict) -> str:
    """The verdict in words: the gain, its interval, the margin and the paired test."""
    interval = f"gain {v.gain:+.4f}, 95% interval [{v.low:+.4f}, {v.high:+.4f}]"
    if v.verdict == PROMOTED:
        why = f"the whole interval lies above the margin {v.margin:g}"
    elif v.verdict == NOT_BETTER:
        why = f"the whole interval lies below the margin {v.margin:g}"
    else:
        why = (f"the interval includes the margin {v.margin:g}: {v.rows} rows can't tell "
               f"the two apart")
    return f"{why} ({interval}; {v.test}, p={v.p_value:.3g})"


def _record(store: Store, result: Comparison) -> str:
    """Track the comparison as a run of the ``<name>-lifecycle`` experiment."""
    from tabflow.contract import project_root
    from tabflow.tracking.monitoring import record_check

    numbers = {k: getattr(result, k) for k in ("candidate_score", "champion_score", "gain",
                                                "low", "high", "p_value")}
    return record_check(
        store, experiment=f"{result.model}-lifecycle", root=project_root(),
        run_name=f"promote {result.candidate} vs {result.champion or 'none'}",
        tags={"model": result.model, "candidate": result.candidate,
              "champion": result.champion or "", "verdict": result.verdict,
              "promoted": str(result.promoted).lower(), "reason": result.reason[:5000]},
        params={"metric": result.metric, "margin": str(result.margin),
                "forced": str(result.forced).lower(), "test_rows": str(result.test_rows),
                "excluded_rows": str(result.excluded_rows)},
        metrics={k: float(v) for k, v in numbers.items() if v is not None},
        files={"comparison.json": json.dumps(asdict(result), indent=1, default=str)},
        dataset=None)


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
    with deferred_interrupts():  # the alias and the tags that explain it land together
        set_alias(store, name, PRODUCTION, previous)
        before = model_version(store, name, previous).tags.get("previous_production")
        tag_version(store, name, previous, {"lifecycle": "production",
                                            "previous_production": before or ""})
        tag_version(store, name, str(current.version),
                    {"lifecycle": "rolled_back", "rolled_back_to": previous})
        # A version that still holds @staging stays in stage Staging (one truth with the alias).
        staged = (aliases(store, name) or {}).get(STAGING) == str(current.version)
        mirror_stage(store, name, str(current.version), "Staging" if staged else "Archived")
    return str(current.version), previous


# What `tabflow promote` exits with for each verdict (docs/lifecycle.md): a gate a CI job reads.
EXIT_CODES = {PROMOTED: 0, "ALREADY IN PRODUCTION": 0, NOT_BETTER: 3, "NOT SIGNIFICANT": 4,
              OVER_BUDGET: 5}


def exit_code(result: Comparison) -> int:
    """The command's exit status: 0 when production holds the staging version afterwards."""
    return 0 if result.promoted else EXIT_CODES.get(result.verdict, 1)


def render(result: Comparison) -> str:
    """Return a promotion's comparison as a small table for the terminal."""
    from tabflow.tracking.models import serving_line

    def line(role: str, version: str | None, score: float | None) -> str:
        if version is None:
            return f"  {role:<11} none"
        shown = f"{score:.4f}" if score is not None else "-"
        return (f"  {role:<11} version {version}: {shown}   serving: "
                f"{serving_line(result.serving.get(version, {}))}")

    verdict = "PROMOTED to production" if result.promoted else f"{result.verdict}, not promoted"
    rows = f"{result.test_rows} held-out test rows neither version trained on" \
        if result.champion and result.champion != result.candidate else \
        f"{result.test_rows} held-out test rows"
    excluded = (f"; {result.excluded_rows} test rows left out: one version trained on them"
                if result.excluded_rows else "")
    return (f"{result.model}: {result.metric} on {rows} (dataset "
            f"{result.dataset_digest[:12]}{excluded})\n"
            f"{line('staging', result.candidate, result.candidate_score)}\n"
            f"{line('production', result.champion, result.champion_score)}\n"
            f"  -> {verdict}: {result.reason}")
