"""Load the dataset a config names, check it, and split it into train / validation / test.

Tables arrive as users have them: missing values, categorical columns, odd names. This
module turns one into features ``X`` and a target ``y``, refuses what can't be learned
from (with a message naming the problem and the fix), and caches its work under
``data/``: the cleaned table in ``data/processed/`` and the split's row positions in
``data/splits/``, both keyed by content, so later runs reuse them instead of recomputing.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from tabflow.config import Source, Task

log = logging.getLogger(__name__)

# A numeric target with more distinct values than this is almost surely continuous.
MAX_CLASSES = 100
# Each class needs a row in each of train, validation and test for a stratified split.
MIN_ROWS_PER_CLASS = 3
FILE_SUFFIXES = (".csv", ".parquet", ".pq")


class DataError(ValueError):
    """Input data that can't be used as configured; the message names the fix."""


@dataclass(frozen=True)
class Dataset:
    """Features and target of one dataset, with what identifies it."""

    name: str
    source: str
    task: Task
    X: pd.DataFrame
    y: pd.Series
    numeric: tuple[str, ...] = field(default=())
    categorical: tuple[str, ...] = field(default=())

    @cached_property
    def digest(self) -> str:
        """Return a SHA-256 of the rows, columns and dtypes: equal data, equal digest."""
        return frame_digest(self.X, self.y)

    def numeric_columns(self) -> list[str]:
        """Return the columns treated as numeric features."""
        return list(self.numeric)

    def categorical_columns(self) -> list[str]:
        """Return the columns treated as categorical features."""
        return list(self.categorical)

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
            "numeric": list(self.numeric),
            "categorical": list(self.categorical),
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


