"""Checks before any job: bad configs, stores and data stop the command with one clear line."""

from __future__ import annotations

import re
import sqlite3

import pytest
from omegaconf import open_dict, read_write

from tabflow.checks import ConfigCheck, ConfigError, check_config


@pytest.mark.parametrize(("overrides", "needle"), [
    (["objective.metric=test_accuracy"], "not a validation metric"),
    (["objective.metric=val_rmse"], "not a validation metric"),
    (["objective.direction=up"], "must give minimize or maximize"),
    # Directions follow the metrics unless given; given, there is one for each metric.
    (["objective.metric=[val_f1,fit_time_s]", "objective.direction=[maximize]"],
     "must give minimize or maximize for each"),
    (["split.test_size=0.6", "split.val_size=0.5"], "training rows remain"),
])
def test_checks_name_the_problem_and_the_fix(compose_cfg, overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        check_config(compose_cfg(*overrides), sweeping=False)


def test_sweep_without_search_space_is_refused(compose_cfg):
    cfg = compose_cfg("model=rf", "sweep=wide")
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.sweeper.params = {}
    with pytest.raises(ConfigError, match=r"conf/search_space/rf/wide\.yaml"):
        check_config(cfg, sweeping=True)


@pytest.mark.parametrize(("model", "key", "space", "needle"), [
    # a key the model doesn't have
    ("hgb", "model.n_estimators", "int(interval(50, 300))", r"model\.n_estimators"),
    # a range written backwards
    ("rf", "model.max_depth", "int(interval(15, 3))",
     r"model\.max_depth=int\(interval\(15, 3\)\)"),
])
def test_a_bad_search_space_file_is_refused(compose_cfg, model, key, space, needle):
    cfg = compose_cfg(f"model={model}", "sweep=narrow")
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.sweeper.params[key] = space
    with pytest.raises(ConfigError, match=needle):
        check_config(cfg, sweeping=True)


def test_the_callback_stops_a_sweep_with_one_line_and_exit_2(compose_cfg, capsys):
    cfg = compose_cfg("sweep=narrow", "objective.metric=test_accuracy")
    with pytest.raises(SystemExit) as info:
        ConfigCheck().on_multirun_start(cfg)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("Config error: objective.metric='test_accuracy'")
    assert "Traceback" not in err


def test_a_foreign_tracking_store_is_refused_before_the_data_loads(compose_cfg, project_root,
                                                                   capsys):
    with sqlite3.connect(project_root / "mlflow.db") as con:
        con.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(SystemExit) as info:
        ConfigCheck().on_run_start(compose_cfg())
    assert info.value.code == 2
    assert "Store error:" in capsys.readouterr().err
    assert not (project_root / "data" / "processed").exists()  # no work was done


def test_bad_data_is_a_data_error(compose_cfg, capsys):
    with pytest.raises(SystemExit):
        ConfigCheck().on_run_start(compose_cfg("dataset=csv", "dataset.path=absent.csv",
                                               "dataset.target=y"))
    assert "Data error: dataset.path='absent.csv'" in capsys.readouterr().err


def test_a_single_run_with_a_sweep_selected_hints_at_multirun(compose_cfg, caplog):
    ConfigCheck().on_run_start(compose_cfg("sweep=narrow"))
    assert "add -m to sweep" in caplog.text


def test_the_full_traceback_on_request(compose_cfg, monkeypatch, capsys):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(SystemExit):
        ConfigCheck().on_run_start(compose_cfg("split.test_size=0.9"))
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(("sweep_override", "needle"), [
    ("model.n_estimators=int(interval(500, 10))",
     "model.n_estimators=int(interval(500, 10)): the range runs backwards (500 > 10)"),
    ("model.max_depth=interval(8, 3)", "runs backwards (8 > 3)"),
])
def test_a_backwards_range_on_the_command_line_is_refused(compose_cfg, sweep_override, needle):
    cfg = compose_cfg("model=rf", "sweep=wide")
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.overrides.task.append(sweep_override)  # as `-m` would pass it
    with pytest.raises(ConfigError, match=re.escape(needle)):
        check_config(cfg, sweeping=True)


@pytest.mark.parametrize("n_trials", [0, -3])
def test_a_sweep_without_trials_is_refused(compose_cfg, n_trials):
    cfg = compose_cfg("model=rf", "sweep=narrow", f"hydra.sweeper.n_trials={n_trials}")
    with pytest.raises(ConfigError, match=rf"n_trials={n_trials}: a sweep needs at least one"):
        check_config(cfg, sweeping=True)


@pytest.mark.parametrize(("overrides", "needle"), [
    (["objective.metric=val_accuracy", "objective.direction=minimize"],
     "contradicts objective.metric=val_accuracy: a higher val_accuracy is better; use "
     "objective.direction=maximize"),
    (["objective.metric=val_log_loss", "objective.direction=maximize"],
     "use objective.direction=minimize"),
    (["dataset=diabetes", "objective.direction=maximize"], "a lower val_rmse is better"),
])
def test_a_direction_that_contradicts_its_metric_is_refused(compose_cfg, overrides, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        check_config(compose_cfg(*overrides), sweeping=False)


def test_splits_that_leave_almost_nothing_to_train_on_are_named(compose_cfg, caplog):
    from tabflow.checks import check_data

    check_data(compose_cfg("dataset=iris", "split.test_size=0.5", "split.val_size=0.45"))
    warnings = [r.getMessage() for r in caplog.records if "too few to fit" in r.getMessage()]
    assert len(warnings) == 1
    assert "split leaves 7 training, 68 validation and 75 test rows" in warnings[0]
    assert "split.test_size=0.5 / split.val_size=0.45" in warnings[0]


@pytest.mark.parametrize(("override", "needle"), [
    ("hydra.launcher.n_jobs=0", "hydra.launcher.n_jobs=0: a sweep needs at least one worker"),
    ("hydra.launcher.n_jobs=-1", "hydra.launcher.n_jobs=-1: a sweep needs at least one worker"),
    ("hydra.launcher.n_jobs=999", "hydra.launcher.n_jobs=999 is more than this machine's"),
    ("hydra.sweeper.n_jobs=0", "hydra.sweeper.n_jobs=0: a sweep needs at least one worker"),
])
def test_parallelism_beyond_the_machine_is_refused_before_anything_runs(compose_cfg, override,
                                                                        needle):
    cfg = compose_cfg("sweep=narrow", override)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        check_config(cfg, sweeping=True)
    check_config(compose_cfg("sweep=narrow", "hydra/launcher=joblib",
                             "hydra.launcher.n_jobs=-1"), sweeping=True)  # joblib's own -1


def with_swept(cfg, *swept):
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.overrides.task.extend(swept)  # as `-m` would pass them
    return cfg


@pytest.mark.parametrize(("overrides", "swept", "needle"), [
    (("sweep=narrow",), ("model.max_depth=choice(a,b)",),
     "model.max_depth=choice(a,b): model.max_depth='a' can't be used"),
    (("sweep=narrow",), ("model.n_estimators=int(interval(-5,3))",),
     "model.n_estimators=-5 would fail every trial that tries it: The 'n_estimators' parameter"),
    (("sweep=narrow", "hydra.sweeper.timeout=-5"), (), "hydra.sweeper.timeout=-5.0: a timeout"),
    (("sweep=narrow", "hydra.sweeper.timeout=0"), (), "hydra.sweeper.timeout=0.0: a timeout"),
    (("cv.folds=1",), (), "cv.folds=1: use cv.folds=0 (score on the validation split), k >= 2"),
    (("seed=-1",), (), "seed=-1: a seed must be between 0 and 2**32 - 1"),
])
def test_every_value_a_sweep_may_try_is_checked_before_the_first_trial(compose_cfg, overrides,
                                                                       swept, needle):
    cfg = with_swept(compose_cfg(*overrides), *swept)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        check_config(cfg, sweeping="sweep=narrow" in overrides)
    fine = with_swept(compose_cfg("sweep=narrow"), "model.n_estimators=range(1,5)")
    check_config(fine, sweeping=True)


def test_a_key_added_with_plus_stays_when_another_key_is_swept(compose_cfg):
    # +model.bootstrap is a RandomForest argument the family's schema doesn't declare.
    cfg = with_swept(compose_cfg("sweep=narrow", "+model.bootstrap=false"),
                     "+model.oob_score=choice(false,true)", "model.n_estimators=range(1,5)")
    check_config(cfg, sweeping=True)
    bad = with_swept(compose_cfg("sweep=narrow", "+model.bootstrap=false"),
                     "+model.oob_score=choice(false,maybe)")
    with pytest.raises(ConfigError, match=re.escape("model.oob_score='maybe' would fail")):
        check_config(bad, sweeping=True)


def test_more_folds_than_the_rarest_class_has_rows_is_refused(compose_cfg, capsys):
    from tabflow.checks import check_data

    with pytest.raises(ConfigError, match=r"cv\.folds=10000: the rarest class has only \d+ rows"):
        check_data(compose_cfg("cv.folds=10000"))


def test_more_workers_than_free_memory_holds_are_refused_naming_a_number_that_fits(
        compose_cfg, monkeypatch):
    """The machine's free memory is the one thing faked: a busy machine can't be ordered."""
    from tabflow import checks

    monkeypatch.setattr(checks, "available_mb", lambda: 2_000.0)
    cfg = compose_cfg("sweep=narrow", "hydra.launcher.n_jobs=2")
    with pytest.raises(ConfigError, match=re.escape(
            "hydra.launcher.n_jobs=2: each worker needs about 1,600 MB (a process with "
            "scikit-learn and MLflow, and room for 10 copies of the 100 MB table), 3,200 MB "
            "in all, and 2,000 MB are free; use hydra.launcher.n_jobs=1")):
        checks.check_memory(cfg, table_mb=100.0)
    checks.check_memory(cfg, table_mb=10.0)  # 2 x 700 MB fit
    checks.check_memory(compose_cfg("sweep=narrow"), table_mb=100.0)  # one worker: no check
