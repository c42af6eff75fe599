"""Lifecycle steps on a real SQLite registry: what is refused, and what a rollback moves."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from tabflow.contract import lower_is_better
from tabflow.lifecycle import Comparison, RegistryError, promote, render, rollback
from tabflow.tracking.models import log_model
from tabflow.tracking.registry import create_version, set_alias, tag_version, version_by_alias
from tabflow.tracking.store import connect


@pytest.fixture
def registry(tmp_path):
    """A store with model `m`: version 1 was production, version 2 replaced it."""
    store = connect(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = store.client.create_experiment("e", (tmp_path / "mlruns").as_uri())
    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]})
    model = LogisticRegression().fit(X, [0, 0, 1, 1])
    for version in ("1", "2"):
        run = store.client.create_run(experiment).info.run_id
        assert create_version(store, "m", log_model(store, run, model, X.head(2)), run,
                              {}) == version
    set_alias(store, "m", "production", "1")
    set_alias(store, "m", "production", "2")
    tag_version(store, "m", "2", {"previous_production": "1"})
    return store


def test_rollback_points_production_at_the_replaced_version(registry):
    assert rollback(registry, "m") == ("2", "1")
    assert str(version_by_alias(registry, "m", "production").version) == "1"
    old = registry.client.get_model_version("m", "2")
    assert old.tags["lifecycle"] == "rolled_back" and old.current_stage == "Archived"
    assert registry.client.get_model_version("m", "1").current_stage == "Production"
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(registry, "m")  # version 1 replaced none


def test_the_stage_mirror_keeps_one_version_per_stage(registry):
    versions = {str(v.version): v.current_stage
                for v in registry.client.search_model_versions("name = 'm'")}
    assert versions == {"1": "Archived", "2": "Production"}  # set_alias archived version 1
    set_alias(registry, "m", "staging", "1")
    set_alias(registry, "m", "staging", "2")
    stages = {str(v.version): v.current_stage
              for v in registry.client.search_model_versions("name = 'm'")}
    assert list(stages.values()).count("Staging") == 1


def test_a_registry_lock_left_by_a_dead_process_is_broken_at_once(registry):
    from tests.helpers import holding_process

    holder = holding_process("from tabflow.tracking.store import connect; "
                             "from tabflow.tracking.registry import registry_lock",
                             f"registry_lock(connect({registry.uri!r}), 'm')")
    assert registry.client.get_registered_model("m~lock").tags["holder_pid"] == str(holder.pid)
    holder.kill()
    holder.wait()
    assert rollback(registry, "m") == ("2", "1")  # takes the lock at once
    assert not registry.client.search_registered_models("name = 'm~lock'")


def test_promote_without_staging_names_the_fix(registry):
    with pytest.raises(RegistryError, match=r"no @staging version; run a sweep first"):
        promote(registry, "m")


def test_a_model_without_production_cannot_roll_back(tmp_path):
    store = connect(f"sqlite:///{tmp_path}/mlflow.db")
    with pytest.raises(RegistryError, match="no @production version"):
        rollback(store, "absent")


def test_lower_is_better_knows_errors_and_costs():
    assert lower_is_better("test_rmse") and lower_is_better("val_log_loss")
    assert lower_is_better("fit_time_s")
    assert not lower_is_better("test_accuracy") and not lower_is_better("val_r2")


def test_render_reads_as_a_verdict():
    result = Comparison(model="m", metric="test_accuracy", candidate="3", candidate_score=0.95,
                        champion="2", champion_score=0.93, margin=0.0, forced=False,
                        promoted=True, reason="better by +0.0200 (margin 0.0)", test_rows=114,
                        dataset_digest="abcdef0123456789", at="now")
    text = render(result)
    assert "test_accuracy on 114 held-out test rows" in text
    assert "staging     version 3: 0.9500" in text and "production  version 2: 0.9300" in text
    assert text.endswith("-> PROMOTED to production: better by +0.0200 (margin 0.0)")


def test_the_guides_stage_call_is_seen_as_production(tmp_path):
    """The guide moves stages, not aliases: every command must still find production."""
    import warnings

    from tabflow.tracking.registry import resolve_version

    store = connect(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = store.client.create_experiment("e", (tmp_path / "mlruns").as_uri())
    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]})
    run = store.client.create_run(experiment).info.run_id
    model = LogisticRegression().fit(X, [0, 0, 1, 1])
    create_version(store, "g", log_model(store, run, model, X.head(2)), run, {})
    assert resolve_version(store, "g", "production") is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        store.client.transition_model_version_stage("g", "1", "Production")  # the guide's call
    assert str(resolve_version(store, "g", "production").version) == "1"


def test_serving_a_version_whose_files_are_gone_says_so_in_one_line(registry, tmp_path, capsys):
    import shutil

    from tabflow.cli import main
    from tabflow.lifecycle import _predict

    shutil.rmtree(tmp_path / "mlruns")  # someone cleaned up the artifact store
    assert main(["--tracking-uri", registry.uri, "serve", "m"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: m version 2: its model files can't be read")
    assert "tabflow rollback m" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(RegistryError, match="m version 2: its files can't be read"):
        _predict("m", "2", None, None)
