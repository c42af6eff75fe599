"""The sweeper's pure parts, on real in-memory Optuna studies: no Hydra launch, no jobs."""

from __future__ import annotations

import math
import os

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hydra_plugins.tabflow_sweeper import _study
from hydra_plugins.tabflow_sweeper._outcomes import finished_values, returned_values
from hydra_plugins.tabflow_sweeper._progress import Progress, format_duration, write_results
from hydra_plugins.tabflow_sweeper._space import batch_size
from hydra_plugins.tabflow_sweeper._sweep import TabflowOptunaSweeperImpl
from hydra_plugins.tabflow_sweeper.locks import process_started, this_process
from tabflow.contract import ATTR_INTERRUPTED, ATTR_RETRY_OF, METRICS_FILE, write_json


@pytest.mark.parametrize(("n_jobs", "launcher", "expected"), [
    (3, {"n_jobs": 8}, 3),          # explicit wins
    (None, None, 1),                # basic launcher: sequential
    (None, {"_target_": "basic"}, 1),
    (None, {"n_jobs": 2}, 2),       # joblib with 2 workers
    (None, {"n_jobs": -1}, os.cpu_count() or 1),  # joblib: all cores
])
def test_batch_size_matches_launcher(n_jobs, launcher, expected):
    cfg = OmegaConf.create(launcher) if launcher is not None else None
    assert batch_size(n_jobs, cfg) == expected


def test_batch_size_rejects_zero():
    with pytest.raises(ValueError, match="n_jobs"):
        batch_size(0, None)



def test_durations_read_as_clocks():
    assert format_duration(65) == "1:05"
    assert format_duration(3 * 3600 + 61) == "3:01:01"


def _study_with(*states_and_values):
    study = optuna.create_study(direction="maximize")
    for state, value in states_and_values:
        trial = study.ask({"x": FloatDistribution(0, 1)})
        if state is TrialState.COMPLETE:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)
    return study


def test_interrupted_trials_do_not_count_toward_the_total_and_are_queued_once():
    study = _study_with((TrialState.COMPLETE, 0.5), (TrialState.FAIL, None))
    interrupted = study.ask({"x": FloatDistribution(0, 1)})
    interrupted.set_user_attr(ATTR_INTERRUPTED, True)
    study.tell(interrupted, state=TrialState.FAIL)
    orphan = study.ask({"x": FloatDistribution(0, 1)})  # RUNNING, its process gone
    orphan.set_user_attr("tabflow.pid", 0)
    counted = [_study.counts_toward_total(t) for t in study.get_trials()]
    assert counted == [True, True, False, False]  # a real failure counts; interruptions don't
    assert _study.reclaim_interrupted(study) == [2, 3]
    assert study.trials[3].state is TrialState.FAIL
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert sorted(t.user_attrs[ATTR_RETRY_OF] for t in waiting) == [2, 3]
    assert _study.reclaim_interrupted(study) == []  # queued once, not once per resume


@pytest.mark.skipif(process_started(os.getpid()) is None, reason="needs Linux's /proc")
def test_a_trial_whose_pid_another_process_was_given_is_reclaimed():
    """A killed sweep's RUNNING trial, its pid since given to another live process."""
    study = _study_with()
    live = study.ask({"x": FloatDistribution(0, 1)})  # this process's own: kept
    _study.set_user_attrs(live, this_process())
    reused = study.ask({"x": FloatDistribution(0, 1)})
    _study.set_user_attrs(reused, {**this_process(), "tabflow.pid_started": "1"})
    assert _study.reclaim_interrupted(study) == [1]
    assert [t.state for t in study.trials[:2]] == [TrialState.RUNNING, TrialState.FAIL]


