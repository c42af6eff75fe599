"""Shared fixtures: configs composed from conf/, a fresh project root (helpers: tests.helpers)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from tabflow.config import register_configs
from tests.helpers import CONF
from tests.helpers.scheduling import pytest_xdist_make_scheduler  # noqa: F401 (a hook)


def pytest_configure(config: pytest.Config) -> None:
    """Let Ctrl-C reach the commands the tests start, however the suite itself was started.

    A shell without job control starts a background command (``.ci/run &``, a CI runner's
    step) with SIGINT ignored, and an ignored signal stays ignored in every child: Python
    then installs no Ctrl-C handler, and each test that sends SIGINT to a sweep or a
    ``tabflow`` command sees it run on to the end. A handler of our own is reset to the
    default in a child, which then handles Ctrl-C as a user's terminal would.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the time each layer's tests took (summed over workers): CI's phase table."""
    totals: dict[str, list[float]] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            nodeid = getattr(report, "nodeid", "")
            if not nodeid.startswith("tests/") or not hasattr(report, "duration"):
                continue
            layer = nodeid.split("/")[1]
            entry = totals.setdefault(layer, [0, 0.0])
            entry[0] += report.when == "call"
            entry[1] += report.duration
    if totals:
        terminalreporter.write_sep("-", "test time by layer (summed over workers)")
        for layer, (count, seconds) in sorted(totals.items()):
            terminalreporter.write_line(f"  {layer:<6} {int(count):4d} tests  {seconds:7.0f}s")
