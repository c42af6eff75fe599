"""Trials run again: the dead attempt's run is closed, and its retry's run links to it.

A trial is run again when its sweep process stopped beating (frozen, killed, its host
lost: the sweeper's heartbeats) or was interrupted. The attempt's run may still say
RUNNING (nobody closed it), or even FINISHED (a frozen process woke up and logged it
after its trial was given up): either way it is not a result, and only one run per
trial may rank. Both ends fix it:

* the retry's job, when its run opens, tags it with the attempt it replaces and closes
  the attempt's run FAILED, so that the UI shows the truth while the sweep goes on;
* the sweep's end, before ranking, closes every replaced attempt's run again, with the
  reason Optuna recorded, in case a woken process logged it in between.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from tabflow.contract import (
    ATTR_ERROR,
    ATTR_RETRY_OF,
    ATTR_WORKER_DIED,
    ENV_RETRY_OF,
    TAG_ERROR,
    TAG_PARENT,
    TAG_RETRIED_AS,
    TAG_RETRY_OF,
    TAG_ROLE,
    TAG_TRIAL,
)
from tabflow.tracking.queries import pages
from tabflow.tracking.records import log_run_data
from tabflow.tracking.store import Store

log = logging.getLogger(__name__)


def replaced_attempt() -> str | None:
    """The trial number this job retries (set by the sweeper in its environment), if any."""
    return os.environ.get(ENV_RETRY_OF) or None


def close_attempts(store: Store, experiment_id: str, parent_run_id: str,
                   replaced: dict[str, tuple[str | None, str | None]]) -> int:
    """Close the runs of replaced or dead attempts: FAILED, tagged with their retry and why.

    Args:
        store: The tracking store.
        experiment_id: The sweep's experiment.
        parent_run_id: The sweep's parent run.
        replaced: ``{attempt trial number: (retry trial number or None, reason or None)}``.

    Returns:
        How many runs were closed (were not FAILED yet); tags are brought up to date anyway.
    """
    if not replaced:
        return 0
    changed = 0
    trials = f"tags.`{TAG_PARENT}` = '{parent_run_id}' and tags.`{TAG_ROLE}` = 'trial'"
    if len(replaced) == 1:  # a retry's job: one attempt, found by its tag
        trials += f" and tags.`{TAG_TRIAL}` = '{next(iter(replaced))}'"
    for run in pages(store, experiment_id, trials):
        attempt = run.data.tags.get(TAG_TRIAL)
        if attempt not in replaced:
            continue
        retry, reason = replaced[attempt]
        tags = {} if retry is None else {TAG_RETRIED_AS: retry}
        if reason:
            tags[TAG_ERROR] = reason
        if run.info.status == "FAILED" and all(run.data.tags.get(k) == v
                                                for k, v in tags.items()):
            continue  # closed and tagged already
        log_run_data(store, run.info.run_id, tags=tags)
        if run.info.status != "FAILED":
            store.client.set_terminated(run.info.run_id, "FAILED")
            changed += 1
    return changed


def replaced_by_study(trials: list[Any]) -> dict[str, tuple[str | None, str | None]]:
    """``{attempt: (retry, reason)}`` for a study's replaced and dead attempts.

    An attempt is replaced when a later trial retries it; a trial whose sweep process
    died and that was not retried (``max_retry`` reached) is closed too, without a retry.

    Args:
        trials: The study's Optuna trials.
    """
    by_number = {t.number: t for t in trials}
    replaced: dict[str, tuple[str | None, str | None]] = {}
    for t in trials:
        attempt = t.user_attrs.get(ATTR_RETRY_OF)
        if attempt is None or int(attempt) not in by_number:
            continue
        reason = by_number[int(attempt)].user_attrs.get(ATTR_ERROR)
        replaced[str(attempt)] = (str(t.number), f"retried as trial {t.number}: {reason}"
                                  if reason else f"retried as trial {t.number}")
    for t in trials:
        if ATTR_WORKER_DIED in t.user_attrs and str(t.number) not in replaced \
                and t.state.name == "FAIL":
            replaced[str(t.number)] = (None, t.user_attrs.get(ATTR_ERROR))
    return replaced


def link_retry(store: Store, experiment_id: str, parent_run_id: str | None,
               tags: dict[str, str]) -> None:
    """At a retry's start: close the attempt's run (its own run is tagged already)."""
    attempt, retry = tags.get(TAG_RETRY_OF), tags.get(TAG_TRIAL)
    if attempt is None or retry is None or parent_run_id is None:
        return
    if close_attempts(store, experiment_id, parent_run_id,
                      {attempt: (retry, f"retried as trial {retry}")}):
        log.info("Trial %s retries trial %s, whose run is closed as FAILED", retry, attempt)
