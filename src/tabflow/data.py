"""Load the dataset a config names, check it and clean it into features and a target.

Tables arrive as users have them: missing values, categorical columns, odd names. This
module turns one into features ``X`` and a target ``y``, refuses what can't be learned
from (with a message naming the problem and the fix), and caches the cleaned table in
``data/processed/``, keyed by content, so later runs reuse it instead of recomputing.
Where rows come from is :mod:`tabflow.sources`; the train / validation / test split is
:mod:`tabflow.splits`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from tabflow.config import Source, Task
from tabflow.contract import write_atomic
from tabflow.sources import (
    READERS,
    DataError,
    check_unique,
    is_text,
    read_file,
    read_options,
    source_identity,
)

__all__ = ["DataError", "Dataset", "frame_digest", "infer_columns", "load_dataset"]

log = logging.getLogger(__name__)

# A numeric target with more distinct values than this is almost surely continuous.
MAX_CLASSES = 100
# Below this many rows, a column of unique values may be chance, not an identifier.
MIN_ROWS_FOR_IDS = 20


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
    left_out: tuple[str, ...] = field(default=())  # row identifiers found and left out

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
            "ids_left_out": list(self.left_out),
        }


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


def short_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------ checks
def _spelled(names: list[str], columns: list[str]) -> str:
    """Say how the file spells names that match a column only up to spaces or case."""
    spelled = {n: c for n in names for c in columns if c.strip().lower() == n.strip().lower()}
    if not spelled:
        return ""
    return "; the file spells " + ", ".join(f"{n!r} as {c!r}" for n, c in spelled.items()) + \
        " (names are read exactly as written)"


def _check_columns_exist(frame: pd.DataFrame, cfg: DictConfig) -> None:
    for key in ("numeric", "categorical", "drop", "id_columns", "keep"):
        unknown = [c for c in cfg[key] if c not in frame.columns]
        if unknown:
            raise DataError(f"dataset.{key} names columns that do not exist: {unknown}; "
                            f"columns are {list(frame.columns)}"
                            + _spelled(unknown, list(frame.columns)))


def _clean(frame: pd.DataFrame, cfg: DictConfig) -> pd.DataFrame:
    """Check the raw table and return it with only the target and feature columns."""
    check_unique([str(c) for c in frame.columns])
    target = cfg.target
    if not target:
        raise DataError("dataset.target is not set: add dataset.target=<column to predict>")
    if target not in frame.columns:
        raise DataError(f"dataset.target={target!r} is not a column; columns are "
                        f"{list(frame.columns)}" + _spelled([target], list(frame.columns)))
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
    dates = [str(c) for c in frame.columns if c != target and (
        pd.api.types.is_datetime64_any_dtype(frame[c])
        or (c not in {*cfg.categorical, *cfg.keep} and _written_as_dates(frame[c])))]
    if dates:
        # A model can't use a timestamp as it is, and skops would refuse to save the
        # pipeline at the very end of the sweep: say so before any trial.
        quoted = ",".join(f'"{c}"' for c in dates)
        raise DataError(f"columns {dates} hold dates, which the models can't use as they are; "
                        f"leave them out with 'dataset.drop=[{quoted}]', or derive numbers "
                        f"from them in your file (year, month, day of week, days since ...)")
    ids = id_like_columns(frame.drop(columns=[target]), [*cfg.keep, *cfg.numeric,
                                                         *cfg.categorical])
    if ids:
        quoted = ",".join(f'"{c}"' for c in ids)
        log.warning("left out %s: every value is unique, so they identify rows rather than "
                    "describe them; to use them as features anyway: 'dataset.keep=[%s]'",
                    ids, quoted)
        frame = frame.drop(columns=ids)
        frame.attrs["left_out"] = ids
    return frame


# Dates and timestamps as files write them: 2024-01-31, 2024-01-31T12:00:00Z, 31/01/2024.
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$"
                   r"|^\d{4}/\d{1,2}/\d{1,2}$|^\d{1,2}[/.]\d{1,2}[/.]\d{4}$")


def _written_as_dates(values: pd.Series) -> bool:
    """Whether a text column holds dates (a sample of its cells, nearly all of them)."""
    if not is_text(values):
        return False
    sample = values.dropna().head(1000).astype(str).str.strip()
    return bool(len(sample)) and float(sample.str.match(_DATE).mean()) > 0.9


def id_like_columns(X: pd.DataFrame, keep: list[str]) -> list[str]:
    """Return the columns that look like row identifiers: text or integers, all unique."""
    if len(X) < MIN_ROWS_FOR_IDS:
        return []
    return [str(c) for c in X.columns if c not in keep
            and (pd.api.types.is_integer_dtype(X[c]) or pd.api.types.is_object_dtype(X[c])
                 or pd.api.types.is_string_dtype(X[c]))
            and X[c].notna().all() and X[c].nunique() == len(X)]


def _apply_types(frame: pd.DataFrame, cfg: DictConfig) -> pd.DataFrame:
    if not (cfg.numeric or cfg.categorical):
        return frame
    frame = frame.copy()
    for col in cfg.numeric:
        converted = pd.to_numeric(frame[col], errors="coerce")
        bad = frame[col][converted.isna() & frame[col].notna()]
        if len(bad):
            raise DataError(f"dataset.numeric lists {col!r}, but it holds non-numeric values "
                            f"such as {bad.iloc[0]!r}; fix the data, read such cells as "
                            f"missing with 'dataset.na_values=[\"{bad.iloc[0]}\"]', or list "
                            f"it in dataset.categorical")
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


def _features(frame: pd.DataFrame, cfg: DictConfig, source: str,
              left_out: list[str] | tuple[str, ...] = ()) -> Dataset:
    X = frame.drop(columns=[cfg.target])
    numeric, categorical = infer_columns(X, list(cfg.categorical))
    return Dataset(name=cfg.name, source=source, task=Task(cfg.task), X=X, y=frame[cfg.target],
                   numeric=numeric, categorical=categorical, left_out=tuple(left_out))


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
                ("numeric", "categorical", "drop", "id_columns", "keep")}
    cleaning.update(read_options(cfg))
    cached: Path | None = None
    if data_dir is not None:
        key = short_hash(source_identity(cfg, data_dir), cfg.target, cfg.task, cleaning)
        cached = data_dir / "processed" / f"{cfg.name}-{key}.parquet"
        # The JSON is written last, so its presence means the parquet file is complete.
        if cached.with_suffix(".json").exists():
            meta = json.loads(cached.with_suffix(".json").read_text())
            ds = _features(pd.read_parquet(cached), cfg, meta["source"], meta.get("left_out", ()))
            ds.__dict__["digest"] = meta["digest"]  # fills the cached_property: no rehash
            return ds
    if source is Source.file:
        frame, origin = read_file(cfg, data_dir)
    else:
        frame, origin = READERS[source](cfg)
    frame = _clean(frame, cfg)
    if cached is None:
        return _features(frame, cfg, origin, frame.attrs.get("left_out", ()))
    write_atomic(cached, lambda p: frame.to_parquet(p, index=False))
    # Read back what later runs will read, so every run sees the same dtypes and digest.
    left_out = frame.attrs.get("left_out", [])
    ds = _features(pd.read_parquet(cached), cfg, origin, left_out)
    meta = {"source": origin, "digest": ds.digest, "left_out": list(left_out)}
    write_atomic(cached.with_suffix(".json"), lambda p: p.write_text(json.dumps(meta)))
    return ds
