"""Throughput of 1, 2, 3... sweep workers sharing a PostgreSQL study and a tracking server.

    python -m bench.scale_out                         # 1, 2 and 3 workers, 24 trials each
    python -m bench.scale_out --workers 1 2 4 --trials 48 -- model=hgb sweep=narrow

For each worker count: fresh PostgreSQL databases for MLflow and Optuna, `tabflow server`
on a free localhost port, then N `python src/train.py -m ... tracking=server
hydra/sweeper/storage=postgres` processes started at once, each in its own project root
(as on separate machines). Throughput is trials per minute of wall time, from the start
of the workers to the last one's exit (start-up and the final registration included).
Prints a table and writes ``bench/results/scale_out.json``. Needs PostgreSQL (PGHOST,
PGPORT, PGUSER; trust auth or PGPASSWORD). Run it as a module from the project root: it
starts its servers with the tests' own helpers (``tests.helpers.services``).
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

from tests.helpers.services import (
    postgres_database,
    postgres_unavailable,
    postgres_url,
    tracking_server,
)

REPO = Path(__file__).resolve().parents[1]


def run(workers: int, trials: int, overrides: list[str]) -> dict[str, float]:
    """One measurement: N workers on fresh stores; return wall time and trials per minute."""
    with tempfile.TemporaryDirectory(prefix="tabflow-scale-") as tmp, \
            postgres_database("tabflow_bench") as mlflow_db, \
            postgres_database("tabflow_bench") as optuna_db, \
            tracking_server(postgres_url(mlflow_db), Path(tmp) / "artifacts",
                            Path(tmp) / "server.log") as url:
        env = {**os.environ, "MLFLOW_TRACKING_URI": url, "TABFLOW_OPTUNA_DB": optuna_db,
               "PYTHONWARNINGS": "ignore"}
        cmd = [sys.executable, str(REPO / "src" / "train.py"), "-m", *overrides,
               f"hydra.sweeper.n_trials={trials}", "tracking=server",
               "hydra/sweeper/storage=postgres"]
        start = time.perf_counter()
        procs = []
        for i in range(workers):
            root = Path(tmp) / f"worker{i}"
            root.mkdir()
            procs.append(subprocess.Popen(cmd, cwd=root, env={**env, "TABFLOW_ROOT": str(root)},
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True))
        outputs = [p.communicate()[0] for p in procs]
        wall = time.perf_counter() - start
        for p, out in zip(procs, outputs, strict=True):
            if p.returncode != 0:
                sys.exit(f"a worker failed (exit {p.returncode}):\n{out[-3000:]}")
    return {"workers": workers, "trials": trials, "wall_s": wall,
            "trials_per_min": 60 * trials / wall}


def main() -> None:
    """Measure each worker count and report."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scale_out.json")
    parser.add_argument("overrides", nargs="*", default=["model=rf", "sweep=narrow"])
    args = parser.parse_args()
    why = postgres_unavailable()
    if why:
        sys.exit(f"bench.scale_out needs PostgreSQL: {why}")
    rows = []
    for n in args.workers:
        print(f"  {n} worker(s) ...", flush=True)
        rows.append(run(n, args.trials, args.overrides))
    base = rows[0]["trials_per_min"]
    lines = [f"workload: {' '.join(args.overrides)}, {args.trials} trials; "
             f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
             f"{'workers':>8}{'wall s':>9}{'trials/min':>12}{'speed-up':>10}"]
    lines += [f"{r['workers']:>8}{r['wall_s']:>9.1f}{r['trials_per_min']:>12.1f}"
              f"{r['trials_per_min'] / base:>9.2f}x" for r in rows]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "overrides": args.overrides,
                                    "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
                                    "table": text}, indent=2))


if __name__ == "__main__":
    main()