def frame_digest(X: pd.DataFrame, y: pd.Series | None = None) -> str:
    """Return a SHA-256 of a table's column names, dtypes and values."""
    h = hashlib.sha256()
    columns = list(zip(X.columns, X.dtypes.astype(str), strict=True))
    h.update(repr(columns).encode())
    h.update(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
    if y is not None:
        h.update(repr((y.name, str(y.dtype))).encode())
        h.update(pd.util.hash_pandas_object(y, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _short_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Write through a temporary file, so parallel jobs never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ----------------------------------------------------------------------------- sources
def _read_sklearn(cfg: DictConfig) -> tuple[pd.DataFrame, str]:
    import sklearn.datasets

    # Only the bundled `load_*` sets: `fetch_*` would download at run time.
    loader = cfg.loader
    fn = getattr(sklearn.datasets, loader or "", None)
    if not (loader and loader.startswith("load_") and callable(fn)):
        bundled = sorted(n for n in dir(sklearn.datasets) if n.startswith("load_"))
        raise DataError(
            f"dataset.loader={loader!r} is not one of scikit-learn's bundled loaders; "
            f"choose one of {bundled}"
        )
    bunch = fn(as_frame=True)
    frame = bunch.data.copy()
    frame[cfg.target] = bunch.target
    return frame, f"sklearn.datasets.{loader}"


def _read_penguins(cfg: DictConfig) -> tuple[pd.DataFrame, str]:
    import palmerpenguins

    return palmerpenguins.load_penguins(), "palmerpenguins.load_penguins"


_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://|file:)")


def resolve_path(cfg: DictConfig, data_dir: Path | None) -> Path:
    """Return the file a ``source=file`` dataset names; relative paths are under data/raw/."""
    if not cfg.path:
        raise DataError("dataset=csv needs a file: add dataset.path=<file.csv|file.parquet> "
                        "(relative to data/raw/) and dataset.target=<column>")
    if _URL.match(str(cfg.path)):
        # pandas would fetch a URL (http, s3, file://...): data must be a local, known file.
        raise DataError(f"dataset.path={cfg.path!r} is a URL; tabflow reads local files only, "
                        f"so that a run's data is what its digest says. Download the file "
                        f"into data/raw/ and give its name (dataset.path=<file.csv>)")
    path = Path(cfg.path).expanduser()
    if not path.is_absolute():
        path = (data_dir / "raw" / path) if data_dir is not None else path
    if not path.is_file():
        raise DataError(f"dataset.path={cfg.path!r}: no such file ({path}); put the file in "
                        f"data/raw/ or give an absolute path")
    if path.suffix.lower() not in FILE_SUFFIXES:
        raise DataError(f"dataset.path={cfg.path!r}: unsupported file type {path.suffix!r}; "
                        f"use one of {list(FILE_SUFFIXES)}")
    return path


def _csv_header(path: Path) -> list[str]:
    # pandas renames duplicate headers (a, a.1); read the raw header to catch them.
    with path.open(newline="", encoding="utf-8-sig") as f:
        return next(csv.reader(f), [])


def _read_file(cfg: DictConfig, data_dir: Path | None) -> tuple[pd.DataFrame, str]:
    path = resolve_path(cfg, data_dir)
    try:
        if path.suffix.lower() == ".csv":
            header = _csv_header(path)
            _check_unique([h.strip() for h in header])
            frame = pd.read_csv(path, encoding="utf-8-sig", skipinitialspace=True)
        else:
            frame = pd.read_parquet(path)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"dataset.path={cfg.path!r}: cannot read {path} as "
                        f"{path.suffix.lstrip('.').upper()} ({type(e).__name__}: {e}); "
                        f"check that the file is a valid, UTF-8 encoded table") from e
    if frame.shape[1] == 0 or frame.shape[0] == 0:
        raise DataError(f"dataset.path={cfg.path!r}: {path} holds no rows or no columns")
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame, str(path)


def _read_synthetic(cfg: DictConfig) -> tuple[pd.DataFrame, str]:
    from sklearn.datasets import make_classification, make_regression

    s = cfg.synthetic
    if not 0 < s.n_informative <= s.n_features:
        raise DataError(f"dataset.synthetic.n_informative={s.n_informative} must be in "
                        f"1..n_features={s.n_features}")
    if not 0 <= s.n_categorical <= s.n_features:
        raise DataError(f"dataset.synthetic.n_categorical={s.n_categorical} must be in "
                        f"0..n_features={s.n_features}")
    if not 0 <= s.missing_rate < 1:
        raise DataError(f"dataset.synthetic.missing_rate={s.missing_rate} must be in [0, 1)")
    if Task(cfg.task) is Task.classification:
        X, y = make_classification(
            n_samples=s.n_rows, n_features=s.n_features, n_informative=s.n_informative,
            n_redundant=0, n_classes=s.n_classes, random_state=s.seed)
    else:
        X, y = make_regression(n_samples=s.n_rows, n_features=s.n_features,
                               n_informative=s.n_informative, noise=s.noise,
                               random_state=s.seed)
    frame = pd.DataFrame(X.astype(np.float32), columns=[f"x{i}" for i in range(s.n_features)])
    del X  # the float64 matrix is the largest object here
    rng = np.random.default_rng(s.seed)
    # The last n_categorical features become categories: their quartile, as a string.
    for col in frame.columns[frame.shape[1] - s.n_categorical:]:
        codes = pd.qcut(frame[col], 4, labels=False)
        frame[col] = np.array(["q1", "q2", "q3", "q4"], dtype=object)[codes]
    if s.missing_rate > 0:
        for col in frame.columns:  # column by column: no full-size random matrix
            frame.loc[rng.random(len(frame)) < s.missing_rate, col] = np.nan
    frame[cfg.target] = y
    return frame, f"synthetic:{OmegaConf.to_container(s)}"


_READERS: dict[Source, Callable[..., tuple[pd.DataFrame, str]]] = {
    Source.sklearn: _read_sklearn,
    Source.penguins: _read_penguins,
    Source.synthetic: _read_synthetic,
}


def _source_identity(cfg: DictConfig, data_dir: Path | None) -> dict[str, Any]:
    """Return what identifies the raw data, cheaply: a file's bytes, or a generator's code."""
    source = Source(cfg.source)
    if source is Source.file:
        path = resolve_path(cfg, data_dir)
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return {"file": h.hexdigest()}
    package = {"sklearn": "scikit-learn", "synthetic": "scikit-learn",
               "penguins": "palmerpenguins"}[source.value]
    return {"package": package, "version": metadata.version(package),
            "loader": cfg.loader, "synthetic": OmegaConf.to_container(cfg.synthetic)
            if source is Source.synthetic else None}


# ------------------------------------------------------------------------------ checks
def _check_unique(columns: list[str]) -> None:
    duplicates = sorted(c for c, n in Counter(columns).items() if n > 1)
    if duplicates:
        raise DataError(f"duplicate column names {duplicates}; rename them so that each "
                        f"column has its own name")


def _check_columns_exist(frame: pd.DataFrame, cfg: DictConfig) -> None:
    for key in ("numeric", "categorical", "drop", "id_columns"):
        unknown = [c for c in cfg[key] if c not in frame.columns]
        if unknown:
            raise DataError(f"dataset.{key} names columns that do not exist: {unknown}; "
                            f"columns are {list(frame.columns)}")


def _clean(frame: pd.DataFrame, cfg: DictConfig) -> pd.DataFrame:
    """Check the raw table and return it with only the target and feature columns."""
    _check_unique([str(c) for c in frame.columns])
    target = cfg.target
    if not target:
        raise DataError("dataset.target is not set: add dataset.target=<column to predict>")
    if target not in frame.columns:
        raise DataError(f"dataset.target={target!r} is not a column; columns are "
                        f"{list(frame.columns)}")
    _check_columns_exist(frame, cfg)
    frame = frame.drop(columns=[*cfg.drop, *cfg.id_columns])
    empty = [c for c in frame.columns if c != target and frame[c].isna().all()]
    if empty:
        raise DataError(f"columns {empty} are entirely empty; leave them out with "
                        f"dataset.drop=[{','.join(empty)}]")
    missing_target = int(frame[target].isna().sum())
    if missing_target == len(frame):
        raise DataError(f"dataset.target={target!r} is missing in every row")
    if missing_target:
        log.warning("dropped %d of %d rows whose target %r is missing", missing_target,
                    len(frame), target)
        frame = frame.loc[frame[target].notna()].reset_index(drop=True)
    frame = _apply_types(frame, cfg)
    _check_target(frame[target], Task(cfg.task), cfg)
    return frame


def _apply_types(frame: pd.DataFrame, cfg: DictConfig) -> pd.DataFrame:
    if not (cfg.numeric or cfg.categorical):
        return frame
    frame = frame.copy()
    for col in cfg.numeric:
        converted = pd.to_numeric(frame[col], errors="coerce")
        bad = frame[col][converted.isna() & frame[col].notna()]
        if len(bad):
            raise DataError(f"dataset.numeric lists {col!r}, but it holds non-numeric values "
                            f"such as {bad.iloc[0]!r}; fix the data or list it in "
                            f"dataset.categorical")
        frame[col] = converted
    for col in cfg.categorical:
        frame[col] = frame[col].astype("string").astype(object).where(frame[col].notna(),
                                                                      np.nan)
    return frame


def _check_target(y: pd.Series, task: Task, cfg: DictConfig) -> None:
    numeric = pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y)
    if task is Task.regression:
        if not numeric:
            raise DataError(f"dataset.target={y.name!r} holds text (e.g. {y.iloc[0]!r}), which "
                            f"a regressor can't predict; set dataset.task=classification")
        return
    n_classes = y.nunique()
    if n_classes < 2:
        raise DataError(f"dataset.target={y.name!r} has a single class ({y.iloc[0]!r}); a "
                        f"classifier needs at least two")
    if numeric and n_classes > MAX_CLASSES:
        raise DataError(f"dataset.target={y.name!r} is numeric with {n_classes} distinct "
                        f"values: it looks continuous; set dataset.task=regression")


# ----------------------------------------------------------------------------- loading
def infer_columns(X: pd.DataFrame, categorical: list[str] | tuple[str, ...] = ()
                  ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split feature columns into numeric and categorical ones.

    Numeric dtypes are numeric features, everything else (text, category, bool) is
    categorical; ``categorical`` forces columns to the categorical side.
    """
    forced = set(categorical)
    numeric = tuple(c for c in X.columns if c not in forced
                    and pd.api.types.is_numeric_dtype(X[c])
                    and not pd.api.types.is_bool_dtype(X[c]))
    return numeric, tuple(c for c in X.columns if c not in numeric)


def _features(frame: pd.DataFrame, cfg: DictConfig, source: str) -> Dataset:
    X = frame.drop(columns=[cfg.target])
    numeric, categorical = infer_columns(X, list(cfg.categorical))
    return Dataset(name=cfg.name, source=source, task=Task(cfg.task), X=X, y=frame[cfg.target],
                   numeric=numeric, categorical=categorical)


def load_dataset(cfg: DictConfig, data_dir: str | Path | None = None) -> Dataset:
    """Load, check and clean the dataset described by a ``dataset`` config node.

    With ``data_dir``, the cleaned table is cached in ``data_dir/processed/`` under a key
    made of the raw data's identity (a file's bytes, a loader's package version) and the
    cleaning settings, and read from there by later runs.

    Args:
        cfg: The ``dataset`` node.
        data_dir: The project's ``data/`` folder; None reads without caching.

    Returns:
        The features and target, with numeric and categorical columns identified.

    Raises:
        DataError: If the data can't be used as configured; the message says how to fix it.
    """
    data_dir = Path(data_dir) if data_dir is not None else None
    source = Source(cfg.source)
    cleaning = {k: OmegaConf.to_container(cfg[k]) for k in
                ("numeric", "categorical", "drop", "id_columns")}
    cached: Path | None = None
    if data_dir is not None:
        key = _short_hash(_source_identity(cfg, data_dir), cfg.target, cfg.task, cleaning)
        cached = data_dir / "processed" / f"{cfg.name}-{key}.parquet"
        # The JSON is written last, so its presence means the parquet file is complete.
        if cached.with_suffix(".json").exists():
            meta = json.loads(cached.with_suffix(".json").read_text())
            ds = _features(pd.read_parquet(cached), cfg, meta["source"])
            ds.__dict__["digest"] = meta["digest"]  # fills the cached_property: no rehash
            return ds
    if source is Source.file:
        frame, origin = _read_file(cfg, data_dir)
    else:
        frame, origin = _READERS[source](cfg)
    frame = _clean(frame, cfg)
    if cached is None:
        return _features(frame, cfg, origin)
    _write_atomic(cached, lambda p: frame.to_parquet(p, index=False))
    # Read back what later runs will read, so every run sees the same dtypes and digest.
    ds = _features(pd.read_parquet(cached), cfg, origin)
    meta = {"source": origin, "digest": ds.digest}
    _write_atomic(cached.with_suffix(".json"), lambda p: p.write_text(json.dumps(meta)))
    return ds


# ------------------------------------------------------------------------------ splits
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
        rest, test = train_test_split(positions, test_size=cfg.test_size, random_state=seed,
                                      stratify=ds.y if stratify else None)
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
        key = _short_hash(settings, seed)
        cached = Path(data_dir) / "splits" / f"{ds.name}-{ds.digest[:16]}-{key}.npz"
    if cached is not None and cached.exists():
        with np.load(cached) as saved:
            positions = {k: saved[k] for k in ("train", "val", "test")}
    else:
        positions = _split_positions(ds, cfg, seed)
        if cached is not None:
            _write_atomic(cached, lambda p: np.savez(
                p, train=positions["train"], val=positions["val"], test=positions["test"]))

    def part(name: str) -> tuple[pd.DataFrame, pd.Series]:
        idx = positions[name]
        return ds.X.iloc[idx], ds.y.iloc[idx]

    (X_train, y_train), (X_val, y_val), (X_test, y_test) = map(part, ("train", "val", "test"))
    return Splits(X_train, y_train, X_val, y_val, X_test, y_test)