def test_ask_batch_stops_at_the_total_counting_what_is_done():
    study = _study_with((TrialState.COMPLETE, 0.1), (TrialState.COMPLETE, 0.2))
    trials, counted = _study.ask_batch(study, stored=False, n_trials=5, batch=2)
    assert counted == 2 and len(trials) == 2
    assert all(t.user_attrs.keys() >= {"tabflow.host", "tabflow.pid"} for t in
               study.get_trials(states=(TrialState.RUNNING,)))
    more, counted = _study.ask_batch(study, stored=False, n_trials=5, batch=2)
    assert counted == 2 and len(more) == 1  # two running + two done: one more fits
    none, _ = _study.ask_batch(study, stored=False, n_trials=5, batch=2)
    assert none == []


def test_progress_names_the_earliest_best_trial_on_ties():
    study = _study_with((TrialState.COMPLETE, 0.9), (TrialState.COMPLETE, 0.9))
    progress = Progress(total=4, done=1)
    line = progress.line(study, 1, "val_accuracy=0.9000")
    assert line.startswith("trial 1 val_accuracy=0.9000 | 2/4 | best 0.9000 (trial 0)")
    assert "ETA" in line


def test_job_results_become_values_or_a_clear_failure():
    ok = JobReturn(status=JobStatus.COMPLETED, _return_value=0.75)
    assert returned_values(ok, 1) == [0.75]
    pair = JobReturn(status=JobStatus.COMPLETED, _return_value=[1, 2])
    assert returned_values(pair, 2) == [1, 2]
    with pytest.raises(ValueError, match="finite"):
        returned_values(JobReturn(status=JobStatus.COMPLETED, _return_value=math.nan), 1)
    with pytest.raises(ValueError, match="2 objectives"):
        returned_values(ok, 2)
    with pytest.raises(KeyError, match="boom"):
        returned_values(JobReturn(status=JobStatus.FAILED, _return_value=KeyError("boom")), 1)


def test_a_finished_job_dir_is_kept_after_a_lost_batch(tmp_path):
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    assert finished_values(trial, tmp_path, ["val_accuracy"], 1) is None  # nothing written
    write_json(tmp_path / METRICS_FILE, {"val_accuracy": 0.8, "fit_time_s": 0.1})
    assert finished_values(trial, tmp_path, ["val_accuracy"], 1) == [0.8]
    assert study.trials[0].user_attrs["val_accuracy"] == 0.8
    write_json(tmp_path / METRICS_FILE, {"val_accuracy": math.inf})
    assert finished_values(trial, tmp_path, ["val_accuracy"], 1) is None


def test_results_file_names_the_best_trial_and_the_failures(tmp_path):
    study = _study_with((TrialState.COMPLETE, 0.7), (TrialState.COMPLETE, 0.9),
                        (TrialState.FAIL, None))
    summary = write_results(study, tmp_path, "sqlite:///x.db", 3, "val_accuracy",
                            [(2, "ValueError: bad")], stopped_by_timeout=False)
    results = OmegaConf.load(tmp_path / "optimization_results.yaml")
    assert results.best_trial == 1 and results.best_value == 0.9
    assert results.trials_by_state == {"COMPLETE": 2, "FAIL": 1}
    assert "ValueError" in summary and "trial 2" in summary


def _impl(sampler, params, conditional=None):
    return TabflowOptunaSweeperImpl(
        sampler, "maximize", None, None, 50, None, 0.5, None, OmegaConf.create(params),
        None, False, [], "model", conditional or {})


def test_a_grid_caps_the_trial_count_without_changing_the_sweeper():
    import functools

    grid = functools.partial(optuna.samplers.GridSampler, seed=0)
    impl = _impl(grid, {"model.max_depth": "choice(2,4,8)", "model.C": "choice(0.1,1.0)"})
    space, sampler, n_trials = impl.search_space([])
    assert n_trials == 6 and isinstance(sampler, optuna.samplers.GridSampler)
    assert impl.n_trials == 50 and impl.sampler is grid  # returned, not mutated
    assert set(space.distributions) == {"model.max_depth", "model.C"}


