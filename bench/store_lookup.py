"""Time finding a sweep's best run in a crowded tracking store.

    python bench/store_lookup.py --runs 10000 --out lookup.json

Fills a fresh SQLite tracking store with ``--runs`` trial runs, in sweeps of 50 under
parent runs (rows are bulk-inserted through MLflow's own ORM models: creating 10,000 runs
through the API takes minutes and is not what is measured), then times the framework's
lookup, :func:`tabflow.tracking.queries.best_trial_run`, for the last sweep (median of 5).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRIALS_PER_SWEEP = 50


def fill(db: Path, n_runs: int) -> tuple[str, str]:
    """Create the store and its runs; return (experiment id, parent run id of the last sweep)."""
    from mlflow.store.tracking.dbmodels import models as m
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from tabflow.contract import TAG_ROLE, TAG_TRIAL
    from tabflow.tracking.store import connect

    store = connect(f"sqlite:///{db}")
    experiment_id = store.client.create_experiment("crowded")
    sql = SqlAlchemyStore(f"sqlite:///{db}", str(db.parent / "artifacts"))
    rng = random.Random(0)
    now = int(time.time() * 1000)
    parent = ""
    with sql.ManagedSessionMaker(read_only=False) as session:
        for start in range(0, n_runs, TRIALS_PER_SWEEP):
            parent = uuid.uuid4().hex
            session.add(_run(m, parent, experiment_id, now))
            session.add(m.SqlTag(key=TAG_ROLE, value="sweep", run_uuid=parent))
            for i in range(start, min(start + TRIALS_PER_SWEEP, n_runs)):
                run = uuid.uuid4().hex
                session.add(_run(m, run, experiment_id, now + i))
                session.add_all([
                    m.SqlTag(key="mlflow.parentRunId", value=parent, run_uuid=run),
                    m.SqlTag(key=TAG_ROLE, value="trial", run_uuid=run),
                    m.SqlTag(key=TAG_TRIAL, value=str(i - start), run_uuid=run),
                ])
                for key in ("val_accuracy", "train_accuracy", "fit_time_s"):
                    value = rng.random()
                    session.add(m.SqlMetric(key=key, value=value, timestamp=now, step=0,
                                            is_nan=False, run_uuid=run))
                    session.add(m.SqlLatestMetric(key=key, value=value, timestamp=now, step=0,
                                                  is_nan=False, run_uuid=run))
    return str(experiment_id), parent


def _run(m: object, run_id: str, experiment_id: str, start_ms: int) -> object:
    return m.SqlRun(run_uuid=run_id, name=run_id[:8], source_type="LOCAL",  # type: ignore[attr-defined]
                    source_name="", entry_point_name="", user_id="bench", status="FINISHED",
                    start_time=start_ms, end_time=start_ms + 1, source_version="",
                    lifecycle_stage="active", artifact_uri="", experiment_id=int(experiment_id))


def main() -> None:
    """Fill a store, time the lookup, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from tabflow.tracking.queries import best_trial_run
    from tabflow.tracking.store import connect

    db = Path.cwd() / "crowded.db"
    t0 = time.perf_counter()
    experiment_id, parent = fill(db, args.runs)
    fill_s = time.perf_counter() - t0
    store = connect(f"sqlite:///{db}")
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        best, counts = best_trial_run(store, experiment_id, parent, "val_accuracy",
                                     "maximize")
        times.append(time.perf_counter() - t0)
    assert sum(counts.values()) == (args.runs % TRIALS_PER_SWEEP or TRIALS_PER_SWEEP), counts
    args.out.write_text(json.dumps({"runs": args.runs, "fill_s": fill_s,
                                    "lookup_s": statistics.median(times),
                                    "best": best.value}))


if __name__ == "__main__":
    main()
