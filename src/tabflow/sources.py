"""Where a dataset's rows come from: scikit-learn's bundled sets, penguins, files, generators.

Each reader returns the raw table (target included) and a string naming its origin;
:func:`source_identity` says cheaply what identifies the raw data, for caching.
"""

from __future__ import annotations

import csv
import hashlib
import logging
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

log = logging.getLogger(__name__)


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
# A number with thousands commas and a decimal point: 1,234.5 or 12,345,678.25.
_THOUSANDS_COMMA = re.compile(r"^\s*-?\d{1,3}(,\d{3})+(\.\d+)?\s*$")
# Non-numeric cells among numbers that are read as missing without being named in
# dataset.na_values: at most this share of a column's filled cells (or one cell). Beyond it
# the column is refused: a few "?" or "-" are gaps in a numeric column, more is a choice
# the user must make (missing, or text).
STRAY_SHARE = 0.01
# How a CSV is written; recorded with each model so new batches are read the same way.
READ_OPTIONS = ("sep", "decimal", "encoding", "thousands", "na_values")
_BOM = b"\xef\xbb\xbf"


def read_options(cfg: DictConfig) -> dict[str, Any]:
    """Return how a dataset's CSV file is written (separator, decimal mark, ...)."""
    return {k: (OmegaConf.to_container(v) if OmegaConf.is_config(v) else v)
            for k in READ_OPTIONS if (v := cfg.get(k)) is not None}


def comment_lines(path: Path) -> list[int]:
    """Return the (0-based) numbers of the lines of a text file that start with ``#``."""
    found = []
    with path.open("rb") as f:
        for number, line in enumerate(f):
            if line.startswith(b"#") or (number == 0 and line.startswith(_BOM + b"#")):
                found.append(number)
    return found


def read_csv_table(path: Path, read: dict[str, Any]) -> tuple[pd.DataFrame, list[int]]:
    """Read a CSV as it is written: names and cells as the file spells them.

    Lines that start with ``#`` are comments, not rows (a header above them is found
    below them). Column names keep their spaces, so the names a model is trained on are
    the names ``pandas.read_csv`` gives anyone who reads the same file to predict.

    Args:
        path: The file.
        read: Its :data:`READ_OPTIONS` (missing keys take pandas' defaults, ``sep=","``).

    Returns:
        The table and the 0-based numbers of the comment lines that were skipped.
    """
    skipped = comment_lines(path)
    frame = pd.read_csv(path, sep=read.get("sep") or ",", decimal=read.get("decimal") or ".",
                        encoding=read.get("encoding") or "utf-8-sig",
                        thousands=read.get("thousands") or None,
                        na_values=list(read.get("na_values") or []) or None,
                        skiprows=skipped or None)
    return frame, skipped


def _csv_header(path: Path, cfg: DictConfig) -> list[str]:
    # pandas renames duplicate headers (a, a.1); read the raw header to catch them.
    with path.open(newline="", encoding=cfg.encoding) as f:
        rows = (line for line in f if not line.lstrip("\ufeff").startswith("#"))
        return next(csv.reader(rows, delimiter=cfg.sep), [])


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
    check_unique(header)
    frame, skipped = read_csv_table(path, read_options(cfg))
    if skipped:
        shown = ", ".join(str(n + 1) for n in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        log.warning("%s: skipped %d comment line(s) starting with '#' (line %s)", path.name,
                    len(skipped), shown)
    return frame


def _check_number_formats(frame: pd.DataFrame, cfg: DictConfig) -> None:
    """Refuse numbers written in another locale, which would silently become categories."""
    for col in frame.columns:
        if not is_text(frame[col]):
            continue
        values = frame[col].dropna().head(1000).astype(str)  # a sample tells the locale
        if not len(values):
            continue
        if cfg.get("thousands") != "," and values.str.match(_THOUSANDS_COMMA).mean() > 0.9 \
                and values.str.contains(r"\d,\d{3}\.", regex=True).any():
            raise DataError(f"column {col!r} holds numbers written with thousands separators "
                            f"(e.g. {values.iloc[0]!r}); read the file with "
                            f"dataset.thousands=','")
        if cfg.decimal != "," and values.str.match(_DECIMAL_COMMA).mean() > 0.9:
            raise DataError(f"column {col!r} holds numbers written with a decimal comma "
                            f"(e.g. {values.iloc[0]!r}); read the file with "
                            f"dataset.decimal=',' (and dataset.sep=';' if it is "
                            f"semicolon-separated)")


def is_text(values: pd.Series) -> bool:
    """Whether a column holds text (object or string dtype)."""
    return values.dtype == object or pd.api.types.is_string_dtype(values)


def _read_stray_tokens(frame: pd.DataFrame, cfg: DictConfig) -> pd.DataFrame:
    """Read numeric columns with a few non-numeric cells (``?``, ``-``) as numbers.

    A handful of such cells (:data:`STRAY_SHARE`) are gaps: they become missing values,
    with one warning per column naming the tokens and how to keep the column as text.
    More of them, in a column that is mostly numbers, is refused: the user says which.
    """
    as_text = {*cfg.categorical, *cfg.numeric}  # said by the user: read as they say
    for col in frame.columns:
        if col in as_text or not is_text(frame[col]):
            continue
        filled = frame[col].dropna()
        numbers = pd.to_numeric(filled, errors="coerce")
        stray = filled[numbers.isna()]
        if not len(filled) or not 0 < len(stray) < len(filled) / 2:
            continue  # text, or every cell a number written as text (a Parquet string)
        counts = stray.astype(str).value_counts(sort=False)  # in order of appearance
        tokens = [t for t, _ in sorted(counts.items(), key=lambda tc: -tc[1])][:5]
        quoted = ",".join(f'"{t}"' for t in tokens)
        if len(stray) > max(1, STRAY_SHARE * len(filled)):
            raise DataError(
                f"column {col!r} holds numbers but also {len(stray)} of {len(filled)} cells "
                f"that are not ({tokens}); read them as missing with "
                f"'dataset.na_values=[{quoted}]', or keep the column as text with "
                f"'dataset.categorical=[\"{col}\"]'")
        log.warning("column %r: read as numbers; its %d non-numeric cell(s) %s are read as "
                    "missing. To keep the column as text: 'dataset.categorical=[\"%s\"]'",
                    col, len(stray), tokens, col)
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


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
    frame.columns = [str(c) for c in frame.columns]
    if cfg.get("na_values") and path.suffix.lower() != ".csv":
        frame = frame.replace(list(cfg.na_values), np.nan)
    _check_number_formats(frame, cfg)
    return _read_stray_tokens(frame, cfg), str(path)


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
