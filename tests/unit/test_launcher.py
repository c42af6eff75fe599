"""The compose-once launcher gives each job exactly the config Hydra's composition gives."""

from __future__ import annotations

import optuna
import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.plugins import Plugins
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hydra_plugins.tabflow_launcher._compose import Composer
from tabflow.config import register_configs
from tests.conftest import CONF
from tests.helpers import group_options

SPACES = [(m, s) for m in group_options("model") for s in ("narrow", "wide")] + [
    ("rf", "families")]


@pytest.fixture
def sweep_of():
    """A sweep's master config and config loader, as ``python src/train.py -m ...`` has them."""
    Plugins.instance()  # registers the plugins' configs, as the command line does
    register_configs()

    def _sweep(*overrides: str):
        GlobalHydra.instance().clear()
        initialize_config_dir(config_dir=str(CONF), job_name="train", version_base=None)
        hydra = GlobalHydra.instance().hydra
        assert hydra is not None
        master = hydra.compose_config("train", list(overrides), run_mode=RunMode.MULTIRUN,
                                      with_log_configuration=False)
        return master, hydra.config_loader

    yield _sweep
    GlobalHydra.instance().clear()


def trial_overrides(master, n: int) -> list[list[str]]:
    """The overrides tabflow's sweeper launches for ``n`` random trials of this sweep."""
    sweeper = instantiate(master.hydra.sweeper, _recursive_=False,
                          _execution_whitelist_=("hydra_plugins.*",)).sweeper
    sweeper.config = master
    space, _, _ = sweeper.search_space(list(master.hydra.overrides.task))  # as Hydra passes them
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=n))
    return [list(o) for o in sweeper.trial_overrides([study.ask() for _ in range(n)], space)]


@pytest.mark.parametrize(("model", "sweep"), SPACES)
def test_job_configs_equal_hydras_on_every_search_space(sweep_of, model, sweep):
    master, loader = sweep_of(f"model={model}", f"sweep={sweep}", "hydra.sweeper.n_trials=7",
                              "preprocessing=robust")
    composer = Composer(loader, master)
    for overrides in trial_overrides(master, 4):
        want = loader.load_sweep_config(master, overrides)
        got = composer.compose(overrides)
        # Every node, interpolations unresolved: what Hydra saves in .hydra/ and hands on.
        assert OmegaConf.to_container(got) == OmegaConf.to_container(want), overrides
        assert OmegaConf.to_yaml(got) == OmegaConf.to_yaml(want)
        assert got.hydra.overrides.task == want.hydra.overrides.task
        job = {k: got[k] for k in got if k != "hydra"}
        assert OmegaConf.to_container(OmegaConf.create(job), resolve=True)  # resolves
    if sweep != "families":
        assert len(composer.bases) == 1  # one composition for the whole sweep


def test_bad_values_fail_as_hydras_do(sweep_of):
    master, loader = sweep_of("model=rf", "sweep=narrow")
    composer = Composer(loader, master)
    for value in ("model.n_estimators=many", "model.n_estimatorz=5", "seed=1,2"):
        bad = [*master.hydra.overrides.task, value]
        with pytest.raises(ConfigCompositionException) as hydra_error:
            loader.load_sweep_config(master, bad)
        with pytest.raises(ConfigCompositionException) as our_error:
            composer.compose(bad)
        assert str(our_error.value) == str(hydra_error.value)


@pytest.mark.parametrize("compose_once", [True, False])
def test_the_launcher_composes_once_unless_told_not_to(sweep_of, compose_once):
    from hydra._internal.callbacks import Callbacks
    from hydra.types import HydraContext

    from hydra_plugins.tabflow_launcher.tabflow_launcher import TabflowLauncher

    master, loader = sweep_of("model=rf", "sweep=narrow")
    launcher = TabflowLauncher(compose_once=compose_once)
    launcher.setup(hydra_context=HydraContext(config_loader=loader, callbacks=Callbacks()),
                   task_function=lambda cfg: 0.0, config=master)
    (overrides,) = trial_overrides(master, 1)
    got = launcher.job_config(overrides)
    assert OmegaConf.to_yaml(got) == OmegaConf.to_yaml(loader.load_sweep_config(master,
                                                                                overrides))
    # hydra.launcher.compose_once=false: Hydra composes every job, as its basic launcher does.
    assert (launcher._composer is not None) == compose_once


def test_workers_must_be_at_least_one():
    from hydra_plugins.tabflow_launcher.tabflow_launcher import TabflowLauncher

    with pytest.raises(ValueError, match=r"hydra\.launcher\.n_jobs must be >= 1, got 0"):
        TabflowLauncher(n_jobs=0)
