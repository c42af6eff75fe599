"""Hydra sweeper plugin ``hydra/sweeper=tabflow_optuna``: hydra-optuna-sweeper for long sweeps.

It works in any Hydra app (docs/sweeper-plugin.md) and imports nothing of tabflow. Its
public API is what an app may use (tabflow uses nothing else; ``.ci/check_imports.py``
refuses an import of a private module from outside the plugin):

* this package: :func:`search_space`, :func:`study_is_complete`, :func:`best_trial`, the
  hook checks;
* ``contract``: names shared with jobs and the app (files, trial attributes, env vars),
  clean exits and held signals;
* ``locks``: locks in the study's storage, held by beating;
* ``stores``: safe opening of SQLite and PostgreSQL storages;
* ``identity``: the study's name when none is given, from what the sweep searches.

Hydra's plugin scan imports the public modules at start-up, so they stay cheap (no Optuna
or SQLAlchemy at import). The private ones (a leading underscore; the scan skips them) load
only when a sweep runs:

* ``tabflow_sweeper``: the plugin class and its config schema.
* ``_sweep``: the loop: ask, launch, tell; an interrupted launch.
* ``_space``: the search space, a trial's values, warm-start sets, batch sizes.
* ``_study``: open, resume, warm-start the Optuna study; ask under its shared lock.
* ``_heartbeat``: trials beat; a dead worker's trials are failed and retried.
* ``_hooks``: what the config may name as code (declared hooks, Optuna's classes only).
* ``_pruning``, ``_outcomes``, ``_progress``: pruners; what a job returned; progress
  lines and ``optimization_results.yaml``.
"""

from typing import Any

from hydra_plugins.tabflow_sweeper._hooks import HookError
from hydra_plugins.tabflow_sweeper._hooks import check_settings as check_sweeper_settings


def search_space(cfg: Any) -> dict[str, str]:
    """Every dimension a sweep searches, config and command line (``identity.search_space``)."""
    from hydra_plugins.tabflow_sweeper.identity import search_space as space

    return space(cfg)


def study_is_complete(storage: str, name: str, n_trials: int) -> bool:
    """Whether re-running the study would run nothing (``_study.is_complete``).

    Loads Optuna only when called: Hydra imports this package at start-up.
    """
    from hydra_plugins.tabflow_sweeper._study import is_complete

    return is_complete(storage, name, n_trials)


def best_trial(study: Any) -> Any | None:
    """The trial a study holds best: the one decision a sweep reports and registers.

    The best value of the first objective among the complete trials (with several
    objectives, among the Pareto front's), ties to the earliest trial, as Optuna's
    ``best_trial`` promises for one objective. None while no trial is complete.
    """
    from optuna.trial import TrialState

    if len(study.directions) > 1:
        candidates = study.best_trials
    else:
        candidates = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not candidates:
        return None
    sign = -1.0 if study.directions[0].name == "MAXIMIZE" else 1.0
    return min(candidates, key=lambda t: (sign * t.values[0], t.number))


__all__ = ["HookError", "best_trial", "check_sweeper_settings", "search_space",
           "study_is_complete"]
