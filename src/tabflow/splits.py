"""Split a dataset into train / validation / test, stratified, cached by content.

The test split is frozen by content: a row is held out or not by a hash of its values,
whatever the seed, so versions trained with other seeds, or on data that grew, keep each
other's test rows out of training, and promotion can compare them on rows neither saw
(``tabflow.comparison``). The seed cuts validation from the rest. The row positions are
written once to ``data/splits/``, keyed by the dataset's digest, the split settings and
the seed, so every trial and the final refit see the same rows.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from tabflow.config import Task
from tabflow.contract import write_atomic
from tabflow.data import Dataset, load_dataset, short_hash
from tabflow.sources import DataError, source_identity

# Each class needs a row in each of train, validation and test for a stratified split.
MIN_ROWS_PER_CLASS = 3


@dataclass(frozen=True)
class Splits:
    """Train / validation / test partitions of a dataset."""

    X_train: pd.DataFrame
    y_train: pd.Series
    X_val: pd.DataFrame
    y_val: pd.Series
    X_test: pd.DataFrame
    y_test: pd.Series


def frozen_test(ds: Dataset, test_size: float, stratify: bool) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of (the rest, the test split), chosen by the rows' content alone.

    Each class (or the whole table, unstratified) gives its share of ``ceil(test_size * n)``
    test rows, those whose content hash ranks lowest: the same rows for every seed, and a
    row keeps its place when other rows are added unless a new row outranks it.
    """
    from tabflow.comparison import row_keys

    n = len(ds.y)
    n_test = int(np.ceil(test_size * n))
    if not 0 < n_test < n:
        raise ValueError(f"test_size={test_size} leaves {n_test} of {n} rows for testing")
    rank = np.argsort(np.argsort(row_keys(ds.X, ds.y), kind="stable"), kind="stable")
    groups = [np.arange(n)] if not stratify else \
        [np.flatnonzero(np.asarray(ds.y) == c) for c in pd.unique(ds.y)]
    # Largest remainders: each class's share of the test rows, summing to n_test.
    exact = np.array([len(g) * n_test / n for g in groups])
    take = np.floor(exact).astype(int)
    take[np.argsort(-(exact - take), kind="stable")[:n_test - take.sum()]] += 1
    test = np.sort(np.concatenate([g[np.argsort(rank[g], kind="stable")[:k]]
                                   for g, k in zip(groups, take, strict=True)]))
    return np.setdiff1d(np.arange(n), test), test


def _split_positions(ds: Dataset, cfg: DictConfig, seed: int) -> dict[str, np.ndarray]:
    from sklearn.model_selection import train_test_split

    stratify = cfg.stratify and ds.task is Task.classification
    if stratify:
        counts = ds.y.value_counts()
        rare = counts[counts < MIN_ROWS_PER_CLASS]
        if len(rare):
            raise DataError(
                f"a stratified split needs at least {MIN_ROWS_PER_CLASS} rows per class, but "
                f"{dict(rare.items())} have fewer; remove or merge those classes, or set "
                f"split.stratify=false")
    positions = np.arange(len(ds.y))
    try:
        rest, test = frozen_test(ds, cfg.test_size, stratify)
        # val_size is a fraction of the whole dataset, so rescale it to what is left.
        train, val = train_test_split(
            rest, test_size=cfg.val_size / (1.0 - cfg.test_size), random_state=seed,
            stratify=ds.y.iloc[rest] if stratify else None)
    except ValueError as e:
        raise DataError(f"cannot split {len(positions)} rows with split.test_size="
                        f"{cfg.test_size}, split.val_size={cfg.val_size} ({e}); use larger "
                        f"fractions, more data, or split.stratify=false") from e
    return {"train": train, "val": val, "test": test}


def split_dataset(ds: Dataset, cfg: DictConfig, seed: int,
                  data_dir: str | Path | None = None) -> Splits:
    """Split a dataset into train / validation / test, seeded and stratified for classification.

    With ``data_dir``, the row positions are written once to ``data_dir/splits/``, keyed by
    the dataset's digest, the split settings and the seed, and reused by later runs.

    Args:
        ds: The dataset to split.
        cfg: The ``split`` node: ``test_size`` and ``val_size`` as fractions of all rows,
            ``stratify``.
        seed: Random seed of both cuts.
        data_dir: The project's ``data/`` folder; None splits without caching.

    Returns:
        The three partitions.

    Raises:
        DataError: If the split is impossible (e.g. a class too rare to stratify).
    """
    settings = {k: cfg[k] for k in ("test_size", "val_size", "stratify")}
    cached = None
    if data_dir is not None:
        key = short_hash(settings, seed)
        cached = Path(data_dir) / "splits" / f"{ds.name}-{ds.digest[:16]}-{key}.npz"
    if cached is not None and cached.exists():
        with np.load(cached) as saved:
            positions = {k: saved[k] for k in ("train", "val", "test")}
    else:
        positions = _split_positions(ds, cfg, seed)
        if cached is not None:
            write_atomic(cached, lambda p: np.savez(
                p, train=positions["train"], val=positions["val"], test=positions["test"]))

    def part(name: str) -> tuple[pd.DataFrame, pd.Series]:
        idx = positions[name]
        return ds.X.iloc[idx], ds.y.iloc[idx]

    (X_train, y_train), (X_val, y_val), (X_test, y_test) = map(part, ("train", "val", "test"))
    return Splits(X_train, y_train, X_val, y_val, X_test, y_test)


# The last few datasets and splits this process loaded: a sweep's trials share one, so
# loading, checking, hashing and splitting happen once per sweep (and worker), not per trial.
_RECENT: OrderedDict[str, tuple[Dataset, Splits]] = OrderedDict()
_RECENT_MAX = 4


def load_and_split(cfg: DictConfig) -> tuple[Dataset, Splits]:
    """Load a job config's dataset and split it as the config says.

    Both are cached on disk in ``data/`` across processes, and in memory within one: the
    key holds the raw data's identity (a file's bytes, by size and mtime; a loader's
    version), so a file edited mid-sweep is read again. Callers must not modify them.
    """
    key = short_hash(source_identity(cfg.dataset, Path(cfg.paths.data)),
                     OmegaConf.to_container(cfg.dataset, resolve=True),
                     OmegaConf.to_container(cfg.split, resolve=True), cfg.seed,
                     str(cfg.paths.data))
    if key in _RECENT:
        _RECENT.move_to_end(key)
        return _RECENT[key]
    ds = load_dataset(cfg.dataset, cfg.paths.data)
    _RECENT[key] = ds, split_dataset(ds, cfg.split, cfg.seed, cfg.paths.data)
    while len(_RECENT) > _RECENT_MAX:
        _RECENT.popitem(last=False)
    return _RECENT[key]
