"""What a sweep searches, which parameter sets it tries first, and how many trials at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution

from tabflow.contract import effective_n_jobs


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
