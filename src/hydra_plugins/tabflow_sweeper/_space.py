"""What a sweep searches: its space, a trial's values, what it tries first, batch sizes."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import Trial

from hydra_plugins.tabflow_sweeper._study import set_user_attrs
from hydra_plugins.tabflow_sweeper.contract import effective_n_jobs

log = logging.getLogger(__name__)


def batch_size(n_jobs: int | None, launcher_cfg: Any) -> int:
    """Return how many trials to ask for per batch.

    Args:
        n_jobs: The sweeper's ``n_jobs``; null means "match the launcher".
        launcher_cfg: ``hydra.launcher`` of the composed config.

    Returns:
        ``n_jobs`` when set; else the launcher's ``n_jobs`` (joblib's negative values
        count back from the number of CPUs, as joblib does); 1 for the basic launcher.
    """
    if n_jobs is not None:
        if n_jobs < 1:
            raise ValueError(f"hydra.sweeper.n_jobs must be >= 1 or null, got {n_jobs}")
        return n_jobs
    launcher_jobs = launcher_cfg.get("n_jobs") if launcher_cfg is not None else None
    if launcher_jobs is None:
        return 1
    return effective_n_jobs(int(launcher_jobs))


@dataclass
class SearchSpace:
    """What a sweep searches, parsed from its config and command line."""

    distributions: dict[str, BaseDistribution]
    fixed_params: dict[str, Any]
    fixed_overrides: list[str]
    # One space per value of the conditioning parameter (e.g. per model family).
    conditional: dict[str, dict[str, BaseDistribution]] = field(default_factory=dict)


def parse_space(impl: Any, arguments: list[str],
                conditional_params: dict[str, dict[str, str]]) -> tuple[SearchSpace, Any, int]:
    """Parse a sweep's search space; return it with the sampler and trial count it implies.

    Upstream's parsing (``impl`` is its ``OptunaSweeperImpl``): ``hydra.sweeper.params``,
    ``search_space`` and the command line's sweep overrides. A grid sampler is built on
    the grid, and ``n_trials`` is capped at its size.
    """
    impl._process_searchspace_config()
    params_conf = impl._parse_sweeper_params_config()
    params_conf.extend(arguments)
    dists, fixed_params, fixed_overrides = create_params_from_overrides(params_conf)
    sampler, n_trials = impl.sampler, impl.n_trials
    if getattr(sampler, "func", None) is optuna.samplers.GridSampler:
        grid = {name: impl._to_grid_sampler_choices(d) for name, d in dists.items()}
        sampler = sampler(grid)
        n_trials = min(n_trials, math.prod(len(v) for v in grid.values()))
        log.info("Grid sampler: %d trials cover the grid", n_trials)
    for name in fixed_params:
        dists.pop(name, None)
    conditional = {
        str(choice): create_params_from_overrides([f"{k}={v}" for k, v in space.items()])[0]
        for choice, space in conditional_params.items()
    }
    return SearchSpace(dists, fixed_params, fixed_overrides, conditional), sampler, n_trials


def warm_sets(cfg: DictConfig, space: SearchSpace, enqueue: list[dict[str, Any]],
              enqueue_defaults: bool) -> list[dict[str, Any]]:
    """The parameter sets to try first.

    ``enqueue``, after the config's own values of the searched keys when
    ``enqueue_defaults`` (a known-good first trial).
    """
    sets = list(enqueue)
    if enqueue_defaults:
        defaults = {name: OmegaConf.select(cfg, name) for name in space.distributions}
        sets.insert(0, {k: v for k, v in defaults.items() if v is not None})
    return sets


class OverlapError(ValueError):
    """A parameter is both fixed on the command line and suggested by the search space."""


def suggest(trial: Trial, space: SearchSpace, conditional_on: str,
            extender: Callable[[DictConfig, Trial], None] | None, cfg: DictConfig
            ) -> dict[str, Any]:
    """Choose a trial's values; return every parameter the job gets, by name.

    The search space first, then the space of the conditioning parameter's choice
    (``conditional_params``), then the user's ``custom_search_space`` function. Fixed
    parameters are recorded on the trial as user attributes, as upstream does.

    Raises:
        OverlapError: If the custom function suggests a parameter that is also fixed
            (upstream refuses it too: the job would run the fixed value while the trial
            records the suggested one).
    """
    for name, distribution in space.distributions.items():
        trial._suggest(name, distribution)
    # A conditional space: the choice made above decides which keys exist.
    choice = trial.params.get(conditional_on)
    for name, distribution in space.conditional.get(str(choice), {}).items():
        trial._suggest(f"{choice}:{name}", distribution)
    set_user_attrs(trial, dict(space.fixed_params))
    if extender is not None:
        extender(cfg, trial)
    overlap = sorted(set(trial.params) & set(space.fixed_params))
    if overlap:
        raise OverlapError(
            f"Overlapping fixed parameters and search space parameters found: {overlap} "
            f"are fixed on the command line and suggested by custom_search_space; drop "
            f"them from one of the two")
    # Conditional names carry their choice as a prefix; the override doesn't.
    values = {name.split(":", 1)[-1]: value for name, value in trial.params.items()}
    values.update(space.fixed_params)
    return values
