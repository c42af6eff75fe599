"""The study a sweep belongs to, when ``hydra.sweeper.study_name`` doesn't name it.

Re-running the same command must continue the same study (resume to ``n_trials``), and
a changed experiment must start a new one. The name is therefore a hash of what shapes
the trials: the job's config, the search space, the command line's sweep dimensions, the
sampler and the directions; not the number of trials, a timeout or parallelism.

An app can name its studies itself: ``hydra.sweeper.study_namer`` is the dotted path of a
function of the composed config, declared in ``hydra.sweeper.hooks`` (tabflow's adds its
data's digest, so that edited data starts a new study). This module reads no app's config keys.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.tabflow_sweeper._hooks import resolve_hook
from hydra_plugins.tabflow_sweeper.contract import TRIAL_KEY


def sweep_overrides(overrides: list[str]) -> list[str]:
    """Return the command-line overrides that are sweep dimensions (``choice(...)`` etc.)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return sorted(o.input_line for o in parsed
                  if o.is_sweep_override() and o.input_line is not None)


def search_space(cfg: DictConfig) -> dict[str, str]:
    """Every dimension a sweep searches, as ``{key: expression}``.

    ``hydra.sweeper.params``, a conditional space's ``conditional_params`` (``"rf: ...;
    hgb: ..."`` where families share a key) and the command line's sweep overrides
    (``'preprocessing.scaler=choice(a,b)'``), which win as upstream's sweeper lets them.
    Read in the launching process: a trial's own config holds its values, not the
    expressions.
    """
    sweeper = cfg.hydra.sweeper
    space = {str(k): str(v) for k, v in (sweeper.get("params") or {}).items()}
    # A conditional space's dimensions, each with its expression per family.
    per_key: dict[str, list[str]] = {}
    for family, dims in (sweeper.get("conditional_params") or {}).items():
        for k, v in (dims or {}).items():
            per_key.setdefault(str(k), []).append(f"{family}: {v}")
    space.update({k: "; ".join(v) for k, v in per_key.items()})
    parsed = OverridesParser.create().parse_overrides(list(cfg.hydra.overrides.task))
    for o in parsed:
        if o.is_sweep_override() and o.input_line is not None:
            space[o.key_or_group] = o.input_line.split("=", 1)[1]  # no +/++ prefix
    return space


def plain(node: Any) -> Any:
    """A config node as plain, resolved Python data (anything else as it is)."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def identity(cfg: DictConfig, job: dict[Any, Any]) -> dict[str, Any]:
    """Return what makes two sweeps the same study.

    Args:
        cfg: The composed config of the sweep (launching process).
        job: The part of the job's config that shapes its trials.

    Returns:
        A JSON-able dict of the job config, the search space, the command-line sweep
        dimensions, the sampler and the conditional spaces.
    """
    sweeper = cfg.hydra.sweeper
    return {
        "job": job,
        "params": {str(k): str(v) for k, v in (sweeper.get("params") or {}).items()},
        "sweep_overrides": sweep_overrides(list(cfg.hydra.overrides.task)),
        "sampler": plain(sweeper.get("sampler")),
        "conditional": plain(sweeper.get("conditional_params")),
    }


def digest(data: Any) -> str:
    """A short, stable hash of JSON-able data."""
    blob = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def study_name(cfg: DictConfig) -> str:
    """The study's name.

    ``hydra.sweeper.study_name`` when set; else what the app's ``study_namer`` returns;
    else ``<job name>-<hash>`` of the sweep's :func:`identity` and its directions.
    """
    sweeper = cfg.hydra.sweeper
    if sweeper.get("study_name"):
        return str(sweeper.study_name)
    namer = resolve_hook(sweeper, "study_namer")  # declared in hydra.sweeper.hooks only
    if namer is not None:
        return str(namer(cfg))
    job = {k: plain(v) for k, v in cfg.items() if k not in ("hydra", TRIAL_KEY)}
    found = identity(cfg, job)
    found["directions"] = plain(sweeper.get("direction"))
    return f"{cfg.hydra.job.name}-{digest(found)}"
