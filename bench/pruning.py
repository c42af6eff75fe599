"""Pruning's gain: the same sweep with and without a pruner, side by side.

    python bench/pruning.py                     # ~15 min; writes bench/results/pruning.*
    python bench/pruning.py --trials 8 --rows 3000 --pruners median   # does it run?

The workload makes fits cost: histogram gradient boosting (``sweep=wide``) on a generated
table of ``--rows`` rows and 20 features, scored by 5-fold CV, so a trial is 5 fits of
~0.3 s or more. Every contender runs ``python src/train.py -m`` as a user would, in a fresh
project root, with the same seed and trial count; the pruned ones add
``hydra/sweeper/pruner=<name>``. The table gives wall time, trials pruned, the best
validation (CV) score and the registered model's held-out test score, and the speed-up
against the unpruned sweep. Target: at least 1.8x less wall time with a best validation
score no more than 0.005 below the unpruned sweep's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
TARGET_SPEEDUP, TARGET_LOSS = 1.8, 0.005


def sweep(root: Path, trials: int, rows: int, pruner: str | None) -> dict[str, Any]:
    """Run one sweep; return its wall time, trial states, best validation and test scores."""
    args = [sys.executable, str(REPO / "src" / "train.py"), "-m", "model=hgb", "sweep=wide",
            "dataset=synthetic", f"dataset.synthetic.n_rows={rows}",
            "dataset.synthetic.n_features=20", "dataset.synthetic.n_informative=10",
            "cv.folds=5", f"hydra.sweeper.n_trials={trials}", "evaluation.figures=false"]
    if pruner:
        args.append(f"hydra/sweeper/pruner={pruner}")
    env = {**os.environ, "TABFLOW_ROOT": str(root)}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    out = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
    results = yaml.safe_load(next(root.glob("multirun/*/*/optimization_results.yaml"))
                             .read_text())
    test = re.search(r"test_accuracy=([\d.]+)", out.stdout + out.stderr)
    states = results["trials_by_state"]
    return {"wall_s": wall, "trials": sum(states.values()), "pruned": states.get("PRUNED", 0),
            "best_val": results["best_value"], "test": float(test.group(1)) if test else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--rows", type=int, default=8000)
    parser.add_argument("--pruners", nargs="+",
                        default=["median", "percentile", "successive_halving", "hyperband"])
    parser.add_argument("--out", type=Path, default=RESULTS / "pruning.json")
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    for name in [None, *args.pruners]:
        with tempfile.TemporaryDirectory() as tmp:
            results[name or "none"] = sweep(Path(tmp), args.trials, args.rows, name)
        print(f"{name or 'none'}: {results[name or 'none']}", flush=True)
    base = results["none"]
    lines = [f"# bench/pruning.py on {platform.node()}, {os.cpu_count()} cores: hgb wide, "
             f"{args.rows} rows x 20 features, 5-fold CV, {args.trials} trials", "",
             "| pruner | wall | pruned | best val | test | speed-up | val loss | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        r["speedup"] = base["wall_s"] / r["wall_s"]
        r["val_loss"] = base["best_val"] - r["best_val"]
        met = r["speedup"] >= TARGET_SPEEDUP and r["val_loss"] <= TARGET_LOSS
        verdict = "-" if name == "none" else "met" if met else "MISSED"
        test = f"{r['test']:.4f}" if r["test"] is not None else "?"
        lines.append(f"| {name} | {r['wall_s']:.1f} s | {r['pruned']}/{r['trials']} | "
                     f"{r['best_val']:.4f} | {test} | {r['speedup']:.2f}x | "
                     f"{r['val_loss']:+.4f} | {verdict} |")
    lines.append(f"\ntarget: >= {TARGET_SPEEDUP}x less wall time, best val no more than "
                 f"{TARGET_LOSS} below the unpruned sweep's")
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.node(), "trials": args.trials,
                                    "rows": args.rows, "results": results}, indent=1))
    args.out.with_suffix(".txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
