"""What monitoring costs: `tabflow monitor` on big batches, and the profile at registration.

    python bench/monitoring.py                       # ~2 min; writes bench/results/monitoring.*
    python bench/monitoring.py --rows 1000 100000 --repeats 2

In a fresh project root: sweeps that register breast_cancer (455 training rows) and a
synthetic table of 100,000 rows, 20 features (the profile's cost must stay bounded), then
`tabflow monitor` as a user runs it (a subprocess: imports included) on batches of each
size drawn from the training distribution, with labels. The slope between two batch sizes
is the per-row cost; the rest is fixed (imports, the store, the model). The in-process
breakdown says where a 100,000-row check spends its time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def _env(root: Path) -> dict[str, str]:
    env = {**os.environ, "TABFLOW_ROOT": str(root), "PYTHONPATH": str(REPO / "src")}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def register(root: Path, *overrides: str) -> dict[str, float]:
    """Run a 2-trial sweep; return its parent's registration and profile times."""
    subprocess.run([sys.executable, str(REPO / "src" / "train.py"), "-m", "model=logreg",
                    "sweep=narrow", "hydra.sweeper.n_trials=2", "evaluation.figures=false",
                    *overrides], cwd=root, env=_env(root), check=True, capture_output=True)
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string="tags.`tabflow.role` = 'sweep'",
                              order_by=["attributes.start_time DESC"])
    metrics = runs[0].data.metrics
    return {"registration_s": metrics["registration_time_s"],
            "profile_s": metrics["profile_time_s"]}


def batch(root: Path, rows: int) -> Path:
    """``rows`` rows of breast_cancer, resampled with a little noise, labels included."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    sample = frame.sample(rows, replace=True, random_state=0).reset_index(drop=True)
    features = sample.columns.drop("target")
    noise = np.random.default_rng(0).normal(0, 0.02, (rows, len(features)))
    sample[features] = sample[features] * (1 + noise)
    path = root / f"batch-{rows}.csv"
    sample.to_csv(path, index=False)
    return path


def monitor_cli(root: Path, path: Path) -> float:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "tabflow", "monitor", "breast_cancer",
                          str(path), "--alias", "staging"], cwd=root, env=_env(root),
                         capture_output=True, text=True)
    if out.returncode not in (0, 3, 4, 5):
        raise RuntimeError(out.stderr)
    return time.perf_counter() - start


def breakdown(root: Path, path: Path) -> dict[str, float]:
    """Where one in-process check spends its time."""
    os.environ["TABFLOW_ROOT"] = str(root)
    from tabflow.monitoring import monitor as m
    from tabflow.monitoring.batch import read_batch
    from tabflow.monitoring.drift import detect_drift
    from tabflow.tracking.store import connect

    times: dict[str, float] = {}

    def timed(name: str, fn: Any, *args: Any) -> Any:
        start = time.perf_counter()
        value = fn(*args)
        times[name] = time.perf_counter() - start
        return value

    cfg = timed("settings (Hydra compose)", m.settings, [])
    store = timed("connect", connect, f"sqlite:///{root}/mlflow.db", False)
    version = m.find_version(store, "breast_cancer", "staging", None)
    with tempfile.TemporaryDirectory() as tmp:
        profile = timed("download profile", m.load_profile, store, "breast_cancer", version,
                        Path(tmp))
    data = timed("read and check batch", read_batch, path, profile)
    drift = timed("drift tests", detect_drift, profile, data.X, cfg.drift)
    perf = timed("score (load model, predict, metrics)", m._performance, "breast_cancer",
                 version, data, profile, cfg.performance)
    check = m.Check("breast_cancer", str(version.version), "staging", data, drift, perf)
    timed("track (run, metrics, report.html)", m._record, store, check, profile, cfg)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs=2, default=[1000, 100_000])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "monitoring.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        small = register(root)
        large = register(root, "dataset=synthetic", "dataset.synthetic.n_rows=100000",
                         "dataset.synthetic.n_features=20", "cv.folds=0")
        walls = {}
        for rows in args.rows:
            path = batch(root, rows)
            walls[rows] = min(monitor_cli(root, path) for _ in range(args.repeats))
        parts = breakdown(root, batch(root, args.rows[1]))
    lo, hi = args.rows
    per_row_us = (walls[hi] - walls[lo]) / (hi - lo) * 1e6
    result = {
        "machine": f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "registration": {"breast_cancer (455 training rows)": small,
                         "synthetic (80,000 training rows, 20 features)": large},
        "monitor_wall_s": {str(k): v for k, v in walls.items()},
        "per_row_us": per_row_us, "fixed_s": walls[lo] - per_row_us * lo / 1e6,
        "breakdown_s": parts,
    }
    lines = [f"# bench/monitoring.py on {result['machine']}", "",
             "| registration of | registration | of which the profile |", "|---|---|---|"]
    lines += [f"| {k} | {v['registration_s']:.2f} s | {v['profile_s']:.3f} s "
              f"({v['profile_s'] / v['registration_s']:.0%}) |"
              for k, v in result["registration"].items()]
    lines += ["", "| `tabflow monitor`, batch rows | wall (best of "
              f"{args.repeats}) |", "|---|---|"]
    lines += [f"| {k:,} | {v:.2f} s |" for k, v in walls.items()]
    lines += [f"| per row (slope) | {per_row_us:.1f} µs |",
              f"| fixed (imports, store, model) | {result['fixed_s']:.2f} s |", "",
              f"| in-process step, {hi:,} rows | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in parts.items()]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