def test_fixed_values_are_not_searched_and_conditional_spaces_follow_the_choice():
    impl = _impl(optuna.samplers.RandomSampler(seed=0),
                 {"model": "choice(rf,logreg)", "seed": "7"},
                 {"logreg": {"model.C": "interval(0.01, 10)"},
                  "rf": {"model.max_depth": "int(interval(2, 8))"}})
    space, _, _ = impl.search_space([])
    assert set(space.distributions) == {"model"} and space.fixed_params == {"seed": "7"}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    impl.config = OmegaConf.create({"optuna_trial": None})  # tabflow's config has the key
    trials = [study.ask() for _ in range(6)]
    for trial, overrides in zip(trials, impl.trial_overrides(trials, space), strict=True):
        keys = {o.split("=", 1)[0] for o in overrides}
        family = trial.params["model"]
        searched = "model.C" if family == "logreg" else "model.max_depth"
        other = "model.max_depth" if family == "logreg" else "model.C"
        assert searched in keys and other not in keys
        assert f"optuna_trial={trial.number}" in overrides and "seed=7" in overrides
        assert f"++hydra.job.env_set.OPTUNA_TRIAL_NUMBER={trial.number}" in overrides


def test_a_sweep_whose_trials_tie_says_so_once(caplog):
    from hydra_plugins.tabflow_sweeper._progress import Progress

    progress = Progress(total=10, done=10)
    study = _study_with(*[(TrialState.COMPLETE, 0.9474)] * 9, (TrialState.COMPLETE, 0.9649))
    progress.warn_if_flat(study, "val_accuracy")
    progress.warn_if_flat(study, "val_accuracy")
    warnings = [r.getMessage() for r in caplog.records if "tells them apart" in r.getMessage()]
    assert warnings == [warnings[0]] and "9 of 10 finished trials share val_accuracy=0.9474" \
        in warnings[0] and "cv.folds=5" in warnings[0]


def test_the_study_names_its_objective(tmp_path):
    study = _study.create_study("s", f"sqlite:///{tmp_path}/o.db", None, ["maximize"],
                                ["val_accuracy"])
    assert study.metric_names == ["val_accuracy"]


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres"])
def test_user_attributes_are_set_together_and_read_back_as_optuna_stores_them(tmp_path,
                                                                              backend):
    import contextlib

    from hydra_plugins.tabflow_sweeper._study import set_user_attrs
    from hydra_plugins.tabflow_sweeper.stores import optuna_storage
    from tests.helpers.services import postgres_database, postgres_unavailable, postgres_url

    if backend == "postgres" and postgres_unavailable():
        pytest.skip(str(postgres_unavailable()))
    with postgres_database() if backend == "postgres" else contextlib.nullcontext() as db:
        url = {"memory": None, "sqlite": f"sqlite:///{tmp_path}/optuna.db",
               "postgres": postgres_url(str(db))}[backend]
        study = optuna.create_study(storage=optuna_storage(url) if url else None)
        trial = study.ask()
        attrs = {f"val_m{i}": i / 3 for i in range(450)}  # more than one statement's rows
        set_user_attrs(trial, {"mlflow_run_id": "old", "val_m0": -1.0})
        set_user_attrs(trial, {**attrs, "mlflow_run_id": "abc", "nested": {"a": [1, None]}})
        study.tell(trial, 1.0)
        stored = optuna.load_study(study_name=study.study_name,
                                   storage=optuna_storage(url) if url else study._storage)
        assert stored.trials[0].user_attrs == {**attrs, "mlflow_run_id": "abc",
                                               "nested": {"a": [1, None]}}  # updated in place
        with pytest.raises(RuntimeError, match="finished"):  # as Optuna refuses it
            set_user_attrs(trial, {"late": 1})


def test_a_job_file_cut_off_while_written_leaves_the_old_one_whole(tmp_path):
    """A process killed mid-write (here: an error mid-write) leaves no part of a file."""
    from hydra_plugins.tabflow_sweeper.contract import read_json, write_atomic, write_json

    path = tmp_path / "job" / "metrics.json"
    write_json(path, {"val_accuracy": 0.9})

    def cut_off(p):
        p.write_text('{"val_accura')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, cut_off)
    assert read_json(path) == {"val_accuracy": 0.9}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # nothing left over
