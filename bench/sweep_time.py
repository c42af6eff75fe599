"""Time a sweep as a user runs it and split its wall time into model fitting and the rest.

    python bench/sweep_time.py                      # the default: -m model=rf sweep=wide
    python bench/sweep_time.py --repeats 3 -- model=hgb sweep=narrow

Each repetition runs ``python src/train.py -m ...`` in a fresh project root (new SQLite
stores), so store creation, imports and final registration are included. Prints a table
and writes ``bench/results/sweep_time-<overrides>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def run_once(overrides: list[str]) -> dict[str, float]:
    """Run one sweep in a fresh root; return wall, fit and refit seconds and the trial count."""
    with tempfile.TemporaryDirectory(prefix="tabflow-bench-") as tmp:
        root = Path(tmp)
        env = {**os.environ, "TABFLOW_ROOT": str(root)}
        env.pop("MLFLOW_TRACKING_URI", None)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(REPO / "src" / "train.py"), "-m", *overrides],
                              cwd=root, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"sweep failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        fits = [json.loads(p.read_text())["fit_time_s"]
                for p in root.glob("multirun/**/metrics.json")]
    return {"wall_s": wall, "fit_s": sum(fits), "trials": len(fits)}


def main() -> None:
    """Run the benchmark and report it."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("overrides", nargs="*", default=["model=rf", "sweep=wide"])
    args = parser.parse_args()

    runs = [run_once(args.overrides) for _ in range(args.repeats)]
    wall = statistics.median(r["wall_s"] for r in runs)
    fit = statistics.median(r["fit_s"] for r in runs)
    trials = int(runs[0]["trials"])
    summary = {
        "command": f"python src/train.py -m {' '.join(args.overrides)}",
        "repeats": args.repeats,
        "trials": trials,
        "wall_s": round(wall, 2),
        "fit_s": round(fit, 2),
        "fit_share": round(fit / wall, 3),
        "overhead_per_trial_s": round((wall - fit) / trials, 3),
        "runs": runs,
    }
    print(f"{'command':<48} {'trials':>6} {'wall s':>8} {'fit s':>8} {'fit %':>6} "
          f"{'overhead/trial s':>17}")
    print(f"{summary['command']:<48} {trials:>6} {wall:>8.1f} {fit:>8.1f} "
          f"{100 * fit / wall:>5.0f}% {summary['overhead_per_trial_s']:>17.3f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9=._-]+", "_", "_".join(args.overrides))
    (RESULTS / f"sweep_time-{slug}.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
