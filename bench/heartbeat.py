"""What heartbeats cost, and how soon a dead worker's trial runs again.

    python bench/heartbeat.py                  # ~4 min; writes bench/results/heartbeat.*
    python bench/heartbeat.py --trials 10 30 --skip-death

Three measurements, in fresh project roots:

1. **A beat's write**: ``record_heartbeat`` (a trial's beat) and a lock's beat (a study
   attribute), timed 200 times on SQLite and, when it answers, PostgreSQL. With the
   default interval (20 s) each running trial writes 3 beats a minute.
2. **Per-trial cost**: what the sweeper does with the storage per trial (ask under the
   study's lock, beat, check for dead trials, tell), 200 trials in process, with
   heartbeats on and off, side by side; and the same sweep as a user runs it (logreg,
   ``sweep=narrow``, a SQLite study) on and off (``hydra.sweeper.heartbeat.interval=null``)
   at two trial counts, interleaved: the slope between the counts is the per-trial cost
   (whole trials: the difference drowns in the noise of a shared machine).
3. **Death to retry**: two sweep processes on one study; one is frozen (SIGSTOP) mid-trial,
   the other notices, fails the trial and starts its retry. Timed from the freeze to the
   retry's start (Optuna's ``datetime_start``), with the default settings (20 s / 60 s)
   and a short one (2 s / 6 s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SWEEP = ["-m", "model=logreg", "sweep=narrow", "evaluation.figures=false"]


def _env(root: Path) -> dict[str, str]:
    env = {**os.environ, "TABFLOW_ROOT": str(root), "PYTHONPATH": str(REPO / "src"),
           "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def write_cost(url: str, n: int = 200) -> dict[str, float]:
    """Milliseconds per trial beat and per lock beat on a storage."""
    import optuna

    sys.path.insert(0, str(REPO / "src"))
    from hydra_plugins.tabflow_sweeper._heartbeat import Heartbeat
    from hydra_plugins.tabflow_sweeper.stores import optuna_storage

    storage = optuna_storage(url, heartbeat=Heartbeat(20, 60, 1))
    study = optuna.create_study(storage=storage, study_name=f"bench-{time.time_ns()}")
    trial = study.ask()
    lock = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE],
                                    f"bench-{time.time_ns()}~ask")
    out = {}
    for what, beat in (("trial_beat_ms", lambda: storage.record_heartbeat(trial._trial_id)),
                       ("lock_beat_ms",
                        lambda: storage.set_study_user_attr(lock, "beat_at", time.time()))):
        beat()
        start = time.perf_counter()
        for _ in range(n):
            beat()
        out[what] = (time.perf_counter() - start) / n * 1000
    storage.delete_study(lock)
    return out


def storage_work(url: str, heartbeat: bool, n: int = 200) -> float:
    """Milliseconds of the sweeper's storage work per trial, without the job."""
    import optuna

    sys.path.insert(0, str(REPO / "src"))
    from hydra_plugins.tabflow_sweeper import _heartbeat, _study
    from hydra_plugins.tabflow_sweeper._heartbeat import Heartbeat, TrialBeats

    settings = Heartbeat(20, 60, 1) if heartbeat else None
    study = _study.create_study(f"work-{time.time_ns()}", url, None, ["maximize"],
                                heartbeat=settings)
    beats = TrialBeats(study, 20) if settings else None
    space = optuna.distributions.FloatDistribution(0, 1)
    start = time.perf_counter()
    for _ in range(n):
        (trial,), _ = _study.ask_batch(study, True, n, 1, settings, beats)
        trial._suggest("x", space)
        if beats is not None:
            beats.discard(trial)
        _heartbeat.taken_over(study, trial)
        _study.tell(study, trial, values=[trial.params["x"]])
    if beats is not None:
        beats.stop()
    return (time.perf_counter() - start) / n * 1000


def sweep_time(trials: int, heartbeat: bool) -> float:
    """Wall time of a fresh sweep of ``trials`` trials, heartbeats on or off."""
    with tempfile.TemporaryDirectory() as tmp:
        extra = [] if heartbeat else ["hydra.sweeper.heartbeat.interval=null"]
        start = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "src" / "train.py"), *SWEEP,
                        f"hydra.sweeper.n_trials={trials}", *extra], cwd=tmp,
                       env=_env(Path(tmp)), check=True, capture_output=True)
        return time.perf_counter() - start


