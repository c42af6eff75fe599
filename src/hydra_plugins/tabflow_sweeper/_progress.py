"""What a sweep tells its user: a line per finished trial, and the results file."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

from hydra_plugins.tabflow_sweeper import best_trial
from hydra_plugins.tabflow_sweeper.contract import ATTR_RUN_ID, RESULTS_FILE

log = logging.getLogger(__name__)

# Warn once this share of at least this many finished trials tie on one objective value.
FLAT_SHARE, FLAT_MIN_TRIALS = 0.8, 10


def format_duration(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` past an hour."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class Progress:
    """Counts this invocation's trials and prints a line per finished one."""

    total: int
    done: int
    started: float = field(default_factory=time.monotonic)
    finished_here: int = 0
    warned_flat: bool = False

    def warn_if_flat(self, study: optuna.Study, metric_name: str) -> None:
        """Say so, once, when most trials tie: the search then learns nothing."""
        if self.warned_flat or len(study.directions) > 1:
            return
        values = [t.value for t in study.get_trials(deepcopy=False,
                                                    states=(TrialState.COMPLETE,))]
        if len(values) < FLAT_MIN_TRIALS:
            return
        value, count = Counter(values).most_common(1)[0]
        if count / len(values) >= FLAT_SHARE:
            self.warned_flat = True
            log.warning("%d of %d finished trials share %s=%.4f: the objective no longer tells "
                        "them apart, so the search learns nothing. Score trials by "
                        "cross-validation (cv.folds=5), enlarge the validation split "
                        "(split.val_size=0.2), or optimise a finer metric "
                        "(objective.metric=val_log_loss objective.direction=minimize)",
                        count, len(values), metric_name, value)

    def line(self, study: optuna.Study, trial_number: int, outcome: str) -> str:
        """Count a finished trial and return its progress line."""
        self.done += 1
        self.finished_here += 1
        elapsed = time.monotonic() - self.started
        remaining = max(0, self.total - self.done)
        eta = elapsed / self.finished_here * remaining
        best = ""
        if len(study.directions) == 1:
            b = best_trial(study)
            if b is not None:
                best = f" | best {b.value:.4f} (trial {b.number})"
        else:
            best = f" | Pareto front: {len(study.best_trials)} trials"
        return (f"trial {trial_number} {outcome} | {self.done}/{self.total}{best} | "
                f"elapsed {format_duration(elapsed)} | ETA {format_duration(eta)}")


def write_results(study: optuna.Study, sweep_dir: Path, storage: Any, n_trials: int,
                  metric_name: str, failures: list[tuple[int, str]],
                  stopped_by_timeout: bool) -> str:
    """Write optimization_results.yaml into the sweep dir; return a one-line failure summary."""
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    by_error = Counter(message.split(":", 1)[0] for _, message in failures)
    summary = (f"failures by error: {dict(by_error)}; first: trial {failures[0][0]}: "
               f"{failures[0][1]}" if failures else "no failures")
    results: dict[str, Any] = {
        "name": "optuna",
        "study_name": study.study_name,
        "storage": str(storage),
        "n_trials": n_trials,
        "trials_by_state": dict(states),
        "stopped_by_timeout": stopped_by_timeout,
        "failures": [{"trial": n, "error": m} for n, m in failures],
    }
    if len(study.directions) == 1:
        best = best_trial(study)
        if best is not None:
            results.update({"best_trial": best.number, "best_value": best.value,
                            "best_params": best.params,
                            "best_mlflow_run_id": best.user_attrs.get(ATTR_RUN_ID)})
    elif front := study.best_trials:  # the Pareto front, once a trial is complete
        results["solutions"] = [
            {"trial": t.number, "values": t.values, "params": t.params,
             "mlflow_run_id": t.user_attrs.get(ATTR_RUN_ID)} for t in front]
    if failures:
        log.warning("%d trial(s) failed: %s", len(failures), summary)
    sweep_dir.mkdir(parents=True, exist_ok=True)  # a resumed, complete study launched nothing
    OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)
    return summary
