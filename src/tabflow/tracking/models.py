"""A fitted pipeline as an MLflow model: logged with skops, trusting exactly its own types."""

from __future__ import annotations

import warnings
from importlib import metadata
from typing import Any

from tabflow.tracking.store import Store, TrackingError

# Packages the logged model needs; pinned to the versions that trained it. Listing them
# explicitly avoids MLflow's requirement inference, which takes ~16 s per model.
MODEL_REQUIREMENTS = ("scikit-learn", "numpy", "pandas", "scipy", "skops")
# skops refuses types it does not know; we trust exactly the types our pipeline holds,
# and only from these packages.
TRUSTED_TYPE_PREFIXES = ("sklearn.", "numpy.", "scipy.")


def trusted_types(model: Any) -> list[str]:
    """Return the exact types skops must trust to save and load ``model``.

    Raises:
        TrackingError: If the model holds a type from outside scikit-learn, NumPy or SciPy.
    """
    import skops.io

    # Dumping a 300-tree forest with skops takes seconds; its types are those of one tree.
    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(_one_of_each(model)))
    foreign = [t for t in untrusted if not t.startswith(TRUSTED_TYPE_PREFIXES)]
    if foreign:
        raise TrackingError(f"the model holds types skops should not trust: {foreign}")
    return list(untrusted)


# Ensemble members of these modules all hold the same types, so one stands for all.
_MEMBER_MODULES = ("sklearn.tree.", "sklearn.ensemble._hist_gradient_boosting.")


def _one_of_each(value: Any, depth: int = 0) -> Any:
    """A shallow copy of a fitted model whose tree ensembles keep a single member.

    It holds exactly the types of the original, so skops lists the same untrusted types,
    in a fraction of the time. Only homogeneous sequences of tree objects are cut.
    """
    import copy

    import numpy as np

    if depth > 12:
        return value
    if isinstance(value, (list, tuple, np.ndarray)) and len(value) > 1:
        flat = list(value.flat) if isinstance(value, np.ndarray) else list(value)
        kinds = {type(v) for v in flat}
        if len(kinds) == 1 and next(iter(kinds)).__module__.startswith(_MEMBER_MODULES):
            return value[:1]  # same container type, one member
    if isinstance(value, list):
        return [_one_of_each(v, depth + 1) for v in value]
    if type(value) is tuple:
        return tuple(_one_of_each(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return {k: _one_of_each(v, depth + 1) for k, v in value.items()}
    if type(value).__module__.startswith("sklearn.") and hasattr(value, "__dict__"):
        clone = copy.copy(value)
        clone.__dict__.update({k: _one_of_each(v, depth + 1) for k, v in vars(value).items()})
        return clone
    return value


def log_model(store: Store, run_id: str, model: Any, input_example: Any) -> Any:
    """Log a fitted pipeline as the run's MLflow model (skops format, explicit requirements).

    Returns:
        MLflow's ``ModelInfo`` (``model_uri`` points at the logged model).
    """
    import mlflow

    requirements = [f"{pkg}=={metadata.version(pkg)}" for pkg in MODEL_REQUIREMENTS]
    with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        # Class labels are integers; MLflow's hint about missing values in integer
        # columns concerns inputs with gaps, which this output can't have.
        warnings.filterwarnings("ignore", message=".*Inferred schema contains integer")
        return mlflow.sklearn.log_model(
            model, name="model", input_example=input_example, pip_requirements=requirements,
            serialization_format="skops", skops_trusted_types=trusted_types(model),
        )


def load_model(uri: str) -> Any:
    """Load a registered scikit-learn pipeline (``models:/<name>/<version>``)."""
    import mlflow

    return mlflow.sklearn.load_model(uri)
