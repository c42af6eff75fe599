"""Figures of a model and of a sweep, and the one-page sweep report.

Everything uses matplotlib's object API on the Agg backend: each function returns its
figures, and the caller saves and closes them (no pyplot state leaks across jobs).
"""

from __future__ import annotations

import base64
import html
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tabflow.config import Task

MAX_FEATURES_SHOWN = 20
MAX_CLASSES_CURVES = 10  # one-vs-rest curves beyond this would be unreadable


def _figure(width: float = 6.4, height: float = 4.8) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def confusion_matrix(model: Any, X: pd.DataFrame, y: pd.Series, split: str) -> Figure:
    """Plot the confusion matrix of a classifier on one split, with class names."""
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = _figure()
    ConfusionMatrixDisplay.from_predictions(y, model.predict(X), ax=ax, colorbar=False,
                                            labels=list(model.classes_))
    ax.set_title(f"Confusion matrix ({split}, {len(y)} rows)")
    return fig


def _scores(model: Any, X: pd.DataFrame) -> np.ndarray | None:
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(X))
    if hasattr(model, "decision_function"):
        scores = np.asarray(model.decision_function(X))
        return np.column_stack([-scores, scores]) if scores.ndim == 1 else scores
    return None


def roc_and_pr_curves(model: Any, X: pd.DataFrame, y: pd.Series,
                      split: str) -> dict[str, Figure]:
    """Plot ROC and precision-recall curves: the positive class, or one-vs-rest per class."""
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    scores = _scores(model, X)
    classes = list(model.classes_)
    if scores is None or len(classes) > MAX_CLASSES_CURVES:
        return {}
    shown = classes[1:] if len(classes) == 2 else classes
    roc, roc_ax = _figure()
    pr, pr_ax = _figure()
    for cls in shown:
        k = classes.index(cls)
        truth = (y == cls).to_numpy()
        RocCurveDisplay.from_predictions(truth, scores[:, k], ax=roc_ax, name=f"class {cls}")
        PrecisionRecallDisplay.from_predictions(truth, scores[:, k], ax=pr_ax,
                                                name=f"class {cls}")
    roc_ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    roc_ax.set_title(f"ROC curve ({split})")
    roc_ax.legend(loc="lower right")
    pr_ax.set_title(f"Precision-recall curve ({split})")
    pr_ax.legend(loc="lower left")
    return {"roc_curve": roc, "precision_recall_curve": pr}


# Permutation importance shuffles each column several times: on a wide table only the
# columns the model itself ranks highest are shuffled, and the shuffled copies predicted
# at once are bounded in cells, so a 10,000-column table costs what a 50-column one does.
MAX_COLUMNS_SHUFFLED = 50
BATCH_CELLS = 4_000_000  # ~32 MB of float64 per predict call


def native_ranking(model: Any, X: pd.DataFrame, y: pd.Series) -> np.ndarray:
    """A cheap score per raw column: the model's own importances where it has them.

    Tree ensembles' ``feature_importances_`` and linear models' ``|coef_|`` are summed
    from the model's input features back to the raw column each came from (a one-hot
    column ``region_west`` to ``region``). Models with neither (HGB, KNN, RBF SVM) fall
    back to a univariate F-test of each numeric column against the target.
    """
    estimator = model[-1] if hasattr(model, "steps") else model
    weights = getattr(estimator, "feature_importances_", None)
    if weights is None and getattr(estimator, "coef_", None) is not None:
        weights = np.abs(np.atleast_2d(estimator.coef_)).sum(axis=0)
    names: list[str] | None = None
    if weights is not None and hasattr(model, "steps") and len(model.steps) > 1:
        try:
            names = [str(n) for n in model[:-1].get_feature_names_out()]
        except Exception:  # a transformer without names: no mapping, use the fallback
            names = None
    elif weights is not None:
        names = [str(c) for c in X.columns]
    score = np.zeros(X.shape[1])
    if weights is not None and names is not None and len(names) == len(weights):
        index = {str(c): i for i, c in enumerate(X.columns)}
        by_length = sorted(index, key=len, reverse=True)
        for name, weight in zip(names, np.asarray(weights, dtype=float), strict=True):
            name = name.removeprefix("missingindicator_")
            raw = index.get(name)
            if raw is None:  # "region_west", "age^2", "age tenure": the longest raw prefix
                raw = next((index[c] for c in by_length
                            if name.startswith((f"{c}_", f"{c}^", f"{c} "))), None)
            if raw is not None:
                score[raw] += abs(weight)
        if score.any():
            return score
    from sklearn.feature_selection import f_classif, f_regression

    numeric = [i for i, c in enumerate(X.columns) if pd.api.types.is_numeric_dtype(X[c])
               and not pd.api.types.is_bool_dtype(X[c])]
    if numeric:
        values = X.iloc[:, numeric].astype(float)
        values = values.fillna(values.median()).fillna(0.0)
        test = f_classif if y.dtype == object or y.nunique() <= 20 else f_regression
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f, _ = test(values.to_numpy(), np.asarray(y))
        score[numeric] = np.nan_to_num(f, nan=0.0)
    return score