def death_to_retry(interval: int, grace: int) -> float:
    """Seconds from freezing a worker mid-trial to the start of its trial's retry."""
    import optuna

    with tempfile.TemporaryDirectory() as tmp:
        root, url = Path(tmp), f"sqlite:///{tmp}/optuna.db"
        cmd = [sys.executable, str(REPO / "src" / "train.py"), "-m", "dataset=synthetic",
               "dataset.synthetic.n_rows=20000", "model=rf", "sweep=narrow",
               "hydra.sweeper.n_trials=4", f"hydra.sweeper.heartbeat.interval={interval}",
               f"hydra.sweeper.heartbeat.grace_period={grace}"]
        frozen = subprocess.Popen(cmd, cwd=root, env=_env(root), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            study, number = None, None
            while number is None:
                time.sleep(0.05)
                names = [n for n in _names(url) if "~" not in n]
                if names:
                    study = optuna.load_study(study_name=names[0], storage=url)
                    running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
                    number = next((t.number for t in running
                                   if t.user_attrs.get("tabflow.pid") == frozen.pid), None)
            os.kill(frozen.pid, signal.SIGSTOP)
            frozen_at = time.time()
            survivor = subprocess.run(cmd, cwd=root, env=_env(root), capture_output=True,
                                      text=True)
            assert survivor.returncode == 0, survivor.stdout[-2000:]
            assert study is not None
            retry = next(t for t in study.get_trials()
                         if t.user_attrs.get("tabflow.retry_of") == number)
            assert retry.datetime_start is not None
            return retry.datetime_start.timestamp() - frozen_at
        finally:
            frozen.kill()
            frozen.wait()


def _names(url: str) -> list[str]:
    import optuna

    try:
        return list(optuna.get_all_study_names(url))
    except Exception:  # the file is being created
        return []


def _postgres() -> str | None:
    sys.path.insert(0, str(REPO))
    from tests.helpers.services import postgres_unavailable, postgres_url

    if postgres_unavailable() is not None:
        return None
    return postgres_url(os.environ.get("TABFLOW_OPTUNA_DB", "postgres"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs=2, default=[10, 30])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-death", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {"machine": f"{platform.node()}, {os.cpu_count()} cores",
                              "at": time.strftime("%Y-%m-%d %H:%M")}

    with tempfile.TemporaryDirectory() as tmp:
        result["writes"] = {"sqlite": write_cost(f"sqlite:///{tmp}/optuna.db")}
    pg = _postgres()
    if pg is not None:
        result["writes"]["postgres"] = write_cost(pg)

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/work.db"
        work: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(3):  # interleaved
            for mode in ("on", "off"):
                work[mode].append(storage_work(url, mode == "on"))
        result["storage_work_ms"] = {m: statistics.median(v) for m, v in work.items()}

    low, high = args.trials
    times: dict[str, dict[int, list[float]]] = {"on": {low: [], high: []},
                                                "off": {low: [], high: []}}
    for _ in range(args.repeats):  # interleaved: the machine's noise hits both alike
        for n in (low, high):
            for mode in ("on", "off"):
                times[mode][n].append(sweep_time(n, mode == "on"))
    result["sweeps"] = {
        mode: {"wall_s": {str(n): statistics.median(v) for n, v in by_n.items()},
               "per_trial_s": (statistics.median(by_n[high]) - statistics.median(by_n[low]))
               / (high - low)}
        for mode, by_n in times.items()}

    if not args.skip_death:
        result["death_to_retry_s"] = {f"{i}s/{g}s": death_to_retry(i, g)
                                      for i, g in ((2, 6), (20, 60))}

    lines = [f"Heartbeats ({result['machine']}, {result['at']})", "",
             "| storage | trial beat | lock beat | writes/min per running trial (20 s) |",
             "|---|---|---|---|"]
    for name, w in result["writes"].items():
        lines.append(f"| {name} | {w['trial_beat_ms']:.2f} ms | {w['lock_beat_ms']:.2f} ms | "
                     f"3 ({3 * w['trial_beat_ms']:.1f} ms of writes a minute) |")
    w = result["storage_work_ms"]
    lines += ["", f"sweeper's storage work per trial (SQLite, in process): heartbeats on "
                  f"{w['on']:.1f} ms, off {w['off']:.1f} ms ({w['on'] - w['off']:+.1f} ms)"]
    on, off = result["sweeps"]["on"], result["sweeps"]["off"]
    lines += ["", f"| heartbeats | {low} trials | {high} trials | per trial |",
              "|---|---|---|---|"]
    for mode, r in (("on", on), ("off", off)):
        lines.append(f"| {mode} | {r['wall_s'][str(low)]:.1f} s | {r['wall_s'][str(high)]:.1f} s "
                     f"| {r['per_trial_s'] * 1000:.0f} ms |")
    lines.append(f"\nper-trial cost of heartbeats in whole sweeps: "
                 f"{(on['per_trial_s'] - off['per_trial_s']) * 1000:+.0f} ms (noise-bound)")
    for setting, seconds in result.get("death_to_retry_s", {}).items():
        lines.append(f"death -> retry (interval/grace {setting}): {seconds:.1f} s")
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "heartbeat.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "heartbeat.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
