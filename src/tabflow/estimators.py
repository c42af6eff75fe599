"""Which classes a ``model`` node may name, and which arguments reach them.

``model.classifier`` / ``model.regressor`` are import paths taken from config files, the
command line, search spaces and (through ``tabflow monitor --retrain``) a tracking store's
tags, so they are data until this allow-list says they are an estimator:

* a public class of scikit-learn (``sklearn.<public modules>.<Class>``), or an exact class
  path listed in ``estimators.extra`` (xgboost, lightgbm, a team's own);
* a subclass of scikit-learn's ``BaseEstimator`` with ``fit`` and ``predict``, and a
  classifier or regressor as the task asks (scikit-learn's own ``is_classifier`` /
  ``is_regressor``).

Nothing else is imported, let alone called: ``sklearn.datasets.clear_data_home`` (which
deletes a directory) is refused before its module loads. Arguments go to the class only
when its signature takes them; a key it doesn't take is refused with the ones it does,
except the family's shared keys its sibling takes (``random_state`` for SVR).
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tabflow.config import MODEL_SCHEMAS, ModelConfig, Task

# Keys of a model config that describe the family rather than the estimator's arguments.
RESERVED_MODEL_KEYS = frozenset({"name", "classifier", "regressor"})
_PUBLIC_SKLEARN = re.compile(r"^sklearn(\.[a-z][a-z0-9_]*)+\.[A-Z]\w*$")
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


class EstimatorError(ValueError):
    """A model node names something that is not an admitted estimator, or bad arguments."""


def role(task: Task) -> str:
    """The model key an estimator of this task is read from."""
    return "classifier" if task is Task.classification else "regressor"


def resolve_estimator(path: str, task: Task, extra: Iterable[str] = ()) -> type:
    """The estimator class an import path names, once the allow-list admits it.

    Args:
        path: ``model.classifier`` / ``model.regressor``, e.g.
            ``sklearn.ensemble.RandomForestClassifier``.
        task: What the class must be (a classifier or a regressor).
        extra: Exact class paths admitted besides scikit-learn's (``estimators.extra``).

    Raises:
        EstimatorError: Naming the key, the value and what would be accepted.
    """
    key = f"model.{role(task)}"
    extra = [str(e) for e in extra]
    listed = path in extra and bool(_DOTTED.match(path))
    if not (listed or _PUBLIC_SKLEARN.match(path)):
        raise EstimatorError(
            f"{key}={path} is not a scikit-learn class tabflow may import as an estimator: "
            f"use a public "
            f"scikit-learn {role(task)} class (e.g. sklearn.ensemble.RandomForest"
            f"{'Classifier' if task is Task.classification else 'Regressor'}), or list the "
            f"exact class path in estimators.extra (docs/security.md)")
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise EstimatorError(f"{key}={path} can't be imported ({type(e).__name__}: {e})") from e
    from sklearn.base import BaseEstimator

    if not (inspect.isclass(cls) and issubclass(cls, BaseEstimator)
            and callable(getattr(cls, "fit", None)) and callable(getattr(cls, "predict", None))):
        raise EstimatorError(
            f"{key}={path} is not a scikit-learn-compatible estimator (a BaseEstimator "
            f"subclass with fit and predict); use an estimator class")
    return cls


def check_kind(estimator: Any, path: str, task: Task) -> None:
    """Refuse a classifier set as the regressor and the other way round."""
    from sklearn.base import is_classifier, is_regressor

    ok = is_classifier(estimator) if task is Task.classification else is_regressor(estimator)
    if not ok:
        raise EstimatorError(f"model.{role(task)}={path} is not a {role(task)}; a "
                             f"{task.value} dataset needs one")


def family_keys(model_cfg: DictConfig) -> frozenset[str]:
    """Arguments the family's schema declares (shared by its classifier and regressor)."""
    schema = OmegaConf.get_type(model_cfg)
    if not (isinstance(schema, type) and issubclass(schema, ModelConfig)):
        schema = MODEL_SCHEMAS.get(str(model_cfg.get("name")), ModelConfig)
    return frozenset(schema.__dataclass_fields__) - RESERVED_MODEL_KEYS


