"""Load a dataset named by config and split it into train / validation / test."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pandas as pd
from omegaconf import DictConfig
from sklearn.model_selection import train_test_split

from tabflow.config import Task


@dataclass(frozen=True)
class Dataset:
    """Features and target of one dataset, with what identifies it."""

    name: str
    source: str
    task: Task
    X: pd.DataFrame
    y: pd.Series

    @property
    def digest(self) -> str:
        """Return a SHA-256 of the rows, columns and dtypes: equal data, equal digest."""
        h = hashlib.sha256()
        columns = list(zip(self.X.columns, self.X.dtypes.astype(str), strict=True))
        h.update(repr(columns).encode())
        h.update(pd.util.hash_pandas_object(self.X, index=False).to_numpy().tobytes())
        h.update(pd.util.hash_pandas_object(self.y, index=False).to_numpy().tobytes())
        return h.hexdigest()

    def numeric_columns(self) -> list[str]:
        """Return the columns treated as numeric features."""
        return [c for c in self.X.columns if pd.api.types.is_numeric_dtype(self.X[c])]

    def categorical_columns(self) -> list[str]:
        """Return the columns treated as categorical features (everything not numeric)."""
        numeric = set(self.numeric_columns())
        return [c for c in self.X.columns if c not in numeric]

    def describe(self) -> dict[str, Any]:
        """Return the lineage record tracked with each run: name, source, digest, shape, schema."""
        return {
            "name": self.name,
            "source": self.source,
            "task": self.task.value,
            "digest": self.digest,
            "n_rows": int(self.X.shape[0]),
            "n_features": int(self.X.shape[1]),
            "target": str(self.y.name),
            "schema": {str(c): str(t) for c, t in self.X.dtypes.items()},
        }


@dataclass(frozen=True)
class Splits:
    """Train / validation / test partitions of a dataset."""

    X_train: pd.DataFrame
    y_train: pd.Series
    X_val: pd.DataFrame
    y_val: pd.Series
    X_test: pd.DataFrame
    y_test: pd.Series


def _load_sklearn(loader: str | None, target: str) -> tuple[pd.DataFrame, pd.Series]:
    import sklearn.datasets

    # Only the bundled `load_*` sets: `fetch_*` would download at run time.
    fn = getattr(sklearn.datasets, loader or "", None)
    if not (loader and loader.startswith("load_") and callable(fn)):
        bundled = sorted(n for n in dir(sklearn.datasets) if n.startswith("load_"))
        raise ValueError(
            f"dataset.loader={loader!r} is not one of scikit-learn's bundled loaders; "
            f"choose one of {bundled}"
        )
    bunch = fn(as_frame=True)
    return bunch.data, bunch.target.rename(target)


def load_dataset(cfg: DictConfig) -> Dataset:
    """Load the dataset described by a ``dataset`` config node.

    Args:
        cfg: The ``dataset`` node (name, source, loader, target, task).

    Returns:
        The features and target as pandas objects.

    Raises:
        ValueError: If the source or loader is unknown.
    """
    if cfg.source == "sklearn":
        X, y = _load_sklearn(cfg.loader, cfg.target)
    else:
        raise ValueError(f"dataset.source={cfg.source!r} is not supported; use 'sklearn'")
    return Dataset(name=cfg.name, source=f"{cfg.source}:{cfg.loader}", task=Task(cfg.task),
                   X=X, y=y)


def split_dataset(ds: Dataset, cfg: DictConfig, seed: int) -> Splits:
    """Split a dataset into train / validation / test, seeded and stratified for classification.

    Args:
        ds: The dataset to split.
        cfg: The ``split`` node: ``test_size`` and ``val_size`` as fractions of all rows,
            ``stratify``.
        seed: Random seed of both cuts.

    Returns:
        The three partitions.
    """
    stratify = cfg.stratify and ds.task is Task.classification
    X_rest, X_test, y_rest, y_test = train_test_split(
        ds.X, ds.y, test_size=cfg.test_size, random_state=seed,
        stratify=ds.y if stratify else None,
    )
    # val_size is a fraction of the whole dataset, so rescale it to what is left.
    val_fraction = cfg.val_size / (1.0 - cfg.test_size)
    X_train, X_val, y_train, y_val = train_test_split(
        X_rest, y_rest, test_size=val_fraction, random_state=seed,
        stratify=y_rest if stratify else None,
    )
    return Splits(X_train, y_train, X_val, y_val, X_test, y_test)
