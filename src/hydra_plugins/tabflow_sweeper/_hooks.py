"""What the sweeper's config may name as code: declared hooks and Optuna's own classes.

A config value is data until an allow-list says it is code. The sweeper turns four
settings into code: the sampler and the pruner (``_target_`` of an Optuna class), and two
hooks, ``study_namer`` and upstream's ``custom_search_space`` (dotted paths of functions).
A hook must be declared in ``hydra.sweeper.hooks`` (the app's config files declare theirs),
so ``study_namer=builtins.print`` on a command line, or replayed from a stored tag, is
refused; a sampler or pruner must be a subclass of Optuna's ``BaseSampler`` /
``BasePruner`` from ``optuna.samplers`` / ``optuna.pruners``, so no other callable is
instantiated. Every check reads the config only; nothing is imported that isn't allowed.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

# The settings that name a hook, and what each is for (for messages).
HOOK_SETTINGS = {
    "study_namer": "names the study: a function of the composed config",
    "custom_search_space": "extends each trial's space: a function of (config, trial)",
}
# `_target_` roots the sweeper may instantiate, and the Optuna base class each must extend.
TARGET_SETTINGS = {"sampler": ("optuna.samplers", "BaseSampler"),
                   "pruner": ("optuna.pruners", "BasePruner")}
# Upstream's own sampler factories (its nsgaii / nsgaiii / motpe configs), by exact name.
UPSTREAM_FACTORIES = frozenset({
    "hydra_plugins.hydra_optuna_sweeper._impl.create_nsgaii_sampler",
    "hydra_plugins.hydra_optuna_sweeper._impl.create_nsgaiii_sampler",
    "hydra_plugins.hydra_optuna_sweeper.config.raise_motpe_removed",
})
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


class HookError(ValueError):
    """A sweeper setting names code that no allow-list admits; the message says what would."""


def declared_hooks(sweeper: DictConfig | dict[str, Any]) -> list[str]:
    """The dotted paths the config declares as hooks (``hydra.sweeper.hooks``)."""
    hooks = sweeper.get("hooks") or []
    return [str(h) for h in hooks]


def resolve_hook(sweeper: DictConfig | dict[str, Any], setting: str) -> Callable[..., Any] | None:
    """The function a hook setting names, once the config declares it; None when unset.

    Raises:
        HookError: If the path is not declared in ``hydra.sweeper.hooks``, or is not a
            function once imported.
    """
    path = sweeper.get(setting)
    if not path:
        return None
    path = str(path)
    declared = declared_hooks(sweeper)
    if path not in declared or not _DOTTED.match(path):
        raise HookError(
            f"hydra.sweeper.{setting}={path} is not a declared hook ({HOOK_SETTINGS[setting]}); "
            f"declared: {declared or 'none'}. Declare your own function in your sweeper "
            f"config's hooks list (hydra.sweeper.hooks: [{path}]), see docs/security.md")
    module, _, name = path.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise HookError(f"hydra.sweeper.{setting}={path}: the declared hook can't be imported "
                        f"({type(e).__name__}: {e})") from e
    if not inspect.isfunction(fn):
        raise HookError(f"hydra.sweeper.{setting}={path} is a {type(fn).__name__}, not a "
                        f"function ({HOOK_SETTINGS[setting]})")
    return fn


def _targets(node: Any, key: str) -> list[tuple[str, str]]:
    """Every ``(config key, _target_)`` in a node, nested ones included."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "_target_":
                found.append((key, str(v)))
            else:
                found.extend(_targets(v, f"{key}.{k}"))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found.extend(_targets(v, f"{key}[{i}]"))
    return found


def check_target(key: str, target: str, package: str, base: str) -> None:
    """Refuse a ``_target_`` that is not a public subclass of ``package``'s ``base``.

    Raises:
        HookError: Naming the key, the value and the classes that would be accepted.
    """
    if package == "optuna.samplers" and target in UPSTREAM_FACTORIES:
        return
    root = importlib.import_module(package)
    base_cls = getattr(root, base)
    public = sorted(n for n in dir(root) if not n.startswith("_") and inspect.isclass(
        getattr(root, n)) and issubclass(getattr(root, n), base_cls) and n != base)
    module, _, name = target.rpartition(".")
    ok = _DOTTED.match(target) and (module == package or module.startswith(f"{package}."))
    cls = None
    if ok and not any(part.startswith("_") for part in target.split(".")[len(
            package.split(".")):]):
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            cls = None
    if not (inspect.isclass(cls) and issubclass(cls, base_cls)):
        raise HookError(f"{key}._target_={target} is not an Optuna {base[4:].lower()} class; "
                        f"use one of {package}.{{{', '.join(public)}}}")


def check_settings(sweeper: DictConfig) -> None:
    """Refuse any sweeper setting that would run code no allow-list admits.

    Runs before anything is created (the app calls it too, before its stores open).

    Raises:
        HookError: For the first setting at fault, naming it, its value and what is accepted.
    """
    for setting, (package, base) in TARGET_SETTINGS.items():
        node = sweeper.get(setting)
        if node is None:
            continue
        plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) \
            else node
        for key, target in _targets(plain, f"hydra.sweeper.{setting}"):
            check_target(key, target, package, base)
    for setting in HOOK_SETTINGS:
        resolve_hook(sweeper, setting)
