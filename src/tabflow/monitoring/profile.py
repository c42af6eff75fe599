"""The training profile: what a registered version's training data looked like.

Built once, at registration, from the rows the final model was fit on (train +
validation), and logged with the version. It holds, per feature, its kind and dtype,
missing rate, summary statistics, quantile bins with counts (numeric) or category
frequencies (categorical), plus a bounded, seeded sample of rows that the numeric tests
compare new data with. Its size is bounded by ``monitoring.profile`` whatever the data's.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from tabflow.monitoring.settings import ProfileConfig

# 2: the sample's NumPy-typed columns in reference.npz, the others in reference.parquet
# (1: all in reference.parquet; still read).
FORMAT, FORMATS_READ = 2, (1, 2)
PROFILE_FILE, SAMPLE_FILE, NUMERIC_SAMPLE_FILE = (
    "profile.json", "reference.parquet", "reference.npz")
OTHER = "__other__"  # categories pooled beyond max_categories
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
# A numeric feature with this few distinct values is compared as categories (0/1 flags).
DISCRETE_MAX = 5


@dataclass
class Profile:
    """A training profile: statistics per feature (``data``) and a reference sample."""

    data: dict[str, Any]
    sample: pd.DataFrame

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        """Per feature: its kind, dtype, missing rate and distribution summary."""
        return dict(self.data["features"])

    @property
    def target(self) -> dict[str, Any]:
        """The target column: name, task and (classification) class counts."""
        return dict(self.data["target"])

    def save(self, folder: Path) -> Path:
        """Write ``profile.json`` and the reference sample into ``folder``.

        Columns of a NumPy dtype go to ``reference.npz``, one array per dtype: Parquet
        (Arrow) spends ~5 KB of memory per column, 50 MB while writing a 10,000-column
        sample. The others (text, categories, nullable and dated columns) keep their
        types in ``reference.parquet``, written only when there are some.
        """
        folder.mkdir(parents=True, exist_ok=True)
        (folder / PROFILE_FILE).write_text(json.dumps({**self.data, "format": FORMAT},
                                                      indent=1, default=_plain))
        groups: dict[str, list[str]] = {}
        for col, dtype in self.sample.dtypes.items():
            if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
                groups.setdefault(dtype.str, []).append(str(col))
        arrays = {"order": np.asarray([str(c) for c in self.sample.columns], dtype=str)}
        for i, cols in enumerate(groups.values()):
            arrays[f"names{i}"] = np.asarray(cols, dtype=str)
            arrays[f"values{i}"] = self.sample[cols].to_numpy()
        np.savez(folder / NUMERIC_SAMPLE_FILE, **arrays)  # type: ignore[arg-type]
        numeric = {c for cols in groups.values() for c in cols}
        rest = [c for c in self.sample.columns if c not in numeric]
        if rest:
            self.sample[rest].to_parquet(folder / SAMPLE_FILE, index=False)
        return folder

    @classmethod
    def load(cls, folder: Path) -> Profile:
        """Read a profile written by :meth:`save` (or an earlier format that is still read).

        The files come from a tracking store that others share: the arrays are read
        without pickles, and Parquet holds only data.
        """
        data = json.loads((folder / PROFILE_FILE).read_text())
        if data.get("format") not in FORMATS_READ:
            raise ValueError(f"profile format {data.get('format')} is not one of "
                             f"{FORMATS_READ}; re-register the version with this tabflow")
        rest = folder / SAMPLE_FILE
        if data["format"] == 1:
            return cls(data, pd.read_parquet(rest))
        with np.load(folder / NUMERIC_SAMPLE_FILE, allow_pickle=False) as arrays:
            parts = [pd.DataFrame(arrays[f"values{i}"], columns=list(arrays[f"names{i}"]))
                     for i in range(sum(f.startswith("values") for f in arrays.files))]
            order = [str(c) for c in arrays["order"]]
        if rest.exists():
            parts.append(pd.read_parquet(rest))
        sample = pd.concat(parts, axis=1) if parts else pd.DataFrame(index=range(0))
        return cls(data, sample[order])


def _plain(value: Any) -> Any:
    """JSON for NumPy scalars."""
    return value.item() if isinstance(value, np.generic) else str(value)


def _numeric(values: pd.Series, settings: ProfileConfig) -> dict[str, Any]:
    present = values.dropna().astype(float)
    if present.empty:
        return {"count": 0}
    edges = np.unique(np.quantile(present, np.linspace(0, 1, settings.bins + 1)))
    counts = bin_counts(present.to_numpy(), edges)
    summary: dict[str, Any] = {
        "count": int(present.size), "unique": int(present.nunique()),
        "mean": float(present.mean()), "std": float(present.std(ddof=0)),
        "min": float(present.min()), "max": float(present.max()),
        "quantiles": {str(q): float(v) for q, v in zip(QUANTILES, np.quantile(present, QUANTILES),
                                                       strict=True)},
        "bin_edges": [float(e) for e in edges], "bin_counts": counts.tolist(),
    }
    if summary["unique"] <= DISCRETE_MAX:
        summary["frequencies"] = {format_value(v): int(n)
                                  for v, n in present.value_counts().items()}
    return summary


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of values in the bins between ``edges``; values outside go to the end bins."""
    if len(edges) < 2:  # a constant column: one bin
        return np.array([values.size])
    inner = np.searchsorted(edges[1:-1], values, side="right")
    return np.bincount(inner, minlength=len(edges) - 1)


