"""Finding runs: a sweep's parent, and its trial runs ranked by the objective.

Every view of "the best trial" (the sweep's summary and registration, ``tabflow runs``,
``tabflow report``) ranks through :func:`ranked_trials`, so they all name the same run:
the best finite value, ties to the earliest trial, as Optuna's ``best_trial``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tabflow.contract import (
    PRUNED,
    TAG_OUTPUT_DIR,
    TAG_PARENT,
    TAG_PRUNED_AT,
    TAG_ROLE,
    TAG_STORAGE,
    TAG_STUDY,
    TAG_TRIAL,
    TAG_TUNED,
)
from tabflow.tracking.store import Store, TrackingError, experiment_id_of

SEARCH_PAGE = 100  # runs per search request: bounds memory in sweeps of thousands of trials


@dataclass
class Best:
    """A sweep's best trial run."""

    run_id: str
    trial: str
    value: float
    output_dir: str
    params: dict[str, str] = field(default_factory=dict)  # its run's params, as logged
    tuned: str = ""  # its values of the searched parameters (its run's tabflow.tuned tag)


def search(store: Store, experiment: str, filter_string: str = "",
           order_by: list[str] | None = None, max_results: int = 10) -> list[Any]:
    """Search runs of an experiment by name with MLflow's own filter syntax."""
    return list(store.client.search_runs([experiment_id_of(store, experiment)],
                                         filter_string=filter_string, order_by=order_by or [],
                                         max_results=max_results))


