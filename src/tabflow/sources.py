"""Where a dataset's rows come from: scikit-learn's bundled sets, penguins, files, generators.

Each reader returns the raw table (target included) and a string naming its origin;
:func:`source_identity` says cheaply what identifies the raw data, for caching.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from tabflow.config import Source, Task

FILE_SUFFIXES = (".csv", ".parquet", ".pq")


class DataError(ValueError):
    """Input data that can't be used as configured; the message names the fix."""


def check_unique(columns: list[str]) -> None:
    """Refuse a table whose column names repeat (pandas would rename them silently)."""
    duplicates = sorted(c for c, n in Counter(columns).items() if n > 1)
    if duplicates:
        raise DataError(f"duplicate column names {duplicates}; rename them so that each "
                        f"column has its own name")


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


def read_file(cfg: DictConfig, data_dir: Path | None) -> tuple[pd.DataFrame, str]:
    """Read a ``source=file`` dataset (CSV or Parquet); return the table and its path."""
    path = resolve_path(cfg, data_dir)
    try:
        if path.suffix.lower() == ".csv":
            header = _csv_header(path)
            check_unique([h.strip() for h in header])
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


READERS: dict[Source, Callable[..., tuple[pd.DataFrame, str]]] = {
    Source.sklearn: _read_sklearn,
    Source.penguins: _read_penguins,
    Source.synthetic: _read_synthetic,
}


def source_identity(cfg: DictConfig, data_dir: Path | None) -> dict[str, Any]:
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