def format_value(value: Any) -> str:
    """A category as the profile stores it: text (JSON keys are text)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _categorical(values: pd.Series, settings: ProfileConfig) -> dict[str, Any]:
    present = values.dropna().map(format_value)
    counts = present.value_counts()
    kept = counts.head(settings.max_categories)
    frequencies = {str(k): int(v) for k, v in kept.items()}
    if len(counts) > len(kept):
        frequencies[OTHER] = int(counts.iloc[len(kept):].sum())
    return {"count": int(present.size), "unique": len(counts),
            "frequencies": frequencies, "pooled": len(counts) > len(kept)}


def build_profile(X: pd.DataFrame, y: pd.Series, *, numeric: list[str], task: str,
                  dataset: dict[str, Any], ignored: list[str], read: dict[str, Any],
                  settings: ProfileConfig, seed: int) -> Profile:
    """Profile the rows a model was fit on.

    Args:
        X: The training features, as the pipeline received them.
        y: The training target.
        numeric: The columns treated as numeric features (the others are categorical).
        task: ``classification`` or ``regression``.
        dataset: The dataset's lineage record (name, digest, rows).
        ignored: Raw columns that are not features (dropped, identifiers): a new batch may
            hold them.
        read: How the raw file was read (separator, decimal mark, encoding), to read new
            batches the same way.
        settings: ``monitoring.profile``: sample size, bins, categories kept.
        seed: Seed of the reference sample.

    Returns:
        The profile; its size is bounded by ``settings`` whatever the data's.
    """
    features: dict[str, Any] = {}
    for col in X.columns:
        kind = "numeric" if col in numeric else "categorical"
        summary = (_numeric if kind == "numeric" else _categorical)(X[col], settings)
        features[str(col)] = {"kind": kind, "dtype": str(X[col].dtype),
                              "missing_rate": float(X[col].isna().mean()), **summary}
    target: dict[str, Any] = {"name": str(y.name), "task": task}
    if task == "classification":
        target["classes"] = {format_value(k): int(v) for k, v in y.value_counts().items()}
    n = min(len(X), settings.sample_rows)
    sample = X.sample(n=n, random_state=seed) if n < len(X) else X
    data = {
        "format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": len(X), "sample_rows": int(n), "features": features, "target": target,
        "dataset": {k: dataset.get(k) for k in ("name", "digest", "n_rows", "source")},
        "ignored_columns": list(ignored), "read": read,
    }
    return Profile(data, sample.reset_index(drop=True))


def profile_of(cfg: DictConfig) -> Profile:
    """The training profile of a job config's final model: its train + validation rows.

    Args:
        cfg: A resolved job config (the best trial's ``config.yaml``); configs saved before
            profiles existed use the default ``monitoring.profile`` sizes.
    """
    from tabflow.sources import read_options
    from tabflow.splits import load_and_split

    ds, splits = load_and_split(cfg)
    X = pd.concat([splits.X_train, splits.X_val])
    y = pd.concat([splits.y_train, splits.y_val])
    settings = OmegaConf.select(cfg, "monitoring.profile") or OmegaConf.structured(ProfileConfig)
    d = cfg.dataset
    return build_profile(
        X, y, numeric=ds.numeric_columns(), task=ds.task.value, dataset=ds.describe(),
        ignored=[*d.get("drop", []), *d.get("id_columns", []), *ds.left_out],
        read=read_options(d), settings=settings,
        seed=int(cfg.seed))
