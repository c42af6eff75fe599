"""Overrides read back from a tracking store: data, checked before they are replayed.

``tabflow monitor --retrain`` re-runs the sweep that registered a version with the
command-line overrides recorded in its parent run's ``hydra.overrides`` tag. Anyone who can
write to the tracking server can set that tag, so its overrides get the command line's
checks and one more: an override that changes *what code runs* (a ``_target_``, the
estimator classes and their allow-list, callbacks, the launcher or sweeper, the sweeper's
hooks, Hydra's search path, logging config or job environment) is refused unless it equals
what the config files already say. The person at the command line can still pass any of
them on purpose (``--retrain-override``); a stored tag never can.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

# Keys (and everything below them) whose values become code or change which code runs.
CODE_KEYS = ("model.classifier", "model.regressor", "estimators", "hydra.callbacks",
             "hydra.launcher", "hydra.sweeper.hooks", "hydra.sweeper.study_namer",
             "hydra.sweeper.custom_search_space", "hydra.searchpath", "hydra.job_logging",
             "hydra.hydra_logging", "hydra.job.env_set", "hydra.job.env_copy")
# Config groups whose choice is a plugin or a logging setup (sub-groups such as
# hydra/sweeper/sampler only pick Optuna classes, which the sweeper admits itself).
CODE_GROUPS = ("hydra/launcher", "hydra/sweeper", "hydra/callbacks", "hydra/job_logging",
               "hydra/hydra_logging")


class ReplayError(ValueError):
    """A stored override that may not be replayed; the message names run, tag and override."""


def changes_code(key: str) -> bool:
    """Whether an override of ``key`` (a config key or a group) can change what code runs."""
    key = key.lstrip("+~")
    return ("_target_" in key or key in CODE_GROUPS
            or any(key == k or key.startswith(f"{k}.") for k in CODE_KEYS))


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def check_replayed(overrides: list[str], source: str) -> list[str]:
    """Return stored overrides once each is safe to replay.

    Args:
        overrides: The overrides as recorded (one ``key=value`` each).
        source: Where they were read, for messages (``run <id>, tag hydra.overrides``).

    Raises:
        ReplayError: For an override that can't be parsed, or one that changes what code
            runs and differs from the config files.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as e:
        raise ReplayError(f"{source}: a stored override can't be parsed ({e}); run the "
                          f"retraining sweep yourself") from e
    code = [o for o in parsed if changes_code(o.key_or_group)]
    if not code:
        return overrides
    try:
        reference = _compose([o.input_line for o in parsed
                              if not changes_code(o.key_or_group) and o.input_line])
    except Exception as e:  # the stored choices no longer compose: nothing to compare with
        raise ReplayError(f"{source}: the stored overrides no longer compose with the config "
                          f"files ({type(e).__name__}: {str(e).splitlines()[0]}); run the "
                          f"retraining sweep yourself") from e
    for override in code:
        key = override.key_or_group.lstrip("+~")
        if "/" in key:  # a group: compare the choice
            said = reference.hydra.runtime.choices.get(key)
        else:
            said = _plain(OmegaConf.select(reference, key, default=None))
        stored = None if override.is_delete() or override.is_sweep_override() \
            else _plain(override.value())
        if override.is_delete() or override.is_sweep_override() or stored != said:
            raise ReplayError(
                f"{source}: the stored override {override.input_line!r} changes what code runs "
                f"(the config files say {key}={said}); refused, since anyone with write access "
                f"to the tracking store can set it. Pass it yourself with --retrain-override "
                f"if you mean it (docs/security.md)")
    return overrides


def _compose(overrides: list[str]) -> Any:
    """The config the repository's files give with these (safe) overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tabflow.config import register_configs
    from tabflow.contract import CODE_ROOT

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CODE_ROOT / "conf"), job_name="replay"):
            return compose("train", overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