def estimator_kwargs(cls: type, params: dict[str, Any], shared: frozenset[str], key: str
                     ) -> dict[str, Any]:
    """The arguments ``cls`` takes; refuse any other, except the family's shared keys.

    Raises:
        EstimatorError: For an argument the class does not take, listing those it does.
    """
    signature = inspect.signature(cls).parameters
    accepted = {k for k, p in signature.items()
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    if any(p.kind is p.VAR_KEYWORD for p in signature.values()):
        accepted |= set(cls().get_params(deep=False))  # xgboost: named by get_params only
    unknown = sorted(k for k in params if k not in accepted and k not in shared)
    if unknown:
        raise EstimatorError(
            f"model.{unknown[0]}={params[unknown[0]]!r}: {cls.__name__} ({key}) takes no "
            f"argument {unknown[0]!r}; its arguments are {sorted(accepted)}")
    return {k: v for k, v in params.items() if k in accepted}


def estimator_params(model_cfg: DictConfig) -> dict[str, Any]:
    """Return the estimator's constructor arguments from a ``model`` node."""
    params = OmegaConf.to_container(model_cfg, resolve=True)
    assert isinstance(params, dict)
    return {str(k): v for k, v in params.items() if k not in RESERVED_MODEL_KEYS}


def build_estimator(model_cfg: DictConfig, task: Task, extra: Iterable[str] = ()) -> Any:
    """Instantiate the admitted estimator a ``model`` node names for a task.

    Args:
        model_cfg: The ``model`` node: ``classifier``/``regressor`` import paths plus
            the estimator's arguments.
        task: Classification picks ``classifier``, regression ``regressor``.
        extra: Exact class paths admitted besides scikit-learn's (``estimators.extra``).

    Returns:
        An unfitted estimator.

    Raises:
        EstimatorError: If the class is not admitted, or an argument is unknown to it.
    """
    path = str(model_cfg.get(role(task)))
    cls = resolve_estimator(path, task, extra)
    params = estimator_params(model_cfg)
    if cls.__name__ == "Ridge" and "C" in params:
        # logreg's C is an inverse penalty; Ridge's alpha is the penalty: alpha = 1 / (2 C).
        params["alpha"] = 1.0 / (2.0 * params.pop("C"))
    estimator = cls(**estimator_kwargs(cls, params, family_keys(model_cfg), path))
    check_kind(estimator, path, task)
    return estimator


def check_model(cfg: DictConfig) -> None:
    """Refuse, before any job, a model node or search space naming a non-estimator.

    The composed model is built (an estimator's constructor only stores its arguments),
    and every value a sweep may give ``model.classifier`` / ``model.regressor`` is
    resolved, so a refused class never reaches a trial.

    Raises:
        EstimatorError: For the first value at fault.
    """
    task = Task(cfg.dataset.task)
    extra = list(cfg.get("estimators", {}).get("extra") or [])
    build_estimator(cfg.model, task, extra)
    for value in swept_values(cfg, f"model.{role(task)}"):
        resolve_estimator(value, task, extra)


def swept_values(cfg: DictConfig, key: str) -> list[str]:
    """Every value a sweep's space or command line may give ``key`` (strings only)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep

    if "hydra" not in cfg:
        return []
    sweeper = cfg.hydra.get("sweeper") or {}
    lines = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    for space in (sweeper.get("conditional_params") or {}).values():
        lines += [f"{k}={v}" for k, v in space.items()]
    lines += list(cfg.hydra.overrides.task)
    values: list[str] = []
    for override in OverridesParser.create().parse_overrides(lines):
        if override.get_key_element().lstrip("+~") != key:
            continue
        value = override.value()
        if isinstance(value, ChoiceSweep):
            values += [str(v) for v in value.list]
        elif value is not None:
            values.append(str(value))
    return values