def importances(model: Any, X: pd.DataFrame, y: pd.Series, task: Task, seed: int,
                repeats: int = 5, max_rows: int = 2000, batch_cells: int = BATCH_CELLS,
                max_columns: int = MAX_COLUMNS_SHUFFLED) -> tuple[np.ndarray, np.ndarray]:
    """Permutation importance of each raw input column: mean and std of the score drop.

    Same method as scikit-learn's ``permutation_importance`` (accuracy or R², each column
    shuffled ``repeats`` times), but the shuffled copies are scored in a few large
    ``predict`` calls instead of one per column and repeat: for ensembles of trees the
    per-call cost dominates, so this is several times faster. At most ``max_rows`` rows
    (sampled) are used and ``batch_cells`` cells predicted at once; on a table wider than
    ``max_columns`` only that many columns, the first by :func:`native_ranking`, are
    shuffled (the others get NaN).
    """
    from sklearn.metrics import accuracy_score, r2_score

    metric = accuracy_score if task is Task.classification else r2_score
    rng = np.random.default_rng(seed)
    if len(X) > max_rows:
        rows = np.sort(rng.choice(len(X), size=max_rows, replace=False))
        X, y = X.iloc[rows], y.iloc[rows]
    X, y = X.reset_index(drop=True), y.reset_index(drop=True)
    columns = np.arange(X.shape[1])
    if X.shape[1] > max_columns:
        columns = np.sort(np.argsort(native_ranking(model, X, y))[-max_columns:])
    base = metric(y, model.predict(X))
    pairs = [(int(col), r) for col in columns for r in range(repeats)]
    per_batch = max(1, batch_cells // max(1, X.size))
    drops = np.empty(len(pairs))
    for start in range(0, len(pairs), per_batch):
        batch = pairs[start:start + per_batch]
        copies = []
        for col, _ in batch:
            shuffled = X.copy()
            shuffled.iloc[:, col] = rng.permutation(shuffled.iloc[:, col].to_numpy())
            copies.append(shuffled)
        pred = np.asarray(model.predict(pd.concat(copies, ignore_index=True)))
        del copies
        for i, block in enumerate(np.split(pred, len(batch))):
            drops[start + i] = base - metric(y, block)
    mean, std = np.full(X.shape[1], np.nan), np.full(X.shape[1], np.nan)
    per_column = drops.reshape(len(columns), repeats)
    mean[columns], std[columns] = per_column.mean(axis=1), per_column.std(axis=1)
    return mean, std


def permutation_importance(model: Any, X: pd.DataFrame, y: pd.Series, task: Task, split: str,
                           seed: int) -> Figure:
    """Plot permutation importance of the raw input columns (works for every model)."""
    mean, std = importances(model, X, y, task, seed)
    shuffled = np.flatnonzero(~np.isnan(mean))
    order = shuffled[np.argsort(mean[shuffled])][-MAX_FEATURES_SHOWN:]
    fig, ax = _figure(7.0, max(3.0, 0.3 * len(order) + 1.5))
    ax.barh([str(X.columns[i]) for i in order], mean[order], xerr=std[order], color="tab:blue")
    ax.set_xlabel("drop in score when the column is shuffled")
    which = "" if len(shuffled) == X.shape[1] else \
        f"; {len(shuffled)} of {X.shape[1]:,} columns, the model's own top ones"
    ax.set_title(f"Permutation importance ({split}, {min(len(y), 2000)} rows{which})")
    return fig


def regression_figures(model: Any, X: pd.DataFrame, y: pd.Series,
                       split: str) -> dict[str, Figure]:
    """Plot predicted against actual values, and residuals against predictions."""
    pred = model.predict(X)
    scatter, ax = _figure()
    ax.scatter(y, pred, s=12, alpha=0.7)
    low, high = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    ax.plot([low, high], [low, high], linestyle="--", color="grey", label="perfect")
    ax.set_xlabel(f"actual {y.name}")
    ax.set_ylabel(f"predicted {y.name}")
    ax.set_title(f"Predicted vs actual ({split})")
    ax.legend()
    residuals, rax = _figure()
    rax.scatter(pred, y - pred, s=12, alpha=0.7)
    rax.axhline(0, linestyle="--", color="grey")
    rax.set_xlabel(f"predicted {y.name}")
    rax.set_ylabel("residual (actual - predicted)")
    rax.set_title(f"Residuals ({split})")
    return {"predicted_vs_actual": scatter, "residuals": residuals}


def model_figures(model: Any, X: pd.DataFrame, y: pd.Series, task: Task, split: str,
                  seed: int) -> dict[str, Figure]:
    """Return the figures of a fitted model on one split, by file stem."""
    figures: dict[str, Figure] = {}
    if task is Task.classification:
        figures["confusion_matrix"] = confusion_matrix(model, X, y, split)
        figures.update(roc_and_pr_curves(model, X, y, split))
    else:
        figures.update(regression_figures(model, X, y, split))
    figures["permutation_importance"] = permutation_importance(model, X, y, task, split,
                                                                seed)
    return figures


def sweep_figures(storage: str, study_name: str, metric: str) -> dict[str, Figure]:
    """Return Optuna's history, importance, parallel-coordinate and slice plots of a study.

    Plots that a study can't support yet (e.g. importances from a single trial) are left out.
    """
    import matplotlib

    matplotlib.use("Agg")  # optuna draws through pyplot: files only, no display
    import optuna
    from optuna.visualization import matplotlib as ov

    study = optuna.load_study(study_name=study_name, storage=storage)
    kwargs: dict[str, Any] = {"target_name": metric}
    if len(study.directions) > 1:
        kwargs["target"] = lambda t: t.values[0]
    plots: dict[str, Any] = {"optimization_history": ov.plot_optimization_history,
                             "param_importances": ov.plot_param_importances,
                             "parallel_coordinate": ov.plot_parallel_coordinate,
                             "slice": ov.plot_slice}
    figures: dict[str, Figure] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" warnings of optuna.visualization
        for name, plot in plots.items():
            try:
                axes = plot(study, **kwargs)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue
            fig = np.asarray(axes).flat[0].figure
            _readable(name, fig, np.asarray(axes).size)
            figures[name] = fig
    return figures


def _readable(name: str, fig: Figure, panels: int) -> None:
    """Size a study plot for what it shows, so that no label overlaps another.

    A slice plot has a panel per parameter (3.2 inches each); the parallel-coordinate
    plot's axis names are tilted; long labels are kept whole by saving with a tight box.
    """
    width = max(6.4, 3.2 * panels) if name == "slice" else max(6.4, fig.get_figwidth())
    fig.set_size_inches(width, 4.8)
    if name == "parallel_coordinate":
        for ax in fig.axes:
            ax.tick_params(axis="x", labelrotation=25)


def save_figures(figures: dict[str, Any], folder: Path) -> list[Path]:
    """Save figures as PNG files in ``folder`` and close them; return the paths."""
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")  # long labels kept whole
        plt.close(fig)  # optuna's plots come from pyplot; our own Figures are unmanaged
        paths.append(path)
    return paths


def _table(rows: dict[str, Any]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
                    for k, v in rows.items())
    return f"<table>{cells}</table>"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_report(path: Path, title: str, summary: dict[str, Any], params: dict[str, Any],
                 test_metrics: dict[str, float], figures: list[Path]) -> Path:
    """Write a self-contained one-page HTML report (figures embedded)."""
    images = "".join(
        f'<figure><img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"/><figcaption>'
        f'{html.escape(p.stem.replace("_", " "))}</figcaption></figure>' for p in figures)
    page = io.StringIO()
    page.write(f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}
</title><style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
table{{border-collapse:collapse;margin-bottom:1.5em}}th,td{{border:1px solid #ccc;
padding:4px 10px;text-align:left}}figure{{display:inline-block;margin:0 1em 1em 0}}
img{{max-width:520px}}</style></head><body><h1>{html.escape(title)}</h1>
<h2>Sweep</h2>{_table(summary)}<h2>Best parameters</h2>{_table(params)}
<h2>Held-out test scores of the final model</h2>{_table(test_metrics)}
<h2>Figures</h2>{images}</body></html>""")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page.getvalue())
    return path