def latest_sweep(store: Store, experiment_id: str, study: str | None = None,
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


def sweeps(store: Store, experiment_id: str) -> list[Any]:
    """An experiment's sweep parent runs, newest first."""
    return list(pages(store, experiment_id, f"tags.`{TAG_ROLE}` = 'sweep'",
                      ["attributes.start_time DESC"]))


def pick_sweep(store: Store, experiment_id: str, which: str | None) -> Any:
    """The sweep a view asks for; None if there is no such sweep.

    Args:
        store: The tracking store.
        experiment_id: The experiment.
        which: None or ``-1`` (the newest), ``-N`` (N back), a sweep's run id or run name,
            or a study name (its latest sweep).
    """
    return choose_sweep(sweeps(store, experiment_id), which)


def choose_sweep(found: list[Any], which: str | None) -> Any:
    """The sweep ``which`` names among an experiment's sweeps (newest first); None if none."""
    if which is None or (which.startswith("-") and which[1:].isdigit()):
        back = 1 if which is None else int(which[1:])
        return found[back - 1] if 0 < back <= len(found) else None
    return next((r for r in found
                 if which in (r.info.run_id, r.info.run_name, r.data.tags.get(TAG_STUDY))),
                None)


def pages(store: Store, experiment_id: str, filter_string: str,
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


def _trials_of(parent_run_id: str) -> str:
    return f"tags.`{TAG_PARENT}` = '{parent_run_id}' and tags.`{TAG_ROLE}` = 'trial'"


def ranked_trials(store: Store, experiment_id: str, parent_run_id: str, metric: str,
                  direction: str) -> Iterator[Any]:
    """Yield a sweep's finished trial runs, best first, paged.

    The order is the one tie rule of every view: the best value first, ties to the
    earliest trial (as Optuna's ``best_trial``). Runs whose metric is missing, NaN or
    infinite never rank: such a trial failed, whatever the store made of its value.
    """
    order = "DESC" if direction == "maximize" else "ASC"
    tied: list[Any] = []  # runs sharing one value, yielded in trial order
    for run in pages(store, experiment_id,
                     f"{_trials_of(parent_run_id)} and attributes.status = 'FINISHED'",
                     [f"metrics.`{metric}` {order}", "attributes.start_time ASC"]):
        value = run.data.metrics.get(metric, math.nan)
        if not math.isfinite(value):
            continue
        if tied and tied[0].data.metrics[metric] != value:
            yield from sorted(tied, key=_trial_order)
            tied = []
        tied.append(run)
    yield from sorted(tied, key=_trial_order)


def best_first(runs: list[Any], metric: str, direction: str) -> list[Any]:
    """Runs in memory ranked as :func:`ranked_trials` ranks them (the same tie rule)."""
    sign = -1.0 if direction == "maximize" else 1.0
    ranked = [r for r in runs if r.info.status == "FINISHED"
              and math.isfinite(r.data.metrics.get(metric, math.nan))]
    return sorted(ranked, key=lambda r: (sign * r.data.metrics[metric], *_trial_order(r)))


def pruned_of(runs: Iterable[Any]) -> list[tuple[int, int]]:
    """Pruned trials among runs: (trial number, the step its pruner stopped it at)."""
    return sorted((int(run.data.tags.get(TAG_TRIAL, -1)), int(run.data.tags[TAG_PRUNED_AT]))
                  for run in runs if TAG_PRUNED_AT in run.data.tags)


def _trial_order(run: Any) -> tuple[float, int]:
    """A run's trial number, then its start: parallel trials may start out of order."""
    trial = run.data.tags.get(TAG_TRIAL)
    return (int(trial) if trial is not None and trial.isdigit() else math.inf,
            run.info.start_time or 0)


def best_trial_run(store: Store, experiment_id: str, parent_run_id: str, metric: str,
                   direction: str, chosen: tuple[str, str | None] | None = None
                   ) -> tuple[Best, dict[str, int]]:
    """Find a sweep's best finished trial run and count its trials by status.

    Args:
        store: The connected tracking store.
        experiment_id: The sweep's experiment.
        parent_run_id: The sweep's parent run.
        metric: The objective metric, e.g. ``val_accuracy``.
        direction: ``maximize`` or ``minimize``.
        chosen: The trial the sweep's study holds best and its run id, when it has a
            study: that decision is taken as it is, not made again from the runs. Runs
            are ranked (:func:`ranked_trials`) only for a sweep without a study, or when
            the chosen trial's run can't be used (its record failed); that is printed.

    Returns:
        The best run and ``{status: count}`` over all the sweep's trial runs.

    Raises:
        TrackingError: If no trial finished with the metric.
    """
    # Page through the runs: MLflow loads every run whole (params, tags, metrics), and a
    # 1,000-trial sweep read at once costs ~150 MB at the very end of the sweep.
    counts: dict[str, int] = {}
    for run in pages(store, experiment_id, _trials_of(parent_run_id)):
        status = PRUNED if TAG_PRUNED_AT in run.data.tags else run.info.status
        counts[status] = counts.get(status, 0) + 1
    best = _chosen_run(store, parent_run_id, metric, chosen) if chosen else None
    if best is None:
        best = next(ranked_trials(store, experiment_id, parent_run_id, metric, direction), None)
    if best is None:
        raise TrackingError(f"no trial finished with {metric}: {counts or 'no trials'}; "
                            f"nothing is registered")
    return Best(best.info.run_id, best.data.tags.get(TAG_TRIAL, "?"),
                best.data.metrics[metric], best.data.tags.get(TAG_OUTPUT_DIR, ""),
                dict(best.data.params), best.data.tags.get(TAG_TUNED, "")), counts


def _chosen_run(store: Store, parent_run_id: str, metric: str, chosen: tuple[str, str | None]
                ) -> Any | None:
    """The run of the trial the study chose, if it is a finished trial of this sweep."""
    trial, run_id = chosen
    run = None
    if run_id:
        try:
            run = store.client.get_run(run_id)
        except Exception:  # deleted, or never created: MLflow raises its own error
            run = None
    if run is not None and run.info.status == "FINISHED" \
            and run.data.tags.get(TAG_PARENT) == parent_run_id \
            and math.isfinite(run.data.metrics.get(metric, math.nan)):
        return run
    print(f"The study's best trial {trial} has no finished run with {metric} in this sweep "
          f"(its record failed); choosing the best trial the runs recorded")
    return None


def pruned_trials(store: Store, experiment_id: str, parent_run_id: str
                  ) -> list[tuple[int, int]]:
    """A sweep's pruned trials: (trial number, the step its pruner stopped it at)."""
    return pruned_of(pages(store, experiment_id, _trials_of(parent_run_id)))  # streamed
