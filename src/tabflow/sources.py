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


# scikit-learn's bundled tables with one target (`load_*(as_frame=True)`).
BUNDLED_LOADERS = ("load_breast_cancer", "load_diabetes", "load_digits", "load_iris", "load_wine")


def _read_sklearn(cfg: DictConfig) -> tuple[pd.DataFrame, str]:
    import sklearn.datasets

    # Only the bundled tables, by name: `fetch_*` would download at run time, and a name
    # from config is data until this list says it is a loader (docs/security.md).
    loader = cfg.loader
    if loader not in BUNDLED_LOADERS:
        raise DataError(
            f"dataset.loader={loader!r} is not one of scikit-learn's bundled loaders; "
            f"choose one of {list(BUNDLED_LOADERS)}"
        )
    bunch = getattr(sklearn.datasets, loader)(as_frame=True)
    frame = bunch.data.copy()
    frame[cfg.target] = bunch.target
    return frame, f"sklearn.datasets.{loader}"


def _read_penguins(cfg: DictConfig) -> tuple[pd.DataFrame, str]:
    import palmerpenguins

    return palmerpenguins.load_penguins(), "palmerpenguins.load_penguins"


_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://|file:)")


def resolve_path(cfg: DictConfig, data_dir: Path | None) -> Path:
    """Return the file a ``source=file`` dataset names.

    A relative path is read as every command-line tool reads it, from the current
    directory; failing that, from ``data/raw/`` (so a bare file name there works too).
    """
    if not cfg.path:
        raise DataError("dataset=csv needs a file: add dataset.path=<file.csv|file.parquet> "
                        "(relative to the current directory or data/raw/) and "
                        "dataset.target=<column>")
    if _URL.match(str(cfg.path)):
        # pandas would fetch a URL (http, s3, file://...): data must be a local, known file.
        raise DataError(f"dataset.path={cfg.path!r} is a URL; tabflow reads local files only, "
                        f"so that a run's data is what its digest says. Download the file "
                        f"into data/raw/ and give its name (dataset.path=<file.csv>)")
    given = Path(cfg.path).expanduser()
    places = [given.resolve()] if given.is_absolute() else [Path.cwd() / given]
    if not given.is_absolute() and data_dir is not None:
        places.append(Path(data_dir) / "raw" / given)
    path = next((p for p in places if p.is_file()), None)
    if path is None:
        raise DataError(f"dataset.path={cfg.path!r}: no such file (looked in "
                        f"{' and '.join(str(p) for p in places)}); give a path from the current "
                        f"directory, or put the file in data/raw/")
    if path.suffix.lower() not in FILE_SUFFIXES:
        raise DataError(f"dataset.path={cfg.path!r}: unsupported file type {path.suffix!r}; "
                        f"use one of {list(FILE_SUFFIXES)}")
    return path


# A number written with a decimal comma (and optional thousands dots): 1,5 or 1.234,56.
_DECIMAL_COMMA = re.compile(r"^\s*-?\d{1,3}(\.\d{3})*,\d+\s*$|^\s*-?\d+,\d+\s*$")


def _csv_header(path: Path, cfg: DictConfig) -> list[str]:
    # pandas renames duplicate headers (a, a.1); read the raw header to catch them.
    with path.open(newline="", encoding=cfg.encoding) as f:
        return next(csv.reader(f, delimiter=cfg.sep), [])


def _read_csv(path: Path, cfg: DictConfig) -> pd.DataFrame:
    try:
        header = _csv_header(path, cfg)
    except UnicodeDecodeError as e:
        raise DataError(f"dataset.path={cfg.path!r}: {path} is not {cfg.encoding} text ({e}); "
                        f"name its encoding, e.g. dataset.encoding=latin-1 "
                        f"(or cp1252, the usual one of files saved by Excel)") from e
    if len(header) == 1:
        for sep, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
            if sep in header[0]:
                shown = "'\\t'" if sep == "\t" else repr(sep)
                raise DataError(f"dataset.path={cfg.path!r}: the header is one column, "
                                f"{header[0][:60]!r}: the file looks {name}-separated; read "
                                f"it with dataset.sep={shown}"
                                + (" dataset.decimal=','" if sep == ";" else ""))
    check_unique([h.strip() for h in header])
    return pd.read_csv(path, sep=cfg.sep, decimal=cfg.decimal, encoding=cfg.encoding,
                       skipinitialspace=True)


def _check_decimal_commas(frame: pd.DataFrame, cfg: DictConfig) -> None:
    """Refuse numbers written in another locale, which would silently become categories."""
    if cfg.decimal == ",":
        return
    for col in frame.columns:
        values = frame[col].dropna().head(1000)  # a sample tells the locale; files can be big
        text = frame[col].dtype == object or pd.api.types.is_string_dtype(frame[col])
        if text and len(values) and values.astype(str).str.match(
                _DECIMAL_COMMA).mean() > 0.9:
            raise DataError(f"column {col!r} holds numbers written with a decimal comma "
                            f"(e.g. {values.iloc[0]!r}); read the file with "
                            f"dataset.decimal=',' (and dataset.sep=';' if it is "
                            f"semicolon-separated)")


def read_file(cfg: DictConfig, data_dir: Path | None) -> tuple[pd.DataFrame, str]:
    """Read a ``source=file`` dataset (CSV or Parquet); return the table and its path."""
    path = resolve_path(cfg, data_dir)
    try:
        frame = _read_csv(path, cfg) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"dataset.path={cfg.path!r}: cannot read {path} as "
                        f"{path.suffix.lstrip('.').upper()} ({type(e).__name__}: {e}); "
                        f"check that the file is a valid table (dataset.sep, "
                        f"dataset.decimal and dataset.encoding say how it is written)") from e
    if frame.shape[1] == 0 or frame.shape[0] == 0:
        raise DataError(f"dataset.path={cfg.path!r}: {path} holds no rows or no columns")
    frame.columns = [str(c).strip() for c in frame.columns]
    _check_decimal_commas(frame, cfg)
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


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def source_identity(cfg: DictConfig, data_dir: Path | None) -> dict[str, Any]:
    """Return what identifies the raw data, cheaply: a file's bytes, or a generator's code."""
    source = Source(cfg.source)
    if source is Source.file:
        path = resolve_path(cfg, data_dir)
        stat = path.stat()
        seen = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if seen not in _FILE_HASHES:  # hashed once per process while the file is unchanged
            h = hashlib.sha256()
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            _FILE_HASHES[seen] = h.hexdigest()
        return {"file": _FILE_HASHES[seen]}
    package = {"sklearn": "scikit-learn", "synthetic": "scikit-learn",
               "penguins": "palmerpenguins"}[source.value]
    return {"package": package, "version": metadata.version(package),
            "loader": cfg.loader, "synthetic": OmegaConf.to_container(cfg.synthetic)
            if source is Source.synthetic else None}
