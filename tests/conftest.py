"""Shared fixtures: configs composed from conf/, a fresh project root, subprocess runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from tabflow.config import register_configs

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
TRAIN = REPO / "src" / "train.py"
CUSTOMERS = Path(__file__).parent / "data" / "customers.csv"  # a shipped churn table


def group_options(group: str) -> list[str]:
    """Return the option names of a config group (the YAML files in conf/<group>/)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture
def project_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project root: stores, data and run dirs land here, not in the checkout."""
    monkeypatch.setenv("TABFLOW_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture
def compose_cfg(project_root: Path) -> Iterator[Callable[..., DictConfig]]:
    """Compose conf/train.yaml with overrides, as Hydra would for a job."""
    register_configs()

    def _compose(*overrides: str) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), job_name="test"):
            cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # so ${hydra:...} resolves as in a real run
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


def run_train(root: Path, *args: str, env: dict[str, str] | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``python src/train.py ARGS`` as a user would, with stores under ``root``."""
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update({"TABFLOW_ROOT": str(root), "PYTHONWARNINGS": "ignore"})
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(TRAIN), *args], cwd=root, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
