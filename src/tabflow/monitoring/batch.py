"""A new batch of data, read as the training data was and checked against its profile.

Every problem that would make the comparison meaningless (no rows, missing or unknown
columns, text in a numeric column, label classes the model never saw) stops the command
here with one line naming the problem and the fix, before anything is computed or
recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tabflow.data import frame_digest
from tabflow.monitoring.profile import Profile, format_value
from tabflow.sources import read_csv_table

SUFFIXES = (".csv", ".parquet")


class MonitorError(RuntimeError):
    """A monitoring step that can't be done; the message says why and what to do."""


@dataclass
class Batch:
    """The new rows: features typed as in training, and labels when given."""

    path: Path
    X: pd.DataFrame
    y: pd.Series | None
    ignored: list[str]  # columns left out: known non-features (dropped, identifiers)
    digest: str

    @property
    def rows(self) -> int:
        """How many rows the batch has."""
        return len(self.X)


def read_table(path: Path, read: dict[str, Any]) -> pd.DataFrame:
    """Read a CSV or Parquet file with the training file's separator, decimal and encoding."""
    if not path.is_file():
        raise MonitorError(f"{path}: no such file; give the path of the new batch (CSV or "
                           f"Parquet)")
    if path.suffix.lower() not in SUFFIXES:
        raise MonitorError(f"{path}: unsupported file type {path.suffix!r}; use a CSV or "
                           f"Parquet file")
    try:
        if path.suffix.lower() == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame, _ = read_csv_table(path, read)
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame()
    except Exception as e:
        raise MonitorError(f"{path}: cannot read it as {path.suffix.lstrip('.').upper()} "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); check that "
                           f"it is a valid table written like the training data") from e
    frame.columns = [str(c) for c in frame.columns]
    if frame.empty:
        raise MonitorError(f"{path} holds no rows; nothing to monitor")
    return frame


def _typed(frame: pd.DataFrame, profile: Profile, path: Path) -> pd.DataFrame:
    """The features, converted to the kinds and dtypes they had in training."""
    X = pd.DataFrame(index=frame.index)
    for col, spec in profile.features.items():
        values = frame[col]
        if spec["kind"] == "numeric":
            converted = pd.to_numeric(values, errors="coerce")
            bad = values[converted.isna() & values.notna()]
            if len(bad):
                raise MonitorError(
                    f"{path.name}: column {col!r} was numeric in training, but holds "
                    f"{bad.iloc[0]!r} ({len(bad)} such value(s)); fix those values, or leave "
                    f"the cells empty where the value is unknown")
            X[col] = converted.astype("float64") if converted.isna().any() or \
                spec["dtype"].startswith("float") else converted.astype(spec["dtype"])
        elif spec["dtype"] == "bool" and pd.api.types.is_bool_dtype(values):
            X[col] = values
        else:  # text, as training's categorical columns were
            X[col] = values.map(format_value, na_action="ignore").astype(object)
    return X


def _labels(frame: pd.DataFrame, profile: Profile, labels: str, path: Path) -> pd.Series:
    y = frame[labels]
    if y.isna().all():
        raise MonitorError(f"{path.name}: the labels column {labels!r} is empty; give a "
                           f"column with the true outcomes, or leave out --labels")
    target = profile.target
    if target["task"] == "regression":
        converted = pd.to_numeric(y, errors="coerce")
        if (converted.isna() & y.notna()).any():
            raise MonitorError(f"{path.name}: the labels column {labels!r} holds text; a "
                               f"regression model's labels are numbers")
        return converted
    known = set(target.get("classes", {}))
    unseen = sorted({format_value(v) for v in y.dropna()} - known)
    if unseen:
        raise MonitorError(
            f"{path.name}: the labels column {labels!r} holds classes the model never saw: "
            f"{unseen[:10]} (it knows {sorted(known)[:10]}); remove those rows, or train on "
            f"data that has them (a sweep with dataset.path=<a file with them>)")
    return y


def read_batch(path: Path, profile: Profile, labels: str | None = None,
               ignore_extra: bool = False, require_labels: bool = False) -> Batch:
    """Read a new batch and check it against a version's training profile.

    Args:
        path: A CSV or Parquet file, written like the training data.
        profile: The version's training profile.
        labels: The column holding the true outcomes; None uses the training target's
            column when the batch has it.
        ignore_extra: Leave out columns the model was not trained on instead of refusing.
        require_labels: Refuse a batch without labels (retraining needs them).

    Returns:
        The typed features and, when present, the labels (rows without a label dropped).

    Raises:
        MonitorError: If the batch can't be compared with the profile; says how to fix it.
    """
    frame = read_table(path, profile.data.get("read", {}))
    target = profile.target["name"]
    if labels is None and target in frame.columns:
        labels = target
    if labels is None and require_labels:
        raise MonitorError(f"{path.name} has no labels: retraining needs the true outcomes; "
                           f"name their column with --labels COLUMN (the training target "
                           f"was {target!r})")
    if labels is not None and labels not in frame.columns:
        raise MonitorError(f"{path.name} has no column {labels!r} for --labels; its columns "
                           f"are {list(frame.columns)[:20]}")
    features = list(profile.features)
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise MonitorError(f"{path.name} lacks column(s) the model was trained on: {missing}; "
                           f"add them (leave cells empty where a value is unknown)")
    known = {*features, *profile.data.get("ignored_columns", []), labels}
    extra = [c for c in frame.columns if c not in known]
    if extra and not ignore_extra:
        raise MonitorError(f"{path.name} has column(s) the model was not trained on: {extra}; "
                           f"drop them, or pass --ignore-extra to monitor the model's "
                           f"features only")
    y = None
    if labels is not None:
        y = _labels(frame, profile, labels, path)
        frame = frame.loc[y.notna()]
        y = y.loc[y.notna()]
    X = _typed(frame, profile, path).reset_index(drop=True)
    if y is not None:
        y = y.reset_index(drop=True).rename(target)
    ignored = [c for c in frame.columns if c not in features and c != labels]
    return Batch(path, X, y, ignored, frame_digest(X, y))
