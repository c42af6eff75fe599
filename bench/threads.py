"""Threads per fit: how long each family's fit takes with 1 thread and with every core.

    python bench/threads.py               # ~4 min; writes bench/results/threads.{json,txt}
    python bench/threads.py --rows 20000 --families hgb   # a quick look

Each family's pipeline (as ``model=<family>`` composes it, preprocessing included) is fitted
in this process on the bundled tables and on a generated one of ``--rows`` rows, under
``threadpool_limits`` (OpenMP and BLAS threads; a forest's ``n_jobs`` too), with 1 thread
and with every core. "busy" runs the same fits while one spinning process per core holds
the machine, as other trials, tests or services would. The median of ``--repeats`` fits is
reported; ``threads=null`` (tabflow's default) follows the rule the table supports
(docs/models.md).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DATASETS = ("wine", "breast_cancer", "synthetic")


def _spin(stop: Any) -> None:
    while not stop.is_set():
        pass


def compose(family: str, dataset: str, rows: int) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from tabflow.config import register_configs

    register_configs()
    overrides = [f"model={family}", f"dataset={dataset}"]
    if dataset == "synthetic":
        overrides += [f"dataset.synthetic.n_rows={rows}", "dataset.synthetic.n_features=20"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return hydra_compose("train", overrides=overrides)


def fit_seconds(cfg: Any, threads: int, repeats: int) -> tuple[float, int, int]:
    """Median fit time of the family's pipeline on the train split: (seconds, rows, cols)."""
    from threadpoolctl import threadpool_limits

    from tabflow.pipeline import build_pipeline
    from tabflow.splits import load_and_split

    ds, splits = load_and_split(cfg)
    times = []
    for _ in range(repeats):
        pipeline = build_pipeline(cfg, ds)
        if "n_jobs" in pipeline[-1].get_params():
            pipeline[-1].set_params(n_jobs=threads)
        with threadpool_limits(limits=threads):
            start = time.perf_counter()
            pipeline.fit(splits.X_train, splits.y_train)
            times.append(time.perf_counter() - start)
    return statistics.median(times), len(splits.X_train), splits.X_train.shape[1]


def measure(families: list[str], rows: int, repeats: int, busy: bool) -> list[dict[str, Any]]:
    cores = os.cpu_count() or 1
    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=_spin, args=(stop,)) for _ in range(cores)]
    if busy:
        for p in spinners:
            p.start()
    try:
        out = []
        for family in families:
            for dataset in DATASETS:
                cfg = compose(family, dataset, rows)
                n = 1 if dataset == "synthetic" else repeats
                one, r, c = fit_seconds(cfg, 1, n)
                every, _, _ = fit_seconds(cfg, cores, n)
                out.append({"family": family, "dataset": dataset, "rows": r, "features": c,
                            "load": "busy" if busy else "idle", "one_thread_s": one,
                            "all_cores_s": every, "cores": cores})
                print(f"{family:<5} {dataset:<14} {r:>7} x {c:<3} {out[-1]['load']:<5} "
                      f"1 thread {one:8.3f}s  {cores} cores {every:8.3f}s", flush=True)
        return out
    finally:
        stop.set()
        for p in spinners:
            if p.is_alive():
                p.join()


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'family':<6} {'data':<14} {'rows x cols':>12} {'load':<5} {'1 thread':>9} "
             f"{'all cores':>10} {'all / 1':>8}"]
    for r in rows:
        lines.append(f"{r['family']:<6} {r['dataset']:<14} {r['rows']:>7} x {r['features']:<3} "
                     f"{r['load']:<5} {r['one_thread_s']:8.3f}s {r['all_cores_s']:9.3f}s "
                     f"{r['all_cores_s'] / r['one_thread_s']:7.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", nargs="+", default=["hgb", "logreg", "rf", "knn"])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "threads.json")
    args = parser.parse_args()
    rows = [*measure(args.families, args.rows, args.repeats, busy=False),
            *measure(args.families, args.rows, args.repeats, busy=True)]
    text = (f"threads per fit on {platform.node()} ({os.cpu_count()} cores), "
            f"{time.strftime('%Y-%m-%d')}\n{table(rows)}\n")
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.node(), "cores": os.cpu_count(),
                                    "rows": rows}, indent=1))
    args.out.with_suffix(".txt").write_text(text)


if __name__ == "__main__":
    main()
