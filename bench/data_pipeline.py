"""Time loading, splitting and preprocessing a large synthetic table, and its peak memory.

    python bench/data_pipeline.py                       # 1,000,000 rows, 20 features
    python bench/data_pipeline.py --rows 200000 --repeats 3

Each repetition runs in a fresh process (so peak RSS is that of the data path alone) and
a fresh data/ folder: a first load generates, checks and caches the table, a second load
reads the cache, then the split and the `standard` preprocessing fitted on the training
rows. Prints a table (median of the repetitions) and writes
``bench/results/data_pipeline.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
STAGES = ("load_first_s", "load_cached_s", "split_s", "preprocess_s")


def measure(rows: int, features: int, data_dir: str) -> dict[str, float]:
    """Run the data path once in this process and return stage times and peak RSS."""
    sys.path.insert(0, str(REPO / "src"))
    from omegaconf import OmegaConf

    from tabflow.config import DatasetConfig, PreprocessingConfig, SplitConfig
    from tabflow.data import load_dataset
    from tabflow.preprocessing import make_preprocessor
    from tabflow.splits import split_dataset

    cfg: Any = OmegaConf.merge(OmegaConf.structured(DatasetConfig), {
        "name": "synthetic", "source": "synthetic", "task": "classification",
        "synthetic": {"n_rows": rows, "n_features": features, "n_informative": 10,
                      "n_categorical": 4, "missing_rate": 0.05, "seed": 0}})
    times: dict[str, float] = {}
    t = time.perf_counter()
    load_dataset(cfg, data_dir)
    times["load_first_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ds = load_dataset(cfg, data_dir)
    times["load_cached_s"] = time.perf_counter() - t
    t = time.perf_counter()
    splits = split_dataset(ds, OmegaConf.structured(SplitConfig), 42, data_dir)
    times["split_s"] = time.perf_counter() - t
    t = time.perf_counter()
    prep: Any = OmegaConf.merge(OmegaConf.structured(PreprocessingConfig), {"name": "standard"})
    pre = make_preprocessor(prep,
                            ds.numeric_columns(), ds.categorical_columns())
    pre.fit_transform(splits.X_train)
    times["preprocess_s"] = time.perf_counter() - t
    times["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times["table_mb"] = ds.X.memory_usage(deep=True).sum() / 2**20
    return times


def main() -> None:
    """Run the repetitions in subprocesses and report them."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.rows, args.features, args.child)))
        return

    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="tabflow-bench-data-") as data_dir:
            out = subprocess.run([sys.executable, __file__, "--rows", str(args.rows),
                                  "--features", str(args.features), "--child", data_dir],
                                 capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    summary = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    print(f"synthetic table: {args.rows:,} rows x {args.features} features "
          f"(4 categorical, 5% missing), median of {args.repeats} runs")
    print(f"{'stage':<28} {'seconds':>8}")
    for stage in STAGES:
        print(f"{stage:<28} {summary[stage]:>8.2f}")
    print(f"{'peak RSS (MB)':<28} {summary['peak_rss_mb']:>8.0f}")
    print(f"{'table in memory (MB)':<28} {summary['table_mb']:>8.0f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "data_pipeline.json").write_text(json.dumps(
        {"rows": args.rows, "features": args.features, "repeats": args.repeats,
         "median": summary, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
