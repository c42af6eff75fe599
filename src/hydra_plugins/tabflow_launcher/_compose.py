"""Job configs composed once per distinct set of config-group choices.

Hydra composes a job's config in two steps: the defaults list (which config of each
group, from the group overrides such as ``model=rf``) is merged into one config, then
the value overrides (``model.max_depth=8``) are applied to it, in order. Only the
first step is costly, and in a sweep it repeats for every trial with the same inputs.
:class:`Composer` runs it through Hydra once per distinct set of group overrides,
keeps the result, and does the second step on a copy, with Hydra's own function. It
then sets what Hydra derives from the whole override list (``hydra.overrides``).

Anything that is not plainly a value override (a group choice, a package, a deletion,
``hydra.searchpath``) is part of the cache key, so it is composed by Hydra itself.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, flag_override, read_write

log = logging.getLogger(__name__)

# Value overrides whose keys shape composition itself: never applied to a copy.
STRUCTURAL_KEYS = ("hydra.searchpath", "hydra.aliases", "hydra.defaults", "defaults")


class Composer:
    """Compose sweep job configs as ``ConfigLoader.load_sweep_config`` does, caching.

    Args:
        loader: The app's config loader (``hydra_context.config_loader``).
        master: The sweep's config (the launcher's ``config``).
    """

    def __init__(self, loader: Any, master: DictConfig) -> None:
        self.loader = loader
        self.master = master
        self.parser = OverridesParser.create()
        self.master_hydra = self.parser.parse_overrides(
            [str(o) for o in master.hydra.overrides.hydra])
        self.bases: dict[tuple[str, ...], DictConfig] = {}
        self.repo = loader.repository
        with contextlib.suppress(Exception):  # Hydra's private API: the search path in full
            # The repository Hydra composes from, with the primary config's hydra.searchpath:
            # a group found only there is a group, not a key.
            _, self.repo = loader._parse_overrides_and_create_caching_repo(
                str(master.hydra.job.config_name), [o.input_line for o in self.master_hydra],
                self.master_hydra)

    def is_value(self, override: Override) -> bool:
        """Whether Hydra applies an override to the composed config (not to its defaults)."""
        if (override.is_sweep_override() or override.is_delete()
                or override.package is not None):
            return False
        key = override.key_or_group
        if any(key == k or key.startswith(f"{k}.") for k in STRUCTURAL_KEYS):
            return False
        return override.is_value_path or not self.repo.group_exists(key)

    def compose(self, overrides: list[str]) -> DictConfig:
        """The job config for one job's overrides.

        Raises:
            ConfigCompositionException: As Hydra would (an unknown key, a bad value).
        """
        parsed = self.parser.parse_overrides(overrides)
        ConfigLoaderImpl.validate_sweep_overrides_legal(parsed, run_mode=RunMode.RUN,
                                                        from_shell=True)
        values = [o for o in parsed if self.is_value(o)]
        groups = [str(o.input_line) for o in parsed if not self.is_value(o)]
        key = tuple(groups)
        base = self.bases.get(key)
        if base is None:
            base = self.loader.load_sweep_config(self.master, groups)
            self.bases[key] = base
            log.debug("Composed the job config for %s", groups or "the sweep's defaults")
        cfg = copy.deepcopy(base)
        aliases = cfg.hydra.get("aliases")
        if aliases is not None:
            with flag_override(aliases, "readonly", True):
                ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        else:
            ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        # What Hydra derives from the whole list: the master's hydra overrides, then these.
        every = self.master_hydra + parsed
        with read_write(cfg.hydra.overrides):
            cfg.hydra.overrides.hydra = [o.input_line for o in every if o.is_hydra_override()]
            cfg.hydra.overrides.task = [o.input_line for o in every
                                        if not o.is_hydra_override()]
        ConfigLoaderImpl._ensure_sweep_config_controller_unchanged(master_config=self.master,
                                                                   sweep_config=cfg)
        OmegaConf.copy_cache(from_config=self.master, to_config=cfg)
        return cfg
